"""Model registry: `get_model(name, num_classes)` -> a Flax linen module.

Every model is called as `model.apply(variables, images, train=bool)` on float NHWC
images and returns logits; models with BatchNorm keep a `batch_stats` collection.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn

from sslj.common.checks import ConfigError, check_bool, check_choice, check_number
from sslj.models.batchnorm import BN_STATS
from sslj.models.convnet import CONV_IMPLS, DomainHead, ICNMnistNet, OneVsAll, SmallCNN
from sslj.models.resnet import CifarResNet
from sslj.models.wrn import WideResNet

# float16 is refused: sslj does no loss scaling, and without it every gradient entry
# below float16's smallest subnormal (6e-8) becomes zero and every one above 65504
# overflows. bfloat16 has float32's exponent range and needs no scaling.
COMPUTE_DTYPES = ("float32", "bfloat16")

MODELS: dict[str, Callable[..., nn.Module]] = {
    "wrn28_2": functools.partial(WideResNet, depth=28, widen_factor=2),
    "resnet32": functools.partial(CifarResNet, depth=32),
    "resnet44": functools.partial(CifarResNet, depth=44),
    "cnn_small": SmallCNN,
    "cnn_tiny": functools.partial(SmallCNN, widths=(16, 32)),
    "icn_mnist": ICNMnistNet,
}


def model_arguments(name: str) -> list[str]:
    """The keyword arguments `model_kwargs` may set for model `name` (its dataclass
    fields, less those the library sets: num_classes, dtype, Flax's parent and name)."""
    factory = MODELS[name]
    cls = factory.func if isinstance(factory, functools.partial) else factory
    fixed = {"parent", "name", "num_classes", "dtype"}
    return sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name not in fixed)


def get_model(name: str, num_classes: int, *, one_vs_all: bool = False,
              domain_head: bool = False, **kwargs) -> nn.Module:
    """Model `name` with `num_classes` logits; `one_vs_all`: K binary copies of it with
    stacked parameters (`OneVsAll`, ICN's one-vs-all formulation), same (N, K) output;
    `domain_head`: one more output sown as `domain_logit` (`DomainHead`, MTC)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    if domain_head:
        dtype = kwargs.pop("dtype", None)
        base = functools.partial(MODELS[name], **kwargs)
        return DomainHead(base, num_classes, **({"dtype": dtype} if dtype is not None else {}))
    if one_vs_all:
        dtype = kwargs.pop("dtype", None)
        base = functools.partial(MODELS[name], **kwargs)
        return OneVsAll(base, num_classes, **({"dtype": dtype} if dtype is not None else {}))
    return MODELS[name](num_classes=num_classes, **kwargs)


def validate_config(config) -> None:
    """Checks `model`, `model_kwargs` (arguments of that model) and `compute_dtype`."""
    check_choice(config, "model", sorted(MODELS))
    for key in config.get("model_kwargs", {}):
        if key not in model_arguments(config.model):
            raise ConfigError(f"model_kwargs.{key}", f"not an argument of {config.model}",
                              model_arguments(config.model))
    kwargs = config.get("model_kwargs", {})
    if "conv_impl" in kwargs:
        check_choice(config, "model_kwargs.conv_impl", CONV_IMPLS)
    if "bn_stats" in kwargs:
        check_choice(config, "model_kwargs.bn_stats", BN_STATS)
    # the values, each by its meaning (the arguments are shared across models)
    ranges = {"bn_momentum": {"low": 0.0, "high": 1.0, "high_open": True},
              "dropout": {"low": 0.0, "high": 1.0, "high_open": True},
              "slope": {"low": 0.0}, "depth": {"low": 1, "integer": True},
              "widen_factor": {"low": 1, "integer": True}}
    for key, bounds in ranges.items():
        if key in kwargs:
            check_number(config, f"model_kwargs.{key}", **bounds)
    if "attention" in kwargs:
        check_bool(config, "model_kwargs.attention")
    if "widths" in kwargs:
        widths = kwargs.widths if hasattr(kwargs, "widths") else kwargs["widths"]
        if (isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or not widths
                or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                           for w in widths)):
            raise ConfigError("model_kwargs.widths", f"{widths!r} is not a non-empty "
                              "sequence of positive integers", "e.g. (32, 64)")
    if "compute_dtype" in config:
        if config.compute_dtype == "float16":
            raise ConfigError("compute_dtype", "float16 needs loss scaling, which sslj does "
                              "not do: its gradients underflow to zero", list(COMPUTE_DTYPES))
        check_choice(config, "compute_dtype", COMPUTE_DTYPES)
