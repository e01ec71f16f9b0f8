"""From finished evaluations to files: collect our numbers (collect.py), the paper's table with
ours beside it (table.py), figures (plot.py, qualitative.py), and the last step of a submission
(finish.py)."""
