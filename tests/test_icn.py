"""ICN: the compiled sampler, Eq. 9 / Eq. 5, the one-vs-all nets, the pool, FGSM and the
procedure end to end (numbers against NumPy re-derivations or closed forms)."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslj.icn import fgsm as fgsm_lib
from sslj.icn.method import ICNReclassification, one_vs_all_xe, pseudo_negative_loss
from sslj.icn.pool import PseudoNegativePool
from sslj.icn.sampler import SamplerSpec, chain, make_synthesizer

D = 64  # pixels of the linear model's samples


def _linear(w, b):
    """z_i(x) = w . x_i + b_i: the class logit linear in x (per-sample offsets b)."""
    return lambda x: jnp.sum(x.reshape(x.shape[0], -1) * w, axis=1) + b


def test_sgd_moves_along_w_exactly():
    w = jax.random.normal(jax.random.PRNGKey(0), (D,))
    x0 = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (3, D))
    spec = SamplerSpec(kind="sgd", stop="steps", step_size=0.01, max_steps=7, clip=False)
    x, st = jax.jit(lambda x0: chain(_linear(w, jnp.zeros(3)), spec, x0,
                                     jax.random.PRNGKey(2)))(x0)
    # grad_x (w . x) = w, so x_T = x_0 + T eps w
    chex.assert_trees_all_close(np.asarray(x), np.asarray(x0) + 7 * 0.01 * np.asarray(w),
                                atol=1e-5)
    np.testing.assert_array_equal(st["steps"], [7, 7, 7])
    assert bool(np.all(st["reached"]))


def test_stop_rule_positive_freezes_on_the_step_it_turns_positive():
    w = jnp.ones((D,)) / 8.0  # |w|^2 = 1
    eps = 0.1  # each step raises z by eps |w|^2 = 0.1
    b = jnp.array([-0.55, -0.05, 0.3, -100.0])  # 6 steps, 1 step, already positive, never
    x0 = jnp.zeros((4, D))
    spec = SamplerSpec(kind="sgd", stop="positive", step_size=eps, max_steps=20, clip=False)
    x, st = jax.jit(lambda x0: chain(_linear(w, b), spec, x0, jax.random.PRNGKey(0)))(x0)
    # NumPy: the first t with b + t * eps > 0 (t = 0: positive before any step)
    expect = [int(np.floor(-float(bi) / eps + 1e-9)) + 1 if bi <= 0 else 0 for bi in b[:3]]
    np.testing.assert_array_equal(st["steps"][:3], expect)
    assert int(st["steps"][3]) == 20 and not bool(st["reached"][3])
    np.testing.assert_array_equal(st["reached"][:3], [True, True, True])
    chex.assert_trees_all_close(np.asarray(x)[:3],
                                np.asarray(expect, np.float32)[:, None] * eps * np.asarray(w),
                                atol=1e-6)
    # frozen: the final logits are the first positive ones, not beyond
    z = np.asarray(st["logit"])
    assert np.all(z[:2] > 0) and np.all(z[:2] - eps <= 1e-6)
    assert abs(z[2] - 0.3) < 1e-6  # positive before any step: unmoved


def test_stop_rule_confidence():
    w = jnp.ones((D,)) / 8.0
    spec = SamplerSpec(kind="sgd", stop="confidence", confidence=0.9, step_size=0.5,
                       max_steps=50, clip=False)
    _, st = chain(_linear(w, jnp.array([-1.0])), spec, jnp.zeros((1, D)), jax.random.PRNGKey(0))
    # sigmoid(-1 + 0.5 t) >= 0.9  <=>  t >= (log 9 + 1) / 0.5
    assert int(st["steps"][0]) == int(np.ceil((np.log(9.0) + 1) / 0.5))


def test_langevin_noise_has_the_stated_variance():
    # zero gradient: x_T - x_0 = sum_t sqrt(eps_t) N(0, 1), variance sum_t eps_t
    spec = SamplerSpec(kind="langevin", stop="steps", step_size=0.04, max_steps=5,
                       anneal_gamma=0.55, clip=False)
    n = 4000
    x0 = jnp.zeros((n, D))
    x, _ = jax.jit(lambda x0: chain(lambda x: 0.0 * jnp.sum(x, axis=1), spec, x0,
                                    jax.random.PRNGKey(3)))(x0)
    var = float(np.var(np.asarray(x)))
    expect = sum(0.04 * (1.0 + t) ** -0.55 for t in range(5))
    # the sample variance of N = n D normals has relative std sqrt(2 / N) = 0.28 %
    assert abs(var / expect - 1.0) < 5 * np.sqrt(2.0 / (n * D))
    # and the drift: with gradient w, E[x_T] = sum_t eps_t / 2 * w
    w = jnp.ones((D,))
    x, _ = chain(_linear(w, jnp.zeros(n)), spec, x0, jax.random.PRNGKey(4))
    assert abs(float(np.mean(x)) - expect / 2) < 5 * np.sqrt(expect / (n * D))


def test_adam_sampler_matches_optax_adam_ascent():
    w = jax.random.normal(jax.random.PRNGKey(0), (D,))
    x0 = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (2, D))
    f = lambda x: jnp.sum(jnp.tanh(x.reshape(2, -1) * w), axis=1)  # noqa: E731
    spec = SamplerSpec(kind="adam", stop="steps", step_size=0.05, max_steps=6, clip=False)
    x, _ = chain(f, spec, x0, jax.random.PRNGKey(0))
    opt = optax.adam(0.05, b1=0.5, b2=0.999, eps=1e-8)
    y, s = x0, opt.init(x0)
    for _ in range(6):
        g = jax.grad(lambda y: -jnp.sum(f(y)))(y)
        u, s = opt.update(g, s)
        y = y + u
    chex.assert_trees_all_close(x, y, atol=1e-5)


def test_synthesizer_draws_reference_noise_and_clips():
    from sslj.models import get_model

    model = get_model("icn_mnist", 10, widths=(4, 8, 8, 8))
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    spec = SamplerSpec(kind="sgd", stop="steps", step_size=1e-9, max_steps=1, noise_std=0.3)
    x, st = make_synthesizer(model, spec, (28, 28, 1))(v, jnp.zeros((50,), jnp.int32),
                                                      jax.random.PRNGKey(0))
    assert abs(float(np.std(x)) - 0.3) < 0.01 and abs(float(np.mean(x))) < 0.01
    big = SamplerSpec(kind="sgd", stop="steps", step_size=1e3, max_steps=3)
    x, _ = make_synthesizer(model, big, (28, 28, 1))(v, jnp.arange(10) % 10,
                                                    jax.random.PRNGKey(0))
    assert float(np.max(np.abs(x))) <= 1.0


def test_eq9_loss_and_gradient_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    neg = rng.normal(size=(3, 4)).astype(np.float32) * 3
    labels = np.array([0, 3, 1, 2, 2], np.int32)
    ncls = np.array([1, 0, 3], np.int32)
    weight = np.float32(2.5)  # |S_pn| / n
    alpha = 0.3

    def total(lg, ng):
        out = {"logits": lg, "neg_logits": ng}
        batch = {"label": labels, "neg_class": ncls, "neg_weight": np.full(3, weight)}
        from sslj.methods.base import supervised_xe
        return (1 - alpha) * supervised_xe(out, batch) + alpha * pseudo_negative_loss(out, batch)

    lg, ng = logits.astype(np.float64), neg.astype(np.float64)
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    z = ng[np.arange(3), ncls]
    expect = ((1 - alpha) * np.mean(-np.log(p[np.arange(5), labels]))
              + alpha * weight * np.mean(np.log1p(np.exp(z))))
    np.testing.assert_allclose(float(total(logits, neg)), expect, rtol=1e-6)
    g_lg, g_ng = jax.grad(total, argnums=(0, 1))(logits, neg)
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(g_lg, (1 - alpha) * (p - onehot) / 5, atol=1e-7)
    expect_ng = np.zeros_like(ng)
    expect_ng[np.arange(3), ncls] = alpha * weight / 3 / (1 + np.exp(-z))  # sigmoid
    np.testing.assert_allclose(g_ng, expect_ng, atol=1e-7)


def test_method_terms_weigh_by_alpha():
    from experiments.configs.icn import get_config

    c = get_config("mnist5k-500")
    c.icn.alpha = 0.25
    terms = {t.name: t.weight for t in ICNReclassification(c).loss_terms()}
    assert terms == {"xe": 0.75, "icn": 0.25}


def test_one_vs_all_equals_k_separate_nets_for_a_step():
    from sslj.models import get_model

    k, kw = 3, {"widths": (4, 8, 8, 8)}
    ova = get_model("icn_mnist", k, one_vs_all=True, **kw)
    single = get_model("icn_mnist", 1, **kw)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (6, 28, 28, 1)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 0, 1, 2], jnp.int32)
    xn = jnp.asarray(rng.normal(0, 0.3, (4, 28, 28, 1)), jnp.float32)
    kn = jnp.asarray([0, 2, 2, 1], jnp.int32)
    params = ova.init(jax.random.PRNGKey(0), x[:1])["params"]
    lr = 0.1
    batch = {"label": y, "neg_class": kn, "neg_weight": jnp.ones(4)}

    def loss(p):
        out = {"logits": ova.apply({"params": p}, x), "neg_logits": ova.apply({"params": p}, xn)}
        return one_vs_all_xe(out, batch) + pseudo_negative_loss(out, batch)

    stacked = jax.tree.map(lambda a, g: a - lr * g, params, jax.grad(loss)(params))
    for j in range(k):
        pj = jax.tree.map(lambda a, j=j: a[j], params["nets"])

        def loss_j(p, j=j):  # net j alone: class j positive, its own pseudo-negatives
            z = single.apply({"params": p}, x)[:, 0]
            t = (y == j).astype(jnp.float32)
            zn = single.apply({"params": p}, xn)[:, 0]
            return (jnp.mean(jax.nn.softplus(z) - t * z)
                    + jnp.mean((kn == j) * jax.nn.softplus(zn)))

        new = jax.tree.map(lambda a, g: a - lr * g, pj, jax.grad(loss_j)(pj))
        # float32 parameters of magnitude <= ~1 after one step of lr 0.1: the two
        # gradients differ only in summation order (batched vs single convolutions)
        chex.assert_trees_all_close(jax.tree.map(lambda a, j=j: a[j], stacked["nets"]), new,
                                    atol=1e-6, rtol=1e-5)
    assert ova.apply({"params": params}, x).shape == (6, k)


def test_patch_convolutions_equal_xla_convolution():
    """"patches" and "slices" compute XLA's SAME convolution with the same parameters:
    outputs and gradients to the input and to the weights, in float64 (the summation
    orders differ, so float32 would leave rounding, not errors, to bound). The net casts
    its logits to float32, so the bound is one float32 rounding (rtol 1e-6)."""
    from sslj.models import get_model

    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1), jnp.float64)
        models = {impl: get_model("icn_mnist", 10, widths=(6, 8, 8, 12), conv_impl=impl,
                                  dtype=jnp.float64) for impl in ("xla", "patches", "slices")}
        v = models["xla"].init(jax.random.PRNGKey(0), x[:1])
        v = jax.tree.map(lambda a: a.astype(jnp.float64), v)
        ref = models["xla"]
        for m in models.values():
            chex.assert_trees_all_equal_shapes(v, m.init(jax.random.PRNGKey(0), x[:1]))
            chex.assert_trees_all_close(m.apply(v, x), ref.apply(v, x), atol=1e-9, rtol=1e-6)
            gx = jax.grad(lambda x, m=m: jnp.sum(m.apply(v, x)[:, 3]))(x)
            gx_ref = jax.grad(lambda x: jnp.sum(ref.apply(v, x)[:, 3]))(x)
            chex.assert_trees_all_close(gx, gx_ref, atol=1e-9, rtol=1e-6)
            gw = jax.grad(lambda v, m=m: jnp.sum(m.apply(v, x) ** 2))(v)
            gw_ref = jax.grad(lambda v: jnp.sum(ref.apply(v, x) ** 2))(v)
            chex.assert_trees_all_close(gw, gw_ref, atol=1e-9, rtol=1e-6)
    assert get_model("icn_mnist", 10).conv_impl == "slices"  # the measured fastest


def test_slice_patches_are_xla_patches_reordered():
    """The same values bit for bit (both only copy pixels), ordered (row, column,
    channel) against XLA's (channel, row, column); odd and even sizes, strides 1-3."""
    from sslj.models.convnet import slice_patches

    rng = np.random.default_rng(0)
    for h, w, c, k, s in ((28, 28, 1, 5, 2), (7, 7, 3, 5, 2), (4, 5, 2, 5, 2), (9, 6, 2, 3, 1),
                          (10, 11, 4, 3, 3)):
        x = jnp.asarray(rng.normal(size=(2, h, w, c)), jnp.float32)
        ours = slice_patches(x, k, k, s)
        xla = jax.lax.conv_general_dilated_patches(x, (k, k), (s, s), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n, ho, wo, _ = xla.shape
        assert ours.shape == xla.shape
        reordered = np.asarray(xla).reshape(n, ho, wo, c, k, k).transpose(0, 1, 2, 4, 5, 3)
        np.testing.assert_array_equal(np.asarray(ours), reordered.reshape(n, ho, wo, -1))


def test_fgsm_perturbation_has_max_norm_eps():
    from sslj.models import get_model

    model = get_model("icn_mnist", 10, widths=(4, 8, 8, 8))
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(20, dtype=np.int32) % 10
    eps = fgsm_lib.input_eps(0.125)
    assert eps == 0.25
    adv, _, _ = fgsm_lib.make_fgsm(model)(v, images, labels, eps)
    x = images.astype(np.float32) * (2 / 255) - 1
    d = np.abs(np.asarray(adv) - x)
    assert float(d.max()) <= eps + 1e-6
    inside = (x > -1 + eps) & (x < 1 - eps)  # not clipped: moved by exactly eps
    np.testing.assert_allclose(d[inside], eps, atol=1e-6)


def test_pool_grows_saves_and_loads_exactly(tmp_path):
    pool = PseudoNegativePool((2, 2, 1), cap=5)
    pool.add(np.ones((3, 2, 2, 1)), [0, 1, 2], 1)
    pool.add(2 * np.ones((3, 2, 2, 1)), [0, 1, 2], 2)
    assert len(pool) == 5 and list(pool.rounds) == [1, 1, 2, 2, 2]  # the newest 5
    pool.save(str(tmp_path / "p.npz"))
    back = PseudoNegativePool.load(str(tmp_path / "p.npz"), cap=5)
    np.testing.assert_array_equal(back.images, pool.images)
    np.testing.assert_array_equal(back.classes, pool.classes)
    assert not os.path.exists(str(tmp_path / "p.npz.tmp.npz"))


def test_icn_config_errors_name_the_field():
    from experiments.configs.icn import get_config
    from sslj import config as config_lib

    c = config_lib.for_method(get_config("mnist5k-500"), "supervised+icn")
    config_lib.validate(c)
    bad = config_lib.for_method(get_config("mnist5k-500"), "vat+icn")
    with pytest.raises(config_lib.ConfigError, match="method"):
        config_lib.validate(bad)
    bad = config_lib.for_method(get_config("mnist5k-500,ova"), "supervised+ls+icn_base")
    with pytest.raises(config_lib.ConfigError, match="target.kind"):
        config_lib.validate(bad)
    with pytest.raises(config_lib.ConfigError, match="compare"):
        config_lib.validate_run_name("supervised+icn+icn_noise")
    bad = config_lib.for_method(get_config("mnist5k-500"), "supervised+icn")
    bad.icn.sampler = "hmc"
    with pytest.raises(config_lib.ConfigError, match="icn.sampler"):
        config_lib.validate(bad)
    bad = config_lib.for_method(get_config("mnist5k-500"), "supervised+icn")
    bad.optimizer.schedule = "staircase"
    with pytest.raises(config_lib.ConfigError, match="optimizer.schedule"):
        config_lib.validate(bad)
    assert config_lib.run_name(config_lib.for_method(get_config(), "supervised+icn_noise")) \
        == "supervised+icn_noise"


def test_convergence_rule():
    from sslj.procedures.icn import converged

    assert not converged(3, 5, 0)  # patience 0: all T rounds
    assert not converged(3, 4, 2) and converged(3, 5, 2)


def tiny_icn(run: str = "supervised+icn", **fields):
    from experiments.configs.icn import get_config
    from sslj.config import for_method, set_fields

    c = for_method(get_config("mnist5k-500"), run)
    c.split.labels_per_class = 4
    c.split.num_validation = 40
    c.model_kwargs.widths = (4, 8, 8, 8)
    c.model_kwargs.conv_impl = "xla"  # ~3x faster than patches at small widths
    c.batch_size = c.unlabeled_batch_size = 16
    c.eval_batch_size = 200
    c.icn.rounds = 2
    c.icn.per_class = 2
    c.icn.epochs_per_round = 1
    c.icn.max_steps = 5
    c.progress_bar = False
    c.tensorboard = False
    return set_fields(c, fields)


@pytest.mark.slow
def test_icn_resumes_with_the_same_pool(tmp_path):
    from sslj.procedures import run

    c = tiny_icn()
    full = run(c, str(tmp_path / "full"))
    assert run(c, str(tmp_path / "cut"), stop_at=3) == {"stopped_at": 3}
    resumed = run(c, str(tmp_path / "cut"))
    for d in ("full", "cut"):
        assert os.path.exists(tmp_path / d / "icn_pseudo_negatives.png")
    a = PseudoNegativePool.load(str(tmp_path / "full" / "pool" / "round_2.npz"))
    b = PseudoNegativePool.load(str(tmp_path / "cut" / "pool" / "round_2.npz"))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.classes, b.classes)
    assert len(a) == 2 * 10 * 2
    for key in ("test_accuracy_at_best_val", "final_test_accuracy", "steps"):
        assert full[key] == resumed[key]
    assert full["fgsm"] == resumed["fgsm"]
    assert full["icn"]["rounds_run"] == 2 and full["steps"] == 3 * 3  # ceil(40 / 16) = 3
    with open(tmp_path / "full" / "results.json") as f:
        assert json.load(f)["icn"]["pool_size"] == 40


@pytest.mark.slow
def test_icn_noise_pool_is_reference_noise_and_ova_runs(tmp_path):
    from sslj.procedures import run

    r = run(tiny_icn("supervised+icn_noise", **{"icn.formulation": "ova", "icn.rounds": 1,
                                                 "icn.fgsm_eps": 0.0}), str(tmp_path))
    pool = PseudoNegativePool.load(str(tmp_path / "pool" / "round_1.npz"))
    assert len(pool) == 20 and abs(float(np.std(pool.images)) - 0.3) < 0.02
    assert r["icn"]["formulation"] == "ova" and r["icn"]["sampler_sample_steps_per_s"] is None


@pytest.mark.slow
def test_icn_beats_or_ties_the_cnn_baseline(tmp_path):
    """A short run on MNIST-5k (100 training images, 4 rounds): ICN's test accuracy at
    its best validation round is at least the same-schedule CNN's minus 4 points (40 of
    the 1,000 test images). At this size one seed is noisy: seed 0 measured ICN / CNN
    79.6 / 78.5 % (default ISA), 79.2 / 78.5 (AVX2) and 76.9 / 79.3 (SSE4.2), 8 fake
    devices, so the margin is the -2.4 seen at SSE4.2 plus room. The evidence
    that ICN helps is README's 3-seed table (500 and 2,000 images, 10 rounds), where ICN
    beats the CNN on every seed; this test guards against a broken ICN (a pool that
    poisons training would cost far more than 4 points)."""
    from sslj.procedures import run

    fields = {"split.labels_per_class": 10, "split.num_validation": 200,
              "model_kwargs.widths": (8, 16, 32, 64), "icn.rounds": 4, "icn.per_class": 5,
              "icn.epochs_per_round": 5, "icn.max_steps": 50}
    base = run(tiny_icn("supervised+icn_base", **fields), str(tmp_path / "base"))
    icn = run(tiny_icn("supervised+icn", **fields), str(tmp_path / "icn"))
    a, b = icn["test_accuracy_at_best_val"], base["test_accuracy_at_best_val"]
    print(f"ICN {a:.3f} CNN {b:.3f}")
    assert a >= b - 0.04, (a, b)
    assert icn["icn"]["pool_size"] == 4 * 10 * 5
