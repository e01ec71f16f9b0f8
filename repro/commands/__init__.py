"""`repro` subcommands that work outside a target's job graph: data, eval, sample, status and the
protocol-sensitivity study."""
