"""Method registry: name -> Method class."""

from __future__ import annotations

from sslj.methods.base import Method, StepContext, Term
from sslj.methods.mean_teacher import MeanTeacher
from sslj.methods.pi_model import PiModel
from sslj.methods.pseudo_label import PseudoLabel, PseudoLabelAccumulated
from sslj.methods.supervised import Supervised
from sslj.methods.temporal_ensembling import TemporalEnsembling
from sslj.methods.vat import VAT, VATEntMin

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


for _cls in (Supervised, PiModel, MeanTeacher, TemporalEnsembling, VAT, VATEntMin,
             PseudoLabel, PseudoLabelAccumulated):
    register(_cls)


def get_method(config) -> Method:
    return METHODS[config.method](config)


__all__ = ["METHODS", "Method", "StepContext", "Term", "get_method", "register"]
