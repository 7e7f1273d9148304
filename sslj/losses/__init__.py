"""Pure loss functions on logits / probabilities / targets (no model calls)."""

from sslj.losses.core import cross_entropy, softmax_mse

__all__ = ["cross_entropy", "softmax_mse"]
