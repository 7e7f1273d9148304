"""Small CNNs: a BN conv net for 28x28 and 8x8 inputs, and the ICN MNIST net."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslj.models.attention import AttentionPool

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class SmallCNN(nn.Module):
    """Stages of two 3x3 conv-BN-leaky-ReLU layers, each stage followed by 2x2 max-pool.

    Works for any input of at least 4x4 (MNIST 28x28 -> 7x7, digits 8x8 -> 2x2), then
    global average pooling, optional dropout and a linear classifier. BatchNorm epsilon
    is Oliver's 1e-3; its decay defaults to 0.99 rather than Oliver's 0.999 because the
    embedded runs last ~10^3 steps, too few for a 0.999 running average to settle.
    """

    num_classes: int
    widths: tuple[int, ...] = (32, 64)
    dropout: float = 0.0
    slope: float = 0.1
    bn_momentum: float = 0.99
    dtype: Any = jnp.float32  # compute dtype; params stay float32, logits are float32
    attention: bool = False  # the SSL report's attention head + bi-pooling (models/attention.py)

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = functools.partial(nn.leaky_relu, negative_slope=self.slope)
        x = x.astype(self.dtype)
        for width in self.widths:
            for _ in range(2):
                x = nn.Conv(width, (3, 3), use_bias=False, kernel_init=conv_init,
                            dtype=self.dtype)(x)
                x = act(nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                     epsilon=1e-3, dtype=self.dtype)(x))
            if min(x.shape[1:3]) >= 4:
                x = nn.max_pool(x, (2, 2), (2, 2))
        if self.attention:
            x = AttentionPool(bn_momentum=self.bn_momentum, dtype=self.dtype,
                              name="attention")(x, train)
        else:
            x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="classifier", dtype=self.dtype)(x).astype(
            jnp.float32)


class ICNMnistNet(nn.Module):
    """ICN's MNIST discriminator: four 5x5 stride-2 convs (64/128/256/512), leaky ReLU,
    no pooling, then a linear layer (the w_k of Eq. 9). No BatchNorm, as in the paper.

    28x28 -> 14 -> 7 -> 4 -> 2 (SAME padding).
    """

    num_classes: int
    widths: tuple[int, ...] = (64, 128, 256, 512)
    slope: float = 0.2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no batch statistics, no dropout
        x = x.astype(self.dtype)
        for width in self.widths:
            x = nn.leaky_relu(nn.Conv(width, (5, 5), strides=2, kernel_init=conv_init,
                                      dtype=self.dtype)(x), self.slope)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, name="classifier", dtype=self.dtype)(x).astype(
            jnp.float32)
