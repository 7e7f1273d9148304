"""The reclassification step's losses: training the classifier on S_e^t = S U S_pn^t.

Softmax ICN (Eq. 9), divided by n (the number of real training examples):

    L / n = (1 - alpha) * mean_{i in S} CE(z(x_i), y_i)
            + alpha * (|S_pn| / n) * mean_{j in S_pn} log(1 + exp(z_{k_j}(x_j)))

with z_k = w_k . phi(x) the class-k logit and k_j the class pseudo-negative j was
synthesized for. Each step takes a batch of real images and a batch of pseudo-negatives
of fixed sizes; weighting the pseudo-negative mean by |S_pn| / n (`neg_weight`, set by
the procedure per round) makes the step's expected loss Eq. 9's sum over S_e^t / n,
whatever the two batch sizes (`icn.negative_weighting = "sum"`, the default).
`"mean"` weights the pseudo-negative batch mean by 1 instead (the two terms balanced by
alpha alone, however large the pool). The paper gives no alpha; 0.5 by default.

One-vs-all ICN (Eq. 5): K binary classifiers (`sslj.models.OneVsAll`, stacked params),
net k's logit z_k in column k. The real-data term is sum_k BCE(z_k(x_i), [y_i = k])
(class k positive, every other class negative, Sec. 3.4); pseudo-negatives of class k
are negatives of net k only. Eq. 5 weights both sums equally: alpha = 0.5 gives Eq. 5 / 2n.

Both pass real and pseudo-negative images through the network as ONE batch (the paper
trains on mini-batches of S_e^t), so a BatchNorm model's batch and running statistics
see both, half each (in the paper's mini-batches the share is |S_pn| / (n + |S_pn|));
the pseudo-negatives are not augmented. The ICN MNIST net has no BatchNorm. While the
pool is empty (round 0, every round of the baseline) a BatchNorm model's steps get no
pseudo-negative batch at all; a model without BatchNorm keeps one step shape for the
whole run (zero images at weight 0: a wasted forward, not a change of the loss).

Steps and normalisation: the procedure counts a round's epochs over S (n / B steps per
epoch) where the paper counts them over S_e^t ((n + |S_pn|) / B steps, loss per step
Eq. 9 / (n + |S_pn|) on average). Over an epoch both move the weights by lr / B times
the gradient of Eq. 9's sum; here in fewer, (n + |S_pn|) / n times larger steps.

The baselines keep (1 - alpha) on the cross-entropy: `supervised+icn_base` (no
pseudo-negatives) and ICN-noise train their real-data term exactly as ICN does, so the
rows differ only in the pseudo-negative term (with SGD, (1 - alpha) CE at lr eta is
plain CE at lr (1 - alpha) eta; set `icn.alpha = 0` on the baseline for the latter).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslj.data.augment import to_float
from sslj.methods.base import Term, supervised_xe
from sslj.methods.supervised import Supervised

FORMULATIONS = ("softmax", "ova")
NEGATIVE_WEIGHTINGS = ("sum", "mean")


def class_logit(logits: jax.Array, classes: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, classes[:, None], axis=1)[:, 0]


def pseudo_negative_loss(outputs, batch) -> jax.Array:
    """mean_j neg_weight_j * log(1 + exp(z_{k_j}(x_j))) over the pseudo-negative batch
    (`losses/icn`); 0 for a batch without pseudo-negatives."""
    if "neg_logits" not in outputs:
        return jnp.zeros((), jnp.float32)
    z = class_logit(outputs["neg_logits"], batch["neg_class"])
    return jnp.mean(batch["neg_weight"] * jax.nn.softplus(z))


def one_vs_all_xe(outputs, batch) -> jax.Array:
    """sum_k BCE(z_k, [y = k]), mean over the real batch (Eq. 5's first sum / n)."""
    z = outputs["logits"]
    target = jax.nn.one_hot(batch["label"], z.shape[-1], dtype=jnp.float32)
    return jnp.mean(jnp.sum(jax.nn.softplus(z) - target * z, axis=-1))


class ICNReclassification(Supervised):
    """Supervised training on S plus the pseudo-negative term (batch keys `neg_image`,
    `neg_class`, `neg_weight`); target modifiers (CNN w/ LS) replace the softmax CE as
    for any method."""

    name = "supervised"

    def __init__(self, config):
        super().__init__(config)
        self.formulation = str(config.icn.formulation)
        self.alpha = float(config.icn.alpha)

    def outputs(self, ctx, batch, rng):
        aug_rng, fwd_rng = jax.random.split(rng)
        x = ctx.augment(to_float(batch["image"]), aug_rng)
        if "neg_image" not in batch:  # no pseudo-negatives yet (BatchNorm models, round 0)
            return {"logits": ctx.forward(x, rng=fwd_rng, clean=True)}
        n = x.shape[0]
        logits = ctx.forward(jnp.concatenate([x, batch["neg_image"].astype(x.dtype)]),
                             rng=fwd_rng, clean=True)
        return {"logits": logits[:n], "neg_logits": logits[n:]}

    def terms(self):
        xe = supervised_xe if self.formulation == "softmax" else one_vs_all_xe
        return (Term("xe", xe, weight=1.0 - self.alpha),
                Term("icn", pseudo_negative_loss, weight=self.alpha))

    def monitors(self, outputs, batch):
        if "neg_logits" not in outputs:
            return {}
        z = class_logit(outputs["neg_logits"], batch["neg_class"])
        live = (batch["neg_weight"] > 0).astype(jnp.float32)
        count = jnp.maximum(jnp.sum(live), 1.0)
        return {"icn_neg_logit": jnp.sum(live * z) / count,
                "icn_neg_positive": jnp.sum(live * (z > 0)) / count}
