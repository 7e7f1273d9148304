"""Optimizers as optax chains: Adam, SGD (momentum or Nesterov), L2 decay on kernels."""

from __future__ import annotations

import jax
import optax

from sslj.train.schedules import learning_rate

OPTIMIZERS = ("adam", "sgd", "nesterov")
DECAY_PARAMS = ("kernels", "all")


def kernel_mask(params):
    """True for conv / dense kernels (weight decay applies), False for biases and BN."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
    """Optimizer from `config.optimizer`.

    Weight decay is L2 added to the gradient before the optimizer's scaling (as FixMatch's
    SGD), of the conv / dense kernels only (`decay_params = "kernels"`, FixMatch's and
    Oliver's choice) or of every parameter, biases and BatchNorm scales included
    (`"all"`: PyTorch's SGD weight_decay, as the ProSelfLC code); set
    `decoupled_weight_decay` for AdamW-style decay instead.
    """
    schedule = learning_rate(opt_config, num_steps)
    wd = float(opt_config.weight_decay)
    decay_mask = None if opt_config.get("decay_params", "kernels") == "all" else kernel_mask
    decoupled = bool(opt_config.get("decoupled_weight_decay", False))
    parts = []
    if wd > 0 and not decoupled:
        parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
    if opt_config.name == "adam":
        parts.append(optax.scale_by_adam(b1=float(opt_config.b1), b2=float(opt_config.b2),
                                         eps=float(opt_config.eps)))
    elif opt_config.name in ("sgd", "nesterov"):
        if float(opt_config.momentum) > 0:
            parts.append(optax.trace(decay=float(opt_config.momentum),
                                     nesterov=opt_config.name == "nesterov"))
    else:
        raise ValueError(f"unknown optimizer {opt_config.name!r}")
    if wd > 0 and decoupled:
        parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)
