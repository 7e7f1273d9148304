"""Method registry: name -> Method class."""

from __future__ import annotations

from sslj.common.checks import ConfigError, check_choice, check_number, get_field, leaf_fields
from sslj.methods import ns3l
from sslj.methods.base import Method, StepContext, Term
from sslj.methods.curriculum_labeling import CurriculumLabeling
from sslj.methods.ds3l import DS3L
from sslj.methods.fixmatch import FixMatch, FixMatchAttention
from sslj.methods.mean_teacher import MeanTeacher
from sslj.methods.mixmatch import MixMatch
from sslj.methods.mtc import MTC
from sslj.methods.pi_model import PiModel
from sslj.methods.pseudo_label import PseudoLabel, PseudoLabelAccumulated
from sslj.methods.supervised import Supervised
from sslj.methods.temporal_ensembling import TemporalEnsembling
from sslj.methods.uasd import UASD
from sslj.methods.vat import VAT, VATEntMin

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


for _cls in (Supervised, PiModel, MeanTeacher, TemporalEnsembling, VAT, VATEntMin,
             PseudoLabel, PseudoLabelAccumulated, FixMatch, FixMatchAttention, MixMatch,
             UASD, DS3L, CurriculumLabeling, MTC):
    register(_cls)


def get_method(config) -> Method:
    return METHODS[config.method](config)


def validate_config(config) -> None:
    """Checks `method`, the add-on terms (`entmin`, `ns3l`), `method_overrides` (keyed by
    a method or a run name of one, e.g. `vat+ns3l`; existing fields) and the method's own
    section (`Method.validate`)."""
    check_choice(config, "method", sorted(METHODS))
    if "entmin" in config:
        check_number(config, "entmin.weight", low=0.0)
    if "ns3l" in config:
        seen = config.get("split", {}).get("seen_classes")
        ns3l.validate_config(config, len(seen) if seen else None)
    for method, overrides in dict(config.get("method_overrides", {})).items():
        if method.split("+")[0] not in METHODS:
            raise ConfigError(f"method_overrides.{method}", "unknown method", sorted(METHODS))
        for field in leaf_fields(overrides):
            if field.startswith("model_kwargs."):
                continue  # model arguments: checked on the config that trains (models)
            get_field(config, field)  # raises on an unknown field
    METHODS[config.method].validate(config)


__all__ = ["METHODS", "Method", "StepContext", "Term", "get_method", "register",
           "validate_config"]
