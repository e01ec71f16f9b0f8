"""TensorFlow mirrors of our detectors, resizes and Frechet distance: independent references.

Imported only by `tests/evals/tf_parity_script.py`, which `test_tf_parity.py` runs in a
subprocess (TensorFlow costs ~4 s to import, and evals/ must never depend on it). Nothing here is
collected by pytest. The mirrors are written from the TF graphs' own conventions (channels last,
TF "SAME"/"VALID" padding, tf.nn ops) and take weights as numpy arrays already in TF layout
(conv HWIO / DHWIO), keyed by the official PyTorch parameter names.
"""
