"""Checks of the `icn` section (every field, before any compute)."""

from __future__ import annotations

from sslj.common.checks import ConfigError, check_bool, check_choice, check_number, get_field
from sslj.icn.method import FORMULATIONS, NEGATIVE_WEIGHTINGS
from sslj.icn.sampler import SAMPLERS, STOP_RULES

NEGATIVES = ("synthesized", "noise", "none")


def validate_config(config) -> None:
    """Raises `ConfigError` for the first invalid `icn` field; with ICN on, also the
    combinations it does not support (SPL, unlabeled-data add-ons, the one-vs-all
    formulation with a target modifier) and the learning-rate schedule it owns."""
    check_bool(config, "icn.enabled")
    check_bool(config, "icn.clip")
    check_choice(config, "icn.negatives", NEGATIVES)
    check_choice(config, "icn.formulation", FORMULATIONS)
    check_choice(config, "icn.negative_weighting", NEGATIVE_WEIGHTINGS)
    check_choice(config, "icn.sampler", SAMPLERS)
    check_choice(config, "icn.stop_rule", STOP_RULES)
    for field in ("rounds", "per_class", "epochs_per_round", "max_steps", "unroll",
                  "lr_decay_round", "patience", "pool_cap", "negative_batch_size",
                  "synthesis_batch_size"):
        check_number(config, f"icn.{field}", low=0, integer=True)
    check_number(config, "icn.max_steps", low=1, integer=True)
    check_number(config, "icn.unroll", low=1, integer=True)
    check_number(config, "icn.epochs_per_round", low=1, integer=True)
    check_number(config, "icn.alpha", low=0.0, high=1.0)
    check_number(config, "icn.step_size", low=0.0, low_open=True)
    check_number(config, "icn.confidence", low=0.5, high=1.0, low_open=True)
    check_number(config, "icn.anneal_gamma", low=0.0)
    check_number(config, "icn.adam_b1", low=0.0, high=0.999)
    check_number(config, "icn.noise_std", low=0.0, low_open=True)
    check_number(config, "icn.lr_decay_factor", low=0.0, high=1.0, low_open=True)
    check_number(config, "icn.fgsm_eps", low=0.0)
    if not config.icn.enabled:
        return
    if config.method != "supervised":
        raise ConfigError("method", f"ICN reclassifies with the supervised loss; "
                          f"{config.method!r} + ICN is not implemented", ["supervised"])
    if config.get("spl", {}).get("enabled", False):
        raise ConfigError("spl.enabled", "ICN and SPL are separate procedures; run one",
                          [False])
    if config.get("ns3l", {}).get("enabled", False) or float(
            config.get("entmin", {}).get("weight", 0.0)) > 0:
        raise ConfigError("ns3l.enabled", "ICN trains on labeled data only: no add-on over "
                          "unlabeled predictions (NS3L, EntMin)", [False])
    if (config.icn.formulation == "ova"
            and config.get("target", {}).get("kind", "cce") != "cce"):
        raise ConfigError("target.kind", "a target modifier replaces the softmax "
                          "cross-entropy; the one-vs-all formulation has none", ["cce"])
    if get_field(config, "optimizer.schedule") != "constant":
        raise ConfigError("optimizer.schedule", "ICN's learning rate decays by rounds "
                          "(icn.lr_decay_round, icn.lr_decay_factor); set the optimizer's "
                          "schedule to constant", ["constant"])
