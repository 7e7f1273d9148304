"""Pure loss functions on logits / probabilities / targets (no model calls)."""

from sslj.losses.core import (
                              cross_entropy,
                              entropy,
                              kl_divergence,
                              masked_mean,
                              negative_sampling,
                              softmax_mse,
                              softmax_squared_l2,
)
from sslj.losses.targets import TARGETS, TargetModifier, soft_cross_entropy

__all__ = ["TARGETS", "TargetModifier", "cross_entropy", "entropy", "kl_divergence",
           "masked_mean", "negative_sampling", "soft_cross_entropy", "softmax_mse",
           "softmax_squared_l2"]
