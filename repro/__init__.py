"""The `repro` command: list, submit, status, table (and later collect, plot, eval).

Importing this package must stay cheap and stdlib-only: `python3 -m repro.bootstrap`
runs from a bare interpreter before any dependency is installed.
"""
