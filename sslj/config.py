"""The config as a whole: `validate` (every component checks its own section), run
names (`<method>[+<target>][+<add-on>][+<spl>]`, `for_method` / `run_name`) and the base-run key
SPL's pretraining is shared by.

A bad config raises `ConfigError` naming the field (dotted path) and the allowed values,
so a typo costs a second, not a compile and a data load. The checking helpers and
`ConfigError` live in `sslj.common.checks` (the bottom layer, which every component may
import); this module sits above the components it calls and below the procedures.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import ml_collections

from sslj import methods, models
from sslj.common import checks
from sslj.common.checks import ConfigError, leaf_fields, set_fields
from sslj.data import validation as data_validation
from sslj.icn import validation as icn_validation
from sslj.losses import targets
from sslj.spl import validation as spl_validation
from sslj.train import validation as train_validation

__all__ = ["ADDON_SUFFIXES", "ConfigError", "SPL_SUFFIXES", "base_run_key", "for_method",
           "nested_fields", "parse_methods", "run_addons", "run_name", "set_fields",
           "split_run_name", "validate", "validate_run_name", "without_spl"]


def parse_methods(value: str | Iterable[str]) -> tuple[str, ...]:
    """`"a,b"` or `("a", "b")` -> `("a", "b")`."""
    if isinstance(value, str):
        return tuple(m.strip() for m in value.split(",") if m.strip())
    return tuple(value)


def validate(config: ml_collections.ConfigDict, *, device_count: int | None = None) -> None:
    """Raises ConfigError for the first invalid field. Touches no data and no device.

    Each component checks its own section: data (`data`, `split`, `noise`), models,
    the target modifier (`target`), the train core (optimizer, schedule, steps, batch
    sizes against `device_count`, default every device), the method (and its
    overrides) and SPL; then every run name of `compare`.
    """
    devices = device_count if device_count is not None else checks.device_count()
    data_validation.validate_config(config)
    models.validate_config(config)
    if "target" in config:
        targets.validate_config(config)
    train_validation.validate_config(config, devices)
    methods.validate_config(config)
    if "spl" in config:
        spl_validation.validate_config(config, devices)
    if "icn" in config:
        icn_validation.validate_config(config)
    for name in parse_methods(config.get("compare", "")):
        validate_run_name(name)
    for key in config.get("method_overrides", {}):
        validate_run_name(key, f"method_overrides.{key}")


# run-name suffixes that turn SPL on: name -> spl fields they set
SPL_SUFFIXES = {
    "spl": {"enabled": True, "mask": "hard"},
    "spl_soft": {"enabled": True, "mask": "soft"},
    "finetune": {"enabled": True, "finetune_v1": True},
}


# run-name suffixes that add a loss term: name -> fields they set
ADDON_SUFFIXES = {
    "ns3l": {"ns3l.enabled": True},
    # ICN's procedure (sslj.procedures.icn): its pseudo-negative term, or the control
    "icn": {"icn.enabled": True, "icn.negatives": "synthesized"},
    "icn_noise": {"icn.enabled": True, "icn.negatives": "noise"},
    "icn_base": {"icn.enabled": True, "icn.negatives": "none"},
}
ICN_SUFFIXES = ("icn", "icn_noise", "icn_base")


def split_run_name(name: str) -> tuple[str, str, str]:
    """`"<method>[+<target>][+<add-on>...][+<spl suffix>]"` -> (method, target or "", spl
    suffix or ""); the add-ons are `run_addons(name)`."""
    method, *rest = name.split("+")
    target = next((r for r in rest if r not in SPL_SUFFIXES and r not in ADDON_SUFFIXES), "")
    spl = next((r for r in rest if r in SPL_SUFFIXES), "")
    return method, target, spl


def run_addons(name: str) -> tuple[str, ...]:
    """The add-on suffixes of a run name (`"vat+ns3l+spl"` -> `("ns3l",)`)."""
    return tuple(r for r in name.split("+")[1:] if r in ADDON_SUFFIXES)


def validate_run_name(name: str, field: str = "compare") -> None:
    """A run name of `compare`: a registered method, at most one target modifier, each
    add-on at most once and at most one SPL suffix."""
    method, *rest = name.split("+")
    if method not in methods.METHODS:
        raise ConfigError(field, f"unknown method {method!r}", sorted(methods.METHODS))
    targets_ = [r for r in rest if r not in SPL_SUFFIXES and r not in ADDON_SUFFIXES]
    spls = [r for r in rest if r in SPL_SUFFIXES]
    addons = run_addons(name)
    if (len(targets_) > 1 or len(spls) > 1 or len(set(addons)) < len(addons)
            or sum(a in ICN_SUFFIXES for a in addons) > 1
            or any(t not in targets.TARGETS for t in targets_)):
        raise ConfigError(field, f"invalid run name {name!r}: expected "
                          "<method>[+<target>][+<add-on>][+<spl>]",
                          {"target": list(targets.TARGETS), "add-on": list(ADDON_SUFFIXES),
                           "spl": list(SPL_SUFFIXES)})


def nested_fields(fields: dict) -> ml_collections.ConfigDict:
    """{"optimizer.lr": 3e-4, ...} -> the nested ConfigDict `method_overrides.<m>` takes."""
    out: dict = {}
    for field, value in fields.items():
        *parents, leaf = field.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return ml_collections.ConfigDict(out)


def for_method(config: ml_collections.ConfigDict, method: str,
               explicit: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """A copy of `config` that trains `method`, with `method_overrides.<method>` merged in
    (then `method_overrides.<run name>` for run names it contains, e.g. `vat+ns3l`)
    (nested like the config: `method_overrides.pi_model.optimizer.lr = 3e-4`).

    `method` may name a target modifier too, `"<method>+<target>"` (e.g.
    `supervised+proselflc`): it sets `target.kind`, and `target.eps` to the paper's
    default for that modifier (`losses.targets.DEFAULT_EPS`) unless the config gives one;
    add-on terms, `"<method>+ns3l"` (`ADDON_SUFFIXES`: NS3L on; `"supervised+ns3l"` is
    NS3L alone); and SPL, `"<method>+spl"` (hard mask), `"+spl_soft"` or `"+finetune"`
    (the fine-tune-on-V1 baseline), which set the `spl` fields of `SPL_SUFFIXES`.

    `explicit`: dotted fields the user set (`--config.optimizer.lr=...`, reproduce's
    `--set`). Neither a method's overrides nor a modifier's default eps replace them:
    what the user says wins over what a method prefers.
    """
    explicit = set(explicit)
    out = copy.deepcopy(config)
    name = method
    method, target, spl = split_run_name(name)
    with out.unlocked():
        out.method = method
        if target:
            out.target.kind = target
            if not out.target.eps > 0 and "target.eps" not in explicit:
                out.target.eps = targets.DEFAULT_EPS.get(target, 0.0)
        suffix_fields = {f"spl.{k}": v for k, v in SPL_SUFFIXES.get(spl, {}).items()}
        for addon in run_addons(name):
            suffix_fields.update(ADDON_SUFFIXES[addon])
        for field, value in suffix_fields.items():  # the name and the user must agree
            if field in explicit and checks.get_field(out, field) != value:
                raise ConfigError(
                    field, f"{checks.get_field(out, field)!r} was set, but the run name "
                    f"{name!r} sets {value!r}; drop the setting or name the run that "
                    f"means it" + (" (+spl_soft for a soft mask)" if field == "spl.mask"
                                   else ""))
        set_fields(out, suffix_fields)
        # add-ons the config itself turns on (--config.ns3l.enabled=True) select their
        # overrides as the suffix would
        for key in _override_keys(out.get("method_overrides", {}),
                                  "+".join([name, *_enabled_addons(out)])):
            overrides = out.method_overrides[key]
            for field in leaf_fields(overrides):
                if field in explicit:
                    continue
                *parents, leaf = field.split(".")
                src, dst = overrides, out
                for p in parents:
                    src, dst = src[p], dst[p]
                dst[leaf] = src[leaf]
    return out


def _enabled_addons(config) -> list[str]:
    return [addon for addon, fields in ADDON_SUFFIXES.items()
            if all(f.split(".")[0] in config and checks.get_field(config, f) == v
                   for f, v in fields.items())]


def _override_keys(method_overrides, name: str) -> list[str]:
    """The `method_overrides` keys that apply to run `name`: its method, then every run
    name whose parts it contains (`vat+ns3l` applies to `vat+ns3l+spl`), fewer parts
    first, so the most specific wins."""
    method, *rest = name.split("+")
    keys = [k for k in method_overrides
            if k.split("+")[0] == method and set(k.split("+")[1:]) <= set(rest)]
    return sorted(keys, key=lambda k: len(k.split("+")))


def run_name(config) -> str:
    """The inverse of `for_method`: `<method>[+<target>][+<spl suffix>]`."""
    name = config.method
    target = config.get("target", {}).get("kind", "cce")
    if target != "cce":
        name += f"+{target}"
    for addon in _enabled_addons(config):
        name += f"+{addon}"
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
