"""Pure loss functions on logits / probabilities / targets (no model calls)."""

from sslj.losses.core import cross_entropy, entropy, kl_divergence, masked_mean, softmax_mse

__all__ = ["cross_entropy", "entropy", "kl_divergence", "masked_mean", "softmax_mse"]
