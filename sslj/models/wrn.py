"""WRN-28-2 as in Oliver et al.'s testbed (realistic-ssl-evaluation).

Pre-activation residual units, widths 16 -> 32/64/128 (widen factor 2), 4 units per
stage, `activate_before_residual` only in the first stage, leaky ReLU 0.1, BatchNorm
decay 0.999 and epsilon 1e-3, conv init N(0, sqrt(2 / (k*k*out))) (He, fan-out), logit
layer Glorot normal. A shortcut that changes width is a strided 1x1 conv, as in the
official `wide_resnet` (lib/networks.py): 1,467,610 parameters for 10 classes.
`attention=True` replaces the global average pooling by the SSL report's attention head
and bi-pooling (`sslj.models.attention`), for the attention-KL FixMatch.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslj.models.attention import AttentionPool
from sslj.models.batchnorm import batch_norm

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _bn(train: bool, dtype, stats: str, name=None):
    return batch_norm(stats, use_running_average=not train, momentum=0.999, epsilon=1e-3,
                      name=name, dtype=dtype)


class ResidualUnit(nn.Module):
    features: int
    stride: int
    activate_before_residual: bool = False
    slope: float = 0.1
    dtype: Any = jnp.float32
    bn_stats: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool):
        act = functools.partial(nn.leaky_relu, negative_slope=self.slope)
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        if self.activate_before_residual:
            x = act(_bn(train, self.dtype, self.bn_stats)(x))
            shortcut = x
        else:
            shortcut = x
            x = act(_bn(train, self.dtype, self.bn_stats)(x))
        y = conv(self.features, (3, 3), strides=self.stride)(x)
        y = act(_bn(train, self.dtype, self.bn_stats)(y))
        y = conv(self.features, (3, 3))(y)
        if shortcut.shape[-1] != self.features:
            shortcut = conv(self.features, (1, 1), strides=self.stride, name="conv1x1")(shortcut)
        return y + shortcut


class WideResNet(nn.Module):
    num_classes: int
    depth: int = 28
    widen_factor: int = 2
    slope: float = 0.1
    dtype: Any = jnp.float32  # compute dtype; params stay float32, logits are float32
    attention: bool = False  # the SSL report's attention head + bi-pooling (models/attention.py)
    bn_stats: str = "auto"  # BatchNorm sums: sslj.models.batchnorm

    @nn.compact
    def __call__(self, x, train: bool = False):
        units = (self.depth - 4) // 6
        widths = [16 * self.widen_factor * 2**i for i in range(3)]
        x = x.astype(self.dtype)
        x = nn.Conv(16, (3, 3), use_bias=False, kernel_init=conv_init, name="init_conv",
                    dtype=self.dtype)(x)
        for stage, (width, stride) in enumerate(zip(widths, (1, 2, 2), strict=True)):
            for i in range(units):
                x = ResidualUnit(width, stride if i == 0 else 1,
                                 activate_before_residual=(stage == 0 and i == 0),
                                 slope=self.slope, dtype=self.dtype,
                                 bn_stats=self.bn_stats)(x, train)
        x = nn.leaky_relu(_bn(train, self.dtype, self.bn_stats, "final_bn")(x), self.slope)
        if self.attention:
            x = AttentionPool(bn_momentum=0.999, dtype=self.dtype, bn_stats=self.bn_stats,
                              name="attention")(x, train)
        else:
            x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.glorot_normal(),
                        name="classifier", dtype=self.dtype)(x).astype(jnp.float32)
