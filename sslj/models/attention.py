"""The SSL report's attention head (Task 3) and bi-pooling, for any conv backbone.

The report (Sec. 2.3): on the feature maps of the last non-classifying layer, an
attention module of "two 1x1 Conv layers, a Batch normalization layer and a ReLU"
produces two attention maps, which are summed element-wise into one map A; bi-pooling
multiplies A with the feature maps, and the classifier sees the pooled result. The
report is silent on the widths, the order of the layers and the pooling; chosen here:
conv1x1 (C -> C, no bias) -> BN -> ReLU -> conv1x1 (C -> 2, with bias), A = sum of the
two output channels, pooled features = mean over positions of A * features (global
average pooling of the attended maps, so the classifier's input keeps the backbone's
scale). A (N, H * W, flattened) is sown into the `intermediates` collection under
`attention`, where the attention-KL FixMatch (`sslj.methods.fixmatch`) reads it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslj.models.batchnorm import batch_norm


class AttentionPool(nn.Module):
    """features (N, H, W, C) -> bi-pooled (N, C); sows the summed map (N, H * W)."""

    bn_momentum: float = 0.99
    epsilon: float = 1e-3
    dtype: Any = jnp.float32
    bn_stats: str = "auto"  # BatchNorm sums: sslj.models.batchnorm

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        a = nn.Conv(c, (1, 1), use_bias=False, dtype=self.dtype, name="att_conv1")(x)
        a = batch_norm(self.bn_stats, use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=self.epsilon, dtype=self.dtype, name="att_bn")(a)
        a = nn.relu(a)
        a = nn.Conv(2, (1, 1), dtype=self.dtype, name="att_conv2")(a)
        att = jnp.sum(a, axis=-1, keepdims=True)  # the two maps summed
        self.sow("intermediates", "attention",
                 att.reshape(att.shape[0], -1).astype(jnp.float32))
        return jnp.mean(att * x, axis=(1, 2))
