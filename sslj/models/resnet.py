"""CIFAR ResNet-32 / ResNet-44 (He et al. 2016, Sec. 4.2).

Three stages of 16/32/64 channels with n = (depth - 2) / 6 basic blocks each,
post-activation (conv-BN-ReLU-conv-BN, add, ReLU), option-A shortcuts (subsample and
zero-pad channels, no parameters): ~0.46 M (32) / ~0.66 M (44) parameters.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslj.models.batchnorm import batch_norm

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nn.Module):
    features: int
    stride: int
    dtype: Any = jnp.float32
    bn_stats: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool):
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
        bn = functools.partial(batch_norm, self.bn_stats, use_running_average=not train,
                               momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        y = nn.relu(bn()(conv(self.features, (3, 3), strides=self.stride)(x)))
        y = bn()(conv(self.features, (3, 3))(y))
        if x.shape[-1] != self.features:
            x = x[:, :: self.stride, :: self.stride, :]
            pad = self.features - x.shape[-1]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    num_classes: int
    depth: int = 32
    dtype: Any = jnp.float32  # compute dtype; params stay float32, logits are float32
    bn_stats: str = "auto"  # BatchNorm sums: sslj.models.batchnorm

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {self.depth}")
        n = (self.depth - 2) // 6
        x = x.astype(self.dtype)
        x = nn.Conv(16, (3, 3), use_bias=False, kernel_init=conv_init, name="init_conv",
                    dtype=self.dtype)(x)
        x = nn.relu(batch_norm(self.bn_stats, use_running_average=not train, momentum=0.9,
                               epsilon=1e-5, dtype=self.dtype)(x))
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                x = BasicBlock(width, 2 if (stage > 0 and i == 0) else 1, self.dtype,
                               self.bn_stats)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier", dtype=self.dtype)(x).astype(
            jnp.float32)
