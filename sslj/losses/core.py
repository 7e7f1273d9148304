"""Basic losses shared by every method."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array, where: jax.Array | None = None,
                  reduction: str = "mean"):
    """Softmax cross-entropy -log softmax(logits)[label]: its mean over the (masked) batch,
    or per example with `reduction="none"`.

    `labels` are int class ids; `where` (0/1 per example) drops examples from the mean.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if reduction == "none":
        return nll
    return masked_mean(nll, where)


def softmax_squared_l2(logits: jax.Array, target_logits: jax.Array) -> jax.Array:
    """Mean over the batch of ||softmax(logits) - softmax(target_logits)||_2^2 (summed
    over classes): SPL's consistency regulariser Omega (Eq. 7), C x `softmax_mse`."""
    p = jax.nn.softmax(logits.astype(jnp.float32))
    q = jax.nn.softmax(target_logits.astype(jnp.float32))
    return jnp.mean(jnp.sum(jnp.square(p - q), axis=-1))


def softmax_mse(logits: jax.Array, target_logits: jax.Array) -> jax.Array:
    """Mean over batch and classes of (softmax(logits) - softmax(target_logits))^2.

    The Pi-model / Mean Teacher consistency (Laine & Aila 2017; Oliver et al. 2018).
    The caller decides whether the target carries gradient.
    """
    p = jax.nn.softmax(logits.astype(jnp.float32))
    q = jax.nn.softmax(target_logits.astype(jnp.float32))
    return jnp.mean(jnp.square(p - q))


def entropy(logits: jax.Array) -> jax.Array:
    """Per-example Shannon entropy -sum_c p_c log p_c of softmax(logits), in nats."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """Per-example KL(p || q) = sum_c p_c (log p_c - log q_c), p = softmax(p_logits).

    Written with log-softmax on both sides (no log of a rounded probability), the form
    of Oliver et al.'s `kl_divergence_with_logit(q_logit=p_logits, p_logit=q_logits)`.
    """
    logp = jax.nn.log_softmax(p_logits.astype(jnp.float32))
    logq = jax.nn.log_softmax(q_logits.astype(jnp.float32))
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


def masked_mean(values: jax.Array, where: jax.Array | None = None) -> jax.Array:
    """Mean of `values` over the examples with where = 1 (0 when none is selected).

    TF1's SUM_BY_NONZERO_WEIGHTS reduction, which Oliver et al.'s losses use.
    """
    if where is None:
        return jnp.mean(values)
    where = where.astype(values.dtype)
    return jnp.sum(values * where) / jnp.maximum(jnp.sum(where), 1.0)


def negative_sampling(logits: jax.Array, negatives: jax.Array) -> jax.Array:
    """NS3L's per-example loss (Chen et al., Eq. of Sec. 2 / Algorithm 1):
    -log(1 - sum_{j in N} softmax(logits)_j), N the example's negative classes
    (`negatives`, a boolean mask of the logits' shape).

    Computed in log space: 1 - sum_{j in N} p_j = sum_{j not in N} p_j, so the loss is
    logsumexp(z) - logsumexp(z_j, j not in N), exact for any mass of the negatives (finite
    while one class is not a negative) and with a gradient softmax(z) - softmax(z | not N)
    whose entries lie in [-1, 1]: nothing to clamp. The official code computes 1 - sum in
    float32 and clamps it to [1e-8, 1] before the log: the same loss up to rounding while
    the negatives' mass is below ~1 - 1e-6, then a value capped at -log(1e-8) = 18.4 with
    zero gradient; here the loss keeps growing (-log(1e-7) = 16.1 exactly at mass
    1 - 1e-7) and keeps pulling the mass down. An example with no negatives has loss 0,
    and so (the convention here, where the official clamp gives 18.4 with zero gradient)
    does one whose negatives cover every class: both carry no information and no gradient.
    """
    z = logits.astype(jnp.float32)
    negatives = negatives.astype(jnp.bool_)
    informative = ~jnp.all(negatives, axis=-1, keepdims=True)
    drop = negatives & informative  # an all-negative row keeps every class: loss 0
    kept = jnp.where(drop, -jnp.inf, z)
    return jax.nn.logsumexp(z, axis=-1) - jax.nn.logsumexp(kept, axis=-1)
