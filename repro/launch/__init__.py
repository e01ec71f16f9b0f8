"""Getting a target's runs done: the pre-submit check (preflight.py), the job graph and its
submit/skip/record loop (submit.py), where jobs run (backends.py) and what they cost
(estimate.py)."""
