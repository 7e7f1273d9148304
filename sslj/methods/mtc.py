"""MTC, the multi-task curriculum framework for open-set SSL (Yu et al., ECCV 2020),
following the official code (`YU1ut/Multi-Task-Curriculum-Framework-for-Open-Set-SSL`,
`train_multi.py`; facts in docs/SAFE_SSL_BASELINES.md, section 3).

The network has one more output, the in-distribution ("ID-ness") logit
(`sslj.models.DomainHead`: the class head and a one-logit head on the same features).
The domain set is labeled + unlabeled; every example has a domain label: labeled 1
(fixed), unlabeled `mtc.start_label` (0, the code) at first.

Per step (one jitted step):
  * the domain loss L_d = BCE-with-logits(d(x), domain label) over a domain batch, here
    the step's labeled and unlabeled images under their own augmentation (the code
    draws 64 from the whole domain set, so labeled images are |L| / (|L| + |U|) of it;
    here half the batch: a difference of class balance, stated). The pass uses batch
    statistics and leaves the running statistics untouched (the code's `set_bn_eval`);
  * from step `pre_steps` = `mtc.pre_epochs` epochs on (the code's 100 pre-epochs of
    domain-only training): MixMatch (`sslj.methods.mixmatch`, its settings) on the
    labeled images and the *kept* unlabeled ones: each unlabeled row of the batch is
    replaced by a kept row of the same batch (the kept rows in turn), so MixMatch sees
    only kept images; a batch with none kept gives the unlabeled term 0. L = L_d + L_x +
    lambda_u r(t - pre_steps) L_u, the ramp restarting at phase 2 as the code's.
  * after the update, sigmoid(d(x)) of the unlabeled rows (training mode, augmented:
    the code records them during the epoch) is written to the epoch's score column.
After every epoch (`refresh`, host side, `mtc.epoch_steps` steps, 0: one pass over the
unlabeled set): the epoch's scores enter a ring buffer of the last `mtc.ring_epochs`
epochs (10, the code); once it is full, the domain labels are the ring's mean ("the
average output probability of the past 10 epochs"); then Otsu's threshold over the
unlabeled domain labels (`otsu_threshold`, as scikit-image's `threshold_otsu`, 256
bins) keeps the examples at or above it. Constant scores (the code's issue #1, where
Otsu failed) keep every example and say so (`mtc_otsu_constant`).

Embedded defaults shorten the schedule (5 pre-epochs, a ring of 5 epochs: the twin has
~25 epochs in all); the full-scale configs set the code's 100 / 10.

Monitors: `mtc_kept` (the kept fraction of the unlabeled batch), `unseen_share` (the
share of the kept unlabeled rows from unseen classes), the domain scores of seen and
unseen examples (`mtc_score_seen`, `mtc_score_unseen`); per epoch `refresh/mtc_*`
(threshold, kept fraction, unseen share of the kept set over the whole unlabeled set).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sslj.common.checks import check_number
from sslj.data.augment import to_float
from sslj.methods.base import Term, unseen_share
from sslj.methods.mixmatch import MixMatch


def otsu_threshold(values: np.ndarray, nbins: int = 256) -> float | None:
    """Otsu's threshold as scikit-image's `threshold_otsu` (a histogram of `nbins` bins
    over [min, max]; the bin centre maximising the between-class variance); None when
    the values are constant (nothing to separate)."""
    values = np.asarray(values, np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return None
    counts, edges = np.histogram(values, bins=nbins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2.0
    w1 = np.cumsum(counts)
    w2 = np.cumsum(counts[::-1])[::-1]
    m1 = np.cumsum(counts * centers) / np.maximum(w1, 1)
    m2 = (np.cumsum((counts * centers)[::-1]) / np.maximum(w2[::-1], 1))[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centers[int(np.argmax(between))])


def kept_sources(kept: jax.Array) -> jax.Array:
    """For each row, the row that replaces it: the kept rows in turn (row i -> the
    (i mod n_kept)-th kept row); the identity's shape when none is kept."""
    n = kept.shape[0]
    order = jnp.argsort(~kept, stable=True)  # kept rows first, in their order
    count = jnp.maximum(jnp.sum(kept), 1)
    return order[jnp.arange(n) % count]


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean binary cross-entropy with logits against soft targets in [0, 1]."""
    z = logits.astype(jnp.float32)
    return jnp.mean(jnp.maximum(z, 0) - z * targets + jnp.log1p(jnp.exp(-jnp.abs(z))))


class MTC(MixMatch):
    name = "mtc"
    model_options = {"domain_head": True}
    refresh_set = "none"

    def __init__(self, config):
        super().__init__(config)
        self.num_unlabeled = int(config.split.unlabeled_size)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "mtc.pre_epochs", low=0)
        check_number(config, "mtc.ring_epochs", low=1, integer=True)
        check_number(config, "mtc.epoch_steps", low=0, integer=True)
        check_number(config, "mtc.start_label", low=0.0, high=1.0)
        check_number(config, "mtc.domain_weight", low=0.0)

    @property
    def epoch_steps(self) -> int:
        steps = int(self.config.mtc.epoch_steps)
        return steps or math.ceil(self.num_unlabeled / int(self.config.unlabeled_batch_size))

    @property
    def pre_steps(self) -> int:
        return int(round(float(self.config.mtc.pre_epochs) * self.epoch_steps))

    def init_extra(self, num_unlabeled, variables):
        self.num_unlabeled = num_unlabeled
        ring = int(self.config.mtc.ring_epochs)
        start = float(self.config.mtc.start_label)
        return {"mtc_label": jnp.full((num_unlabeled,), start, jnp.float32),
                "mtc_scores": jnp.full((num_unlabeled,), start, jnp.float32),
                "mtc_ring": jnp.zeros((num_unlabeled, ring), jnp.float32),
                "mtc_epochs": jnp.zeros((), jnp.int32),
                "mtc_keep": jnp.ones((num_unlabeled,), jnp.bool_)}

    def outputs(self, ctx, batch, rng):
        r_dom, r_fwd, r_mm = jax.random.split(rng, 3)
        xl, xu = to_float(batch["image"]), to_float(batch["unlabeled_image"])
        b = xl.shape[0]
        ids = batch["unlabeled_index"]
        extra = ctx.state.extra
        # the domain pass: batch statistics, the running ones untouched (clean=False)
        _, sown = ctx.forward(ctx.augment(jnp.concatenate([xl, xu]), r_dom), rng=r_fwd,
                              clean=False, capture=True)
        domain = sown["domain_logit"]
        target = jnp.concatenate([jnp.ones((b,), jnp.float32), extra["mtc_label"][ids]])
        kept = extra["mtc_keep"][ids]
        src = kept_sources(kept)
        mm_batch = {**batch, "unlabeled_image": batch["unlabeled_image"][src]}
        if "unlabeled_label" in batch:
            mm_batch["unlabeled_label"] = batch["unlabeled_label"][src]
        out = super().outputs(ctx, mm_batch, r_mm)
        return {**out, "domain_logit": domain, "domain_target": target,
                "mtc_kept": kept, "mtc_any_kept": jnp.any(kept).astype(jnp.float32)}

    def terms(self):
        pre = self.pre_steps
        base = {t.name: t for t in super().terms()}
        mm_ramp = self.consistency_ramp()
        return (
            Term("mtc_domain", lambda o, b: bce_with_logits(o["domain_logit"],
                                                            o["domain_target"]),
                 weight=float(self.config.mtc.domain_weight)),
            Term("xe", base["xe"].fn,
                 ramp=lambda step: (jnp.asarray(step) >= pre).astype(jnp.float32)),
            Term("mixmatch", lambda o, b: o["mtc_any_kept"] * base["mixmatch"].fn(o, b),
                 weight=base["mixmatch"].weight,
                 ramp=lambda step: (jnp.asarray(step) >= pre) * mm_ramp(
                     jnp.maximum(jnp.asarray(step) - pre, 0))),
        )

    def update_extra(self, state, new_state, outputs, batch):
        b = batch["image"].shape[0]
        scores = jax.nn.sigmoid(outputs["domain_logit"][b:].astype(jnp.float32))
        ids = batch["unlabeled_index"]
        return {**state.extra, "mtc_scores": state.extra["mtc_scores"].at[ids].set(scores)}

    def monitors(self, outputs, batch):
        out = super().monitors(outputs, batch)
        kept = outputs["mtc_kept"].astype(jnp.float32)
        out.update({"mtc_kept": jnp.mean(kept), **unseen_share(kept, batch)})
        if "unlabeled_label" in batch:
            b = batch["image"].shape[0]
            s = jax.nn.sigmoid(outputs["domain_logit"][b:].astype(jnp.float32))
            unseen = (batch["unlabeled_label"] < 0).astype(jnp.float32)
            out["mtc_score_unseen"] = jnp.sum(s * unseen) / jnp.maximum(jnp.sum(unseen), 1.0)
            out["mtc_score_seen"] = (jnp.sum(s * (1 - unseen))
                                     / jnp.maximum(jnp.sum(1 - unseen), 1.0))
        return out

    def refresh_due(self, step: int) -> bool:
        return step % self.epoch_steps == 0

    def refresh(self, extra, logits_unlabeled, step: int, true_labels=None):
        """The epoch's scores into the ring; domain labels = the ring's mean once full;
        Otsu's threshold over them keeps the examples at or above it."""
        del logits_unlabeled
        ring = np.asarray(extra["mtc_ring"]).copy()
        epochs = int(extra["mtc_epochs"])
        ring[:, epochs % ring.shape[1]] = np.asarray(extra["mtc_scores"])
        epochs += 1
        label = np.asarray(extra["mtc_label"]).copy()
        if epochs >= ring.shape[1]:
            label = ring.mean(axis=1).astype(np.float32)
        thr = otsu_threshold(label)
        keep = np.ones(len(label), bool) if thr is None else label >= thr
        stats = {"mtc_threshold": thr, "mtc_kept_fraction": float(keep.mean()),
                 "mtc_otsu_constant": float(thr is None), "mtc_epochs": epochs}
        if true_labels is not None:
            t = np.asarray(true_labels)
            stats["mtc_unseen_share"] = float(np.mean(t[keep] < 0)) if keep.any() else 0.0
            if (t < 0).any() and (t >= 0).any():
                stats["mtc_label_unseen"] = float(label[t < 0].mean())
                stats["mtc_label_seen"] = float(label[t >= 0].mean())
        stats = {k: v for k, v in stats.items() if v is not None}
        return ({**extra, "mtc_ring": ring, "mtc_epochs": np.asarray(epochs, np.int32),
                 "mtc_label": label, "mtc_keep": keep}, stats)
