"""The train step: numerics of its pieces, one compilation, 8 devices == 1 device."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslj.common import sharding
from sslj.config import for_method
from sslj.losses import cross_entropy, softmax_mse
from sslj.methods import get_method
from sslj.methods.base import StepContext
from sslj.procedures import standard
from sslj.train import loop
from sslj.train.optim import kernel_mask
from sslj.train.schedules import learning_rate, ramp
from sslj.train.state import create_train_state
from sslj.train.step import Forward, make_step_fn, make_train_step
from tests.conftest import tiny_config


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 5)).astype(np.float32)
    y = rng.integers(0, 5, 7)
    expected = -np.mean(np.log(np_softmax(z)[np.arange(7), y]))
    np.testing.assert_allclose(cross_entropy(jnp.asarray(z), jnp.asarray(y)), expected, rtol=1e-6)
    w = np.array([1, 0, 1, 1, 0, 0, 1], np.float32)
    expected_w = -np.sum(w * np.log(np_softmax(z)[np.arange(7), y])) / w.sum()
    np.testing.assert_allclose(cross_entropy(jnp.asarray(z), jnp.asarray(y), jnp.asarray(w)),
                               expected_w, rtol=1e-6)


def test_softmax_mse_value_and_analytic_gradient():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 6))
    t = rng.normal(size=(4, 6))
    p, q = np_softmax(z), np_softmax(t)
    np.testing.assert_allclose(softmax_mse(jnp.asarray(z), jnp.asarray(t)),
                               np.mean((p - q) ** 2), rtol=1e-5)
    # d/dz mean((p - q)^2) with q constant: J_softmax^T 2 (p - q) / (N C)
    g = 2 * (p - q) / p.size
    analytic = p * (g - np.sum(g * p, -1, keepdims=True))
    grad = jax.grad(softmax_mse)(jnp.asarray(z, jnp.float32), jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(grad, analytic, atol=1e-7)


def test_pi_model_consistency_gradient_treats_second_pass_as_constant():
    """Pi term through the method with a linear model: gradient == NumPy derivation."""
    c = tiny_config(method="pi_model")
    method = get_method(c)
    rng = np.random.default_rng(2)
    xl = rng.integers(0, 256, (2, 2, 2, 1), np.uint8)
    xu = rng.integers(0, 256, (3, 2, 2, 1), np.uint8)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    shift = np.array([0.5, -1.0, 0.25], np.float32)  # makes the second pass differ

    def pi_loss(w):
        def forward(x, *, rng, clean):
            logits = x.reshape(x.shape[0], -1) @ w
            return logits if clean else logits + shift
        ctx = StepContext(forward, lambda x, r: x, jnp.zeros((), jnp.int32), None)
        out = method.outputs(ctx, {"image": xl, "unlabeled_image": xu}, jax.random.PRNGKey(0))
        return dict((t.name, t) for t in method.terms())["pi"].fn(out, None)

    xu_f = xu.reshape(3, -1).astype(np.float64) * (2 / 255) - 1
    p = np_softmax(xu_f @ w0)
    q = np_softmax(xu_f @ w0 + shift)
    g = 2 * (p - q) / p.size
    dz = p * (g - np.sum(g * p, -1, keepdims=True))
    np.testing.assert_allclose(pi_loss(jnp.asarray(w0)), np.mean((p - q) ** 2), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(pi_loss)(jnp.asarray(w0)), xu_f.T @ dz, atol=1e-6)


def test_ramps_and_schedules():
    r = ramp("oliver_exp", 100)
    np.testing.assert_allclose([r(0), r(50), r(100), r(250)],
                               [np.exp(-5), np.exp(-5 * 0.25), 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ramp("linear", 10)(4), 0.4, rtol=1e-6)
    c = tiny_config()
    c.optimizer.schedule, c.optimizer.decay_steps, c.optimizer.decay_factor = "staircase", 5, 0.2
    s = learning_rate(c.optimizer, 10)
    np.testing.assert_allclose([s(4), s(5), s(9)], [3e-3, 6e-4, 6e-4], rtol=1e-6)
    c.optimizer.schedule = "fixmatch_cosine"
    s = learning_rate(c.optimizer, 16)
    np.testing.assert_allclose(s(8), 3e-3 * np.cos(7 * np.pi * 8 / (16 * 16)), rtol=1e-6)


def test_weight_decay_mask_selects_kernels_only():
    params = {"conv": {"kernel": 1.0}, "bn": {"scale": 1.0, "bias": 1.0}, "dense": {"bias": 0.}}
    assert kernel_mask(params) == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False},
                                   "dense": {"bias": False}}


@pytest.mark.parametrize("decay_params", ["kernels", "all"])
def test_weight_decay_reaches_the_parameters_it_names(decay_params):
    from ml_collections import ConfigDict

    from sslj.train.optim import make_optimizer

    opt = make_optimizer(ConfigDict(dict(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.1,
                                         decay_params=decay_params, schedule="constant")), 10)
    params = {"conv": {"kernel": jnp.ones(3), "bias": jnp.ones(2)},
              "bn": {"scale": jnp.ones(2)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    decayed = {"kernel": True, "bias": decay_params == "all", "scale": decay_params == "all"}
    for (path, u) in jax.tree_util.tree_flatten_with_path(updates)[0]:
        expected = -0.1 if decayed[path[-1].key] else 0.0
        np.testing.assert_allclose(u, expected, rtol=1e-6)


def test_bn_update_policies():
    exp = standard.prepare(tiny_config(), devices=jax.devices()[:1])
    state = create_train_state(exp.model, exp.optimizer, jax.random.PRNGKey(0), (28, 28, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 28, 28, 1))
    r = jax.random.PRNGKey(2)
    unchanged = lambda f: jax.tree.all(jax.tree.map(jnp.array_equal, f.new_batch_stats,
                                                    state.batch_stats))
    f = Forward(exp.model, state.params, state.batch_stats, "clean")
    f(x, rng=r, clean=False)
    assert unchanged(f), "a perturbed pass wrote the running statistics"
    f(x, rng=r, clean=True)
    assert not unchanged(f)
    f = Forward(exp.model, state.params, state.batch_stats, "none")
    f(x, rng=r, clean=True)
    assert unchanged(f)
    f = Forward(exp.model, state.params, state.batch_stats, "all")
    f(x, rng=r, clean=False)
    once = f.new_batch_stats
    f(x, rng=r, clean=False)  # chained: the second update starts from the first
    m0, m1, m2 = (jax.tree.leaves(t)[0] for t in (state.batch_stats, once, f.new_batch_stats))
    momentum = exp.model.bn_momentum  # a 6-step run's (sslj.train.loop.fit_bn_momentum)
    np.testing.assert_allclose(m2 - m1, momentum * (m1 - m0), rtol=1e-4, atol=1e-7)


def test_labeled_bn_policy_takes_statistics_from_the_labeled_batch_alone(devices):
    """bn_update = "labeled": the new running statistics are those of one training-mode
    pass over the augmented labeled batch, re-derived here from the step's own keys."""
    from sslj.data import augment as augment_lib

    c, exp, state, batches = _setup("pi_model", devices[:1], bn_update="labeled")
    step = make_train_step(exp.model, exp.method, exp.optimizer, c, exp.mesh, donate=False)
    batch = next(batches)
    new, _ = step(state, batch)
    rng = jax.random.fold_in(state.rng, state.step)
    _, bn_rng = jax.random.split(rng)
    aug_rng, drop_rng = jax.random.split(bn_rng)
    x = augment_lib.from_config(c.data)(augment_lib.to_float(batch["image"]), aug_rng)
    _, updates = exp.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                 x, train=True, rngs={"dropout": drop_rng},
                                 mutable=["batch_stats"])
    chex.assert_trees_all_close(new.batch_stats, updates["batch_stats"], rtol=1e-5, atol=1e-6)
    # and not the clean pass over labeled + unlabeled, which the default policy uses
    clean, _ = make_train_step(exp.model, exp.method, exp.optimizer,
                               for_method(tiny_config(), "pi_model"), exp.mesh,
                               donate=False)(state, batch)
    assert not jax.tree.all(jax.tree.map(np.allclose, clean.batch_stats, new.batch_stats))


def test_bfloat16_step_follows_the_float32_step(devices):
    """compute_dtype bfloat16: params stay float32, the loss is the float32 loss to
    bfloat16's precision (8 mantissa bits: 2^-8 = 0.4 % per rounding), and the gradient
    points the same way (plain SGD, so the update is the gradient: cosine > 0.99)."""
    sgd = {"optimizer.name": "sgd", "optimizer.momentum": 0.0}
    c32, exp32, state, batches = _setup("pi_model", devices[:1], **sgd)
    c16, exp16, _, _ = _setup("pi_model", devices[:1], compute_dtype="bfloat16", **sgd)
    batch = next(batches)
    outs = []
    for c, exp in ((c32, exp32), (c16, exp16)):
        step = make_train_step(exp.model, exp.method, exp.optimizer, c, exp.mesh, donate=False)
        new, m = step(state, batch)
        outs.append((jax.device_get(new.params), jax.device_get(m)))
    (p32, m32), (p16, m16) = outs
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(p16))
    np.testing.assert_allclose(m16["losses/xe"], m32["losses/xe"], rtol=0.02)
    before = jax.device_get(state.params)
    d32 = np.concatenate([(a - b).ravel() for a, b in zip(jax.tree.leaves(p32),
                                                          jax.tree.leaves(before), strict=True)])
    d16 = np.concatenate([(a - b).ravel() for a, b in zip(jax.tree.leaves(p16),
                                                          jax.tree.leaves(before), strict=True)])
    assert d16 @ d32 / np.linalg.norm(d16) / np.linalg.norm(d32) > 0.99


def _setup(method, devices, **overrides):
    c = for_method(tiny_config(**overrides), method)
    exp = standard.prepare(c, devices=devices)
    state = loop.init_state(exp, jax.random.PRNGKey(0))
    batches = loop.train_streams(exp).iterate(exp.mesh)
    return c, exp, sharding.replicate(exp.mesh, state), batches


@pytest.mark.parametrize("method", ["supervised", "pi_model", "vat"] + [
    pytest.param(m, marks=pytest.mark.slow)  # the same check; the fast subset keeps three
    for m in ("mean_teacher", "temporal_ensembling", "pseudo_label", "pseudo_label_accumulated",
              "pi_model+proselflc", "supervised+boot_hard")])
def test_step_compiles_once_over_many_steps(method, devices):
    chex.clear_trace_counter()  # the counter is global; earlier parametrizations count too
    c, exp, state, batches = _setup(method, devices)
    step = make_step_fn(exp.model, exp.method, exp.optimizer, c)
    jitted = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=(0,))
    for _ in range(5):
        state, metrics = jitted(state, next(batches))
    assert int(state.step) == 5
    chex.assert_tree_all_finite(metrics)
    assert ("monitors/target_eps" in metrics) == ("+" in method)


def test_ema_update_is_exact(devices):
    c, exp, state, batches = _setup("supervised", devices[:1])
    step = make_train_step(exp.model, exp.method, exp.optimizer, c, exp.mesh, donate=False)
    new, _ = step(state, next(batches))
    expected = jax.tree.map(lambda e, p: c.ema_decay * e + (1 - c.ema_decay) * p,
                            state.ema_params, new.params)
    chex.assert_trees_all_close(new.ema_params, expected, rtol=1e-6, atol=1e-7)


def assert_normwise_close(a, b, rtol: float) -> None:
    """Every floating leaf: max |a - b| <= rtol * max |b| (the scale of a reduction's
    rounding is that of its terms, not of each result)."""
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, x), y in zip(flat_a, jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if not np.issubdtype(y.dtype, np.floating) or y.size == 0:
            np.testing.assert_array_equal(x, y)
            continue
        err, scale = np.max(np.abs(x - y)), np.max(np.abs(y))
        assert err <= rtol * max(scale, 1e-30), (jax.tree_util.keystr(path), err, scale)


def _float64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, tree)


@pytest.mark.parametrize("method,optimizer", [
    ("supervised", "adam"), ("pi_model", "sgd"), ("vat", "sgd"), ("mean_teacher", "sgd"),
    ("temporal_ensembling", "sgd")])
def test_eight_devices_match_one_device(method, optimizer, devices):
    """Three steps on 8 devices equal three on 1, to float64 rounding.

    The two layouts differ only in the order of the reductions over the batch (gradient
    sums, BatchNorm statistics). In float32 that order moves results by ~1e-7 relative
    per reduction and three steps amplify it (2.9e-5 absolute seen on one machine, a
    different amount at each CPU instruction set), so the step runs in float64 here:
    params, optimizer state and the model's compute (its logits stay float32). A float64
    reduction of n terms is off by at most ~n * 2^-53 of the sum of its terms'
    magnitudes, so each leaf is compared normwise, max |a - b| <= 1e-7 max |b|: an
    entry that nearly cancels carries the error of its terms, not of itself. The
    largest seen is 2e-9 of the leaf's scale, on BatchNorm-bias gradients (sums of ~1e5
    terms over pixels that cancel to a thousandth of their magnitude), so 1e-7 leaves a
    margin of 50, and still fails on any real difference (a per-device BatchNorm
    statistic, a per-shard mean, a dropped row): in float32 the same comparison showed
    1e-4 of the scale from reduction order alone. The SSL methods run under SGD: Adam's m / sqrt(v)
    turns the rounding of a gradient that nearly cancels (a BatchNorm bias) into an
    lr-sized step. VAT's probe follows the model into float64 (it runs in float32 at
    least); Mean Teacher's teacher and Temporal Ensembling's ensemble are compared too."""
    overrides = {"optimizer.name": optimizer, "split.mismatch_ratio": 0.5,
                 **{f"method_overrides.{m}.optimizer.lr": 0.05
                    for m in ("pi_model", "mean_teacher")}}
    results = []
    with jax.enable_x64(True):
        for devs in (devices, devices[:1]):
            c, exp, state, batches = _setup(method, devs, **overrides)
            model = exp.model.clone(dtype=jnp.float64)
            step = make_train_step(model, exp.method, exp.optimizer, c, exp.mesh)
            state = _float64(state)
            batch = next(batches)
            assert len(batch["image"].sharding.device_set) == len(devs)
            for _ in range(3):
                state, metrics = step(state, batch)
            results.append(jax.device_get((state, metrics)))
    (s8, m8), (s1, m1) = results
    assert jax.tree.leaves(s1.params)[0].dtype == np.float64
    for part in ("params", "batch_stats", "opt_state", "extra"):
        assert_normwise_close(getattr(s8, part), getattr(s1, part), 1e-7)
    # the losses are float32 (float32 logits): a float32 mean over the batch
    chex.assert_trees_all_close(m8, m1, rtol=1e-6, atol=1e-9)
    assert not jax.tree.all(jax.tree.map(np.array_equal, s1.params,
                                         jax.device_get(_setup(method, devices[:1],
                                                               **overrides)[2].params)))


def test_batch_statistics_take_the_momentum_out(devices):
    """make_batch_statistics recovers one batch's BatchNorm statistics from the model's
    running-average update whatever the momentum: equal to a pass of the same model with
    momentum 0 (cnn_tiny exposes it), and precise_batch_stats averages them over batches."""
    from sslj.data import augment as augment_lib
    from sslj.train.evaluate import EvalSet, make_batch_statistics, precise_batch_stats

    c, exp, state, _ = _setup("supervised", devices[:1], **{"model_kwargs.bn_momentum": 0.9})
    images = exp.dataset.train_images[:64]
    fn = make_batch_statistics(exp.model, exp.mesh)
    got = fn(state.params, state.masks, state.batch_stats, images[:32])
    _, upd = exp.model.clone(bn_momentum=0.0).apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        augment_lib.to_float(jnp.asarray(images[:32])), train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(got, upd["batch_stats"], rtol=2e-4, atol=1e-5)
    both = precise_batch_stats(fn, state.params, state.masks, state.batch_stats,
                               EvalSet(images, np.zeros(64, np.int32), 32, exp.mesh))
    second = fn(state.params, state.masks, state.batch_stats, images[32:])
    chex.assert_trees_all_close(both, jax.tree.map(lambda a, b: (a + b) / 2, got, second),
                                rtol=1e-6, atol=1e-7)
