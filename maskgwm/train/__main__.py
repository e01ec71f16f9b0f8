"""`python -m maskgwm.train STAGE ...`: the `repro train` command."""
from maskgwm.train.cli import run_main

if __name__ == "__main__":
    raise SystemExit(run_main())
