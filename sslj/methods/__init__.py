"""Method registry: name -> Method class."""

from __future__ import annotations

from sslj.methods.base import Method, StepContext, Term
from sslj.methods.pi_model import PiModel
from sslj.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


for _cls in (Supervised, PiModel):
    register(_cls)


def get_method(config) -> Method:
    return METHODS[config.method](config)


__all__ = ["METHODS", "Method", "StepContext", "Term", "get_method", "register"]
