"""Config validation: every field is checked before any compute.

A bad config raises `ConfigError` naming the field (dotted path) and the allowed values,
so a typo costs a second, not a compile and a data load.
"""

from __future__ import annotations

import copy
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

BN_UPDATE_POLICIES = ("clean", "all", "labeled", "none")
SPLIT_PROTOCOLS = ("oliver", "ds3l")
OPTIMIZERS = ("adam", "sgd", "nesterov")
LR_SCHEDULES = ("constant", "staircase", "fixmatch_cosine")
RAMPS = ("constant", "oliver_exp", "linear", "warmup")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """An invalid config field; `.field` is its dotted path."""

    def __init__(self, field: str, message: str, allowed: Any = None):
        self.field = field
        self.allowed = allowed
        text = f"config.{field}: {message}"
        if allowed is not None:
            text += f" (allowed: {allowed})"
        super().__init__(text)


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
    node: Any = config
    for part in field.split("."):
        if part not in node:
            raise ConfigError(field, "missing")
        node = node[part]
    return node


def set_fields(config: ml_collections.ConfigDict, fields) -> ml_collections.ConfigDict:
    """Sets dotted fields ({"optimizer.lr": 1e-3, ...}) in place; returns the config."""
    for field, value in dict(fields).items():
        *parents, leaf = field.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _choice(config, field: str, allowed: Sequence[str]) -> None:
    value = _get(config, field)
    if value not in allowed:
        raise ConfigError(field, f"unknown value {value!r}", list(allowed))


def _bool(config, field: str) -> None:
    value = _get(config, field)
    if not isinstance(value, bool):
        raise ConfigError(field, f"expected a bool, got {value!r}", [True, False])


def _number(config, field, *, low=None, high=None, integer=False, low_open=False) -> None:
    value = _get(config, field)
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else "a number"
        raise ConfigError(field, f"expected {expected}, got {value!r}")
    lo = "(" if low_open else "["
    bounds = f"{lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(field, f"{value!r} is out of range", bounds)
    if high is not None and value > high:
        raise ConfigError(field, f"{value!r} is out of range", bounds)


def parse_methods(value: str | Iterable[str]) -> tuple[str, ...]:
    """`"a,b"` or `("a", "b")` -> `("a", "b")`."""
    if isinstance(value, str):
        return tuple(m.strip() for m in value.split(",") if m.strip())
    return tuple(value)


def validate(config: ml_collections.ConfigDict, *, device_count: int | None = None) -> None:
    """Raises ConfigError for the first invalid field. Touches no data and no device."""
    from sslj.data import sources
    from sslj.methods import METHODS
    from sslj.models import MODELS, model_arguments

    _choice(config, "data.source", sources.SOURCE_NAMES)
    _choice(config, "model", sorted(MODELS))
    for key in config.get("model_kwargs", {}):
        if key not in model_arguments(config.model):
            raise ConfigError(f"model_kwargs.{key}", f"not an argument of {config.model}",
                              model_arguments(config.model))
    _choice(config, "method", sorted(METHODS))
    for m in parse_methods(config.get("compare", "")):
        _validate_run_name(m)
    _choice(config, "split.protocol", SPLIT_PROTOCOLS)
    _choice(config, "bn_update", BN_UPDATE_POLICIES)
    _choice(config, "optimizer.name", OPTIMIZERS)
    _choice(config, "optimizer.schedule", LR_SCHEDULES)
    _choice(config, "ramp.kind", RAMPS)
    if "compute_dtype" in config:
        _choice(config, "compute_dtype", COMPUTE_DTYPES)
    if "entmin" in config:
        _number(config, "entmin.weight", low=0.0)
    if "target" in config:
        _validate_target(config)
    if "noise" in config:
        _validate_noise(config)
    if "spl" in config:
        _validate_spl(config, device_count)

    _number(config, "split.mismatch_ratio", low=0.0, high=1.0)
    _number(config, "split.v1_fraction", low=0.0, high=1.0, low_open=True)
    _number(config, "split.labels_per_class", low=1, integer=True)
    _number(config, "split.unlabeled_size", low=0, integer=True)
    _number(config, "split.num_validation", low=2, integer=True)
    _number(config, "seed", low=0, integer=True)
    for field in ("num_steps", "batch_size", "unlabeled_batch_size", "eval_batch_size",
                  "eval_every", "log_every", "checkpoint_every"):
        _number(config, field, low=1, integer=True)
    _number(config, "optimizer.lr", low=0.0, low_open=True)
    _number(config, "optimizer.weight_decay", low=0.0)
    _number(config, "optimizer.decay_factor", low=0.0)
    _number(config, "ramp.steps", low=0, integer=True)
    _number(config, "ema_decay", low=0.0, high=1.0)
    _number(config, "data.crop_pad", low=0, integer=True)
    _number(config, "data.noise_std", low=0.0)

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

    n_dev = device_count if device_count is not None else _device_count()
    for field in ("batch_size", "unlabeled_batch_size", "eval_batch_size"):
        if _get(config, field) % n_dev:
            raise ConfigError(field, f"{_get(config, field)} is not divisible by the "
                              f"{n_dev} devices", f"multiples of {n_dev}")

    for method, overrides in dict(config.get("method_overrides", {})).items():
        if method not in METHODS:
            raise ConfigError(f"method_overrides.{method}", "unknown method", sorted(METHODS))
        for field in _leaf_fields(overrides):
            _get(config, field)  # raises on an unknown field

    METHODS[config.method].validate(config)


def _validate_target(config) -> None:
    from sslj.losses.targets import NEEDS_EPS, TARGETS

    _choice(config, "target.kind", TARGETS)
    kind = config.target.kind
    _number(config, "target.eps", low=0.0, high=1.0)
    if kind in NEEDS_EPS and not config.target.eps > 0:
        raise ConfigError("target.eps", f"is 0, which makes {kind} plain cross-entropy",
                          "(0, 1]" if kind != "cp" else "(0, 1)")
    if kind == "cp" and config.target.eps >= 1:
        raise ConfigError("target.eps", "= 1 leaves CP with no label term", "(0, 1)")
    _number(config, "target.exp_base", low=0.0, low_open=True)
    _number(config, "target.eta", low=0.0, high=1.0)
    _number(config, "target.total_steps", low=0, integer=True)
    _bool(config, "target.detach")


def _validate_noise(config) -> None:
    from sslj.data.noise import ASYMMETRIC_SOURCES, NOISE_KINDS

    _choice(config, "noise.kind", NOISE_KINDS)
    _number(config, "noise.rate", low=0.0, high=1.0)
    kind = config.noise.kind
    if kind == "asymmetric" and config.data.source not in ASYMMETRIC_SOURCES:
        raise ConfigError("noise.kind", f"asymmetric noise needs coarse classes or a class "
                          f"pairing, which {config.data.source} lacks",
                          f"'symmetric' or 'none' (asymmetric: {list(ASYMMETRIC_SOURCES)})")
    if kind == "symmetric" and len(tuple(config.split.seen_classes)) < 2:
        raise ConfigError("noise.kind", "symmetric noise needs at least two seen classes",
                          "'none'")


# run-name suffixes that turn SPL on: name -> spl fields they set
SPL_SUFFIXES = {
    "spl": {"enabled": True, "mask": "hard"},
    "spl_soft": {"enabled": True, "mask": "soft"},
    "finetune": {"enabled": True, "finetune_v1": True},
}


def split_run_name(name: str) -> tuple[str, str, str]:
    """`"<method>[+<target>][+<spl suffix>]"` -> (method, target or "", spl suffix or "")."""
    method, *rest = name.split("+")
    target = next((r for r in rest if r not in SPL_SUFFIXES), "")
    spl = next((r for r in rest if r in SPL_SUFFIXES), "")
    return method, target, spl


def _validate_run_name(name: str) -> None:
    from sslj.losses.targets import TARGETS
    from sslj.methods import METHODS

    method, *rest = name.split("+")
    if method not in METHODS:
        raise ConfigError("compare", f"unknown method {method!r}", sorted(METHODS))
    targets = [r for r in rest if r not in SPL_SUFFIXES]
    spls = [r for r in rest if r in SPL_SUFFIXES]
    if len(targets) > 1 or len(spls) > 1 or any(t not in TARGETS for t in targets):
        raise ConfigError("compare", f"invalid run name {name!r}: expected "
                          "<method>[+<target>][+<spl>]",
                          {"target": list(TARGETS), "spl": list(SPL_SUFFIXES)})


def _validate_spl(config, device_count) -> None:
    from sslj.spl.bilevel import INNER_OPTIMIZERS, OUTER_LOSSES
    from sslj.spl.masks import IDENTIFY, MASK_KINDS

    for field in ("enabled", "mask_classifier", "pretrain", "inner_bn_update", "finetune_v1"):
        _bool(config, f"spl.{field}")
    _choice(config, "spl.mask", MASK_KINDS)
    _choice(config, "spl.identify", IDENTIFY)
    _choice(config, "spl.delta_source", ("split", "given", "estimate"))
    _choice(config, "spl.inner_optimizer", INNER_OPTIMIZERS)
    _choice(config, "spl.outer_loss", OUTER_LOSSES)
    _number(config, "spl.delta", low=0.0, high=1.0)
    _number(config, "spl.estimate_quantile", low=0.0, high=1.0, low_open=True)
    if config.spl.estimate_quantile >= 1.0:
        raise ConfigError("spl.estimate_quantile", "must be below 1", "(0, 1)")
    _number(config, "spl.safe_ratio", low=0.0, high=1.0)
    for field in ("rounds", "inner_steps", "outer_steps"):
        _number(config, f"spl.{field}", low=0, integer=True)
    _number(config, "spl.inner_batch_size", low=1, integer=True)
    _number(config, "spl.inner_lr", low=0.0, low_open=True)
    _number(config, "spl.consistency_weight", low=0.0)
    rules = _get(config, "spl.rules")
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
    n_dev = device_count if device_count is not None else _device_count()
    if config.spl.inner_batch_size % n_dev:
        raise ConfigError("spl.inner_batch_size", f"{config.spl.inner_batch_size} is not "
                          f"divisible by the {n_dev} devices", f"multiples of {n_dev}")
    n_v1 = int(round(config.split.v1_fraction * config.split.num_validation))
    if config.spl.inner_batch_size > n_v1:
        raise ConfigError("spl.inner_batch_size", f"{config.spl.inner_batch_size} exceeds "
                          f"the {n_v1} images of V1", f"[1, {n_v1}]")
    if config.spl.outer_steps and config.split.unlabeled_size == 0 and (
            config.spl.outer_loss == "consistency" and not config.spl.finetune_v1):
        raise ConfigError("spl.outer_loss", "consistency needs unlabeled data but "
                          "split.unlabeled_size is 0", ["base"])


def _device_count() -> int:
    import jax

    return jax.device_count()


def _leaf_fields(tree, prefix: str = "") -> list[str]:
    out = []
    for key, value in dict(tree).items():
        if isinstance(value, (Mapping, ml_collections.ConfigDict)):
            out += _leaf_fields(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def for_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """A copy of `config` that trains `method`, with `method_overrides.<method>` merged in
    (nested like the config: `method_overrides.pi_model.optimizer.lr = 3e-4`).

    `method` may name a target modifier too, `"<method>+<target>"` (e.g.
    `supervised+proselflc`): it sets `target.kind`, and `target.eps` to the paper's
    default for that modifier (`losses.targets.DEFAULT_EPS`) unless the config gives one;
    and SPL, `"<method>+spl"` (hard mask), `"+spl_soft"` or `"+finetune"` (the fine-tune-
    on-V1 baseline), which set the `spl` fields of `SPL_SUFFIXES`.
    """
    from sslj.losses.targets import DEFAULT_EPS

    out = copy.deepcopy(config)
    method, target, spl = split_run_name(method)
    with out.unlocked():
        out.method = method
        if target:
            out.target.kind = target
            if not out.target.eps > 0:
                out.target.eps = DEFAULT_EPS.get(target, 0.0)
        for field, value in SPL_SUFFIXES.get(spl, {}).items():
            out.spl[field] = value
        overrides = out.get("method_overrides", {}).get(method, {})
        for field in _leaf_fields(overrides):
            *parents, leaf = field.split(".")
            src, dst = overrides, out
            for p in parents:
                src, dst = src[p], dst[p]
            dst[leaf] = src[leaf]
    return out


def run_name(config) -> str:
    """The inverse of `for_method`: `<method>[+<target>][+<spl suffix>]`."""
    name = config.method
    target = config.get("target", {}).get("kind", "cce")
    if target != "cce":
        name += f"+{target}"
    spl = config.get("spl", {})
    if spl.get("enabled", False):
        name += ("+finetune" if spl.finetune_v1 else
                 "+spl_soft" if spl.mask == "soft" else "+spl")
    return name


def without_spl(config) -> ml_collections.ConfigDict:
    """A copy with SPL off: the base run that SPL pretrains with."""
    out = copy.deepcopy(config)
    if "spl" in out:
        with out.unlocked():
            out.spl.enabled = False
            out.spl.finetune_v1 = False
    return out


def base_run_key(config) -> str:
    """What the base run (SPL's pretraining) depends on: the config without `spl` and the
    fields that do not change training (`compare`, the progress bar, the per-method
    overrides already merged in). Equal keys = the same pretraining."""
    d = config.to_dict()
    for k in ("spl", "compare", "progress_bar", "method_overrides", "tensorboard"):
        d.pop(k, None)
    return ml_collections.ConfigDict(d).to_json_best_effort(sort_keys=True)
