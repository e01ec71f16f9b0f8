"""Run every TensorFlow reference computation of test_tf_parity.py in one process.

    python tf_parity_script.py INPUTS.npz OUTPUTS.npz

INPUTS.npz (written by the test) holds:
- `inception/<key>`, `i3d/<key>`: detector weights in TF layout, official PyTorch key names;
- `inception_images` [N, 299, 299, 3] and `i3d_clips` [N, T, 224, 224, 3], float in [-1, 1];
- `pool_probe` NHWC, `pool3d_probe` NDHWC: tensors for checking TF's pool semantics;
- `resize<i>_images` uint8 NHWC and `resize<i>_size` (h, w), for i in range(n_resize);
- `frechet<i>_{mu1,sigma1,mu2,sigma2}` float64, for i in range(n_frechet).
OUTPUTS.npz gets the matching TF results and `seconds_<step>` timings.

Exit status 3 with a one-line reason on stderr when TensorFlow does not import.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

TF_MISSING_EXIT = 3


def main(inputs_path: str, outputs_path: str) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    try:
        import tensorflow as tf  # noqa: F401
    except Exception as err:  # ImportError, or a broken install's own error
        print(f"TensorFlow does not import: {type(err).__name__}: {err}", file=sys.stderr)
        return TF_MISSING_EXIT
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tf_reference import frechet_tf, i3d_tf, inception_tf, resize_tf

    out: dict[str, np.ndarray] = {"seconds_import": np.float64(time.perf_counter() - start),
                                  "tf_version": np.array(tf.__version__)}
    with np.load(inputs_path) as data:
        inputs = {k: data[k] for k in data.files}

    def timed(step, fn):
        t0 = time.perf_counter()
        result = fn()
        out[f"seconds_{step}"] = np.float64(time.perf_counter() - t0)
        return result

    def weights(prefix):
        return {k[len(prefix) + 1:]: v for k, v in inputs.items() if k.startswith(prefix + "/")}

    if "inception_images" in inputs:
        model = inception_tf.InceptionTF(weights("inception"))
        out["inception_pool3"] = timed("inception", lambda: model.pool3(inputs["inception_images"]))
        out["avg_pool_gap"] = np.float64(inception_tf.builtin_avg_pool_gap(inputs["pool_probe"]))
    if "i3d_clips" in inputs:
        model = i3d_tf.I3DTF(weights("i3d"))
        out["i3d_logits"] = timed("i3d", lambda: model.logits(inputs["i3d_clips"]))
        out["pool3d_gap"] = np.float64(i3d_tf.pool3d_separable_gap(inputs["pool3d_probe"]))
    i = 0
    while f"resize{i}_images" in inputs:
        images, size = inputs[f"resize{i}_images"], tuple(int(s) for s in inputs[f"resize{i}_size"])
        out[f"resize{i}_tf1"] = resize_tf.tf1_resize_bilinear(images, size)
        out[f"resize{i}_tf2"] = resize_tf.tf2_resize_bilinear(images, size)
        i += 1
    i = 0
    while f"frechet{i}_mu1" in inputs:
        args = [inputs[f"frechet{i}_{k}"] for k in ("mu1", "sigma1", "mu2", "sigma2")]
        for route in ("sqrtm", "tfgan"):
            out[f"frechet{i}_{route}"] = np.float64(frechet_tf.frechet_distance(*args, route=route))
        i += 1
    out["seconds_total"] = np.float64(time.perf_counter() - start)
    np.savez(outputs_path, **out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
