"""I3D (Kinetics-400, TF-Hub / Sonnet graph) in TensorFlow ops, NDHWC.

`weights` maps the official PyTorch key prefixes (TATS `i3d_pretrained_400.pt` layout) to numpy
arrays: `<unit>.conv3d.weight` in DHWIO, `<unit>.bn.{weight,bias,running_mean,running_var}`,
`logits.conv3d.bias`. Convolutions and max pools use TensorFlow's own "SAME" padding (max pools
pad with -inf); batch norm eps 1e-5 as in the TATS port; the head is a [2, 7, 7] VALID average
pool with stride 1, the 1x1x1 logits conv (with bias, no batch norm, no ReLU), and the mean over
the remaining time steps (TF's `Mean:0`).

TensorFlow has no float64 CPU kernels for MaxPool3D / AvgPool3D, so the 3-D pools are done as a
2-D pool over (H, W) followed by a 2-D pool over (T, 1): max and mean are separable over axes, and
TF computes "SAME" padding per axis, so this equals the 3-D op (`pool3d_separable_gap` checks it
against tf.nn.max_pool3d / avg_pool3d in float32).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

BN_EPS = 1e-5

MIXED = ("Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
         "Mixed_5b", "Mixed_5c")
# name -> (kernel, stride) of the max pool that precedes it (TF-Hub graph: MaxPool3d_3a/4a/5a)
POOL_BEFORE = {"Mixed_3b": ((1, 3, 3), (1, 2, 2)),
               "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
               "Mixed_5b": ((2, 2, 2), (2, 2, 2))}


class I3DTF:
    def __init__(self, weights: dict[str, np.ndarray], dtype=tf.float64):
        self.dtype = dtype
        self.w = {k: tf.constant(v, dtype=dtype) for k, v in weights.items()}

    def unit(self, name, x, stride=(1, 1, 1), bn=True, relu=True):
        x = tf.nn.conv3d(x, self.w[f"{name}.conv3d.weight"], strides=(1, *stride, 1),
                         padding="SAME")
        if f"{name}.conv3d.bias" in self.w:
            x = x + self.w[f"{name}.conv3d.bias"]
        if bn:
            x = tf.nn.batch_normalization(
                x, mean=self.w[f"{name}.bn.running_mean"],
                variance=self.w[f"{name}.bn.running_var"], offset=self.w[f"{name}.bn.bias"],
                scale=self.w[f"{name}.bn.weight"], variance_epsilon=BN_EPS)
        return tf.nn.relu(x) if relu else x

    @staticmethod
    def max_pool(x, kernel, stride):
        return pool3d_separable(x, kernel, stride, "SAME", tf.nn.max_pool2d)

    def mixed(self, name, x):
        b0 = self.unit(f"{name}.b0", x)
        b1 = self.unit(f"{name}.b1b", self.unit(f"{name}.b1a", x))
        b2 = self.unit(f"{name}.b2b", self.unit(f"{name}.b2a", x))
        b3 = self.unit(f"{name}.b3b", self.max_pool(x, (3, 3, 3), (1, 1, 1)))
        return tf.concat([b0, b1, b2, b3], axis=-1)

    def logits(self, clips_ndhwc: np.ndarray) -> np.ndarray:
        """[N, T, 224, 224, 3] in [-1, 1] -> time-averaged logits [N, 400]."""
        x = tf.constant(clips_ndhwc, dtype=self.dtype)
        x = self.unit("Conv3d_1a_7x7", x, stride=(2, 2, 2))
        x = self.max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
        x = self.unit("Conv3d_2c_3x3", self.unit("Conv3d_2b_1x1", x))
        for name in MIXED:
            if name in POOL_BEFORE:
                x = self.max_pool(x, *POOL_BEFORE[name])
            x = self.mixed(name, x)
        x = pool3d_separable(x, (2, 7, 7), (1, 1, 1), "VALID", tf.nn.avg_pool2d)
        x = self.unit("logits", x, bn=False, relu=False)  # [N, T', 1, 1, 400]
        return tf.reduce_mean(tf.squeeze(x, axis=[2, 3]), axis=1).numpy()


def pool3d_separable(x, kernel, stride, padding, pool2d):
    """A 3-D pool of NDHWC `x` as `pool2d` over (H, W), then over (T, 1)."""
    n, t, h, w, c = x.shape
    x = pool2d(tf.reshape(x, (n * t, h, w, c)), kernel[1:], stride[1:], padding)
    h, w = x.shape[1], x.shape[2]
    x = pool2d(tf.reshape(x, (n, t, h * w, c)), (kernel[0], 1), (stride[0], 1), padding)
    return tf.reshape(x, (n, x.shape[1], h, w, c))


def pool3d_separable_gap(x: np.ndarray) -> float:
    """max |separable - native 3-D pool| over the I3D's pool shapes, in float32, on NDHWC `x`."""
    x = tf.constant(x, dtype=tf.float32)
    gaps = []
    for kernel, stride in [((3, 3, 3), (1, 1, 1)), *POOL_BEFORE.values(),
                           ((1, 3, 3), (1, 2, 2))]:
        native = tf.nn.max_pool3d(x, (1, *kernel, 1), (1, *stride, 1), "SAME")
        gaps.append(tf.reduce_max(tf.abs(
            native - pool3d_separable(x, kernel, stride, "SAME", tf.nn.max_pool2d))))
    native = tf.nn.avg_pool3d(x, (1, 2, 7, 7, 1), (1, 1, 1, 1, 1), "VALID")
    gaps.append(tf.reduce_max(tf.abs(
        native - pool3d_separable(x, (2, 7, 7), (1, 1, 1), "VALID", tf.nn.avg_pool2d))))
    return float(max(gaps))
