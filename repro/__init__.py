"""The `repro` command (cli.py): one job per paper table or figure, from submission to the table.

    targets/   job files and the paper's numbers     launch/    preflight, job graph, backends
    jobs/      what runs inside a job                report/    collect, tables, plots
    commands/  data, eval, sample, status            vista/     Vista as a run kind
    records.py what a job reads (spec.json)          paths.py   where files live

Importing this package must stay cheap and stdlib-only: `python3 -m repro.bootstrap`
runs from a bare interpreter before any dependency is installed.
"""
