"""TrainState: the one pytree every step reads and returns."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from sslj.train.masking import ones_masks


class TrainState(flax.struct.PyTreeNode):
    """Everything a step needs and a checkpoint stores.

    `masks` has the params' structure (a scalar 1.0 per unmasked leaf); `mask_scores`
    and `mask_opt_state` are SPL's relaxed masks (empty until SPL sets them); `extra`
    holds method state; `rng` is the base key, folded with `step` every step.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    masks: Any
    rng: jax.Array
    mask_scores: Any = flax.struct.field(default_factory=dict)
    mask_opt_state: Any = flax.struct.field(default_factory=dict)
    extra: Any = flax.struct.field(default_factory=dict)


def create_train_state(model, optimizer: optax.GradientTransformation, rng: jax.Array,
                       image_shape, extra=None) -> TrainState:
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init({"params": init_rng, "dropout": init_rng},
                           jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.copy, params),  # own buffers: the step donates both
        masks=ones_masks(params),
        rng=state_rng,
        extra=extra or {},
    )
