"""The train step of Curriculum Labeling (Cascante-Bonilla et al., AAAI 2021): supervised
training on the round's set (the labeled images and the pseudo-labeled ones the
procedure selected), as the official code's `train_pseudo` (`uvavision/
Curriculum-Labeling`; facts in docs/SAFE_SSL_BASELINES.md, section 4). The rounds, the
selection and the re-initialisation are the procedure's (`sslj.procedures.curriculum`).

Loss, following the code (`curriculum_labeling.*` switches):
  * `class_weighted` (default True, the code): cross-entropy with the class weights
    w_c = (N - n_c) / n_c / 100 of the round's set, as PyTorch's weighted mean
    sum_i w_{y_i} CE_i / sum_i w_{y_i} (so the / 100 cancels); False: the plain mean;
  * `mixup` (default True, the README recipe's `--mixup`): x~ = lam x + (1 - lam) x[perm],
    one lam ~ Beta(`mixup_alpha`, `mixup_alpha`) (1: uniform) per batch, loss
    lam L(x~, y) + (1 - lam) L(x~, y[perm]) (not symmetrised: lam is not folded to
    max(lam, 1 - lam)).
Target modifiers are refused (the mixed targets have no single label to modify).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslj.common.checks import ConfigError, check_bool, check_number
from sslj.data.augment import to_float
from sslj.losses import cross_entropy
from sslj.methods.base import Method, Term


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """w_c = (N - n_c) / n_c / 100 over the round's labels (the code's
    `get_class_weights`); a class with no example gets weight 0."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    n = counts.sum()
    return np.where(counts > 0, (n - counts) / np.maximum(counts, 1) / 100.0, 0.0)


def weighted_xe(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """PyTorch's weighted mean: sum_i w_{y_i} CE_i / sum_i w_{y_i}."""
    per_example = cross_entropy(logits, labels, reduction="none")
    w = weights[labels]
    return jnp.sum(w * per_example) / jnp.maximum(jnp.sum(w), 1e-12)


class CurriculumLabeling(Method):
    name = "curriculum_labeling"
    uses_unlabeled = False  # the procedure folds the pseudo-labeled images into the set

    def __init__(self, config, weights: np.ndarray | None = None):
        super().__init__(config)
        c = len(config.split.seen_classes)
        self.weights = (np.ones(c) if weights is None or not bool(
            config.curriculum_labeling.class_weighted) else np.asarray(weights, np.float64))

    @classmethod
    def validate(cls, config):
        super().validate(config)
        cfg = "curriculum_labeling"
        check_number(config, f"{cfg}.percent_step", low=1, high=100, integer=True)
        check_bool(config, f"{cfg}.mixup")
        check_bool(config, f"{cfg}.class_weighted")
        check_number(config, f"{cfg}.mixup_alpha", low=0.0)
        if float(config.curriculum_labeling.mixup_alpha) <= 0:
            raise ConfigError(f"{cfg}.mixup_alpha", "Beta(alpha, alpha) needs alpha > 0",
                              "> 0")
        if config.get("target", {}).get("kind", "cce") != "cce":
            raise ConfigError("target.kind", f"{config.target.kind!r}: curriculum_labeling "
                              "trains on mixed images, which have no single label to modify",
                              "cce")

    def outputs(self, ctx, batch, rng):
        r_aug, r_lam, r_perm, r_fwd = jax.random.split(rng, 4)
        x = ctx.augment(to_float(batch["image"]), r_aug)
        labels = batch["label"]
        cfg = self.config.curriculum_labeling
        if not bool(cfg.mixup):
            return {"logits": ctx.forward(x, rng=r_fwd, clean=True), "lam": jnp.ones(()),
                    "label_b": labels}
        alpha = float(cfg.mixup_alpha)
        lam = jax.random.beta(r_lam, alpha, alpha)
        perm = jax.random.permutation(r_perm, x.shape[0])
        mixed = lam * x + (1.0 - lam) * x[perm]
        return {"logits": ctx.forward(mixed, rng=r_fwd, clean=True), "lam": lam,
                "label_b": labels[perm]}

    def loss(self, outputs, batch):
        w = jnp.asarray(self.weights, jnp.float32)
        lam = outputs["lam"]
        return (lam * weighted_xe(outputs["logits"], batch["label"], w)
                + (1.0 - lam) * weighted_xe(outputs["logits"], outputs["label_b"], w))

    def terms(self):
        return (Term("cl_xe", self.loss),)

    def monitors(self, outputs, batch):
        del batch
        return {"cl_lambda": outputs["lam"]}
