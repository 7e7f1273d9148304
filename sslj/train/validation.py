"""Checks of the fields the train core reads: optimizer, schedule, ramp, BatchNorm
policy, step counts and intervals, batch sizes (divisible by the devices), EMA, seed."""

from __future__ import annotations

from sslj.common.checks import (
    ConfigError,
    backend,
    check_choice,
    check_divisible,
    check_number,
    device_count,
    leaf_fields,
)
from sslj.train.optim import DECAY_PARAMS, OPTIMIZERS
from sslj.train.schedules import LR_SCHEDULES, RAMPS
from sslj.train.step import BN_UPDATE_POLICIES

BATCH_SIZES = ("batch_size", "unlabeled_batch_size", "eval_batch_size")


def validate_config(config, devices: int | None = None) -> None:
    """Raises `ConfigError` for the first invalid train field; `devices` is the mesh size
    the batches are split over (default: every device)."""
    check_choice(config, "bn_update", BN_UPDATE_POLICIES)
    check_choice(config, "optimizer.name", OPTIMIZERS)
    if "decay_params" in config.optimizer:
        check_choice(config, "optimizer.decay_params", DECAY_PARAMS)
    check_choice(config, "optimizer.schedule", LR_SCHEDULES)
    check_choice(config, "ramp.kind", RAMPS)
    check_number(config, "seed", low=0, integer=True)
    for field in ("num_steps", *BATCH_SIZES, "eval_every", "log_every", "checkpoint_every"):
        check_number(config, field, low=1, integer=True)
    check_number(config, "optimizer.lr", low=0.0, low_open=True)
    check_number(config, "optimizer.weight_decay", low=0.0)
    check_number(config, "optimizer.decay_factor", low=0.0)
    check_number(config, "ramp.steps", low=0, integer=True)
    check_number(config, "ema_decay", low=0.0, high=1.0, high_open=True)
    for field in ("keep_checkpoints", "median_last_evals"):
        if field in config:
            check_number(config, field, low=1, integer=True)
    for field in ("b1", "b2", "momentum"):
        if field in config.optimizer:
            check_number(config, f"optimizer.{field}", low=0.0, high=1.0, high_open=True)
    if "eps" in config.optimizer:
        check_number(config, "optimizer.eps", low=0.0)
    # every loss weight of every section (pi_model.weight, vat.entmin_weight, ...)
    for field in leaf_fields(config):
        name = field.rsplit(".", 1)[-1]
        if (name == "weight" or name.endswith("_weight")) and not field.startswith(
                "method_overrides."):
            check_number(config, field, low=0.0)
    n_dev = devices if devices is not None else device_count()
    for field in BATCH_SIZES:
        check_divisible(config, field, n_dev)
    if config.data.get("on_device") == "yes" and n_dev > 1 and backend() == "cpu":
        raise ConfigError("data.on_device", f"yes on {n_dev} CPU devices can deadlock "
                          "XLA:CPU's in-process collectives (sslj/data/pipeline.py)",
                          ["auto", "no"])
