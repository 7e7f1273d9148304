"""Target modifiers (ProSelfLC paper, Wang et al. CVPR 2021, Sec. 3-4): each turns a
one-hot label distribution q, the model's prediction p and the step into a target q~,
and every one of them is trained with the same loss H(q~, p) = -sum_c q~_c log p_c.

    cce         q~ = q
    ls          q~ = (1 - eps) q + eps u                  (label smoothing, u = 1/C)
    cp          q~ = (1 - eps) q - eps p                  (confidence penalty)
    boot_soft   q~ = (1 - eps) q + eps p                  (Reed et al. 2015, fixed eps)
    boot_hard   q~ = (1 - eps) q + eps onehot(argmax p)
    proselflc   q~ = (1 - eps_i) q + eps_i p,  eps_i = g(t) l(p_i) without gradient,
                g(t) = sigmoid(B (t / Gamma - eta)),  l(p) = 1 - H(p) / log C.

Whether p inside q~ carries gradient matters (it is what makes CP a *penalty*):
  * `cp` always differentiates through p: H((1-eps) q - eps p, p) = (1 - eps) CE(q, p)
    - eps H(p), the paper's Eq. 4 and the official code's parametrisation. Pereyra et
    al.'s form CE - beta H(p) is the same loss divided by (1 - eps), beta = eps / (1 - eps).
  * `boot_soft` and `proselflc` follow `detach` (config `target.detach`). The default,
    False, is the official ProSelfLC code, which passes the live p into the target, so
    that H(q~, p) = (1 - eps) CE + eps H(p): entropy minimisation is *rewarded*, the
    paper's Proposition 3 ("LC rewards entropy minimisation", which only holds when p
    carries gradient in H(p, p)). True treats the target as a constant, as the paper's
    Sec. 4 text does; then only the (1 - eps) q + eps stop_gradient(p) pull remains.
  * eps of ProSelfLC never carries gradient (docs/REFERENCE.md), whatever `detach` is.
  * `boot_hard`'s argmax has no gradient by construction.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from sslj.common.checks import ConfigError, check_bool, check_choice, check_number

TARGETS = ("cce", "ls", "cp", "boot_soft", "boot_hard", "proselflc")
NEEDS_EPS = ("ls", "cp", "boot_soft", "boot_hard")
# the paper's best fixed eps for LS, CP and Boot-soft (Table 5: 0.5 of 0.125 / 0.25 / 0.5);
# Boot-hard: Reed et al.'s beta = 0.8
DEFAULT_EPS = {"ls": 0.5, "cp": 0.5, "boot_soft": 0.5, "boot_hard": 0.2}


def soft_cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Per-example H(target, softmax(logits)) = -sum_c target_c log p_c (any target,
    not necessarily a distribution: CP's target has negative entries)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.sum(target.astype(jnp.float32) * logp, axis=-1)


def global_trust(step, total_steps: float, exp_base: float, eta: float = 0.5) -> jax.Array:
    """g(t) = 1 / (1 + exp(-B (t / Gamma - eta))): how far the learner is trusted at
    iteration t of Gamma (0.5 at t = eta Gamma; paper eta = 0.5)."""
    t = jnp.asarray(step, jnp.float32) / float(total_steps)
    return jax.nn.sigmoid(float(exp_base) * (t - float(eta)))


def local_trust(logits: jax.Array) -> jax.Array:
    """l(p) = 1 - H(p) / H(u) per example: 0 for a uniform, 1 for a one-hot p."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    h = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return 1.0 - h / math.log(logits.shape[-1])


def proselflc_epsilon(logits, step, total_steps, exp_base, eta=0.5) -> jax.Array:
    """eps_i = g(t) l(p_i), per example, with no gradient (Eq. 7)."""
    eps = global_trust(step, total_steps, exp_base, eta) * local_trust(logits)
    return jax.lax.stop_gradient(eps)


@dataclasses.dataclass(frozen=True)
class TargetModifier:
    """A target modifier from `config.target` (see the module docstring).

    `total_steps` is Gamma (the run's `num_steps` when the config says 0).
    """

    kind: str = "cce"
    eps: float = 0.0
    exp_base: float = 16.0
    eta: float = 0.5
    total_steps: int = 1
    detach: bool = False

    @classmethod
    def from_config(cls, config) -> TargetModifier:
        t = config.get("target", {})
        total = int(t.get("total_steps", 0)) or int(config.num_steps)
        return cls(kind=t.get("kind", "cce"), eps=float(t.get("eps", 0.0)),
                   exp_base=float(t.get("exp_base", 16.0)), eta=float(t.get("eta", 0.5)),
                   total_steps=total, detach=bool(t.get("detach", False)))

    def epsilon(self, logits, step) -> jax.Array:
        """Per-example eps (a constant for every kind but ProSelfLC)."""
        if self.kind == "proselflc":
            return proselflc_epsilon(logits, step, self.total_steps, self.exp_base, self.eta)
        if self.kind == "cce":
            return jnp.zeros(logits.shape[:-1], jnp.float32)
        return jnp.full(logits.shape[:-1], self.eps, jnp.float32)

    def __call__(self, q: jax.Array, logits: jax.Array, step) -> jax.Array:
        """The target q~ for one-hot (or soft) labels q and the prediction's logits."""
        q = q.astype(jnp.float32)
        if self.kind == "cce":
            return q
        eps = self.epsilon(logits, step)[..., None]
        p = jax.nn.softmax(logits.astype(jnp.float32))
        if self.kind == "ls":
            return (1.0 - eps) * q + eps / q.shape[-1]
        if self.kind == "cp":
            return (1.0 - eps) * q - eps * p
        if self.kind == "boot_hard":
            hard = jax.nn.one_hot(jnp.argmax(logits, -1), q.shape[-1], dtype=jnp.float32)
            return (1.0 - eps) * q + eps * hard
        if self.kind in ("boot_soft", "proselflc"):
            if self.detach:
                p = jax.lax.stop_gradient(p)
            return (1.0 - eps) * q + eps * p
        raise ValueError(f"unknown target modifier {self.kind!r}; allowed: {TARGETS}")

    def loss(self, logits: jax.Array, labels: jax.Array, step) -> jax.Array:
        """Mean over the batch of H(q~, p) for int labels."""
        q = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
        return jnp.mean(soft_cross_entropy(logits, self(q, logits, step)))


def validate_config(config) -> None:
    """Checks the `target` section (the modifier of the supervised term)."""
    check_choice(config, "target.kind", TARGETS)
    kind = config.target.kind
    check_number(config, "target.eps", low=0.0, high=1.0)
    if kind in NEEDS_EPS and not config.target.eps > 0:
        raise ConfigError("target.eps", f"is 0, which makes {kind} plain cross-entropy",
                          "(0, 1]" if kind != "cp" else "(0, 1)")
    if kind == "cp" and config.target.eps >= 1:
        raise ConfigError("target.eps", "= 1 leaves CP with no label term", "(0, 1)")
    check_number(config, "target.exp_base", low=0.0, low_open=True)
    check_number(config, "target.eta", low=0.0, high=1.0)
    check_number(config, "target.total_steps", low=0, integer=True)
    check_bool(config, "target.detach")
