"""Basic losses shared by every method."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array, where: jax.Array | None = None):
    """Mean softmax cross-entropy -log softmax(logits)[label] over the (masked) batch.

    `labels` are int class ids; `where` (0/1 per example) drops examples from the mean.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if where is None:
        return jnp.mean(nll)
    where = where.astype(nll.dtype)
    return jnp.sum(nll * where) / jnp.maximum(jnp.sum(where), 1.0)


def softmax_mse(logits: jax.Array, target_logits: jax.Array) -> jax.Array:
    """Mean over batch and classes of (softmax(logits) - softmax(target_logits))^2.

    The Pi-model / Mean Teacher consistency (Laine & Aila 2017; Oliver et al. 2018).
    The caller decides whether the target carries gradient.
    """
    p = jax.nn.softmax(logits.astype(jnp.float32))
    q = jax.nn.softmax(target_logits.astype(jnp.float32))
    return jnp.mean(jnp.square(p - q))
