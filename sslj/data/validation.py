"""Checks of the data sections of a config: `data`, `split` and `noise`."""

from __future__ import annotations

import numbers

from sslj.common.checks import ConfigError, check_choice, check_number
from sslj.data import augment, noise, pipeline, sources
from sslj.data.splits import SPLIT_PROTOCOLS, VALIDATION_SOURCES


def validate_config(config) -> None:
    """Raises `ConfigError` for the first invalid data, split or noise field."""
    check_choice(config, "data.source", sources.SOURCE_NAMES)
    check_choice(config, "split.protocol", SPLIT_PROTOCOLS)
    if "validation_source" in config.split:
        check_choice(config, "split.validation_source", VALIDATION_SOURCES)
    check_number(config, "split.mismatch_ratio", low=0.0, high=1.0)
    check_number(config, "split.v1_fraction", low=0.0, high=1.0, low_open=True)
    check_number(config, "split.labels_per_class", low=1, integer=True)
    check_number(config, "split.unlabeled_size", low=0, integer=True)
    check_number(config, "split.num_validation", low=0, integer=True)
    if config.split.num_validation == 1:
        raise ConfigError("split.num_validation", "1 image cannot be split into V1 and V2",
                          "0 (no validation set: the final model is reported) or >= 2")
    check_number(config, "data.crop_pad", low=0, integer=True)
    check_number(config, "data.noise_std", low=0.0)
    if "pad_mode" in config.data:
        check_choice(config, "data.pad_mode", augment.PAD_MODES)
    if "on_device" in config.data:
        check_choice(config, "data.on_device", pipeline.ON_DEVICE)

    num_classes = sources.num_classes(config.data.source)
    seen = tuple(config.split.seen_classes)
    if not seen:
        raise ConfigError("split.seen_classes", "empty",
                          f"distinct integers in [0, {num_classes - 1}]")
    if len(set(seen)) != len(seen) or any(
        isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c < num_classes
        for c in seen
    ):
        raise ConfigError(
            "split.seen_classes", f"{seen!r} is invalid for {config.data.source}",
            f"distinct integers in [0, {num_classes - 1}]")
    if len(seen) == num_classes and config.split.mismatch_ratio > 0:
        raise ConfigError("split.mismatch_ratio",
                          "is > 0 but every class is seen, so no unseen class exists", "0.0")
    if "noise" in config:
        noise.validate_config(config)
