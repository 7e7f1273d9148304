"""Temporal Ensembling (Laine & Aila 2017).

Each unlabeled example i keeps an ensemble prediction Z_i in `TrainState.extra`
(indexed by its id in the unlabeled set) and the number n_i of times it was updated.
Whenever i is in a batch, after the step:  Z_i <- alpha Z_i + (1 - alpha) z_i, where z_i
is this step's softmax prediction, and n_i <- n_i + 1. The target is the bias-corrected
z~_i = Z_i / (1 - alpha^{n_i}) (Laine & Aila's correction for the zero start, with n_i
per example because batches are streamed rather than synchronised by epoch).

Loss = xe(labeled) + w(t) * (1 / B) sum_i [n_i > 0] mean_c (softmax(f(x_i)) - z~_i)^2:
an example never seen before has no target yet and adds zero (the mean stays over the
whole unlabeled batch, the Pi-model's scale). Defaults: alpha = 0.6, w = 30 (Laine &
Aila's values), ramped like the other consistency terms. One clean pass per step over
concat(labeled, unlabeled).

Why w = 30 and not 30 x num_labels / N: Laine & Aila's code (s-laine/tempens, train.py)
scales w_max by the labeled fraction because it trains on mixed minibatches and averages
the masked cross-entropy over the *whole* minibatch, so its supervised term is itself
scaled by the labeled fraction; the scaling keeps the ratio of the two terms at w_max.
sslj averages the supervised term over the labeled batch, so the same ratio is the
unscaled w_max: with num_labels / N = n / B the reference's loss is (n / B) times sslj's
(tests/test_consistency_methods.py checks it numerically). Scaling sslj's weight again
would make the consistency term num_labels / N times (12x at CIFAR-10 / 4,000 labels)
weaker than the reference's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslj.common.checks import ConfigError, check_number
from sslj.methods.base import Method, Term, clean_pass, supervised_xe


def bias_corrected_target(ensemble: jax.Array, count: jax.Array, alpha: float) -> jax.Array:
    """Z / (1 - alpha^n) per example; zero where n = 0 (no prediction yet)."""
    correction = 1.0 - jnp.power(jnp.float32(alpha), count.astype(jnp.float32))
    return jnp.where(count[:, None] > 0, ensemble / jnp.maximum(correction, 1e-12)[:, None],
                     0.0)


def accumulate(ensemble, count, ids, predictions, alpha: float):
    """Z[ids] <- alpha Z[ids] + (1 - alpha) predictions; n[ids] += 1 (a repeated id in one
    batch counts once)."""
    ensemble = ensemble.at[ids].set(alpha * ensemble[ids] + (1.0 - alpha) * predictions)
    count = count.at[ids].set(count[ids] + 1)
    return ensemble, count


class TemporalEnsembling(Method):
    name = "temporal_ensembling"

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "temporal_ensembling.weight", low=0.0)
        check_number(config, "temporal_ensembling.alpha", low=0.0, high=1.0)
        if float(config.temporal_ensembling.alpha) >= 1.0:
            raise ConfigError("temporal_ensembling.alpha", "1.0 never moves the ensemble",
                              "[0, 1)")

    def init_extra(self, num_unlabeled, variables):
        num_classes = len(self.config.split.seen_classes)
        return {"ensemble": jnp.zeros((num_unlabeled, num_classes), jnp.float32),
                "ensemble_count": jnp.zeros((num_unlabeled,), jnp.int32)}

    def outputs(self, ctx, batch, rng):
        logits, logits_u, _ = clean_pass(ctx, batch, *jax.random.split(rng))
        ids = batch["unlabeled_index"]
        count = ctx.state.extra["ensemble_count"][ids]
        target = bias_corrected_target(ctx.state.extra["ensemble"][ids], count,
                                       float(self.config.temporal_ensembling.alpha))
        return {"logits": logits, "logits_u": logits_u, "target_u": target,
                "has_target": count > 0}

    def te_loss(self, outputs, batch):
        del batch
        p = jax.nn.softmax(outputs["logits_u"].astype(jnp.float32))
        sq = jnp.mean(jnp.square(p - outputs["target_u"]), axis=-1)
        return jnp.mean(jnp.where(outputs["has_target"], sq, 0.0))

    def terms(self):
        cfg = self.config.temporal_ensembling
        return (Term("xe", supervised_xe),
                Term("te", self.te_loss, weight=float(cfg.weight), ramp=self.consistency_ramp()))

    def update_extra(self, state, new_state, outputs, batch):
        ensemble, count = accumulate(
            state.extra["ensemble"], state.extra["ensemble_count"], batch["unlabeled_index"],
            jax.nn.softmax(outputs["logits_u"].astype(jnp.float32)),
            float(self.config.temporal_ensembling.alpha))
        return {**state.extra, "ensemble": ensemble, "ensemble_count": count}

    def monitors(self, outputs, batch):
        return {"te_has_target": jnp.mean(outputs["has_target"].astype(jnp.float32))}
