"""Cross-check frechet_distance against TensorFlow's own float64 matrix square root.

TensorFlow runs in a subprocess (its import is slow and loads another BLAS); the test is
skipped only when `import tensorflow` fails there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evals.frechet import frechet_distance

IMPORT_FAILED_EXIT = 3
TF_SCRIPT = f"""
import json, sys
import numpy as np
try:
    import tensorflow as tf
except Exception as err:
    print(f"import tensorflow failed: {{type(err).__name__}}: {{err}}")
    sys.exit({IMPORT_FAILED_EXIT})
values = {{}}
with np.load(sys.argv[1]) as cases:
    for name in sorted({{key.split("/")[0] for key in cases.files}}):
        mu1, s1, mu2, s2 = (tf.constant(cases[f"{{name}}/{{k}}"], dtype=tf.float64)
                            for k in ("mu1", "s1", "mu2", "s2"))
        covmean = tf.linalg.sqrtm(tf.linalg.matmul(s1, s2))
        fd = (tf.reduce_sum(tf.square(mu1 - mu2)) + tf.linalg.trace(s1) + tf.linalg.trace(s2)
              - 2.0 * tf.linalg.trace(covmean))
        values[name] = float(fd.numpy())
print("RESULT " + json.dumps(values))
"""


def gaussian_moments(n, dim, rng, shift=0.0, scale=1.0):
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    features = (rng.standard_normal((n, dim)) @ mixing) * scale + shift + rng.standard_normal(dim)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def test_frechet_distance_matches_tensorflow_sqrtm(tmp_path):
    rng = np.random.default_rng(0)
    cases = {}
    for dim in (64, 256):
        mu1, s1 = gaussian_moments(3 * dim, dim, rng)
        mu2, s2 = gaussian_moments(3 * dim, dim, rng, shift=0.3, scale=1.2)
        cases[f"d{dim}"] = (mu1, s1, mu2, s2)
    arrays = {f"{name}/{key}": value for name, case in cases.items()
              for key, value in zip(("mu1", "s1", "mu2", "s2"), case)}
    np.savez(tmp_path / "cases.npz", **arrays)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", TF_SCRIPT, str(tmp_path / "cases.npz")],
                         capture_output=True, text=True, timeout=300, env=env)
    if run.returncode == IMPORT_FAILED_EXIT:
        pytest.skip(f"TensorFlow unavailable for this interpreter: {run.stdout.strip()}")
    assert run.returncode == 0, f"TensorFlow subprocess failed:\n{run.stdout}\n{run.stderr}"
    result_line = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")][-1]
    tf_values = json.loads(result_line.removeprefix("RESULT "))
    assert sorted(tf_values) == sorted(cases)
    for name, case in cases.items():
        assert frechet_distance(*case) == pytest.approx(tf_values[name], rel=1e-6), name
