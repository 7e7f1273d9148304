"""Checks of the `spl` section."""

from __future__ import annotations

import re

from sslj.common.checks import (
    ConfigError,
    check_bool,
    check_choice,
    check_divisible,
    check_number,
    device_count,
    get_field,
)
from sslj.spl.bilevel import (
    CONSISTENCY_NORMALIZATIONS,
    INNER_OPTIMIZERS,
    OUTER_LOSSES,
    OUTER_OPTIMIZERS,
    RANK_BY,
)
from sslj.spl.masks import IDENTIFY, MASK_KINDS

DELTA_SOURCES = ("split", "given", "estimate")


def validate_config(config, devices: int | None = None) -> None:
    """Raises `ConfigError` for the first invalid `spl` field; with SPL on, also checks
    the inner batch against the devices (`devices`, default all) and V1's size."""
    for field in ("enabled", "mask_classifier", "pretrain", "inner_bn_update", "finetune_v1"):
        check_bool(config, f"spl.{field}")
    check_choice(config, "spl.mask", MASK_KINDS)
    check_choice(config, "spl.identify", IDENTIFY)
    check_choice(config, "spl.delta_source", DELTA_SOURCES)
    check_choice(config, "spl.inner_optimizer", INNER_OPTIMIZERS)
    check_choice(config, "spl.outer_loss", OUTER_LOSSES)
    check_choice(config, "spl.consistency_normalization", CONSISTENCY_NORMALIZATIONS)
    check_choice(config, "spl.rank_by", RANK_BY)
    check_choice(config, "spl.outer_optimizer", OUTER_OPTIMIZERS)
    check_number(config, "spl.outer_lr", low=0.0)
    check_bool(config, "spl.reset_ema")
    check_bool(config, "spl.recalibrate_bn")
    check_number(config, "spl.finetune_lr", low=0.0)
    if config.spl.outer_optimizer == "fresh" and not config.spl.outer_lr > 0:
        raise ConfigError("spl.outer_lr", "is 0 but spl.outer_optimizer = 'fresh' needs a "
                          "learning rate", "(0, inf)")
    if config.spl.outer_optimizer == "continue" and config.spl.outer_lr > 0:
        raise ConfigError("spl.outer_lr", f"{config.spl.outer_lr} is ignored: "
                          "spl.outer_optimizer = 'continue' keeps the pretraining's "
                          "schedule", "0.0, or spl.outer_optimizer = 'fresh'")
    check_number(config, "spl.delta", low=0.0, high=1.0)
    check_number(config, "spl.estimate_quantile", low=0.0, high=1.0, low_open=True)
    if config.spl.estimate_quantile >= 1.0:
        raise ConfigError("spl.estimate_quantile", "must be below 1", "(0, 1)")
    check_number(config, "spl.safe_ratio", low=0.0, high=1.0)
    for field in ("rounds", "inner_steps", "outer_steps"):
        check_number(config, f"spl.{field}", low=0, integer=True)
    check_number(config, "spl.inner_batch_size", low=1, integer=True)
    check_number(config, "spl.inner_lr", low=0.0, low_open=True)
    check_number(config, "spl.consistency_weight", low=0.0)
    rules = get_field(config, "spl.rules")
    try:
        for pattern, masked in rules:
            re.compile(pattern)
            if not isinstance(masked, bool):
                raise TypeError
    except (TypeError, ValueError, re.error):
        raise ConfigError("spl.rules", f"{rules!r} is not a sequence of (regex, bool)",
                          "e.g. ((r'(^|/)kernel$', True),)") from None
    if not config.spl.enabled:
        return
    check_divisible(config, "spl.inner_batch_size",
                    devices if devices is not None else device_count())
    n_v1 = int(round(config.split.v1_fraction * config.split.num_validation))
    if config.spl.inner_batch_size > n_v1:
        raise ConfigError("spl.inner_batch_size", f"{config.spl.inner_batch_size} exceeds "
                          f"the {n_v1} images of V1", f"[1, {n_v1}]")
    if config.spl.outer_steps and config.split.unlabeled_size == 0 and (
            config.spl.outer_loss == "consistency" and not config.spl.finetune_v1):
        raise ConfigError("spl.outer_loss", "consistency needs unlabeled data but "
                          "split.unlabeled_size is 0", ["base"])
