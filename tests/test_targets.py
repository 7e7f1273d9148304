"""Target modifiers (ProSelfLC paper): NumPy re-derivations, the paper's worked values,
analytic gradients."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslj.config import ConfigError, for_method, validate
from sslj.losses import TargetModifier, cross_entropy, entropy, soft_cross_entropy
from sslj.losses.targets import global_trust, local_trust, proselflc_epsilon
from sslj.methods import get_method
from tests.conftest import tiny_config

C = 5


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_entropy(p):
    return -np.sum(p * np.log(p), -1)


def _problem(seed=0, n=7):
    rng = np.random.default_rng(seed)
    logits = (2.0 * rng.normal(size=(n, C))).astype(np.float32)
    labels = rng.integers(0, C, n)
    return logits, labels, np.eye(C, dtype=np.float64)[labels]


def np_target(kind, q, logits, eps=0.0, step=0, total=100, b=16.0, eta=0.5):
    """The paper's equations, written out in float64."""
    p = np_softmax(logits.astype(np.float64))
    if kind == "cce":
        return q
    if kind == "ls":  # Eq. 3
        return (1 - eps) * q + eps / q.shape[-1]
    if kind == "cp":  # Prop. 1: q_CP = (1 - eps) q - eps p
        return (1 - eps) * q - eps * p
    if kind == "boot_soft":  # Eq. 5
        return (1 - eps) * q + eps * p
    if kind == "boot_hard":
        return (1 - eps) * q + eps * np.eye(q.shape[-1])[p.argmax(-1)]
    if kind == "proselflc":  # Eq. 7
        g = 1 / (1 + np.exp(-b * (step / total - eta)))
        e = g * (1 - np_entropy(p) / np.log(q.shape[-1]))
        return (1 - e[:, None]) * q + e[:, None] * p
    raise ValueError(kind)


@pytest.mark.parametrize("kind,eps", [("cce", 0.0), ("ls", 0.3), ("cp", 0.25),
                                      ("boot_soft", 0.5), ("boot_hard", 0.2),
                                      ("proselflc", 0.0)])
@pytest.mark.parametrize("step", [10, 80])
def test_targets_and_losses_match_numpy(kind, eps, step):
    logits, labels, q = _problem()
    mod = TargetModifier(kind=kind, eps=eps, exp_base=12.0, eta=0.5, total_steps=100)
    want = np_target(kind, q, logits, eps, step, 100, 12.0)
    got = mod(jnp.asarray(q, jnp.float32), jnp.asarray(logits), step)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    logp = np.log(np_softmax(logits.astype(np.float64)))
    np.testing.assert_allclose(mod.loss(jnp.asarray(logits), jnp.asarray(labels), step),
                               np.mean(-np.sum(want * logp, -1)), rtol=1e-5)


def test_proselflc_paper_table2_epsilons():
    """Table 2: eps = g(t) l(p) for g, l in {0.1, 0.9}: 0.01, 0.09, 0.09, 0.81; with
    eps > 0.5 a confident, inconsistent p changes the semantic class."""
    total, b, eta = 1000, 12.0, 0.5

    def step_for(g):  # invert g(t) = sigmoid(B (t / Gamma - eta))
        return total * (eta + math.log(g / (1 - g)) / b)

    def logits_for(trust, top):  # p = softmax(a e_top), bisect a: 1 - H(p)/log C = trust
        lo, hi = 0.0, 50.0
        for _ in range(200):
            a = (lo + hi) / 2
            z = np.zeros(C)
            z[top] = a
            lo, hi = (a, hi) if 1 - np_entropy(np_softmax(z)) / np.log(C) < trust else (lo, a)
        return z.astype(np.float32)

    label = 2
    q = jax.nn.one_hot(jnp.array([label]), C)
    mod = TargetModifier("proselflc", exp_base=b, eta=eta, total_steps=total)
    for g in (0.1, 0.9):
        t = step_for(g)
        np.testing.assert_allclose(global_trust(t, total, b, eta), g, rtol=1e-4)
        for lp, want in ((0.1, {0.1: 0.01, 0.9: 0.09}[g]), (0.9, {0.1: 0.09, 0.9: 0.81}[g])):
            for top in (label, 0):  # confidently consistent / inconsistent
                z = jnp.asarray(logits_for(lp, top))[None]
                np.testing.assert_allclose(local_trust(z), [lp], rtol=1e-4)
                np.testing.assert_allclose(mod.epsilon(z, t), [want], rtol=1e-3)
                relabeled = int(jnp.argmax(mod(q, z, t), -1)[0]) != label
                assert relabeled == (top != label and want > 0.5), (g, lp, top)


def test_paper_worked_example():
    """Sec. 4: p = [0.95, 0.01, 0.04], q = [0, 0, 1], eps = 0.8 -> [0.76, 0.008, 0.232]."""
    p = jnp.array([[0.95, 0.01, 0.04]])
    q = jnp.array([[0.0, 0.0, 1.0]])
    target = TargetModifier("boot_soft", eps=0.8)(q, jnp.log(p), step=0)
    np.testing.assert_allclose(target, [[0.76, 0.008, 0.232]], rtol=1e-5)


@pytest.mark.parametrize("b", [8.0, 12.0, 16.0])
def test_global_trust_is_one_half_at_half_time_and_grows(b):
    total = 30000
    np.testing.assert_allclose(global_trust(total // 2, total, b, 0.5), 0.5, rtol=1e-6)
    g = np.asarray([global_trust(t, total, b) for t in range(0, total + 1, 1000)])
    assert np.all(np.diff(g) > 0)
    np.testing.assert_allclose(g[0], 1 / (1 + np.exp(b / 2)), rtol=1e-5)


def test_local_trust_uniform_zero_one_hot_one():
    np.testing.assert_allclose(local_trust(jnp.zeros((3, 10))), 0.0, atol=1e-6)
    one_hot = jnp.where(jnp.eye(10)[:4] > 0, 0.0, -1e4)  # softmax is one-hot in float32
    np.testing.assert_allclose(local_trust(one_hot), 1.0, atol=1e-6)


def test_no_gradient_flows_through_epsilon():
    logits, _, _ = _problem(1)
    grad = jax.grad(lambda z: jnp.sum(proselflc_epsilon(z, 70, 100, 16.0)))(jnp.asarray(logits))
    chex.assert_trees_all_equal(grad, jnp.zeros_like(grad))


def _analytic_grad(logits, q, eps, detach):
    """d/dz of H((1 - eps) q + eps p, p) with eps constant: (1 - eps)(p - q) from the
    label part; eps (p - p) = 0 from a constant p, or eps dH(p)/dz = -eps p (log p + H)
    when p carries gradient."""
    p = np_softmax(logits.astype(np.float64))
    g = (1 - eps[:, None]) * (p - q)
    if not detach:
        g += eps[:, None] * (-p * (np.log(p) + np_entropy(p)[:, None]))
    return g / len(q)


@pytest.mark.parametrize("detach", [False, True])
def test_proselflc_gradient_is_analytic(detach):
    logits, labels, q = _problem(2)
    mod = TargetModifier("proselflc", exp_base=16.0, total_steps=100, detach=detach)
    step = 75
    grad = jax.grad(lambda z: mod.loss(z, jnp.asarray(labels), step))(jnp.asarray(logits))
    p = np_softmax(logits.astype(np.float64))
    eps = (1 / (1 + np.exp(-16.0 * 0.25))) * (1 - np_entropy(p) / np.log(C))
    np.testing.assert_allclose(grad, _analytic_grad(logits, q, eps, detach), atol=2e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_boot_soft_gradient_is_analytic(detach):
    logits, labels, q = _problem(3)
    mod = TargetModifier("boot_soft", eps=0.4, detach=detach)
    grad = jax.grad(lambda z: mod.loss(z, jnp.asarray(labels), 0))(jnp.asarray(logits))
    np.testing.assert_allclose(grad, _analytic_grad(logits, q, np.full(len(q), 0.4), detach),
                               atol=2e-6)


def test_confidence_penalty_is_ce_minus_entropy():
    """CP: H((1-eps) q - eps p, p) = (1 - eps) CE - eps H(p) in value and gradient, i.e.
    Pereyra et al.'s CE - beta H(p) times (1 - eps) with beta = eps / (1 - eps)."""
    logits, labels, _ = _problem(4)
    z, y, eps = jnp.asarray(logits), jnp.asarray(labels), 0.3
    cp = TargetModifier("cp", eps=eps)

    def paper(z):
        return (1 - eps) * cross_entropy(z, y) - eps * jnp.mean(entropy(z))

    def pereyra(z):
        beta = eps / (1 - eps)
        return cross_entropy(z, y) - beta * jnp.mean(entropy(z))

    np.testing.assert_allclose(cp.loss(z, y, 0), paper(z), rtol=1e-5)
    np.testing.assert_allclose(cp.loss(z, y, 0) / (1 - eps), pereyra(z), rtol=1e-5)
    chex.assert_trees_all_close(jax.grad(lambda z: cp.loss(z, y, 0))(z), jax.grad(paper)(z),
                                atol=1e-6)


def test_label_smoothing_is_eq3():
    """LS: (1 - eps) H(q, p) + eps H(u, p), gradient p - q_LS."""
    logits, labels, q = _problem(5)
    z, y, eps = jnp.asarray(logits), jnp.asarray(labels), 0.25
    ls = TargetModifier("ls", eps=eps)
    uniform = jnp.full((len(labels), C), 1.0 / C)
    want = (1 - eps) * cross_entropy(z, y) + eps * jnp.mean(soft_cross_entropy(z, uniform))
    np.testing.assert_allclose(ls.loss(z, y, 0), want, rtol=1e-5)
    grad = jax.grad(lambda z: ls.loss(z, y, 0))(z)
    want_grad = (np_softmax(logits.astype(np.float64)) - ((1 - eps) * q + eps / C)) / len(q)
    np.testing.assert_allclose(grad, want_grad, atol=1e-6)


def test_supervised_term_uses_the_modifier_at_the_step():
    cfg = for_method(tiny_config(), "pi_model+proselflc")
    assert cfg.method == "pi_model" and cfg.target.kind == "proselflc"
    cfg.target.total_steps = 50
    validate(cfg)
    terms = {t.name: t for t in get_method(cfg).loss_terms()}
    assert terms["xe"].uses_step and "pi" in terms
    logits, labels, q = _problem(6)
    got = terms["xe"].value({"logits": jnp.asarray(logits)}, {"label": jnp.asarray(labels)}, 40)
    want = np_target("proselflc", q, logits, step=40, total=50, b=cfg.target.exp_base)
    logp = np.log(np_softmax(logits.astype(np.float64)))
    np.testing.assert_allclose(got, np.mean(-np.sum(want * logp, -1)), rtol=1e-5)
    # the "+<target>" form fills in the paper's eps for fixed-eps modifiers
    assert for_method(tiny_config(), "supervised+ls").target.eps == 0.5


@pytest.mark.parametrize("field,value", [("target.kind", "bootstrap"), ("target.eps", 1.5),
                                         ("target.exp_base", 0.0), ("target.detach", "yes")])
def test_invalid_target_config_names_the_field(field, value):
    import ml_collections

    cfg = tiny_config(**{"target.kind": "proselflc"})
    # a new block, so that a value of another type gets in (as from a JSON config)
    cfg.target = ml_collections.ConfigDict({**cfg.target.to_dict(),
                                            field.split(".")[1]: value})
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert e.value.field == field


def test_fixed_eps_modifier_needs_eps_and_compare_names_are_checked():
    with pytest.raises(ConfigError, match="target.eps"):
        validate(tiny_config(**{"target.kind": "ls"}))
    with pytest.raises(ConfigError, match="compare"):
        validate(tiny_config(compare="supervised+bootstrap"))
