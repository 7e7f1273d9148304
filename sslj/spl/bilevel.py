"""SPL's bi-level steps (Eq. 4-11), each a separately jitted pure function over the one
TrainState.

  * inner step (Eq. 5, 8): cross-entropy on a V1 batch, differentiated with respect to
    the relaxed mask scores only; the weights are constants (bit-identical after the
    step). Hard masks go through `masks.hard_mask` (straight-through), soft masks
    through `masks.soft_mask`. Updates `mask_scores`, `mask_opt_state` and `masks`
    (and, with `spl.inner_bn_update`, the BatchNorm running statistics, see below).
  * outer step (Eq. 6, 7, 11): the ordinary train step (`sslj.train.step`) of the outer
    method with the masks frozen in the state; the step keeps every weight whose mask
    is zero bit for bit (`sslj.train.masking.gate_updates`), whatever the optimizer.
    The outer method is `SPLConsistency` (supervised cross-entropy + a consistency term
    on the unlabeled batch, Eq. 6-7, normalised as `spl.consistency_normalization`
    says) or, with `spl.outer_loss = "base"`, the base method's own loss.

BatchNorm during the inner step: the pass uses batch statistics (training mode, as the
official PyTorch code's mask learning). With `spl.inner_bn_update` (default) it also
writes the running statistics, so they describe the network under its current masks
(running statistics are not weights; without this, evaluating after inner steps with no
outer step -- the "w/o outer" ablation -- would use the statistics of the unmasked net).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sslj.common import sharding
from sslj.data.augment import to_float
from sslj.losses import cross_entropy, softmax_mse, softmax_squared_l2
from sslj.methods.base import Term, supervised_xe, without_addons
from sslj.methods.pi_model import PiModel
from sslj.spl.masks import mask_stats, masks_from_scores
from sslj.train.masking import apply_masks
from sslj.train.step import Forward

INNER_OPTIMIZERS = ("adam", "sgd")
OUTER_LOSSES = ("consistency", "base")
CONSISTENCY_NORMALIZATIONS = ("official", "per_term_mean")
RANK_BY = ("score", "magnitude")
OUTER_OPTIMIZERS = ("continue", "fresh")


class SPLConsistency(PiModel):
    """Eq. 6-7: cross-entropy on the labeled images + w Omega(x) on the unlabeled ones,
    Omega = ||h(perturb(x)) - h(x)||^2 with h the softmax output and perturb the config's
    stochastic augmentation (two passes as the Pi-model, `pi_model.target_pass`; the
    second is the target and carries no gradient unless `pi_model.stop_gradient_target`
    is False). w = `spl.consistency_weight` (10 in the official code), constant: the
    outer steps follow a trained model.

    The normalisation (`spl.consistency_normalization`):
      * "official" (default): the official code's `train_second` with its PiModel, both
        terms summed over their examples and divided by the whole batch B_l + B_u,
        Omega averaged over the C classes:
            (sum_l CE + w sum_u mean_c (h' - h)^2) / (B_l + B_u).
        Eq. 6 sums over D_L and D_U in the same way; the official code's class mean
        makes w = 10 the paper's weight 1 times 10 / C. The coefficient 10 was chosen
        with this normalisation, so it is the default.
      * "per_term_mean": each term a mean over its own batch, Omega summed over classes
        (Eq. 7 literally): mean_l CE + w mean_u sum_c (h' - h)^2. The consistency term
        is then C B_l / B_u times stronger against the cross-entropy (4 at C = 6,
        B_l = 8, B_u = 12).
    """

    name = "spl_consistency"

    def terms(self):
        weight = float(self.config.spl.consistency_weight)
        if self.config.spl.consistency_normalization == "per_term_mean":
            return (Term("xe", supervised_xe),
                    Term("consistency",
                         lambda o, b: softmax_squared_l2(o["logits_u"], o["logits_u_target"]),
                         weight=weight))
        b_l, b_u = int(self.config.batch_size), int(self.config.unlabeled_batch_size)
        # mean_l CE * B_l / B = sum_l CE / B; softmax_mse (mean over B_u and C) * B_u / B
        # = sum_u mean_c / B
        return (Term("xe", supervised_xe, weight=b_l / (b_l + b_u)),
                Term("consistency",
                     lambda o, b: softmax_mse(o["logits_u"], o["logits_u_target"]),
                     weight=weight * b_u / (b_l + b_u)))


def outer_method(config, base_method):
    """The method of the outer steps: `SPLConsistency` (SPL's Eq. 6-7 alone: the base
    method's add-on terms, EntMin and NS3L, are not part of it) or the base method itself
    (with its add-ons)."""
    if config.spl.outer_loss == "consistency":
        return SPLConsistency(without_addons(config))
    return base_method


def inner_optimizer(spl_config) -> optax.GradientTransformation:
    """Optimizer of the relaxed scores (Eq. 8): Adam or plain SGD at `spl.inner_lr`."""
    lr = float(spl_config.inner_lr)
    if spl_config.inner_optimizer == "adam":
        return optax.adam(lr)
    return optax.sgd(lr)


def make_inner_step_fn(model, counts, kind: str, optimizer: optax.GradientTransformation,
                       bn_update: bool = True, rank_by: str = "score"):
    """The un-jitted inner step `(state, batch, index) -> (state, metrics)`.

    `batch` = {"image", "label"} from V1; `index` (an int32 scalar) counts inner steps
    over the whole procedure and keys the dropout RNG. `counts` (per masked leaf, the
    static k^l of the hard mask; None for unmasked leaves) fixes each layer's ratio.
    """

    def inner(state, batch, index):
        rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), index)
        x = to_float(batch["image"])
        params = jax.lax.stop_gradient(state.params)

        def loss_fn(scores):
            masks = masks_from_scores(scores, counts, kind, rank_by)
            forward = Forward(model, apply_masks(params, masks), state.batch_stats,
                              "clean" if bn_update else "none", masks)
            logits = forward(x, rng=rng, clean=True)
            return cross_entropy(logits, batch["label"]), (forward.new_batch_stats, logits)

        (loss, (stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.mask_scores)
        updates, opt_state = optimizer.update(grads, state.mask_opt_state, state.mask_scores)
        scores = optax.apply_updates(state.mask_scores, updates)
        masks = masks_from_scores(scores, counts, kind, rank_by)
        stats_ = mask_stats(masks, state.masks, counts)
        new_state = state.replace(mask_scores=scores, mask_opt_state=opt_state, masks=masks,
                                  batch_stats=stats)
        metrics = {"spl/inner_loss": loss,
                   "spl/inner_accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                   "spl/density": stats_["density"], "spl/swaps": stats_["swaps"],
                   "spl/l2_score_grads": jnp.sqrt(sum(jnp.sum(jnp.square(g))
                                                      for g in jax.tree.leaves(grads)))}
        return new_state, metrics

    return inner


def make_inner_step(model, counts, kind, optimizer, mesh, *, bn_update: bool = True,
                    rank_by: str = "score", donate: bool = True):
    """`make_inner_step_fn` jitted once: state replicated, batch sharded on the data axis."""
    repl = sharding.replicated(mesh)
    return jax.jit(make_inner_step_fn(model, counts, kind, optimizer, bn_update, rank_by),
                   in_shardings=(repl, sharding.batch_sharding(mesh), repl),
                   out_shardings=(repl, repl), donate_argnums=(0,) if donate else ())
