"""The synthesis step: pseudo-negatives of class k drawn from p_t^-(x) (Eq. 6) by
gradient ascent on the class-k logit w_k . phi(x) (Eq. 8), started from the reference
distribution N(0, sigma^2) per pixel.

    synthesize = make_synthesizer(model, SamplerSpec(...))
    images, stats = synthesize(variables, classes, key)

`synthesize` is ONE jitted function for a whole batch of samples: a `lax.while_loop`
over steps that ends as soon as every sample has met its stop rule (or at the step cap),
with per-sample stop masks so a finished sample freezes, the model in inference mode
(BatchNorm running statistics, no dropout) and no host round trip per step.

Samplers (`kind`):
  * `sgd`: x <- x + eps * grad_x z_k(x) (plain gradient ascent, constant step);
  * `langevin`: x <- x + eps_t / 2 * grad + eta, eta ~ N(0, eps_t) per pixel (the
    paper's Delta x = eps/2 grad + eta, eta ~ N(0, eps)), with the step annealed as
    eps_t = eps * (1 + t)^(-gamma) (Welling & Teh's polynomial decay; the paper says
    only "annealed"; gamma = `anneal_gamma`, 0.55 by default);
  * `adam`: Adam ascent on z_k with beta1 = 0.5 (the paper's Sec. 4: "for the synthesis
    step, we use the Adam optimizer with momentum term beta1 equal to 0.5"), beta2
    0.999, eps 1e-8, learning rate `step_size`.
Stop rules (`stop`, Table 2's options):
  1. `positive`: the sample stops on the first step at which it is classified positive,
     z_k(x) > 0, i.e. q(+1 | x) = sigmoid(z_k) > 1/2 -- the binary reading of Eq. 3 that
     both formulations share (Eq. 9's pseudo-negative term is the binary loss of the
     class-k logit); the paper does not define "positive" for the softmax net otherwise;
  2. `confidence`: at sigmoid(z_k(x)) >= `confidence` (the paper: "a high confidence",
     no value given; 0.95 by default);
  3. `steps`: after exactly `max_steps` steps.
Rules 1 and 2 are capped at `max_steps` (a sample that never reaches the rule keeps its
last value and counts as not reached). A sample meeting its rule before any step (the
noise itself already positive) is kept unmoved. The paper is silent on the value range:
samples are clipped to the model's input range [-1, 1] after every step (`clip`, on by
default), the range real images come in (`sslj.data.augment.to_float`); the starting
draw itself is not clipped (|x| > 1 for 0.09 % of its pixels).

Observed (embedded runs): under C^0 many noise draws are already positive for their
class (softmax cross-entropy leaves each logit's offset free), so round 1's samples move
0-3 steps; as the rounds go on the classifier pushes the noise region down and the
chains get longer, up to the cap (results.json: `icn.per_round[*].steps_mean`,
`reached`). The chain runs the same on every device of the mesh (the samples are not
sharded), and a one-vs-all model evaluates all K nets per step to use one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

SAMPLERS = ("sgd", "langevin", "adam")
STOP_RULES = ("positive", "confidence", "steps")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    kind: str = "adam"
    stop: str = "positive"
    step_size: float = 0.02
    max_steps: int = 100
    confidence: float = 0.95
    anneal_gamma: float = 0.55
    adam_b1: float = 0.5
    noise_std: float = 0.3  # the reference distribution N(0, noise_std^2) per pixel
    clip: bool = True
    unroll: int = 1  # steps per while-loop iteration (each checks the stop masks)

    @classmethod
    def from_config(cls, icn) -> SamplerSpec:
        return cls(kind=icn.sampler, stop=icn.stop_rule, step_size=float(icn.step_size),
                   max_steps=int(icn.max_steps), confidence=float(icn.confidence),
                   anneal_gamma=float(icn.anneal_gamma), adam_b1=float(icn.adam_b1),
                   noise_std=float(icn.noise_std), clip=bool(icn.clip),
                   unroll=int(icn.get("unroll", 1)))


def reference_noise(key, n: int, image_shape, std: float) -> jax.Array:
    """n draws of the reference distribution p_r^-(x) = N(0, std^2) per pixel."""
    return std * jax.random.normal(key, (n, *image_shape), jnp.float32)


def _reached(spec: SamplerSpec, z: jax.Array) -> jax.Array:
    if spec.stop == "positive":
        return z > 0.0
    if spec.stop == "confidence":
        return jax.nn.sigmoid(z) >= spec.confidence
    if spec.stop == "steps":
        return jnp.zeros(z.shape, bool)
    raise ValueError(f"unknown stop rule {spec.stop!r}; allowed: {STOP_RULES}")


def chain(logit_fn, spec: SamplerSpec, x0: jax.Array, key: jax.Array):
    """Runs the sampler from `x0`; `logit_fn(x) -> (n,)` the per-sample class logit
    (samples must not interact: an inference-mode model). Returns (x, stats) with
    per-sample `steps` (moves made), `reached` (met the stop rule) and `logit` (final)."""
    if spec.kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {spec.kind!r}; allowed: {SAMPLERS}")
    n = x0.shape[0]
    def logits_and_grad(x):
        z, vjp = jax.vjp(logit_fn, x)
        return z, vjp(jnp.ones_like(z))[0]

    bshape = (n,) + (1,) * (x0.ndim - 1)

    def one_step(carry):
        t, x, active, steps, reached, m, v = carry
        z, g = logits_and_grad(x)
        now = _reached(spec, z)
        reached = reached | (active & now)
        active = active & ~now & (t < spec.max_steps)
        tf = t.astype(jnp.float32)
        if spec.kind == "sgd":
            dx = spec.step_size * g
        elif spec.kind == "langevin":
            eps = spec.step_size * (1.0 + tf) ** (-spec.anneal_gamma)
            noise = jax.random.normal(jax.random.fold_in(key, t), x.shape, x.dtype)
            dx = 0.5 * eps * g + jnp.sqrt(eps) * noise
        else:  # adam ascent: the moments advance only for moving samples
            b1, b2 = spec.adam_b1, 0.999
            a = active.reshape(bshape)
            m = jnp.where(a, b1 * m + (1 - b1) * g, m)
            v = jnp.where(a, b2 * v + (1 - b2) * g * g, v)
            k = (steps + 1).astype(jnp.float32).reshape(bshape)
            dx = spec.step_size * (m / (1 - b1 ** k)) / (jnp.sqrt(v / (1 - b2 ** k)) + 1e-8)
        new = x + dx
        if spec.clip:
            new = jnp.clip(new, -1.0, 1.0)
        x = jnp.where(active.reshape(bshape), new, x)
        steps = steps + active.astype(jnp.int32)
        return (t + 1, x, active, steps, reached, m, v)

    def body(carry):
        for _ in range(spec.unroll):
            carry = one_step(carry)
        return carry

    def cond(carry):
        t, _, active = carry[:3]
        return (t <= spec.max_steps) & jnp.any(active)

    zeros = jnp.zeros_like(x0)
    init = (jnp.zeros((), jnp.int32), x0, jnp.ones((n,), bool), jnp.zeros((n,), jnp.int32),
            jnp.zeros((n,), bool), zeros, zeros)
    _, x, _, steps, reached, _, _ = jax.lax.while_loop(cond, body, init)
    z = logit_fn(x)
    if spec.stop == "steps":
        reached = steps >= spec.max_steps
    return x, {"steps": steps, "reached": reached, "logit": z}


def make_synthesizer(model, spec: SamplerSpec, image_shape):
    """Jitted `(variables, classes (n,), key) -> (images (n, *image_shape), stats)`:
    reference noise moved up the class logits of `model` (inference mode)."""

    def synthesize(variables, classes, key):
        noise_key, chain_key = jax.random.split(key)
        x0 = reference_noise(noise_key, classes.shape[0], image_shape, spec.noise_std)

        def logit_fn(x):
            logits = model.apply(variables, x, train=False)
            return jnp.take_along_axis(logits, classes[:, None], axis=1)[:, 0]

        return chain(logit_fn, spec, x0, chain_key)

    return jax.jit(synthesize)
