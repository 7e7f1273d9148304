"""Virtual Adversarial Training (Miyato et al. 2018) with the Oliver et al. 2018 defaults.

For each unlabeled image x (after the clean pass's augmentation):
  d ~ N(0, I), drawn from a key folded with the example's id (so the loss does not
  depend on the batch order), normalised as Oliver's `get_normalized_vector`
  (d / max|d|, then d / sqrt(sum d^2 + 1e-6), per example);
  K power iterations (K = `vat.power_iterations`, default 1, compiled into the step):
  d <- normalise(H d), H the Hessian of D(p(x), p(x + r)) in r at r = 0;
  r_adv = eps * d, a constant (no gradient flows through it);
  loss = mean over the batch of D between p(x + r_adv) and p(x), p(x) held constant.

D is the KL divergence. `vat.divergence` picks its direction:
  * "perturbed_clean" (default, docs/REFERENCE.md): KL(p(x + r) || p(x)), the loss of Oliver
    et al.'s code (`consistency_func = "forward_kl"`: KL(student || teacher) with the
    student p(x + r_adv) and the teacher p(x), lib/ssl_utils.py);
  * "clean_perturbed": KL(p(x) || p(x + r)), the loss of Miyato et al.'s own code
    (`kl_divergence_with_logit(q_logit=clean, p_logit=perturbed)`), and the divergence
    whose gradient the power iteration of both codes takes.
Both have the same Hessian at r = 0, so the power iteration finds the same direction.

How H d is computed (`vat.probe`), and why the default departs from the reference:
  * "finite_difference" (Miyato's and Oliver's code): H d ~ grad_r D at r = xi d,
    xi = 1e-6. In float32 this is rounding noise: a per-pixel step of ~1e-6 / sqrt(#pixels)
    is below half an ulp of an image value near 1, and the logits move by less than
    their own rounding error. Measured on our BN CNNs with MNIST-sized inputs: the
    cosine between this direction and the exact H d is scattered over [-0.9, 0.9], the
    same as with the official SPL code's xi = 1e-67 (which is exactly 0 in float32), and
    a permutation of the batch changes it; only xi >= 1e-2 gives cos > 0.99.
  * "hvp" (default): the exact Hessian-vector product at r = 0 by forward-over-reverse
    differentiation (the JVP of grad_r D), the xi -> 0 limit the finite difference
    approximates, with no step size to tune. Measured on WRN-28-2 (batch 64 + 64): the
    probe costs 4.7 forwards against the finite difference's 3.05, the whole step 4.1x
    the supervised step against 3.6x (experiments/benchmarks/README.md).

The loop (`vat.unroll`): True (default) traces the K iterations straight into the step;
False runs them in `lax.fori_loop`, one rolled copy of the body whatever K (for large K).
Why straight by default: `lax.fori_loop` keeps a while op even with `unroll=True`, and
on XLA:CPU (jaxlib 0.10.2) the backward-to-input convolutions compiled from its body keep
the kernel in `01oi` order rather than being transposed to the `01io` order of the fast
convolution path. Measured (experiments/benchmarks/vat_cost.py, WRN-28-2, batch 64): the
K = 1 power iteration took 11.0 forwards inside `lax.fori_loop` and 3.05 straight,
against the 3.3 of its own passes (a reference forward plus a forward and backward to
the input); the VAT step went from 6.0x to 3.6x the supervised step.

Other numerics:
  * The probe (its reference pass and the power iteration) runs in float32 (or wider)
    whatever `compute_dtype` is (in bfloat16 even x + eps-sized steps of xi vanish,
    docs/REFERENCE.md). The final adversarial pass runs at the compute dtype.
  * The power iteration's reference p(x) is its own float32 pass over the unlabeled
    images alone with the step's incoming weights, so D = 0 exactly at r = 0 and H is
    the Hessian of that function. (Oliver's code reuses the clean pass over
    concat(labeled, unlabeled), whose other batch statistics add a first-order term.)
    The loss's p(x) is the clean pass's prediction, as in Oliver's code.
  * Every VAT pass normalises with batch statistics and none writes the running
    statistics, under any `bn_update` policy.
  * `vat.xi` below 1e-12 is rejected; `monitors/vat_r_norm` logs the mean ||r_adv||.

VAT+EntMin (`vat_entmin`) adds the mean entropy of the unlabeled predictions with
weight `vat.entmin_weight` (Oliver: 0.1). As Oliver's code (`entropy_penalty` of the
student logits, a constant multiplier) the entropy is by default that of the
adversarial pass p(x + r_adv), with gradient through it, and is not ramped
(`vat.entmin_pass = "adversarial"`, `vat.entmin_ramp = False`); "clean" and True give
the entropy of the clean pass, ramped like the VAT term.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslj.common.checks import ConfigError, check_bool, check_choice, check_number
from sslj.losses import entropy, kl_divergence
from sslj.methods.base import Method, Term, clean_pass, entmin, supervised_xe

DIVERGENCES = ("perturbed_clean", "clean_perturbed")
ENTMIN_PASSES = ("adversarial", "clean")
PROBES = ("finite_difference", "hvp")
MIN_XI = 1e-12  # below this, x + xi d rounds back to x for any float32 image


def normalize(d: jax.Array) -> jax.Array:
    """Per example: d / (max|d| + 1e-12), then / sqrt(sum d^2 + 1e-6) (Oliver et al.)."""
    axes = tuple(range(1, d.ndim))
    d = d / (1e-12 + jnp.max(jnp.abs(d), axis=axes, keepdims=True))
    return d / jnp.sqrt(1e-6 + jnp.sum(jnp.square(d), axis=axes, keepdims=True))


def random_directions(rng: jax.Array, example_ids: jax.Array, shape) -> jax.Array:
    """d_i ~ N(0, I) from fold_in(rng, id_i): each example's draw ignores its position."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng, i), shape,
                                                jnp.float32))(example_ids)


def divergence_fn(direction: str):
    """Per-example D(clean_logits, perturbed_logits) for `vat.divergence`."""
    if direction == "perturbed_clean":
        return lambda clean, perturbed: kl_divergence(perturbed, clean)
    if direction == "clean_perturbed":
        return lambda clean, perturbed: kl_divergence(clean, perturbed)
    raise ValueError(f"unknown VAT divergence {direction!r}; allowed: {DIVERGENCES}")


def adversarial_perturbation(logits_fn, x: jax.Array, d0: jax.Array, *, xi: float, eps: float,
                             power_iterations: int, divergence, unroll: bool = True,
                             probe: str = "hvp"):
    """r_adv = eps * normalise(d_K) after K power iterations from d0 (float32 throughout).

    `probe` = "finite_difference": d <- normalise(grad_r D at r = xi d) (Miyato et al.,
    Oliver's code); "hvp": d <- normalise(H d), the exact Hessian-vector product of D at
    r = 0 by forward-over-reverse differentiation (no xi). `logits_fn(images) -> logits`
    must not write any state. Returns a constant (no gradient flows through r_adv).
    """
    x = jax.lax.stop_gradient(x.astype(jnp.float32))
    reference = jax.lax.stop_gradient(logits_fn(x))

    def divergence_sum(r):
        # the sum over examples keeps each example's gradient at full size (the mean would
        # shrink it by the batch size before the normalisation)
        return jnp.sum(divergence(reference, logits_fn(x + r)))

    if probe == "finite_difference":
        def power_step(_, d):
            return normalize(jax.grad(divergence_sum)(xi * d))
    elif probe == "hvp":
        def power_step(_, d):
            _, hd = jax.jvp(jax.grad(divergence_sum), (jnp.zeros_like(x),), (d,))
            return normalize(hd)
    else:
        raise ValueError(f"unknown VAT probe {probe!r}; allowed: {PROBES}")

    d = normalize(d0.astype(jnp.float32))
    if unroll:  # K traced copies, straight-line (why: the module docstring)
        for i in range(power_iterations):
            d = power_step(i, d)
    else:  # one rolled copy of the body whatever K
        d = jax.lax.fori_loop(0, power_iterations, power_step, d)
    return jax.lax.stop_gradient(eps * d)


def per_example_norm(r: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(r.astype(jnp.float32)), axis=tuple(range(1, r.ndim))))


class VAT(Method):
    name = "vat"

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "vat.weight", low=0.0)
        check_number(config, "vat.eps", low=0.0, low_open=True)
        check_number(config, "vat.xi", low=0.0, low_open=True)
        check_number(config, "vat.power_iterations", low=0, integer=True)
        check_choice(config, "vat.divergence", DIVERGENCES)
        check_choice(config, "vat.probe", PROBES)
        xi = float(config.vat.xi)
        if np.float32(xi) == 0 or xi < MIN_XI:
            raise ConfigError("vat.xi", f"{xi!r} vanishes in float32 arithmetic on images "
                              "(the probe x + xi d would equal x and r_adv would be 0)",
                              f"[{MIN_XI}, inf); Oliver et al.: 1e-6")
        if float(config.get("model_kwargs", {}).get("dropout", 0.0)) != 0.0:
            raise ConfigError("model_kwargs.dropout", "VAT's probe compares two passes that "
                              "must share one network; dropout would swamp the xi-sized "
                              "signal", "0.0 with vat")

    def outputs(self, ctx, batch, rng):
        cfg = self.config.vat
        r_aug, r_fwd, r_vat, r_dir = jax.random.split(rng, 4)
        logits, logits_u, xu = clean_pass(ctx, batch, r_aug, r_fwd)
        xu = jax.lax.stop_gradient(xu)
        # the probe runs on the step's incoming weights: no gradient reaches them from it
        probe_forward = ctx.forward.with_params(ctx.state.params, ctx.state.batch_stats)
        # float32 at least: a float64 model (the 8-vs-1-device test) probes in float64
        probe_dtype = jnp.promote_types(ctx.forward.model.dtype, jnp.float32)
        r_adv = adversarial_perturbation(
            lambda z: probe_forward(z, rng=r_vat, clean=False, dtype=probe_dtype),
            xu, random_directions(r_dir, batch["unlabeled_index"], xu.shape[1:]),
            xi=float(cfg.xi), eps=float(cfg.eps), power_iterations=int(cfg.power_iterations),
            divergence=divergence_fn(cfg.divergence), unroll=bool(cfg.get("unroll", True)),
            probe=cfg.probe)
        logits_adv = ctx.forward(xu + r_adv.astype(xu.dtype), rng=r_vat, clean=False,
                                 probe=True)
        return {"logits": logits, "logits_u": logits_u, "logits_u_adv": logits_adv,
                "r_adv": r_adv, "r_adv_norm": per_example_norm(r_adv)}

    def vat_loss(self, outputs, batch):
        del batch
        d = divergence_fn(self.config.vat.divergence)
        return jnp.mean(d(jax.lax.stop_gradient(outputs["logits_u"]), outputs["logits_u_adv"]))

    def terms(self):
        return (Term("xe", supervised_xe),
                Term("vat", self.vat_loss, weight=float(self.config.vat.weight),
                     ramp=self.consistency_ramp()))

    def monitors(self, outputs, batch):
        return {"vat_r_norm": jnp.mean(outputs["r_adv_norm"])}


class VATEntMin(VAT):
    """VAT + entropy minimisation on the unlabeled predictions (Oliver et al.'s row)."""

    name = "vat_entmin"

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "vat.entmin_weight", low=0.0)
        check_choice(config, "vat.entmin_pass", ENTMIN_PASSES)
        check_bool(config, "vat.entmin_ramp")
        if float(config.get("entmin", {}).get("weight", 0.0)) > 0:
            raise ConfigError("entmin.weight", "vat_entmin already adds EntMin with weight "
                              "vat.entmin_weight", "0.0 with vat_entmin")

    def terms(self):
        cfg = self.config.vat
        if cfg.entmin_pass == "adversarial":
            def fn(outputs, batch):
                del batch
                return jnp.mean(entropy(outputs["logits_u_adv"]))
        else:
            fn = entmin  # the clean pass's unlabeled predictions
        ramp = {"ramp": self.consistency_ramp()} if cfg.entmin_ramp else {}
        return super().terms() + (
            Term("entmin", fn, weight=float(cfg.entmin_weight), **ramp),)
