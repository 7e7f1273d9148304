"""MixMatch (Berthelot et al. 2019), following the official google-research code.

Per step, with B labeled and B unlabeled images:
  1. one weak augmentation of each labeled image, K (2) of each unlabeled one;
  2. the label guess: the mean over the K views of softmax(f(u_k)), from a training-mode
     pass over the K B views that writes no BatchNorm statistics (the official code
     skips that pass's update ops), sharpened at temperature T (0.5):
     q = p^(1/T) / sum_c p_c^(1/T), without gradient;
  3. MixUp over labeled and unlabeled together: W = concat(x, u_1 .. u_K) with targets
     concat(one-hot labels, q, .., q) is shuffled; each example i is mixed with the
     shuffled W_perm(i) with lambda'_i = max(lambda_i, 1 - lambda_i), lambda_i ~ Beta(alpha,
     alpha) (alpha 0.75), drawn per example as the official code (`mixmatch.mix =
     "batch"`: one lambda for the whole batch, as the paper's Algorithm 1 reads);
     lambda' >= 0.5 keeps each mixed example closer to its own image, so the first B
     stay "labeled" and the rest "unlabeled";
  4. ONE forward pass over all (K + 1) B mixed images, which writes the running
     statistics; loss = H(mixed target, p) over the first B + lambda_u(t) x the mean over
     the K B unlabeled examples AND the classes of (p - mixed target)^2 (the official L2
     loss, averaged over classes), lambda_u (75 on CIFAR-10) ramped linearly (the
     configs set `ramp.kind = "linear"` over the official 1,024 kimg).

Why no interleave: the official code runs the (K + 1) mixed batches through the model
one batch at a time and only the first call updates BatchNorm, so it interleaves
examples between the batches to make that first batch (and each batch's statistics) a
fair sample of labeled and unlabeled data. Here the whole mixed set is one batch: its
batch statistics are those of all (K + 1) B examples, and the running statistics are
written from exactly that mix, so there is nothing to interleave.

NS3L (`mixmatch+ns3l`, the NS3L paper's Sec. 4.2.2): over every example of X' and U'
(the one mixed pass), negatives chosen by the threshold (or uniform / oracle draws) from
MixMatch's generated labels (the mixed targets), not the model's predictions; an
example's true label (oracle, monitors) is that of its own image, which lambda' >= 0.5
keeps dominant.

Target modifiers (`config.target`) act on the mixed labeled targets: the supervised term
is H(q~, p) with q~ = modifier(mixed target, mixed logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sslj.common.checks import check_choice, check_number
from sslj.data.augment import to_float
from sslj.losses import soft_cross_entropy
from sslj.methods.base import Method, Term

MIX_MODES = ("example", "batch")


def sharpen(p: jax.Array, temperature: float) -> jax.Array:
    """p^(1/T) renormalised over the last axis (computed in log space)."""
    logp = jnp.log(jnp.maximum(p.astype(jnp.float32), 1e-30)) / temperature
    return jax.nn.softmax(logp, axis=-1)


def mixup(x: jax.Array, y: jax.Array, lam: jax.Array, perm: jax.Array):
    """(lam x + (1 - lam) x[perm], lam y + (1 - lam) y[perm]) with lam per example (N,)
    or a scalar."""
    lam = jnp.asarray(lam, jnp.float32)
    lx = lam.reshape(lam.shape + (1,) * (x.ndim - lam.ndim)) if lam.ndim else lam
    ly = lam.reshape(lam.shape + (1,) * (y.ndim - lam.ndim)) if lam.ndim else lam
    return lx * x + (1.0 - lx) * x[perm], ly * y + (1.0 - ly) * y[perm]


def mix_coefficients(rng: jax.Array, n: int, alpha: float, mode: str) -> jax.Array:
    """lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha): (n,) per example,
    or one scalar broadcast to (n,) for mode "batch"."""
    shape = (n,) if mode == "example" else ()
    lam = jax.random.beta(rng, alpha, alpha, shape)
    lam = jnp.maximum(lam, 1.0 - lam)
    return jnp.broadcast_to(lam, (n,))


def l2_unlabeled(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over examples and classes of (softmax(logits) - target)^2."""
    return jnp.mean(jnp.square(jax.nn.softmax(logits.astype(jnp.float32)) - target))


class MixMatch(Method):
    name = "mixmatch"
    ns3l_neighbours_ok = False  # its NS3L examples are mixed images

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "mixmatch.weight", low=0.0)
        check_number(config, "mixmatch.temperature", low=0.0, low_open=True)
        check_number(config, "mixmatch.k", low=1, integer=True)
        check_number(config, "mixmatch.alpha", low=0.0, low_open=True)
        check_choice(config, "mixmatch.mix", MIX_MODES)

    def outputs(self, ctx, batch, rng):
        c = self.config.mixmatch
        k = int(c.k)
        r_l, r_u, r_guess, r_lam, r_perm, r_fwd = jax.random.split(rng, 6)
        xl = ctx.augment(to_float(batch["image"]), r_l)
        xu = to_float(batch["unlabeled_image"])
        views = jnp.concatenate([ctx.augment(xu, r) for r in jax.random.split(r_u, k)])
        guess_logits = jax.lax.stop_gradient(ctx.forward(views, rng=r_guess, clean=False))
        num_classes = guess_logits.shape[-1]
        p = jax.nn.softmax(guess_logits.astype(jnp.float32)).reshape(k, xu.shape[0], -1)
        q = sharpen(jnp.mean(p, axis=0), float(c.temperature))
        targets = jnp.concatenate(
            [jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.float32)]
            + [q] * k)
        x = jnp.concatenate([xl, views])
        n = x.shape[0]
        perm = jax.random.permutation(r_perm, n)
        lam = mix_coefficients(r_lam, n, float(c.alpha), str(c.mix))
        x_mixed, t_mixed = mixup(x, targets, lam, perm)
        logits = ctx.forward(x_mixed, rng=r_fwd, clean=True)
        b = xl.shape[0]
        return {"logits": logits[:b], "label_target": t_mixed[:b],
                "logits_u": logits[b:], "unlabeled_target": t_mixed[b:],
                "guess": q, "lambda": lam}

    def terms(self):
        return (
            Term("xe", lambda o, b: jnp.mean(soft_cross_entropy(o["logits"],
                                                                 o["label_target"]))),
            Term("mixmatch", lambda o, b: l2_unlabeled(o["logits_u"], o["unlabeled_target"]),
                 weight=float(self.config.mixmatch.weight), ramp=self.consistency_ramp()),
        )

    def loss_terms(self):
        """The supervised term over the mixed targets, modified by `config.target` (the
        base class's modifier works on int labels; here the targets are soft)."""
        modifier = self.target_modifier()
        out = super().loss_terms()
        if modifier.kind == "cce":
            return out

        def modified_xe(outputs, batch, step):
            target = modifier(outputs["label_target"], outputs["logits"], step)
            return jnp.mean(soft_cross_entropy(outputs["logits"], target))

        return tuple(Term("xe", modified_xe, uses_step=True) if t.name == "xe" else t
                     for t in out)

    def target_monitors(self, outputs, batch, step):
        modifier = self.target_modifier()
        if modifier.kind == "cce":
            return {}
        target = modifier(outputs["label_target"], outputs["logits"], step)
        return {"target_eps": jnp.mean(modifier.epsilon(outputs["logits"], step)),
                "target_label_changed": jnp.mean(
                    jnp.argmax(target, -1) != jnp.argmax(outputs["label_target"], -1))}

    def ns3l_source(self, outputs, batch):
        """NS3L over X' and U' with negatives from the generated (mixed) labels."""
        out = {"logits": jnp.concatenate([outputs["logits"], outputs["logits_u"]]),
               "reference": jnp.concatenate([outputs["label_target"],
                                             outputs["unlabeled_target"]])}
        if "unlabeled_label" in batch:
            k = int(self.config.mixmatch.k)
            out["true_label"] = jnp.concatenate(
                [batch["label"].astype(jnp.int32)]
                + [batch["unlabeled_label"].astype(jnp.int32)] * k)
        return out

    def monitors(self, outputs, batch):
        out = {"mixmatch_guess_max": jnp.mean(jnp.max(outputs["guess"], axis=-1)),
               "mixmatch_lambda": jnp.mean(outputs["lambda"])}
        if "unlabeled_label" in batch:
            out["mixmatch_guess_accuracy"] = jnp.mean(
                (jnp.argmax(outputs["guess"], -1) == batch["unlabeled_label"])
                .astype(jnp.float32))
        return out
