"""Parameter masks as a parallel pytree: the part of SPL the train core runs on.

`TrainState.masks` has exactly the params' structure; a masked leaf holds a full-shaped
float32 array (1 = safe, 0 = harmful; continuous under a soft mask), an unmasked leaf a
scalar 1.0 (never None). Every forward pass runs on `apply_masks(params, masks)` and
every update goes through `gate_updates`, so with no masks (all scalar ones) both cost
one multiply / nothing. How masks are identified and learned is `sslj.spl`'s business;
this module is all the train core knows of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ones_masks(params):
    """All-ones masks: a scalar 1.0 per leaf."""
    return jax.tree.map(lambda _: jnp.ones((), jnp.float32), params)


def apply_masks(params, masks):
    return jax.tree.map(lambda p, m: p * m.astype(p.dtype), params, masks)


def gate_updates(new_params, old_params, masks):
    """`new_params` where the mask is non-zero, `old_params` (bit for bit) where it is
    zero: harmful weights get exactly no update whatever the optimizer did (momentum,
    Adam moments, weight decay). Unmasked (scalar) leaves pass through untouched."""
    def one(new, old, m):
        if m.ndim == 0:
            return new
        return jnp.where(m != 0, new, old)

    return jax.tree.map(one, new_params, old_params, masks)
