"""SPL: Eq. 3, identification counts, the straight-through hard mask and the soft mask
against analytic gradients, exact freezing in the inner and outer steps, the inner
loss's descent (Theorem 1 setting), and the whole procedure compiling each step once."""

import json
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslj import config as config_lib
from sslj.common import sharding
from sslj.config import ConfigError, for_method, validate
from sslj.losses import softmax_squared_l2
from sslj.spl import bilevel
from sslj.spl import masks as M
from sslj.train.state import TrainState
from tests.conftest import tiny_config


# ------------------------------------------------------------------ Eq. 3, estimation
@pytest.mark.parametrize("delta,tau,p", [(0.6, 60 / 1500, 0.424), (0.3, 2400 / 20000, 0.736),
                                         (0.0, 0.1, 1.0), (1.0, 0.0, 0.0), (0.5, 0.5, 0.75)])
def test_safe_ratio_eq3(delta, tau, p):
    assert M.safe_ratio(delta, tau) == pytest.approx(p, abs=1e-12)


def test_estimate_mismatch_recovers_the_mixture_proportion():
    rng = np.random.default_rng(0)
    seen = rng.uniform(0.5, 1.0, 20000)  # held-out seen-class max-softmax scores
    for delta in (0.0, 0.3, 0.6):
        n_unseen = int(delta * 20000)
        unl = np.concatenate([rng.uniform(0.5, 1.0, 20000 - n_unseen),
                              rng.uniform(0.0, 0.5, n_unseen)])
        # F_U(t) = (1 - d) 0.5 + d at the seen median t -> (F_U - 0.5) / 0.5 = d
        assert M.estimate_mismatch(unl, seen, 0.5) == pytest.approx(delta, abs=0.02)


# ------------------------------------------------------------------ identification
def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"Conv_0": {"kernel": jnp.asarray(rng.normal(0, 1.0, (3, 3, 1, 4)), jnp.float32)},
            "Conv_1": {"kernel": jnp.asarray(rng.normal(0, 0.3, (3, 3, 4, 8)), jnp.float32)},
            "BatchNorm_0": {"scale": jnp.ones(8), "bias": jnp.zeros(8)},
            "classifier": {"kernel": jnp.asarray(rng.normal(0, 0.5, (8, 3)), jnp.float32),
                           "bias": jnp.zeros(3)}}


def test_rules_first_match_wins_and_classifier_switch():
    params = _params()
    spec = M.masked_leaves(params, M.rules_from_config(tiny_config().spl))
    assert spec["Conv_0"]["kernel"] and spec["Conv_1"]["kernel"]
    assert not spec["classifier"]["kernel"] and not spec["classifier"]["bias"]
    assert not spec["BatchNorm_0"]["scale"]
    c = tiny_config()
    c.spl.mask_classifier = True
    c.spl.rules = ((r"Conv_1/", False), (r"kernel$", True))
    spec = M.masked_leaves(params, M.rules_from_config(c.spl))
    assert spec["classifier"]["kernel"] and spec["Conv_0"]["kernel"]
    assert not spec["Conv_1"]["kernel"]


@pytest.mark.parametrize("p", [0.0, 0.3, 0.424, 0.9, 1.0])
def test_identify_keeps_exactly_round_pk_by_global_magnitude(p):
    params = _params()
    spec = M.masked_leaves(params)  # default rules: every kernel, classifier included
    ident = M.identify(params, spec, p)
    k = 36 + 288 + 24
    assert ident.total == k and ident.kept == round(p * k)
    masks = jax.tree.leaves(ident.masks)
    kept = sum(int(np.sum(np.asarray(m))) for m in masks if m.ndim)
    assert kept == round(p * k)
    # per-layer counts add up and match the masks; one global threshold separates them
    counts = {n: c for n, c in zip(["BatchNorm_0/bias", "BatchNorm_0/scale", "Conv_0/kernel",
                                    "Conv_1/kernel", "classifier/bias", "classifier/kernel"],
                                   jax.tree.leaves(ident.counts, is_leaf=lambda x: x is None),
                                   strict=True)}
    assert counts["BatchNorm_0/bias"] is None and counts["classifier/bias"] is None
    kept_vals = np.concatenate([np.abs(np.asarray(params[n]["kernel"]))[
        np.asarray(ident.masks[n]["kernel"]) == 1] for n in ("Conv_0", "Conv_1", "classifier")])
    dropped = np.concatenate([np.abs(np.asarray(params[n]["kernel"]))[
        np.asarray(ident.masks[n]["kernel"]) == 0] for n in ("Conv_0", "Conv_1", "classifier")])
    if 0 < len(kept_vals) and 0 < len(dropped):
        assert kept_vals.min() >= dropped.max()
        assert ident.threshold == pytest.approx(kept_vals.min())
    ratios = M.layer_ratios(ident.masks, spec)
    for n, size in (("Conv_0", 36), ("Conv_1", 288), ("classifier", 24)):
        assert ratios[f"{n}/kernel"] == counts[f"{n}/kernel"] / size
    # layers of larger weights (Conv_0, std 1.0) keep more (Fig. 4)
    if 0 < p < 1:
        assert ratios["Conv_0/kernel"] > ratios["Conv_1/kernel"]


def test_identify_ties_are_deterministic_and_random_keeps_the_count():
    params = {"a": {"kernel": jnp.ones((10,))}, "b": {"kernel": jnp.ones((6,))}}
    spec = M.masked_leaves(params)
    ident = M.identify(params, spec, 0.5)  # 8 of 16 equal magnitudes: the first 8
    np.testing.assert_array_equal(ident.masks["a"]["kernel"], [1] * 8 + [0] * 2)
    np.testing.assert_array_equal(ident.masks["b"]["kernel"], [0] * 6)
    rnd = M.identify(_params(), M.masked_leaves(_params()), 0.3, how="random", seed=1)
    assert rnd.kept == round(0.3 * 348)
    assert sum(c for c in jax.tree.leaves(rnd.counts)) == rnd.kept
    none = M.identify(_params(), M.masked_leaves(_params()), 0.3, how="none")
    assert none.kept == none.total


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_masks_rebuilt_from_the_initial_scores_are_the_identified_masks(kind):
    rng = np.random.default_rng(5)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
              "b": {"kernel": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
                    "bias": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}}
    assert float(jnp.min(params["a"]["kernel"])) < 0  # negative weights: |theta| matters
    ident = M.identify(params, M.masked_leaves(params), 0.4)
    scores = M.init_scores(params, ident, kind)
    chex.assert_trees_all_equal(M.masks_from_scores(scores, ident.counts, kind), ident.masks)


# ------------------------------------------------------------------ hard / soft masks
def test_hard_mask_exact_count_ties_and_straight_through_gradient():
    s = jnp.asarray([0.5, 2.0, 0.5, -1.0, 0.5, 3.0])
    np.testing.assert_array_equal(M.hard_mask(s, 3), [1, 1, 0, 0, 0, 1])  # tie -> index 0
    np.testing.assert_array_equal(M.hard_mask(s, 4), [1, 1, 1, 0, 0, 1])
    np.testing.assert_array_equal(M.hard_mask(s, 0), np.zeros(6))
    np.testing.assert_array_equal(M.hard_mask(s, 6), np.ones(6))
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.normal(size=(5, 7, 3)), jnp.float32)
    for k in (0, 1, 17, 105):
        assert int(jnp.sum(M.hard_mask(scores, k))) == k
    g = jnp.asarray(rng.normal(size=scores.shape), jnp.float32)
    _, vjp = jax.vjp(lambda x: M.hard_mask(x, 40), scores)
    chex.assert_trees_all_close(vjp(g)[0], g)  # straight-through: upstream as is
    # through L = sum(c * theta * mask(s)): dL/ds = c * theta, for kept and dropped alike
    theta = jnp.asarray(rng.normal(size=scores.shape), jnp.float32)
    c = jnp.asarray(rng.normal(size=scores.shape), jnp.float32)
    grad = jax.grad(lambda x: jnp.sum(c * theta * M.hard_mask(x, 40)))(scores)
    chex.assert_trees_all_close(grad, c * theta, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_hard_mask_radix_select_equals_the_stable_argsort_bit_for_bit(dtype):
    """The radix select keeps exactly the first k of a stable argsort of -scores:
    many ties, -0 against 0 (tied, as lax.sort canonicalises zeros), NaN (last), inf,
    a constant leaf; under jit as the steps call it."""
    def reference(scores, k):
        order = np.asarray(jnp.argsort(-scores.reshape(-1), stable=True))
        out = np.zeros(scores.size, np.float32)
        out[order[:k]] = 1.0
        return out.reshape(scores.shape)

    rng = np.random.default_rng(7)
    for trial in range(36):
        n = int(rng.integers(2, 2000))
        x = rng.normal(size=n).astype(np.float32)
        if trial % 2 == 0:
            x = np.round(x * 2) / 2  # heavy ties, and -0.0 from rounding small negatives
        for every, value in ((5, -0.0), (7, 0.0), (13, np.nan), (17, np.inf), (19, -np.inf)):
            if trial % every == 0:
                x[rng.integers(0, n, size=max(1, n // 10))] = value
        if trial % 11 == 0:
            x[:] = 1.0
        scores = jnp.asarray(x, dtype).reshape(-1, 1) if trial % 3 == 0 else \
            jnp.asarray(x, dtype)
        k = int(rng.integers(1, n))
        got = np.asarray(jax.jit(M.hard_mask, static_argnums=1)(scores, k), np.float32)
        np.testing.assert_array_equal(got, reference(scores, k), err_msg=f"trial {trial}")
        assert got.sum() == k


def test_soft_mask_value_and_gradients_equal_the_analytic_ones():
    rng = np.random.default_rng(1)
    s = jnp.asarray(rng.normal(size=(50,)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=(50,)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(8, 50)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(8,)), jnp.float32)
    np.testing.assert_array_equal(M.soft_mask(s), np.maximum(np.asarray(s), 0))

    def loss(sc):  # a linear regression on the masked weights
        return jnp.mean(jnp.square(x @ (theta * M.soft_mask(sc)) - y))

    grad = jax.grad(loss)(s)
    w = np.asarray(theta) * np.maximum(np.asarray(s), 0)
    resid = np.asarray(x, np.float64) @ w - np.asarray(y)
    analytic = 2 * (np.asarray(x).T @ resid) / 8 * np.asarray(theta)  # dL/dw * theta * 1
    np.testing.assert_allclose(grad, analytic, rtol=1e-4, atol=1e-6)
    # where s > 0 the soft mask is ReLU itself: float64 central differences agree
    xs, ys, th = (np.asarray(a, np.float64) for a in (x, y, theta))

    def np_loss(sc):
        return np.mean((xs @ (th * np.maximum(sc, 0)) - ys) ** 2)

    s64 = np.asarray(s, np.float64)
    for i in np.where(s64 > 0.05)[0][:5]:
        e = np.zeros(50)
        e[i] = 1e-6
        fd = (np_loss(s64 + e) - np_loss(s64 - e)) / 2e-6
        assert float(grad[i]) == pytest.approx(fd, rel=1e-4, abs=1e-6)
    # harmful parameters (score <= 0) get the gradient of switching them on, dL/dw * theta
    # (ReLU's own derivative, 0 there, would freeze them harmful for ever) ...
    harmful = np.asarray(s) <= 0
    assert harmful.sum() > 10
    np.testing.assert_allclose(np.asarray(grad)[harmful], analytic[harmful], rtol=1e-4,
                               atol=1e-6)
    relu_grad = jax.grad(lambda sc: jnp.mean(jnp.square(x @ (theta * jax.nn.relu(sc)) - y)))(s)
    assert np.all(np.asarray(relu_grad)[harmful] == 0.0)
    # ... so an SGD step on the scores revives exactly the harmful parameters (here just
    # below zero) whose gradient says switching them on lowers the loss, and it does
    s0 = jnp.where(jnp.asarray(harmful), -1e-5, s)
    g0 = np.asarray(jax.grad(loss)(s0))
    s1 = s0 - 1e-2 * g0
    revived = harmful & (np.asarray(M.soft_mask(s1)) > 0)
    np.testing.assert_array_equal(revived, harmful & (g0 < -1e-3))
    assert revived.any() and float(loss(s1)) < float(loss(s0))


def test_consistency_term_is_squared_l2_of_softmax():
    rng = np.random.default_rng(2)
    z, t = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    q = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    np.testing.assert_allclose(softmax_squared_l2(jnp.asarray(z), jnp.asarray(t)),
                               np.mean(np.sum((p - q) ** 2, -1)), rtol=1e-5)


@pytest.mark.parametrize("normalization", ["official", "per_term_mean"])
def test_outer_consistency_normalisations_match_their_formulas(normalization):
    """"official": SPL.py's train_second with ssl/pimodel.py, F.cross_entropy(out, labels,
    ignore_index=-1).mean() + 10 * (mse(...).mean(1) * mask).mean(), both means over the
    whole batch of B_l + B_u rows; "per_term_mean": mean_l CE + 10 mean_u sum_c."""
    b_l, b_u, classes = 8, 12, 6
    c = for_method(tiny_config(**{"spl.consistency_normalization": normalization,
                                  "batch_size": b_l, "unlabeled_batch_size": b_u}),
                   "pi_model+spl")
    rng = np.random.default_rng(4)
    z_l, z_u, z_t = (rng.normal(size=(n, classes)) for n in (b_l, b_u, b_u))
    labels = rng.integers(0, classes, b_l)
    out = {"logits": jnp.asarray(z_l, jnp.float32), "logits_u": jnp.asarray(z_u, jnp.float32),
           "logits_u_target": jnp.asarray(z_t, jnp.float32)}
    method = bilevel.outer_method(c, None)
    ours = sum(t.weight * float(t.value(out, {"label": jnp.asarray(labels)}, 0))
               for t in method.loss_terms())
    p_l, p_u, p_t = (np.exp(z) / np.exp(z).sum(-1, keepdims=True) for z in (z_l, z_u, z_t))
    ce = -np.log(p_l[np.arange(b_l), labels])
    if normalization == "official":
        rows = b_l + b_u
        expected = ce.sum() / rows + 10 * np.sum(np.mean((p_u - p_t) ** 2, -1)) / rows
    else:
        expected = ce.mean() + 10 * np.mean(np.sum((p_u - p_t) ** 2, -1))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_hard_mask_ranked_by_magnitude_keeps_large_negative_scores():
    s = {"w": jnp.asarray([0.5, -3.0, 1.0, -0.1, 2.0])}
    counts = {"w": 3}
    np.testing.assert_array_equal(M.masks_from_scores(s, counts, "hard")["w"], [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(M.masks_from_scores(s, counts, "hard", "magnitude")["w"],
                                  [0, 1, 1, 0, 1])
    # the official |score| ranking passes the gradient times sign(score)
    g = jax.grad(lambda sc: jnp.sum(jnp.arange(5.0) *
                                    M.masks_from_scores({"w": sc}, counts, "hard",
                                                        "magnitude")["w"]))(s["w"])
    np.testing.assert_allclose(g, np.arange(5.0) * np.sign(np.asarray(s["w"])))


# ------------------------------------------------------------------ inner / outer steps
def _state(c, mesh, mask_kind="hard", p=0.4):
    from sslj.procedures import standard
    from sslj.train import loop

    exp = standard.prepare(c, None, mesh.devices.ravel().tolist())
    state = loop.init_state(exp)
    spec = M.masked_leaves(state.params, M.rules_from_config(c.spl))
    ident = M.identify(state.params, spec, p)
    scores = M.init_scores(state.params, ident, mask_kind)
    opt = bilevel.inner_optimizer(c.spl)
    state = state.replace(masks=M.masks_from_scores(scores, ident.counts, mask_kind),
                          mask_scores=scores, mask_opt_state=opt.init(scores))
    return exp, sharding.replicate(mesh, state), ident, opt


def _batch(exp, mesh, n=16, unlabeled=True):
    ds, sp = exp.dataset, exp.splits
    b = {"image": ds.train_images[sp.labeled[:n]],
         "label": exp.labeled_labels()[:n]}
    if unlabeled:
        b["unlabeled_image"] = ds.train_images[sp.unlabeled[:n]]
        b["unlabeled_index"] = np.arange(n, dtype=np.int32)
    return sharding.shard_batch(mesh, b)


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_inner_step_leaves_every_weight_bit_identical(kind, devices):
    c = for_method(tiny_config(), "pi_model+spl")
    mesh = sharding.make_mesh(devices)
    exp, state, ident, opt = _state(c, mesh, kind)
    step = bilevel.make_inner_step(exp.model, ident.counts, kind, opt, mesh, donate=False)
    before = _host(state)
    new, metrics = step(state, _batch(exp, mesh, unlabeled=False), jnp.asarray(0, jnp.int32))
    after = _host(new)
    for name in ("params", "ema_params", "opt_state", "step"):
        chex.assert_trees_all_equal(after.__getattribute__(name), before.__getattribute__(name))
    # the scores moved; the hard mask keeps each layer's count
    pairs = zip(jax.tree.leaves(after.mask_scores), jax.tree.leaves(before.mask_scores),
                strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)
    if kind == "hard":
        for m, k in zip(jax.tree.leaves(after.masks),
                        jax.tree.leaves(ident.counts, is_leaf=lambda x: x is None), strict=False):
            if k is not None:
                assert int(m.sum()) == k
    assert np.isfinite(float(metrics["spl/inner_loss"]))


@pytest.mark.parametrize("opt_name,wd", [
    ("adam", 5e-4),
    pytest.param("adam", 0.0, marks=pytest.mark.slow),
    pytest.param("nesterov", 5e-4, marks=pytest.mark.slow)])
def test_outer_step_leaves_every_harmful_weight_bit_identical(opt_name, wd, devices):
    """Adam moments and momentum from pretraining, and weight decay, would move harmful
    weights; the step must keep them exactly."""
    from sslj.train.step import make_train_step

    c = for_method(tiny_config(), "pi_model+spl")
    c.optimizer.name, c.optimizer.weight_decay = opt_name, wd
    mesh = sharding.make_mesh(devices)
    exp, state, ident, _ = _state(c, mesh, "hard")
    # pretraining-like steps with all-ones masks give non-zero moments everywhere
    ones = jax.tree.map(lambda _: jnp.ones((), jnp.float32), state.params)
    warm = make_train_step(exp.model, exp.method, exp.optimizer, c, mesh, donate=False)
    masks = state.masks
    state = state.replace(masks=sharding.replicate(mesh, ones))
    for _ in range(2):
        state, _ = warm(state, _batch(exp, mesh))
    state = state.replace(masks=masks)
    outer = make_train_step(exp.model, bilevel.outer_method(c, exp.method), exp.optimizer, c,
                            mesh, donate=False)
    before = _host(state.params)
    new, metrics = outer(state, _batch(exp, mesh))
    after, m = _host(new.params), _host(new.masks)
    moved = 0
    for a, b, mk in zip(jax.tree.leaves(after), jax.tree.leaves(before), jax.tree.leaves(m),
                        strict=True):
        if mk.ndim:
            np.testing.assert_array_equal(a[mk == 0].view(np.uint32), b[mk == 0].view(np.uint32))
            moved += int(np.sum(a[mk == 1] != b[mk == 1]))
    assert moved > 0  # safe weights learn
    assert float(metrics["losses/consistency"]) >= 0


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_inner_and_outer_steps_on_eight_devices_match_one_device(kind, devices):
    """Two inner and two outer steps (SGD on scores and weights) in float64 on 8 devices
    and on 1: equal to float64 rounding (see tests/test_train_step.py for the bound)."""
    from sslj.train.step import make_train_step
    from tests.test_train_step import _float64, assert_normwise_close

    c = for_method(tiny_config(**{"spl.inner_optimizer": "sgd", "spl.inner_lr": 0.5,
                                  "optimizer.name": "sgd", "split.mismatch_ratio": 0.5}),
                   "pi_model+spl")
    results = []
    with jax.enable_x64(True):
        for devs in (devices, devices[:1]):
            mesh = sharding.make_mesh(devs)
            exp, state, ident, opt = _state(c, mesh, kind)
            model = exp.model.clone(dtype=jnp.float64)
            inner = bilevel.make_inner_step(model, ident.counts, kind, opt, mesh)
            outer = make_train_step(model, bilevel.outer_method(c, exp.method),
                                    exp.optimizer, c, mesh)
            state = sharding.replicate(mesh, _float64(state))
            for i in range(2):
                state, _ = inner(state, _batch(exp, mesh, unlabeled=False),
                                 jnp.asarray(i, jnp.int32))
            for _ in range(2):
                state, metrics = outer(state, _batch(exp, mesh))
            results.append(jax.device_get(state))
    s8, s1 = results
    assert jax.tree.leaves(s1.mask_scores)[0].dtype == np.float64
    for part in ("params", "batch_stats", "opt_state", "mask_scores", "masks"):
        assert_normwise_close(getattr(s8, part), getattr(s1, part), 1e-7)


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        del train
        return nn.Dense(4, use_bias=False)(x.reshape((x.shape[0], -1)))


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_inner_loss_does_not_increase_on_a_small_problem(kind, devices):
    """Theorem 1's setting: weights fixed, masks learned on a fixed (full) batch. With a
    small step the inner loss never goes up, and the hard mask keeps its counts."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2, 2, 3)).astype(np.float32)
    w_true = rng.normal(size=(12, 4))
    y = np.argmax(x.reshape(64, -1) @ w_true, -1).astype(np.int32)
    model = _Linear()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)))["params"]
    # a trained weight matrix with noise: masking the noisy entries helps
    params = {"Dense_0": {"kernel": jnp.asarray(w_true + rng.normal(0, 1.0, (12, 4)),
                                                jnp.float32)}}
    spec = M.masked_leaves(params)
    ident = M.identify(params, spec, 0.6)
    scores = M.init_scores(params, ident, kind)
    opt = optax.sgd(0.02 if kind == "hard" else 0.05)
    mesh = sharding.make_mesh(devices)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                       opt_state={}, ema_params=jax.tree.map(jnp.copy, params),
                       masks=M.masks_from_scores(scores, ident.counts, kind),
                       rng=jax.random.PRNGKey(1), mask_scores=scores,
                       mask_opt_state=opt.init(scores))
    state = sharding.replicate(mesh, state)
    step = bilevel.make_inner_step(model, ident.counts, kind, opt, mesh)
    batch = sharding.shard_batch(mesh, {"image": x, "label": y})
    losses, swaps = [], 0
    for t in range(40):
        state, m = step(state, batch, jnp.asarray(t, jnp.int32))
        losses.append(float(m["spl/inner_loss"]))
        swaps += int(m["spl/swaps"])
    assert np.all(np.diff(losses) <= 1e-6), losses
    assert losses[-1] < losses[0]
    if kind == "hard":
        assert swaps > 0 and int(jnp.sum(state.masks["Dense_0"]["kernel"])) == ident.kept


# ------------------------------------------------------------------ config
def test_spl_config_errors_name_the_field():
    c = for_method(tiny_config(), "pi_model+spl")
    validate(c)
    for field, value in (("spl.mask", "medium"), ("spl.identify", "gradient"),
                         ("spl.delta_source", "oracle"), ("spl.safe_ratio", 1.5),
                         ("spl.inner_batch_size", 400), ("spl.outer_loss", "vat"),
                         ("spl.rounds", -1), ("spl.rules", (("(", True),))):
        bad = for_method(tiny_config(), "pi_model+spl")
        node = bad.spl
        with bad.unlocked():
            node[field.split(".")[1]] = value
        with pytest.raises(ConfigError) as e:
            validate(bad)
        assert e.value.field == field
    assert config_lib.split_run_name("pi_model+ls+spl_soft") == ("pi_model", "ls", "spl_soft")
    soft = for_method(tiny_config(), "vat+spl_soft")
    assert soft.spl.enabled and soft.spl.mask == "soft" and soft.method == "vat"
    assert config_lib.run_name(soft) == "vat+spl_soft"
    ft = for_method(tiny_config(), "vat+finetune")
    assert ft.spl.finetune_v1 and config_lib.run_name(ft) == "vat+finetune"
    with pytest.raises(ConfigError):
        config_lib.validate_run_name("vat+spl+spl_soft")


# ------------------------------------------------------------------ the procedure
def _procedure_config(run="pi_model+spl"):
    c = for_method(tiny_config(), run)
    c.num_steps = 12
    c.eval_every = c.checkpoint_every = 6
    c.split.mismatch_ratio = 0.6
    c.spl.rounds, c.spl.inner_steps, c.spl.outer_steps = 2, 4, 3
    c.spl.inner_batch_size = 16
    c.tensorboard = False
    return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from sslj.procedures import standard

    out = str(tmp_path_factory.mktemp("pretrain"))
    standard.run(config_lib.without_spl(_procedure_config()), out)
    return out


@pytest.mark.slow
def test_procedure_compiles_each_step_once_reports_and_resumes(pretrained, tmp_path):
    from sslj.procedures.spl import run_with_parts as run_spl

    c = _procedure_config()
    res, parts = run_spl(c, str(tmp_path), pretrained_dir=pretrained)
    assert parts.inner_step._cache_size() == 1
    assert parts.outer_step._cache_size() == 1
    info = res["spl"]
    assert res["method"] == "pi_model+spl" and res["selection"] == "V2"
    assert info["safe_ratio"] == pytest.approx(1 - 0.6 * (1 - 60 / 1500))
    assert info["kept"] == round(info["safe_ratio"] * info["masked"])
    assert set(info["layer_ratios_identified"]) == {f"Conv_{i}/kernel" for i in range(4)}
    assert info["layer_ratios_final"] == info["layer_ratios_identified"]  # hard: p^l fixed
    rounds = res["history"]
    assert [e["round"] for e in rounds] == [0, 1, 2]
    assert [e["step"] for e in rounds] == [12, 15, 18]  # outer steps continue the count
    for e in rounds:
        assert e["density"] == pytest.approx(info["kept"] / info["masked"], abs=1e-6)
    assert all("swaps" in e and "inner_loss_first" in e for e in rounds[1:])
    best = rounds[info["best_round"]]
    assert best["val_accuracy"] == max(e["val_accuracy"] for e in rounds)
    assert res["test_accuracy_at_best_val"] == best["test_accuracy"]
    assert info["pretrain"]["steps"] == 12
    for name in ("results.json", "spl_layer_ratios.png", "spl_rounds.png", "metrics.jsonl"):
        assert os.path.exists(tmp_path / name), name
    # a run stopped after round 1 (stop_at: the first round boundary at or after step 13)
    # and resumed ends exactly where the uninterrupted one did: V1's stream, the masks,
    # the optimizer and the weights continue from the checkpoint
    cut = tmp_path / "cut"
    stopped, _ = run_spl(c, str(cut), pretrained_dir=pretrained, stop_at=13)
    assert stopped == {"stopped_at": 15}
    again, _ = run_spl(c, str(cut), pretrained_dir=pretrained)
    assert again["history"] == res["history"]
    s_full = _final_spl_state(c, str(tmp_path), pretrained)
    s_cut = _final_spl_state(c, str(cut), pretrained)
    chex.assert_trees_all_equal(s_full.params, s_cut.params)
    chex.assert_trees_all_equal(s_full.mask_scores, s_cut.mask_scores)
    chex.assert_trees_all_equal(s_full.opt_state, s_cut.opt_state)


def _final_spl_state(c, workdir, pretrained):
    """The last round's checkpoint of an SPL run, restored onto the procedure's state."""
    from sslj.procedures import standard
    from sslj.procedures.spl import load_pretrained
    from sslj.train.checkpoint import Checkpointer

    exp = standard.prepare(c)
    state = load_pretrained(exp, pretrained)
    ident = M.identify(state.params, M.masked_leaves(state.params,
                                                     M.rules_from_config(c.spl)), 0.5)
    scores = M.init_scores(state.params, ident, c.spl.mask)
    like = sharding.replicate(exp.mesh, state.replace(
        masks=M.masks_from_scores(scores, ident.counts, c.spl.mask), mask_scores=scores,
        mask_opt_state=bilevel.inner_optimizer(c.spl).init(scores)))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    restored, _ = ckpt.restore(like)
    ckpt.close()
    return restored


def test_best_round_takes_the_highest_v2_accuracy_and_the_earliest_on_ties():
    from sslj.procedures.spl import best_round

    evals = [{"round": 0, "val_accuracy": 0.5}, {"round": 1, "val_accuracy": 0.7},
             {"round": 2, "val_accuracy": 0.6}, {"round": 3, "val_accuracy": 0.7}]
    assert best_round(evals)["round"] == 1
    assert best_round(evals[:1])["round"] == 0


@pytest.mark.slow
def test_finetune_baseline_and_ablations_run(pretrained, tmp_path):
    from sslj.procedures.spl import run_with_parts as run_spl

    ft, _ = run_spl(_procedure_config("pi_model+finetune"), str(tmp_path / "ft"),
                    pretrained_dir=pretrained)
    assert ft["method"] == "pi_model+finetune" and ft["spl"]["finetune_v1"]
    assert ft["history"][-1]["step"] == 12 + 2 * 4  # inner_steps weight steps per round
    c = _procedure_config("pi_model+spl_soft")
    c.spl.outer_steps = 0  # w/o outer
    soft, _ = run_spl(c, str(tmp_path / "soft"), pretrained_dir=pretrained)
    assert soft["history"][-1]["step"] == 12
    with open(tmp_path / "soft" / "results.json") as f:
        assert json.load(f)["spl"]["mask"] == "soft"


def test_outer_training_continues_or_starts_fresh_and_finetune_has_its_own_lr():
    from sslj.procedures.spl import outer_training

    base = for_method(tiny_config(), "pi_model+spl")
    pretrain_opt = object()
    cfg, opt = outer_training(base, pretrain_opt)
    assert cfg is base and opt is pretrain_opt  # "continue"
    fresh = for_method(tiny_config(**{"spl.outer_optimizer": "fresh", "spl.outer_lr": 0.01}),
                       "pi_model+spl")
    cfg, opt = outer_training(fresh, pretrain_opt)
    assert opt is not pretrain_opt
    assert (cfg.optimizer.lr, cfg.optimizer.schedule) == (0.01, "constant")
    ft = for_method(tiny_config(**{"spl.finetune_lr": 0.003}), "pi_model+finetune")
    cfg, opt = outer_training(ft, pretrain_opt)
    assert opt is not pretrain_opt and cfg.optimizer.lr == 0.003
    # the +spl run of the same config keeps the pretraining's optimizer
    assert outer_training(for_method(tiny_config(**{"spl.finetune_lr": 0.003}),
                                     "pi_model+spl"), pretrain_opt)[1] is pretrain_opt
