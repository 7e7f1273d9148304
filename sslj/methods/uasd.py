"""UASD, uncertainty-aware self-distillation (Chen et al., AAAI 2020), following the
official code (`yanbeic/ssl-class-mismatch`, `train_model_uasd.py`; facts in
docs/SAFE_SSL_BASELINES.md, section 1).

State (`TrainState.extra`): for every unlabeled example the running *sum* of its softmax
predictions (`uasd_sum`, N x C) and the number of predictions summed (`uasd_count`); the
target of an example is their uniform average over all its previous predictions,
hist = sum / max(count, 1) (not an EMA; an example never seen has the all-zero row,
confidence 0). The same for the labeled examples (`uasd_sum_l`), whose rows the
official code filters too (below), and for the validation examples (`uasd_sum_v`).

Per step, one clean pass over augment(concat(labeled, unlabeled)) (it writes the
BatchNorm running statistics):
  * q = hist of each row, taken *before* this step's predictions are added;
    conf = max_c q; selected = conf >= tau;
  * L_lab = CE(labeled logits, labels), the mean over the labeled rows;
  * L_unl = soft-target CE H(q, softmax(logits)) averaged over the selected rows (0 when
    none is), the official `tf.losses.softmax_cross_entropy` with the mask;
  * total = L_lab + w r(t) L_unl with w = `uasd.weight` (1) and the official schedule:
    r = 0 before `uasd.start_fraction` (0.2) of the run, then exp(-5 (1 - t / T_r)^2)
    with T_r = `uasd.ramp_fraction` (0.4) of the run, 1 after it (the code: nothing
    before 100k steps, exp(-5 (1 - t / 200k)^2) until 200k, of 500k; the weight jumps
    from 0 to 0.287 at the start, as there);
  * after the update, softmax(logits) of every row is added to its example's sum (a
    repeated id in one batch counts once, as numpy's fancy `+=` there).

The quirk: the official mask is applied to all rows, the labeled ones included (the
code's "accumulation on all"): a labeled example whose own history is confident also
gets the self-distillation term towards its history. `uasd.filter_labeled = True` (the
default, as the code) keeps that; False filters the unlabeled rows only, as the paper
describes.

The threshold tau (`uasd_tau`): the mean over the validation examples of max_c of their
own running-average prediction, recomputed whenever the validation predictions are
refreshed; `uasd.threshold_init` (0.9, the code's initial value) until the first
refresh. Where sslj differs from the code, on purpose: the code feeds 10 validation
images into every training batch (they shape BatchNorm's batch statistics, get no
loss, and their train-mode predictions are accumulated); sslj's step carries no
validation data, so every `uasd.valid_every` steps the loop predicts the whole
validation set (inference mode, running statistics) and adds those predictions to the
validation sums. With 10 images a step, the code visits each of its validation
examples once per |V| / 10 steps; `valid_every` = |V| / 10 (30 on the embedded split)
matches that rate. The validation images never enter BatchNorm's training statistics.

Monitors: the selected fraction of the unlabeled batch (`uasd_selected`), of the labeled
rows (`uasd_selected_labeled`), tau, and with the true labels of the unlabeled batch
(embedded data) `unseen_share`, the share of the selected unlabeled examples that come
from unseen classes (`sslj.methods.base.unseen_share`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslj.common.checks import check_bool, check_number
from sslj.methods.base import Method, Term, clean_pass, supervised_xe, unseen_share
from sslj.train.schedules import ramp as ramp_fn


def running_average(total: jax.Array, count: jax.Array) -> jax.Array:
    """hist = sum / max(count, 1): the uniform average of the summed predictions; the
    zero row for an example never predicted."""
    return total / jnp.maximum(count, 1).astype(total.dtype)[:, None]


def accumulate(total: jax.Array, count: jax.Array, ids: jax.Array, probs: jax.Array):
    """sum[ids] += probs; count[ids] += 1 (a repeated id counts once, as numpy's
    `acc[idx] += p`)."""
    return (total.at[ids].set(total[ids] + probs), count.at[ids].set(count[ids] + 1))


def selected_soft_xe(logits: jax.Array, targets: jax.Array, selected: jax.Array) -> jax.Array:
    """H(q, softmax(logits)) averaged over the selected rows; 0 when none is."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    per_row = -jnp.sum(targets * logp, axis=-1)
    sel = selected.astype(jnp.float32)
    return jnp.sum(per_row * sel) / jnp.maximum(jnp.sum(sel), 1.0)


def threshold_from_validation(total_v: np.ndarray, count_v: np.ndarray) -> float | None:
    """tau: the mean over the validation examples predicted so far of max_c of their
    running-average prediction (the code's `th_valid`); None before any prediction."""
    seen = np.asarray(count_v) > 0
    if not seen.any():
        return None
    hist = np.asarray(total_v, np.float64)[seen] / np.asarray(count_v)[seen][:, None]
    return float(np.mean(hist.max(axis=-1)))


class UASD(Method):
    name = "uasd"
    uses_labeled_index = True
    refresh_set = "validation"

    def __init__(self, config):
        super().__init__(config)
        self.num_steps = int(config.num_steps)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "uasd.weight", low=0.0)
        check_number(config, "uasd.threshold_init", low=0.0, high=1.0)
        check_number(config, "uasd.start_fraction", low=0.0, high=1.0)
        check_number(config, "uasd.ramp_fraction", low=0.0, high=1.0)
        check_number(config, "uasd.valid_every", low=1, integer=True)
        check_bool(config, "uasd.filter_labeled")

    def init_extra(self, num_unlabeled, variables):
        c = len(self.config.split.seen_classes)
        num_labeled = self.data_sizes.get("labeled", 0)
        num_validation = self.data_sizes.get("validation", 0)
        z = jnp.zeros
        return {"uasd_sum": z((num_unlabeled, c), jnp.float32),
                "uasd_count": z((num_unlabeled,), jnp.int32),
                "uasd_sum_l": z((max(num_labeled, 1), c), jnp.float32),
                "uasd_count_l": z((max(num_labeled, 1),), jnp.int32),
                "uasd_sum_v": z((max(num_validation, 1), c), jnp.float32),
                "uasd_count_v": z((max(num_validation, 1),), jnp.int32),
                "uasd_tau": jnp.asarray(float(self.config.uasd.threshold_init), jnp.float32)}

    def outputs(self, ctx, batch, rng):
        logits, logits_u, _ = clean_pass(ctx, batch, *jax.random.split(rng))
        extra = ctx.state.extra
        ids_u = batch["unlabeled_index"]
        q_u = running_average(extra["uasd_sum"][ids_u], extra["uasd_count"][ids_u])
        tau = extra["uasd_tau"]
        out = {"logits": logits, "logits_u": logits_u, "target_u": q_u,
               "selected_u": jnp.max(q_u, axis=-1) >= tau, "tau": tau}
        if bool(self.config.uasd.filter_labeled):
            ids_l = batch["labeled_index"]
            q_l = running_average(extra["uasd_sum_l"][ids_l], extra["uasd_count_l"][ids_l])
            out.update(target_l=q_l, selected_l=jnp.max(q_l, axis=-1) >= tau)
        return out

    def distill(self, outputs, batch):
        """L_unl: soft CE over the selected rows (labeled ones too with filter_labeled)."""
        del batch
        if "target_l" not in outputs:
            return selected_soft_xe(outputs["logits_u"], outputs["target_u"],
                                    outputs["selected_u"])
        return selected_soft_xe(
            jnp.concatenate([outputs["logits"], outputs["logits_u"]]),
            jnp.concatenate([outputs["target_l"], outputs["target_u"]]),
            jnp.concatenate([outputs["selected_l"], outputs["selected_u"]]))

    def schedule(self):
        """r(t): 0 before start_fraction of the run, then Oliver's exp ramp to
        ramp_fraction of the run, then 1."""
        cfg = self.config.uasd
        start = int(round(float(cfg.start_fraction) * self.num_steps))
        inner = ramp_fn("oliver_exp", int(round(float(cfg.ramp_fraction) * self.num_steps)))
        return lambda step: jnp.where(jnp.asarray(step) >= start, inner(step), 0.0)

    def terms(self):
        return (Term("xe", supervised_xe),
                Term("uasd", self.distill, weight=float(self.config.uasd.weight),
                     ramp=self.schedule()))

    def update_extra(self, state, new_state, outputs, batch):
        extra = dict(state.extra)
        extra["uasd_sum"], extra["uasd_count"] = accumulate(
            extra["uasd_sum"], extra["uasd_count"], batch["unlabeled_index"],
            jax.nn.softmax(outputs["logits_u"].astype(jnp.float32)))
        if bool(self.config.uasd.filter_labeled):
            extra["uasd_sum_l"], extra["uasd_count_l"] = accumulate(
                extra["uasd_sum_l"], extra["uasd_count_l"], batch["labeled_index"],
                jax.nn.softmax(outputs["logits"].astype(jnp.float32)))
        return extra

    def monitors(self, outputs, batch):
        sel = outputs["selected_u"].astype(jnp.float32)
        out = {"uasd_selected": jnp.mean(sel), "uasd_tau": outputs["tau"],
               **unseen_share(sel, batch)}
        if "selected_l" in outputs:
            out["uasd_selected_labeled"] = jnp.mean(outputs["selected_l"].astype(jnp.float32))
        return out

    def refresh_due(self, step: int) -> bool:
        return step % int(self.config.uasd.valid_every) == 0

    def refresh(self, extra, logits_validation, step: int, true_labels=None):
        """Adds the validation predictions to their sums; tau = their mean max-confidence.
        Returns (extra, stats)."""
        del step, true_labels
        logits = np.asarray(logits_validation, np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        n = len(probs)
        total = np.asarray(extra["uasd_sum_v"], np.float32).copy()
        count = np.asarray(extra["uasd_count_v"]).copy()
        total[:n] += probs.astype(np.float32)
        count[:n] += 1
        tau = threshold_from_validation(total[:n], count[:n])
        return ({**extra, "uasd_sum_v": total, "uasd_count_v": count,
                 "uasd_tau": np.asarray(tau, np.float32)}, {"uasd_tau": tau})
