"""Frechet distance computed with TensorFlow's linear algebra, in float64.

Two independent routes to Tr((S1 S2)^(1/2)):
- `sqrtm`: tf.linalg.sqrtm of the (non-symmetric) product S1 S2, whose eigenvalues are real and
  non-negative; the trace of its principal square root;
- `tfgan`: the TF-GAN formula (which the original FVD used): sqrt(S1) from an SVD of the
  symmetric S1, then the trace of the symmetric square root (SVD again) of sqrt(S1) S2 sqrt(S1).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def _symmetric_sqrt(matrix):
    s, u, v = tf.linalg.svd(matrix)
    return tf.matmul(tf.matmul(u, tf.linalg.diag(tf.sqrt(s))), v, transpose_b=True)


def frechet_distance(mu1, sigma1, mu2, sigma2, route: str = "sqrtm") -> float:
    mu1, mu2, sigma1, sigma2 = (tf.constant(np.asarray(a, dtype=np.float64))
                                for a in (mu1, mu2, sigma1, sigma2))
    if route == "sqrtm":
        trace_sqrt = tf.linalg.trace(tf.linalg.sqrtm(tf.matmul(sigma1, sigma2)))
    elif route == "tfgan":
        root = _symmetric_sqrt(sigma1)
        trace_sqrt = tf.linalg.trace(_symmetric_sqrt(tf.matmul(tf.matmul(root, sigma2), root)))
    else:
        raise ValueError(f"unknown route {route!r}")
    diff = mu1 - mu2
    value = (tf.reduce_sum(diff * diff) + tf.linalg.trace(sigma1) + tf.linalg.trace(sigma2)
             - 2.0 * trace_sqrt)
    return float(value.numpy())
