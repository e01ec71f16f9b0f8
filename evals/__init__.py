"""FID, FVD and KID evaluation: detectors, feature statistics, Frechet distance, named protocols.

Start at evals/metrics.py: it says where each metric's frames, preprocessing, detector and
distance live. evals/evaluate.py runs an evaluation; evals/pipeline.py extracts features into
typed parts (evals/parts.py); evals/resampling.py gives the bootstrap intervals.

Stands alone: nothing here imports `maskgwm` or `repro`.
"""
