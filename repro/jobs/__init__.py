"""What runs inside a submitted job: a run's training or Vista prepare step (run.py,
training.py), a sample shard or the score job of an evaluation (evaluation.py), and the
evaluation sets they share (evalsets.py, evalsynth.py)."""
