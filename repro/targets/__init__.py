"""What a paper table or figure asks for: its job file (`slurm/<target>.toml`) resolved into runs
(jobfiles.py) and the paper's own numbers for its cells (paper.py)."""
