"""FID Inception-v3 (the 2015-12-05 TF graph with the FID blocks) in TensorFlow ops, NHWC.

`weights` maps the official PyTorch key prefixes to numpy arrays: `<unit>.conv.weight` in HWIO,
`<unit>.bn.{weight,bias,running_mean,running_var}`. Everything runs in `dtype` (float64 by
default, so the reference's own round-off is far below the float32 model under test).

Graph facts mirrored (pytorch-fid's port of the TF graph, docs/DESIGN.md section 4):
- every unit is conv (no bias) -> batch norm (eps 0.001) -> ReLU;
- stem and grid-reduction convs / max pools are VALID; the others keep the size (SAME);
- Mixed_5b-5d, 6b-6e and 7b pool with a 3x3 stride-1 average that EXCLUDES the zero padding
  (each output divides by the number of real pixels in its window); Mixed_7c's pool branch is a
  3x3 stride-1 max pool; pool3 is the global spatial mean of Mixed_7c.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

BN_EPS = 1e-3


class InceptionTF:
    def __init__(self, weights: dict[str, np.ndarray], dtype=tf.float64):
        self.dtype = dtype
        self.w = {k: tf.constant(v, dtype=dtype) for k, v in weights.items()}

    # --- primitives -------------------------------------------------------------------------
    def unit(self, name: str, x, stride=1, padding="SAME"):
        x = tf.nn.conv2d(x, self.w[f"{name}.conv.weight"], strides=stride, padding=padding)
        x = tf.nn.batch_normalization(
            x, mean=self.w[f"{name}.bn.running_mean"], variance=self.w[f"{name}.bn.running_var"],
            offset=self.w[f"{name}.bn.bias"], scale=self.w[f"{name}.bn.weight"],
            variance_epsilon=BN_EPS)
        return tf.nn.relu(x)

    @staticmethod
    def avg_pool_3x3_exclude_padding(x):
        """3x3 stride-1 SAME average over real pixels only: SAME sum-pool / SAME sum-pool of 1s.

        Written out explicitly instead of trusting tf.nn.avg_pool2d's SAME semantics; the script
        checks separately that tf.nn.avg_pool2d(SAME) gives the same numbers.
        """
        padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        sums = tf.nn.avg_pool2d(padded, 3, 1, "VALID") * 9.0  # VALID over explicit zeros: sum/9
        ones = tf.pad(tf.ones_like(x[:1, :, :, :1]), [[0, 0], [1, 1], [1, 1], [0, 0]])
        counts = tf.nn.avg_pool2d(ones, 3, 1, "VALID") * 9.0
        return sums / counts

    @staticmethod
    def max_pool_3x3_same(x):
        return tf.nn.max_pool2d(x, 3, 1, "SAME")  # TF pads max pools with -inf

    @staticmethod
    def max_pool_3x3_s2(x):
        return tf.nn.max_pool2d(x, 3, 2, "VALID")

    # --- blocks -----------------------------------------------------------------------------
    def block_a(self, name, x):  # Mixed_5b/5c/5d
        b1 = self.unit(f"{name}.branch1x1", x)
        b5 = self.unit(f"{name}.branch5x5_2", self.unit(f"{name}.branch5x5_1", x))
        b3 = self.unit(f"{name}.branch3x3dbl_1", x)
        b3 = self.unit(f"{name}.branch3x3dbl_3", self.unit(f"{name}.branch3x3dbl_2", b3))
        bp = self.unit(f"{name}.branch_pool", self.avg_pool_3x3_exclude_padding(x))
        return tf.concat([b1, b5, b3, bp], axis=-1)

    def block_b(self, name, x):  # Mixed_6a: 35 -> 17
        b3 = self.unit(f"{name}.branch3x3", x, stride=2, padding="VALID")
        bd = self.unit(f"{name}.branch3x3dbl_2", self.unit(f"{name}.branch3x3dbl_1", x))
        bd = self.unit(f"{name}.branch3x3dbl_3", bd, stride=2, padding="VALID")
        return tf.concat([b3, bd, self.max_pool_3x3_s2(x)], axis=-1)

    def block_c(self, name, x):  # Mixed_6b-6e
        b1 = self.unit(f"{name}.branch1x1", x)
        b7 = x
        for i in (1, 2, 3):
            b7 = self.unit(f"{name}.branch7x7_{i}", b7)
        bd = x
        for i in (1, 2, 3, 4, 5):
            bd = self.unit(f"{name}.branch7x7dbl_{i}", bd)
        bp = self.unit(f"{name}.branch_pool", self.avg_pool_3x3_exclude_padding(x))
        return tf.concat([b1, b7, bd, bp], axis=-1)

    def block_d(self, name, x):  # Mixed_7a: 17 -> 8
        b3 = self.unit(f"{name}.branch3x3_1", x)
        b3 = self.unit(f"{name}.branch3x3_2", b3, stride=2, padding="VALID")
        b7 = x
        for i in (1, 2, 3):
            b7 = self.unit(f"{name}.branch7x7x3_{i}", b7)
        b7 = self.unit(f"{name}.branch7x7x3_4", b7, stride=2, padding="VALID")
        return tf.concat([b3, b7, self.max_pool_3x3_s2(x)], axis=-1)

    def block_e(self, name, x, pool):  # Mixed_7b (avg pool), Mixed_7c (max pool)
        b1 = self.unit(f"{name}.branch1x1", x)
        b3 = self.unit(f"{name}.branch3x3_1", x)
        b3 = tf.concat([self.unit(f"{name}.branch3x3_2a", b3),
                        self.unit(f"{name}.branch3x3_2b", b3)], axis=-1)
        bd = self.unit(f"{name}.branch3x3dbl_2", self.unit(f"{name}.branch3x3dbl_1", x))
        bd = tf.concat([self.unit(f"{name}.branch3x3dbl_3a", bd),
                        self.unit(f"{name}.branch3x3dbl_3b", bd)], axis=-1)
        pooled = (self.avg_pool_3x3_exclude_padding(x) if pool == "avg"
                  else self.max_pool_3x3_same(x))
        bp = self.unit(f"{name}.branch_pool", pooled)
        return tf.concat([b1, b3, bd, bp], axis=-1)

    # --- graph ------------------------------------------------------------------------------
    def pool3(self, images_nhwc: np.ndarray) -> np.ndarray:
        """[N, 299, 299, 3] in [-1, 1] -> pool3 features [N, 2048]."""
        x = tf.constant(images_nhwc, dtype=self.dtype)
        x = self.unit("Conv2d_1a_3x3", x, stride=2, padding="VALID")  # 149
        x = self.unit("Conv2d_2a_3x3", x, padding="VALID")             # 147
        x = self.unit("Conv2d_2b_3x3", x)                               # 147
        x = self.max_pool_3x3_s2(x)                                     # 73
        x = self.unit("Conv2d_3b_1x1", x, padding="VALID")             # 73
        x = self.unit("Conv2d_4a_3x3", x, padding="VALID")             # 71
        x = self.max_pool_3x3_s2(x)                                     # 35
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = self.block_a(name, x)
        x = self.block_b("Mixed_6a", x)
        for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = self.block_c(name, x)
        x = self.block_d("Mixed_7a", x)
        x = self.block_e("Mixed_7b", x, pool="avg")
        x = self.block_e("Mixed_7c", x, pool="max")
        return tf.reduce_mean(x, axis=[1, 2]).numpy()


def builtin_avg_pool_gap(x: np.ndarray) -> float:
    """max |explicit exclude-padding average - tf.nn.avg_pool2d(3, 1, SAME)| on `x` (NHWC)."""
    x = tf.constant(x, dtype=tf.float64)
    explicit = InceptionTF.avg_pool_3x3_exclude_padding(x)
    builtin = tf.nn.avg_pool2d(x, 3, 1, "SAME")
    return float(tf.reduce_max(tf.abs(explicit - builtin)))
