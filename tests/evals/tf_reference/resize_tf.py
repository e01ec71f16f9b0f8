"""Bilinear resizes in TensorFlow, for the parity of evals.resize's named methods.

- `tf_bilinear` is TF1's `resize_bilinear(align_corners=False, half_pixel_centers=False)`
  (source coordinate i * in / out), run on float32 [0, 255] values as torch-fidelity and the
  original TF FVD do.
- `torch_bilinear` (source (i + 0.5) * in / out - 0.5, clamped at 0, no antialias) is TF2's
  `tf.image.resize(method="bilinear", antialias=False)`, whose half-pixel centres are the same.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def tf1_resize_bilinear(images_nhwc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x = tf.constant(np.asarray(images_nhwc, dtype=np.float32))
    return tf.compat.v1.image.resize_bilinear(x, size, align_corners=False,
                                              half_pixel_centers=False).numpy()


def tf2_resize_bilinear(images_nhwc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x = tf.constant(np.asarray(images_nhwc, dtype=np.float64))
    return tf.image.resize(x, size, method="bilinear", antialias=False).numpy()
