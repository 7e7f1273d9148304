"""BatchNorm whose batch reductions are matrix products, for XLA:CPU.

`BatchNorm` is a drop-in for `flax.linen.BatchNorm` as sslj's models use it (feature
axis last, scale and bias, no cross-device `axis_name`: under `jax.jit` with a sharded
batch XLA inserts the collectives): the same parameter names (`scale`, `bias`), the same
`batch_stats` (`mean`, `var`: the biased batch variance, E[x^2] - E[x]^2 clipped at 0 as
Flax's `use_fast_variance`), the same running-average update and the same float32
statistics for a bfloat16 compute dtype, so checkpoints and published numbers carry over.

`stats="matmul"` computes every sum over the batch and spatial axes (M = N H W rows of C
channels) as a product with a vector of ones, in the forward pass and in the backward
pass: XLA:CPU runs those as GEMVs, several times faster than its reduction loops over
the leading axis (measured, experiments/benchmarks/README.md). The derivative is a
`jax.custom_jvp` written so that its transpose (reverse mode) also sums by matrix
products: reverse mode gets the closed-form BatchNorm backward
    dx = scale inv (g - mean(g) - xhat mean(g xhat)),   xhat = (x - mean) inv,
and forward mode (VAT's exact Hessian-vector product, forward over reverse) works too.
The sums differ from Flax's reduction in rounding only (float32: ~1e-6 relative;
`tests/test_batchnorm.py` checks outputs, gradients, second derivatives and running
statistics against `nn.BatchNorm`). `stats="reduce"` is `nn.BatchNorm`'s computation
itself; `"auto"` (the default) is "matmul" on the CPU backend and "reduce" elsewhere
(GPUs and TPUs reduce fast, and a TPU's default float32 matmul precision would be
bfloat16's; the products here ask for the highest precision anyway).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

BN_STATS = ("auto", "matmul", "reduce")
_HIGHEST = lax.Precision.HIGHEST


def resolve_stats(stats: str) -> str:
    """"matmul" or "reduce" for a `stats` setting ("auto": by the default backend)."""
    if stats not in BN_STATS:
        raise ValueError(f"bn_stats={stats!r}; allowed: {list(BN_STATS)}")
    if stats == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "reduce"
    return stats


def _colsum(a):
    """(M, C) -> (C,): the column sums as ones(M) @ a."""
    return lax.dot_general(jnp.ones((a.shape[0],), a.dtype), a, (((0,), (0,)), ((), ())),
                           precision=_HIGHEST)


def _rows(v, m: int):
    """(C,) -> (M, C): v on every row as ones(M, 1) @ v(1, C), a product whose transpose
    is `_colsum` (a broadcast's transpose would be a reduction)."""
    return lax.dot_general(jnp.ones((m, 1), v.dtype), v[None, :], (((1,), (0,)), ((), ())),
                           precision=_HIGHEST)


@jax.custom_jvp
def normalize_rows(x, scale, bias, epsilon):
    """Training-mode BatchNorm of rows x (M, C), float32: (y, mean, var)."""
    m = x.shape[0]
    mean = _colsum(x) / m
    var = jnp.maximum(_colsum(x * x) / m - mean * mean, 0.0)
    inv = lax.rsqrt(var + epsilon)
    return (x - mean) * (inv * scale) + bias, mean, var


@normalize_rows.defjvp
def _normalize_rows_jvp(primals, tangents):
    x, scale, bias, epsilon = primals
    tx, tscale, tbias, _ = tangents  # epsilon is a constant of the model
    m = x.shape[0]
    mean = _colsum(x) / m
    var = jnp.maximum(_colsum(x * x) / m - mean * mean, 0.0)
    inv = lax.rsqrt(var + epsilon)
    xc = x - mean
    xhat = xc * inv
    y = xhat * scale + bias
    # tangents, every sum over rows and every spread over rows a matrix product
    tmean = _colsum(tx) / m
    tvar = 2.0 * _colsum(xc * tx) / m
    tinv = -0.5 * inv * inv * inv * tvar
    txhat = (tx - _rows(tmean, m)) * inv + xc * _rows(tinv, m)
    ty = txhat * scale + xhat * _rows(tscale, m) + _rows(tbias, m)
    return (y, mean, var), (ty, tmean, tvar)


def batch_norm(stats: str = "auto", **kwargs) -> nn.Module:
    """A BatchNorm layer: `nn.BatchNorm(**kwargs)` itself for `stats` "reduce" (or "auto"
    off the CPU), `BatchNorm(**kwargs)` for "matmul" (or "auto" on the CPU). Both are
    named `BatchNorm_<i>` by Flax and hold the same variables."""
    if resolve_stats(stats) == "reduce":
        return nn.BatchNorm(**kwargs)
    return BatchNorm(**kwargs)


class BatchNorm(nn.Module):
    """`flax.linen.BatchNorm` over the last axis with its sums as matrix products (see
    the module docstring); same arguments as sslj uses them, same variables."""

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None):
        use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                             use_running_average)
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean",
                                lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var",
                               lambda: jnp.ones((features,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        out_dtype = self.dtype or jnp.result_type(x, scale)
        stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
        scale, bias = scale.astype(stat_dtype), bias.astype(stat_dtype)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
            y = (x.astype(stat_dtype) - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
            return y.astype(out_dtype)
        rows = x.reshape(-1, features).astype(stat_dtype)
        y, mean, var = normalize_rows(rows, scale, bias, self.epsilon)
        if not self.is_initializing():
            mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
            ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
        return y.reshape(x.shape).astype(out_dtype)
