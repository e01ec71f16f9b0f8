"""From finished evaluations to files: collect our numbers (collect.py), the paper's table with
ours beside it (table.py), figures (plot.py, qualitative.py), the results page of a scale
(page.py, site.py, html.py, videos.py) and the last step of a submission (finish.py)."""
