"""Small CNNs: a BN conv net for 28x28 and 8x8 inputs, and the ICN MNIST net."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslj.models.attention import AttentionPool
from sslj.models.batchnorm import batch_norm

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
    bn_stats: str = "auto"  # BatchNorm sums: sslj.models.batchnorm

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = functools.partial(nn.leaky_relu, negative_slope=self.slope)
        x = x.astype(self.dtype)
        for width in self.widths:
            for _ in range(2):
                x = nn.Conv(width, (3, 3), use_bias=False, kernel_init=conv_init,
                            dtype=self.dtype)(x)
                x = act(batch_norm(self.bn_stats, use_running_average=not train,
                                   momentum=self.bn_momentum, epsilon=1e-3,
                                   dtype=self.dtype)(x))
            if min(x.shape[1:3]) >= 4:
                x = nn.max_pool(x, (2, 2), (2, 2))
        if self.attention:
            x = AttentionPool(bn_momentum=self.bn_momentum, dtype=self.dtype,
                              bn_stats=self.bn_stats, name="attention")(x, train)
        else:
            x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="classifier", dtype=self.dtype)(x).astype(
            jnp.float32)


CONV_IMPLS = ("xla", "patches", "slices")


def slice_patches(x: jax.Array, kh: int, kw: int, stride: int) -> jax.Array:
    """The SAME-padded (kh, kw) patches of NHWC `x` at `stride` as (N, H', W', kh kw C),
    ordered (row, column, channel), built from kh kw strided slices of the padded image.
    Their backward is kh kw strided pads; `lax.conv_general_dilated_patches` instead runs
    a grouped convolution with one-hot kernels both ways, which XLA:CPU runs slowly."""
    n, h, w, c = x.shape
    ho, wo = -(-h // stride), -(-w // stride)
    ph, pw = max((ho - 1) * stride + kh - h, 0), max((wo - 1) * stride + kw - w, 0)
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    return jnp.concatenate([jax.lax.slice(x, (0, i, j, 0), (n, i + span_h, j + span_w, c),
                                          (1, stride, stride, 1))
                            for i in range(kh) for j in range(kw)], axis=-1)


class PatchConv(nn.Module):
    """A strided convolution computed as image patches + one matmul (im2col).

    Same parameters as `nn.Conv` (`kernel` (kh, kw, in, out), `bias` (out)), so a
    checkpoint of either loads into the other, and the same SAME-padded output. Why:
    XLA:CPU lowers a 5x5 stride-2 convolution on a 4x4 input (the ICN net's last layer)
    to a loop that ran at ~0.8 GFLOP/s on the 2-core machine, while the patches + matmul
    form runs at matmul speed (benchmark: experiments/benchmarks/icn_sampler.py).
    `impl`: "patches" takes the patches from `lax.conv_general_dilated_patches`,
    "slices" from `slice_patches` (the same values; a different summation order in the
    matmul, so not bit-identical): on the ICN net at the paper's width a gradient to the
    weights took 808 -> 196 ms and one to the input 737 -> 144 ms (batch 128, 2-core
    CPU, side by side).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    kernel_init: Any = conv_init
    dtype: Any = jnp.float32
    impl: str = "patches"

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.impl == "slices":  # (N, H', W', kh * kw * cin), the channel fastest
            patches = slice_patches(x, kh, kw, self.strides)
            w = kernel.reshape(kh * kw * cin, self.features)
        elif self.impl == "patches":  # (N, H', W', cin * kh * kw), the channel slowest
            patches = jax.lax.conv_general_dilated_patches(
                x, (kh, kw), (self.strides, self.strides), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
            w = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin * kh * kw, self.features)
        else:
            raise ValueError(f"PatchConv impl {self.impl!r}; allowed: patches, slices")
        return (patches @ w.astype(self.dtype) + bias.astype(self.dtype)).astype(self.dtype)


class ICNMnistNet(nn.Module):
    """ICN's MNIST discriminator: four 5x5 stride-2 convs (64/128/256/512), leaky ReLU,
    no pooling, then a linear layer (the w_k of Eq. 9). No BatchNorm, as in the paper.

    28x28 -> 14 -> 7 -> 4 -> 2 (SAME padding). `conv_impl`: "slices" (default; im2col
    from strided slices + one matmul, `PatchConv`), "patches" (the same from
    `lax.conv_general_dilated_patches`; the default until the slices were measured 3.6x
    faster for the reclassification step at the paper's width and 2.6x for the sampler,
    `experiments/benchmarks/icn_sampler.py`) or "xla" (`nn.Conv`, 16-27x slower than the
    slices there, 2-5x at quarter width): the same parameters, the same outputs up to
    rounding.
    """

    num_classes: int
    widths: tuple[int, ...] = (64, 128, 256, 512)
    slope: float = 0.2
    conv_impl: str = "slices"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no batch statistics, no dropout
        x = x.astype(self.dtype)
        for i, width in enumerate(self.widths):
            if self.conv_impl in ("patches", "slices"):
                conv = PatchConv(width, (5, 5), strides=2, dtype=self.dtype,
                                 impl=self.conv_impl, name=f"Conv_{i}")
            else:
                conv = nn.Conv(width, (5, 5), strides=2, kernel_init=conv_init,
                               dtype=self.dtype, name=f"Conv_{i}")
            x = nn.leaky_relu(conv(x), self.slope)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, name="classifier", dtype=self.dtype)(x).astype(
            jnp.float32)


class OneVsAll(nn.Module):
    """K binary classifiers with stacked parameters (ICN's one-vs-all formulation, Eq. 5):
    `base` built with one output, vmapped over a leading axis of size `num_classes` of
    every variable; the output is (N, K), net k's logit in column k (the prediction is
    the argmax, the paper's f(x) = argmax_k exp(w_k . phi_k(x))). BatchNorm statistics,
    if the base has them, are per net too."""

    base: Any  # a model factory taking num_classes
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        nets = nn.vmap(lambda mdl, x, train: mdl(x, train),
                       variable_axes={"params": 0, "batch_stats": 0},
                       split_rngs={"params": True, "dropout": True},
                       in_axes=(None, None), out_axes=1, axis_size=self.num_classes)
        out = nets(self.base(num_classes=1, dtype=self.dtype, name="nets"), x, train)
        return out[..., 0]


class DomainHead(nn.Module):
    """A classifier with one more output, MTC's in-distribution head (Yu et al. 2020:
    `fc2`, one logit beside the class head `fc`, both linear on the same features):
    `base` built with num_classes + 1 outputs; returns the class logits (N, K) and sows
    the extra column, the domain logit (N,), into `intermediates` as `domain_logit`
    (read by a pass with `capture=True`; inference ignores it)."""

    base: Any  # a model factory taking num_classes
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = self.base(num_classes=self.num_classes + 1, dtype=self.dtype, name="net")(
            x, train)
        self.sow("intermediates", "domain_logit", out[:, -1])
        return out[:, :-1]
