"""FixMatch (Sohn et al. 2020) and the SSL report's attention-KL FixMatch (Task 3).

`fixmatch`, per step, with B labeled and mu B unlabeled images:
  * views: the labeled images weakly augmented; each unlabeled image twice, a weak view
    and a strong one (an independent weak flip-and-crop, then RandAugment with two
    random ops at random magnitudes and Cutout, `sslj.data.randaugment.strong`, on the
    device inside the step). The weak augmentation is `config.data`'s (FixMatch: flip
    and a 4-px reflect-pad crop, `noise_std` 0);
  * ONE forward pass over concat(labeled, weak, strong), so BatchNorm normalises all
    (2 mu + 1) B images as one batch and that pass alone writes the running statistics
    (as the official code, which runs the concatenated batch through the model once);
  * pseudo-labels argmax p(weak) without gradient, mask max p(weak) >= tau (the official
    code's `>=`; tau 0.95);
  * loss = xe(labeled) + lambda_u * (1 / (mu B)) sum_u mask_u xe(strong_u, pseudo_u): the
    unlabeled term is averaged over ALL mu B examples, confident or not, as the paper
    and its code; unconfident examples add exactly zero loss and gradient.
The paper's optimiser (SGD Nesterov 0.9, lr 0.03 cos(7 pi k / 16 K), weight decay 5e-4 on
kernels only) and EMA 0.999 are config settings (`experiments/configs/fixmatch_cifar10.py`).

Monitors (`monitors/fixmatch_*`): `mask_rate` (fraction of the unlabeled batch that
passes tau), `pseudo_label_accuracy` (of the confident pseudo-labels against the
unlabeled images' true labels; an unseen-class image is always wrong) and, under class
mismatch, `unseen_pass_rate` (fraction of the unseen-class unlabeled images that pass
tau). The true labels come in the batch (`unlabeled_label`, -1 for unseen classes) and
feed these monitors only.

`fixmatch_attention`, the report's Task 3, needs a model with the attention head
(`model_kwargs.attention = True`, `sslj.models.attention`): on top of FixMatch's loss it
adds `attention_weight` x the KL divergence between the softmax over positions of the
flattened attention maps of the weak view (the target) and of the strong view, for the
unlabeled examples whose weak-view confidence passes tau, averaged like the unlabeled
term over all mu B examples. Where the report is silent, chosen here: the direction
KL(weak || strong) with the weak map as a constant target (as the pseudo-label;
`attention_target_grad = True` back-propagates through both), weight 1. The report
compares the maps position by position although the strong view is rotated, sheared and
translated; so does this term (it asks for attention on the same places regardless).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslj.common.checks import ConfigError, check_bool, check_number
from sslj.data import randaugment
from sslj.data.augment import to_float
from sslj.losses import cross_entropy
from sslj.methods.base import Method, Term, supervised_xe, unseen_share


def confidence_mask(logits_weak: jax.Array, threshold: float):
    """(pseudo-labels, mask, confidence) of p = softmax(logits) without gradient; the mask
    is max p >= threshold (FixMatch's code)."""
    p = jax.nn.softmax(jax.lax.stop_gradient(logits_weak).astype(jnp.float32))
    confidence = jnp.max(p, axis=-1)
    return jnp.argmax(p, axis=-1), (confidence >= threshold).astype(jnp.float32), confidence


def masked_unlabeled_xe(logits_strong: jax.Array, pseudo_label: jax.Array,
                        mask: jax.Array) -> jax.Array:
    """(1 / N) sum_i mask_i xe(logits_strong_i, pseudo_label_i) over all N examples."""
    per_example = cross_entropy(logits_strong, pseudo_label, reduction="none")
    return jnp.mean(per_example * mask)


def attention_kl(att_target: jax.Array, att: jax.Array, mask: jax.Array) -> jax.Array:
    """(1 / N) sum_i mask_i KL(softmax(att_target_i) || softmax(att_i)) over flattened
    (N, H * W) attention maps, softmax over the positions."""
    logq = jax.nn.log_softmax(att_target.astype(jnp.float32), axis=-1)
    logp = jax.nn.log_softmax(att.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(logq) * (logq - logp), axis=-1)
    return jnp.mean(kl * mask)


def pseudo_label_monitors(prefix: str, pseudo_label, mask, batch) -> dict:
    """Mask rate and, where the batch carries the unlabeled true labels, the confident
    pseudo-labels' accuracy and the unseen-class pass rate."""
    out = {f"{prefix}_mask_rate": jnp.mean(mask)}
    if "unlabeled_label" not in batch:
        return out
    true = batch["unlabeled_label"]
    correct = (pseudo_label == true).astype(jnp.float32)
    out[f"{prefix}_pseudo_label_accuracy"] = (jnp.sum(correct * mask)
                                              / jnp.maximum(jnp.sum(mask), 1.0))
    unseen = (true < 0).astype(jnp.float32)
    out[f"{prefix}_unseen_pass_rate"] = (jnp.sum(unseen * mask)
                                         / jnp.maximum(jnp.sum(unseen), 1.0))
    out.update(unseen_share(mask, batch))
    return out


def strong_from_config(config):
    """`(images, rng) -> images`: RandAugment + Cutout with `config.fixmatch`'s settings."""
    c = config.fixmatch
    num_ops, cutout, fraction = int(c.num_ops), bool(c.cutout), float(c.cutout_fraction)
    return lambda x, rng: randaugment.strong(x, rng, num_ops=num_ops, cutout=cutout,
                                             cutout_fraction=fraction)


class FixMatch(Method):
    name = "fixmatch"
    attention = False  # fixmatch_attention: the attention maps are captured and compared

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "fixmatch.weight", low=0.0)
        check_number(config, "fixmatch.threshold", low=0.0, high=1.0)
        check_number(config, "fixmatch.num_ops", low=0, integer=True)
        check_bool(config, "fixmatch.cutout")
        check_number(config, "fixmatch.cutout_fraction", low=0.0, high=1.0)
        check_number(config, "fixmatch.attention_weight", low=0.0)
        check_bool(config, "fixmatch.attention_target_grad")
        if cls.attention and not bool(config.get("model_kwargs", {}).get("attention", False)):
            raise ConfigError("model_kwargs.attention", f"{cls.name} needs the model's "
                              "attention head", "True")

    def __init__(self, config):
        super().__init__(config)
        self.strong = strong_from_config(config)

    def outputs(self, ctx, batch, rng):
        r_l, r_w, r_s_weak, r_s, r_fwd = jax.random.split(rng, 5)
        xl = ctx.augment(to_float(batch["image"]), r_l)
        xu = to_float(batch["unlabeled_image"])
        weak = ctx.augment(xu, r_w)
        strong = self.strong(ctx.augment(xu, r_s_weak), r_s)
        x = jnp.concatenate([xl, weak, strong])
        if self.attention:
            logits, sown = ctx.forward(x, rng=r_fwd, clean=True, capture=True)
            att = sown["attention"]
        else:
            logits = ctx.forward(x, rng=r_fwd, clean=True)
        n, m = xl.shape[0], xu.shape[0]
        logits_w, logits_s = logits[n:n + m], logits[n + m:]
        label, mask, confidence = confidence_mask(logits_w, float(self.config.fixmatch.threshold))
        out = {"logits": logits[:n], "logits_u": logits_w, "logits_u_strong": logits_s,
               "pseudo_label": label, "mask": mask, "confidence": confidence}
        if self.attention:
            att_w = att[n:n + m]
            if not bool(self.config.fixmatch.attention_target_grad):
                att_w = jax.lax.stop_gradient(att_w)
            out.update(attention_weak=att_w, attention_strong=att[n + m:])
        return out

    def terms(self):
        c = self.config.fixmatch
        out = (Term("xe", supervised_xe),
               Term("fixmatch", lambda o, b: masked_unlabeled_xe(
                   o["logits_u_strong"], o["pseudo_label"], o["mask"]),
                   weight=float(c.weight)))
        if self.attention:
            out += (Term("attention_kl", lambda o, b: attention_kl(
                o["attention_weak"], o["attention_strong"], o["mask"]),
                weight=float(c.attention_weight)),)
        return out

    def monitors(self, outputs, batch):
        return pseudo_label_monitors("fixmatch", outputs["pseudo_label"], outputs["mask"],
                                     batch)


class FixMatchAttention(FixMatch):
    name = "fixmatch_attention"
    attention = True
