"""Config checking helpers that every component uses to validate its own section.

A bad field raises `ConfigError` naming the field (dotted path) and the allowed values,
so a typo costs a second, not a compile and a data load. These helpers sit in the
bottom layer (they import nothing from sslj) so that data, models, losses, the train
core, methods and SPL can each check their section without importing `sslj.config`,
which sits above all of them and calls every component's validator.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """An invalid config field; `.field` is its dotted path."""

    def __init__(self, field: str, message: str, allowed: Any = None):
        self.field = field
        self.allowed = allowed
        text = f"config.{field}: {message}"
        if allowed is not None:
            text += f" (allowed: {allowed})"
        super().__init__(text)


def get_field(config, field: str) -> Any:
    """The value at a dotted path; `ConfigError` ("missing") if any part is absent."""
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


def leaf_fields(tree, prefix: str = "") -> list[str]:
    """The dotted paths of every leaf of a nested mapping / ConfigDict."""
    out = []
    for key, value in dict(tree).items():
        if isinstance(value, (Mapping, ml_collections.ConfigDict)):
            out += leaf_fields(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def changed_fields(start, target, skip: Sequence[str] = ()) -> dict:
    """{dotted field: value} of every leaf of `target` that `start` lacks or holds with
    another value (fields in `skip` left out): what turns `start` into `target`."""
    out = {}
    for field in leaf_fields(target):
        if field in skip:
            continue
        try:
            same = get_field(start, field) == get_field(target, field)
        except (ConfigError, KeyError, AttributeError):
            same = False
        if not same:
            out[field] = get_field(target, field)
    return out


def check_choice(config, field: str, allowed: Sequence[str]) -> None:
    value = get_field(config, field)
    if value not in allowed:
        raise ConfigError(field, f"unknown value {value!r}", list(allowed))


def check_bool(config, field: str) -> None:
    value = get_field(config, field)
    if not isinstance(value, bool):
        raise ConfigError(field, f"expected a bool, got {value!r}", [True, False])


def check_number(config, field, *, low=None, high=None, integer=False,
                 low_open=False, high_open=False) -> None:
    """A real (or, with `integer`, an integral) number in [low, high] (an open end with
    `low_open` / `high_open`); bools are refused."""
    value = get_field(config, field)
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else "a number"
        raise ConfigError(field, f"expected {expected}, got {value!r}")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    bounds = (f"{lo}{low if low is not None else '-inf'}, "
              f"{high if high is not None else 'inf'}{hi}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(field, f"{value!r} is out of range", bounds)
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(field, f"{value!r} is out of range", bounds)


def check_divisible(config, field: str, device_count: int) -> None:
    """A batch size that splits evenly over the mesh's devices."""
    value = get_field(config, field)
    if value % device_count:
        raise ConfigError(field, f"{value} is not divisible by the {device_count} devices",
                          f"multiples of {device_count}")


def device_count() -> int:
    """The global device count (the default mesh size)."""
    import jax

    return jax.device_count()


def backend() -> str:
    """JAX's default backend: "cpu", "gpu" or "tpu"."""
    import jax

    return jax.default_backend()
