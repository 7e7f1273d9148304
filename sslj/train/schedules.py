"""Learning-rate schedules and loss-weight ramps: functions of the (traced) step."""

from __future__ import annotations

import jax.numpy as jnp
import optax

RAMPS = ("constant", "oliver_exp", "linear", "warmup")
LR_SCHEDULES = ("constant", "staircase", "fixmatch_cosine", "cosine")


def ramp(kind: str, steps: int):
    """Weight multiplier in [0, 1] as a function of the step.

    `oliver_exp`: exp(-5 (1 - t / T)^2) for t < T, then 1 (Laine & Aila; Oliver et al.).
    `linear`: t / T clipped to 1. `warmup`: 0 before T, then 1 (the SSL report's
    warm-up epochs on labeled data only). `constant`: 1.
    """
    if kind == "constant" or steps <= 0:
        return lambda step: jnp.ones((), jnp.float32)
    if kind == "oliver_exp":
        def oliver_exp(step):
            t = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
            return jnp.exp(-5.0 * jnp.square(1.0 - t))
        return oliver_exp
    if kind == "linear":
        return lambda step: jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
    if kind == "warmup":
        return lambda step: (jnp.asarray(step) >= steps).astype(jnp.float32)
    raise ValueError(f"unknown ramp {kind!r}")


def learning_rate(opt_config, num_steps: int) -> optax.Schedule:
    """`constant`; `staircase` (x decay_factor at each of decay_steps, Oliver: x0.2 at
    400k of 500k); `fixmatch_cosine` (lr cos(7 pi k / (16 K)), Sohn et al. 2020);
    `cosine` (lr (1 + cos(pi k / K)) / 2, to 0 at the end: Curriculum Labeling's
    rampdown, Loshchilov & Hutter's SGDR without restarts)."""
    lr = float(opt_config.lr)
    kind = opt_config.schedule
    if kind == "constant":
        return optax.constant_schedule(lr)
    if kind == "staircase":
        boundaries = opt_config.decay_steps
        if isinstance(boundaries, int):
            boundaries = (boundaries,)
        return optax.piecewise_constant_schedule(
            lr, {int(b): float(opt_config.decay_factor) for b in boundaries})
    if kind == "fixmatch_cosine":
        return lambda step: lr * jnp.cos(7.0 * jnp.pi * jnp.asarray(step, jnp.float32)
                                         / (16.0 * num_steps))
    if kind == "cosine":
        return lambda step: lr * 0.5 * (1.0 + jnp.cos(
            jnp.pi * jnp.minimum(jnp.asarray(step, jnp.float32) / num_steps, 1.0)))
    raise ValueError(f"unknown schedule {kind!r}")
