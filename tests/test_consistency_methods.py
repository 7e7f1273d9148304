"""VAT (+EntMin), Mean Teacher, Temporal Ensembling, Pseudo-Label: numbers, not smoke."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslj import procedures
from sslj.config import ConfigError, for_method, validate
from sslj.data.augment import to_float
from sslj.losses import entropy, kl_divergence
from sslj.methods import get_method
from sslj.methods.base import StepContext, entmin
from sslj.methods.mean_teacher import ema_update
from sslj.methods.pseudo_label import admit, align_distribution
from sslj.methods.temporal_ensembling import accumulate, bias_corrected_target
from sslj.methods.vat import adversarial_perturbation, divergence_fn, normalize
from sslj.procedures import standard
from sslj.train import loop
from sslj.train.metrics import read_jsonl
from sslj.train.step import Forward, make_train_step
from tests.conftest import tiny_config


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------- VAT: the perturbation

def _linear_problem(seed=0, batch=6, dim=5, classes=4):
    """A linear softmax model: the Hessian of KL at r = 0 is W (diag p - p p^T) W^T."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, classes))
    b = 0.5 * rng.normal(size=classes)
    x = 0.5 * rng.normal(size=(batch, dim))
    p = np_softmax(x @ w + b)
    hessians = np.stack([w @ (np.diag(pi) - np.outer(pi, pi)) @ w.T for pi in p])
    wj, bj = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)
    d0 = rng.normal(size=(batch, dim)).astype(np.float32)
    return (lambda z: z @ wj + bj), jnp.asarray(x, jnp.float32), d0, hessians


@pytest.mark.parametrize("direction", ["perturbed_clean", "clean_perturbed"])
@pytest.mark.parametrize("unroll", [True, False])
def test_power_iteration_converges_to_top_hessian_eigenvector(direction, unroll):
    fn, x, d0, hessians = _linear_problem()
    eps = 2.5
    r = adversarial_perturbation(fn, x, d0, xi=1e-3, eps=eps, power_iterations=40,
                                 divergence=divergence_fn(direction), unroll=unroll)
    r = np.asarray(r, np.float64)
    for h, ri in zip(hessians, r, strict=True):
        evals, evecs = np.linalg.eigh(h)
        assert evals[-1] > 1.2 * evals[-2], "the test problem needs an eigengap"
        cos = abs(ri @ evecs[:, -1]) / np.linalg.norm(ri)
        assert cos > 0.9999, cos
    # ||r_adv|| = eps for every example (Oliver's normalisation, 1e-6 inside the sqrt)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), eps, rtol=1e-5)


@pytest.mark.parametrize("direction", ["perturbed_clean", "clean_perturbed"])
def test_one_power_iteration_is_the_normalised_hessian_vector_product(direction):
    fn, x, d0, hessians = _linear_problem(seed=3)

    def np_normalize(d):
        d = d / (1e-12 + np.abs(d).max(-1, keepdims=True))
        return d / np.sqrt(1e-6 + (d * d).sum(-1, keepdims=True))

    d = np_normalize(d0.astype(np.float64))
    np.testing.assert_allclose(normalize(jnp.asarray(d0)), d, rtol=1e-5)
    expected = np_normalize(np.einsum("bij,bj->bi", hessians, d))

    def r(probe, xi):
        return np.asarray(adversarial_perturbation(
            fn, x, d0, xi=xi, eps=1.0, power_iterations=1, probe=probe,
            divergence=divergence_fn(direction)))

    np.testing.assert_allclose(r("hvp", 0.0), expected, atol=1e-4)  # H d, float32
    np.testing.assert_allclose(r("finite_difference", 1e-3), expected, atol=1e-2)
    # Oliver's xi = 1e-6 in float32: the finite difference drowns in rounding; at least
    # one example's direction is far from H d (why `vat.probe = "hvp"` exists)
    cos = np.sum(r("finite_difference", 1e-6) * expected, -1)
    assert cos.min() < 0.9


def _vat_setup(method="vat", **overrides):
    c = for_method(tiny_config(method=method, **overrides), method)
    exp = standard.prepare(c, devices=jax.devices()[:1])
    state = loop.init_state(exp, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, 28, 28, 1), np.uint8),
             "label": rng.integers(0, 6, 4).astype(np.int32),
             "unlabeled_image": rng.integers(0, 256, (8, 28, 28, 1), np.uint8),
             "unlabeled_index": np.arange(100, 108, dtype=np.int32)}
    return c, exp, state, batch


def _outputs(exp, state, batch, policy="clean"):
    """The method's outputs (jitted, no augmentation) and the running statistics after."""

    @jax.jit
    def run(state, batch):
        forward = Forward(exp.model, state.params, state.batch_stats, policy, state.masks)
        ctx = StepContext(forward, lambda x, r: x, state.step, state)
        return exp.method.outputs(ctx, batch, jax.random.PRNGKey(5)), forward.new_batch_stats

    out, stats = run(state, batch)
    return out, stats


def test_vat_r_adv_is_nonzero_and_eps_long_on_a_real_network():
    c, exp, state, batch = _vat_setup()
    out, _ = _outputs(exp, state, batch)
    np.testing.assert_allclose(out["r_adv_norm"], c.vat.eps, rtol=1e-5)
    assert np.all(np.asarray(out["r_adv_norm"]) > 0)


def test_vanishing_probes_give_noise_not_the_adversarial_direction():
    """The bug class behind the official SPL code's xi = 1e-67 (0 in float32) and fp16
    probes: r_adv still has length eps, but its direction is rounding noise. A probe
    that works agrees with the exact Hessian-vector product."""
    c, exp, state, batch = _vat_setup()
    x = to_float(jnp.asarray(batch["unlabeled_image"]))
    d0 = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def r(xi, probe="finite_difference", dtype=jnp.float32):
        model = exp.model.clone(dtype=dtype)
        fn = lambda z: model.apply(variables, z, train=True, mutable=["batch_stats"])[0]
        out = adversarial_perturbation(fn, x, d0, xi=xi, eps=1.0, power_iterations=1,
                                       probe=probe, divergence=divergence_fn("perturbed_clean"))
        return np.asarray(out).reshape(len(x), -1)

    exact = r(0.0, "hvp")
    cos = lambda a: np.sum(a * exact, -1)
    assert cos(r(1e-2)).min() > 0.98  # a finite difference with a step float32 resolves
    assert cos(r(1e-67)).min() < 0.9  # xi = 1e-67: noise
    assert cos(r(1e-6, dtype=jnp.bfloat16)).min() < 0.9  # a bfloat16 probe: noise
    assert cos(r(0.0, "hvp", dtype=jnp.bfloat16)).min() > 0.9  # bf16 compute, exact product
    with pytest.raises(ConfigError) as e:
        validate(tiny_config(method="vat", **{"vat.xi": 1e-67}))
    assert e.value.field == "vat.xi"


def test_vat_probe_stays_float32_under_bfloat16_compute():
    _, exp32, state, batch = _vat_setup()
    _, exp16, _, _ = _vat_setup(compute_dtype="bfloat16")
    out32, _ = _outputs(exp32, state, batch)
    out16, _ = _outputs(exp16, state, batch)
    assert out16["logits"].dtype == jnp.float32  # logits come back float32
    assert not np.allclose(out16["logits"], out32["logits"], atol=1e-6)  # bf16 did compute
    np.testing.assert_allclose(out16["r_adv"], out32["r_adv"], atol=1e-6)  # float32 probe
    assert float(jnp.min(out16["r_adv_norm"])) > 0


@pytest.mark.parametrize("direction", ["perturbed_clean", "clean_perturbed"])
def test_vat_loss_kl_direction_and_gradient(direction):
    c = tiny_config(method="vat", **{"vat.divergence": direction})
    method = get_method(c)
    rng = np.random.default_rng(4)
    clean = rng.normal(size=(5, 6)).astype(np.float32)
    adv = rng.normal(size=(5, 6)).astype(np.float32)
    p, q = np_softmax(clean.astype(np.float64)), np_softmax(adv.astype(np.float64))
    if direction == "perturbed_clean":  # docs/REFERENCE.md: KL(p(x + r) || p(x))
        expected = np.mean(np.sum(q * np.log(q / p), -1))
    else:  # Miyato / Oliver code: KL(p(x) || p(x + r))
        expected = np.mean(np.sum(p * np.log(p / q), -1))

    def loss(clean, adv):
        return method.vat_loss({"logits_u": clean, "logits_u_adv": adv}, None)

    np.testing.assert_allclose(loss(clean, adv), expected, rtol=1e-5)
    g_clean, g_adv = jax.grad(loss, argnums=(0, 1))(jnp.asarray(clean), jnp.asarray(adv))
    assert float(jnp.abs(g_clean).max()) == 0.0  # p(x) is held constant
    # analytic gradients with respect to the perturbed logits
    if direction == "perturbed_clean":
        kl = np.sum(q * np.log(q / p), -1, keepdims=True)
        analytic = q * (np.log(q / p) - kl) / 5
    else:
        analytic = (q - p) / 5
    np.testing.assert_allclose(g_adv, analytic, atol=1e-6)


@pytest.mark.parametrize("policy", ["clean", "all"])
def test_vat_passes_never_write_running_statistics(policy):
    _, exp, state, batch = _vat_setup(bn_update=policy)
    _, new_stats = _outputs(exp, state, batch, policy=policy)
    only_clean = Forward(exp.model, state.params, state.batch_stats, policy)
    x = to_float(jnp.concatenate([batch["image"], batch["unlabeled_image"]]))
    only_clean(x, rng=jax.random.PRNGKey(0), clean=True)
    # new = m old + (1 - m) batch: the batch moments of one pass and of a pass among others
    # differ by float32 reduction order, ~sqrt(n) eps relative over the n = 12 x 28 x 28
    # values a channel's moments sum (1.2e-5), scaled by 1 - m
    atol = 1e-7 + (1.0 - exp.model.bn_momentum) * 1.2e-5
    chex.assert_trees_all_close(new_stats, only_clean.new_batch_stats, rtol=1e-6, atol=atol)
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, new_stats, state.batch_stats))


def test_vat_loss_does_not_depend_on_batch_order():
    c, exp, state, batch = _vat_setup()
    perm = np.array([3, 0, 7, 5, 1, 6, 2, 4])
    shuffled = {**batch, "unlabeled_image": batch["unlabeled_image"][perm],
                "unlabeled_index": batch["unlabeled_index"][perm]}
    out1, _ = _outputs(exp, state, batch)
    out2, _ = _outputs(exp, state, shuffled)
    np.testing.assert_allclose(exp.method.vat_loss(out1, batch),
                               exp.method.vat_loss(out2, shuffled), rtol=1e-5)
    np.testing.assert_allclose(out1["logits_u_adv"][perm], out2["logits_u_adv"], atol=1e-4)


# ---------------------------------------------------------------- EntMin

def test_entmin_matches_numpy_and_composes():
    z = np.random.default_rng(5).normal(size=(6, 4))
    p = np_softmax(z)
    expected = np.mean(-np.sum(p * np.log(p), -1))
    np.testing.assert_allclose(entmin({"logits_u": jnp.asarray(z, jnp.float32)}, None),
                               expected, rtol=1e-6)
    np.testing.assert_allclose(entropy(jnp.zeros((1, 4))), np.log(4), rtol=1e-6)
    np.testing.assert_allclose(kl_divergence(jnp.asarray(z[:1]), jnp.asarray(z[:1])), 0.0,
                               atol=1e-6)
    names = lambda c: {t.name: t.weight for t in get_method(c).loss_terms()}
    assert names(tiny_config(method="vat_entmin")) == {"xe": 1.0, "vat": 0.3, "entmin": 0.1}
    assert names(tiny_config(method="mean_teacher", **{"entmin.weight": 0.2}))["entmin"] == 0.2
    assert "entmin" not in names(tiny_config(method="pi_model"))
    # EntMin alone: the supervised method then runs its clean pass over labeled +
    # unlabeled images, whose unlabeled part the term reads
    alone = tiny_config(method="supervised", **{"entmin.weight": 0.1})
    validate(alone)
    assert get_method(alone).uses_unlabeled and names(alone) == {"xe": 1.0, "entmin": 0.1}


@pytest.mark.parametrize("entmin_pass", ["adversarial", "clean"])
def test_vat_entmin_term_takes_the_configured_pass_and_ramp(entmin_pass):
    """Oliver's VAT+EntMin: the entropy of the adversarial pass (the student), constant
    weight; the switch gives the clean pass, ramped."""
    rng = np.random.default_rng(9)
    z_clean, z_adv = rng.normal(size=(2, 6, 4))
    c = tiny_config(method="vat_entmin", **{"vat.entmin_pass": entmin_pass,
                                            "vat.entmin_ramp": entmin_pass == "clean"})
    term = {t.name: t for t in get_method(c).loss_terms()}["entmin"]
    out = {"logits_u": jnp.asarray(z_clean, jnp.float32),
           "logits_u_adv": jnp.asarray(z_adv, jnp.float32)}
    p = np_softmax(z_adv if entmin_pass == "adversarial" else z_clean)
    np.testing.assert_allclose(term.value(out, None, 0), np.mean(-np.sum(p * np.log(p), -1)),
                               rtol=1e-6)
    at_start = float(term.ramp(jnp.asarray(0)))
    assert at_start == (1.0 if entmin_pass == "adversarial" else pytest.approx(np.exp(-5)))
    g = jax.grad(lambda a: term.value({**out, "logits_u_adv": a}, None, 0))(
        out["logits_u_adv"])
    assert (float(jnp.abs(g).max()) > 0) == (entmin_pass == "adversarial")


# ---------------------------------------------------------------- Mean Teacher

def test_mean_teacher_ema_update_matches_numpy():
    rng = np.random.default_rng(6)
    t = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=4)}
    s = {"a": rng.normal(size=(3, 2)), "b": rng.normal(size=4)}
    out = ema_update(jax.tree.map(jnp.asarray, t), jax.tree.map(jnp.asarray, s), 0.95)
    chex.assert_trees_all_close(out, jax.tree.map(lambda a, b: 0.95 * a + 0.05 * b, t, s),
                                rtol=1e-6)


def test_mean_teacher_step_updates_teacher_params_and_statistics():
    c, exp, state, batch = _vat_setup("mean_teacher")
    step = make_train_step(exp.model, exp.method, exp.optimizer, c, exp.mesh, donate=False)
    teacher0 = state.extra["teacher"]
    chex.assert_trees_all_equal(teacher0["params"], state.params)
    new, metrics = step(state, batch)
    a = c.mean_teacher.ema_decay
    expected = jax.tree.map(lambda t, s: a * t + (1 - a) * s, teacher0,
                            {"params": new.params, "batch_stats": new.batch_stats})
    chex.assert_trees_all_close(new.extra["teacher"], expected, rtol=1e-6, atol=1e-7)
    assert float(metrics["losses/mt"]) > 0


# ---------------------------------------------------------------- Temporal Ensembling

def test_temporal_ensembling_bias_correction_matches_numpy():
    alpha = 0.6
    rng = np.random.default_rng(7)
    z = np_softmax(rng.normal(size=(4, 3, 5)))  # 4 epochs, 3 examples, 5 classes
    ens, cnt = jnp.zeros((3, 5)), jnp.zeros((3,), jnp.int32)
    for k in range(4):
        ens, cnt = accumulate(ens, cnt, jnp.arange(3), jnp.asarray(z[k], jnp.float32), alpha)
        n = k + 1
        big_z = sum((1 - alpha) * alpha ** (n - 1 - j) * z[j] for j in range(n))
        np.testing.assert_allclose(ens, big_z, rtol=1e-5)
        np.testing.assert_allclose(bias_corrected_target(ens, cnt, alpha),
                                   big_z / (1 - alpha ** n), rtol=1e-5)
    # the correction makes a constant prediction its own target from the first update on
    e1, c1 = accumulate(jnp.zeros((1, 5)), jnp.zeros((1,), jnp.int32), jnp.array([0]),
                        jnp.asarray(z[0][:1], jnp.float32), alpha)
    np.testing.assert_allclose(bias_corrected_target(e1, c1, alpha), z[0][:1], rtol=1e-6)
    # no prediction yet -> zero target; a repeated id in one batch updates once
    e2, c2 = accumulate(jnp.zeros((3, 5)), jnp.zeros((3,), jnp.int32), jnp.array([1, 1]),
                        jnp.asarray(z[0][:2], jnp.float32), alpha)
    assert c2.tolist() == [0, 1, 0]
    assert float(jnp.abs(bias_corrected_target(e2, c2, alpha)[0]).max()) == 0.0


def test_temporal_ensembling_loss_and_state_through_a_step():
    c, exp, state, batch = _vat_setup("temporal_ensembling")
    step = make_train_step(exp.model, exp.method, exp.optimizer, c, exp.mesh, donate=False)
    s1, m1 = step(state, batch)
    assert float(m1["losses/te"]) == 0.0  # no example had a target yet
    ids = batch["unlabeled_index"]
    assert np.asarray(s1.extra["ensemble_count"])[ids].tolist() == [1] * 8
    assert int(np.asarray(s1.extra["ensemble_count"]).sum()) == 8
    out, _ = _outputs(exp, s1, batch)
    p = np_softmax(np.asarray(out["logits_u"], np.float64))
    target = np.asarray(s1.extra["ensemble"])[ids] / (1 - c.temporal_ensembling.alpha)
    np.testing.assert_allclose(exp.method.te_loss(out, batch), np.mean((p - target) ** 2),
                               rtol=1e-5)


def test_temporal_ensembling_weight_is_laine_and_ailas_scaled_weight():
    """s-laine/tempens (train.py) trains on mixed minibatches of B rows, n of them labeled:
    mean over the B rows of CE * mask + w_max * (num_labels / N) * mean over the B rows of
    the squared error. With n / B = num_labels / N (the labeled fraction a uniformly drawn
    minibatch has), that loss is (n / B) times sslj's `xe + w_max * te` with xe averaged
    over the n labeled rows and te over all B rows: sslj's unscaled weight (30) is the
    reference's scaled weight, because sslj averages its supervised term over the labeled
    batch rather than over the whole minibatch."""
    rng = np.random.default_rng(11)
    n, b, classes, w_max = 8, 100, 10, 30.0
    logits = rng.normal(size=(b, classes)).astype(np.float32)
    labels = rng.integers(0, classes, b)
    mask = np.r_[np.ones(n), np.zeros(b - n)]
    targets = np_softmax(rng.normal(size=(b, classes)))
    p = np_softmax(logits.astype(np.float64))
    ce = -np.log(p[np.arange(b), labels])
    tempens = np.mean(ce * mask) + w_max * (n / b) * np.mean((p - targets) ** 2)
    method = get_method(for_method(tiny_config(**{"temporal_ensembling.weight": w_max}),
                                   "temporal_ensembling"))
    terms = {t.name: t for t in method.terms()}
    out = {"logits": jnp.asarray(logits[:n]), "logits_u": jnp.asarray(logits),
           "target_u": jnp.asarray(targets, jnp.float32), "has_target": jnp.ones(b, bool)}
    batch = {"label": jnp.asarray(labels[:n])}
    ours = terms["xe"].value(out, batch, 0) + terms["te"].weight * terms["te"].value(
        out, batch, 0)
    np.testing.assert_allclose(float(ours) * n / b, tempens, rtol=1e-5)


# ---------------------------------------------------------------- Pseudo-Label

@pytest.mark.parametrize("normalize", ["batch", "confident"])
def test_pseudo_label_ignores_unconfident_examples_exactly(normalize):
    method = get_method(tiny_config(method="pseudo_label",
                                    **{"pseudo_label.normalize": normalize}))
    term = {t.name: t for t in method.terms()}["pl"]
    logits = np.zeros((4, 3), np.float32)
    logits[0] = [8.0, 0.0, 0.0]  # p = 0.9993: confident
    logits[1] = [1.0, 0.5, 0.0]  # unconfident
    logits[2] = [0.0, 0.0, 9.0]  # confident
    logits[3] = [2.0, 2.0, 0.0]  # unconfident

    def loss(z):
        from sslj.methods.pseudo_label import confident_pseudo_labels
        label, confident = confident_pseudo_labels(z, 0.95)
        return term.fn({"logits_u": z, "pseudo_label": label, "confident": confident}, None)

    p = np_softmax(logits.astype(np.float64))
    total = -(np.log(p[0, 0]) + np.log(p[2, 2]))
    expected = total / 4 if normalize == "batch" else total / 2
    np.testing.assert_allclose(loss(jnp.asarray(logits)), expected, rtol=1e-4)
    g = np.asarray(jax.grad(loss)(jnp.asarray(logits)))
    assert np.all(g[[1, 3]] == 0.0) and np.all(g[[0, 2]] != 0.0)
    unconfident = jnp.asarray(logits[[1, 3]])
    assert float(loss(unconfident)) == 0.0
    assert float(jnp.abs(jax.grad(loss)(unconfident)).max()) == 0.0


def test_pseudo_label_threshold_is_strict():
    """p exactly at the threshold is not confident (Oliver's `tf.greater`)."""
    from sslj.methods.pseudo_label import confident_pseudo_labels

    z = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]], jnp.float32)
    p = np.asarray(jax.nn.softmax(z))
    _, at = confident_pseudo_labels(z, float(p[0].max()))
    assert not bool(at[0]) and bool(at[1])
    _, below = confident_pseudo_labels(z, float(np.nextafter(p[0].max(), 0, dtype=np.float32)))
    assert bool(below[0])


def test_pseudo_label_matches_olivers_reverse_kl():
    """Oliver's loss (lib/ssl_framework.py + ssl_utils.py): teacher logits 10 onehot(argmax)
    where max p > 0.95, the student's own logits elsewhere (zero loss), reverse KL
    KL(p_teacher || p_student) per example, mean over the batch. sslj's one-hot
    cross-entropy differs by the teacher's constant entropy and its 2e-4 smoothing."""
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(64, 6)) * 4).astype(np.float32)
    method = get_method(tiny_config(method="pseudo_label"))
    term = {t.name: t for t in method.terms()}["pl"]
    from sslj.methods.pseudo_label import confident_pseudo_labels

    def ours(zz):
        label, confident = confident_pseudo_labels(zz, 0.95)
        return term.fn({"logits_u": zz, "pseudo_label": label, "confident": confident}, None)

    zz = z.astype(np.float64)
    p = np_softmax(zz)
    confident = p.max(-1) > 0.95
    assert 5 < confident.sum() < 60
    teacher = np.where(confident[:, None], 10.0 * np.eye(6)[p.argmax(-1)], zz)
    pt, logpt = np_softmax(teacher), np.log(np_softmax(teacher))
    logps = np.log(p)
    kl = np.sum(pt * (logpt - logps), -1)
    entropy_t = -np.sum(pt * logpt, -1) * confident  # the constant sslj drops
    oliver = np.mean(kl + entropy_t)  # = mean of CE(p_teacher, p_student)
    # what the target's smoothing adds: sum_j (onehot_j - p_teacher_j) log p_student_j
    onehot = np.eye(6)[p.argmax(-1)]
    smoothing = np.mean(np.sum((onehot - pt) * logps, -1) * confident)
    np.testing.assert_allclose(float(ours(jnp.asarray(z))) + smoothing, oliver, rtol=1e-4)
    # gradients: (p_s - p_t) / B against sslj's (p_s - onehot) / B
    g_oliver = (p - pt) * confident[:, None] / len(z)
    g = np.asarray(jax.grad(ours)(jnp.asarray(z)))
    np.testing.assert_allclose(g, g_oliver, atol=1e-5)


def test_accumulated_set_grows_only_with_examples_above_threshold():
    rng = np.random.default_rng(8)
    member = np.zeros(50, bool)
    label = np.zeros(50, np.int32)
    history = []
    for _ in range(4):
        probs = np_softmax(3 * rng.normal(size=(50, 4)))
        before_member, before_label = member.copy(), label.copy()
        member, label, new = admit(member, label, probs, 0.9)
        assert np.all(member[before_member])  # nobody leaves
        np.testing.assert_array_equal(label[before_member], before_label[before_member])
        assert np.all(probs[new].max(-1) > 0.9)  # newcomers are confident ...
        np.testing.assert_array_equal(label[new], probs[new].argmax(-1))
        confident_outsiders = (probs.max(-1) > 0.9) & ~before_member
        np.testing.assert_array_equal(new, confident_outsiders)  # ... and all of them join
        history.append(member.sum())
    assert history == sorted(history) and history[-1] > history[0]


def test_distribution_alignment_matches_a_hand_computation():
    # mean over the two rows = (0.7, 0.3); q_i is proportional to p_i / (0.7, 0.3)
    q = align_distribution(np.array([[0.9, 0.1], [0.5, 0.5]]))
    a, b = 0.9 / 0.7, 0.1 / 0.3
    c, d = 0.5 / 0.7, 0.5 / 0.3
    np.testing.assert_allclose(q, [[a / (a + b), b / (a + b)], [c / (c + d), d / (c + d)]],
                               rtol=1e-12)
    np.testing.assert_allclose(q[1], [0.3, 0.7], rtol=1e-12)
    # predictions whose mean already is the prior are left alone; identical rows become
    # the prior; a given prior is honoured
    rng = np.random.default_rng(3)
    p = np_softmax(rng.normal(size=(5, 3)))
    balanced = np.concatenate([p, np.roll(p, 1, axis=1), np.roll(p, 2, axis=1)])
    np.testing.assert_allclose(align_distribution(balanced), balanced, rtol=1e-12)
    np.testing.assert_allclose(align_distribution(np.tile(p[:1], (4, 1))), np.full((4, 3), 1 / 3))
    prior = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(align_distribution(np.tile(p[:1], (4, 1)), prior),
                               np.tile(prior, (4, 1)))


def _refresh(align, logits):
    method = get_method(for_method(tiny_config(**{"pseudo_label_accumulated.align": align}),
                                   "pseudo_label_accumulated"))
    extra = {"pl_member": np.zeros(len(logits), bool), "pl_label": np.zeros(len(logits), np.int32)}
    return method.refresh(extra, logits, step=0)


def test_alignment_stops_the_over_predicted_class_taking_the_set():
    # a model that over-predicts class 0: most rows lean to 0; one row is 0 at p = 0.96
    logits = np.log(np.array([[0.96, 0.02, 0.02]] + [[0.7, 0.2, 0.1]] * 6 + [[0.01, 0.98, 0.01]]))
    literal, _ = _refresh(False, logits)
    np.testing.assert_array_equal(literal["pl_member"], [1, 0, 0, 0, 0, 0, 0, 1])
    aligned, stats = _refresh(True, logits)
    # mean p = (0.646, 0.275, 0.079): aligned and normalised, row 0 is
    # (0.82, 0.04, 0.14), below 0.95; row 7 stays confident in class 1 (0.96)
    np.testing.assert_array_equal(aligned["pl_member"], [0, 0, 0, 0, 0, 0, 0, 1])
    assert aligned["pl_label"][7] == 1 and stats == {"members": 1, "admitted": 1}


def test_alignment_flag_must_be_a_bool():
    import ml_collections

    c = for_method(tiny_config(), "pseudo_label_accumulated")
    # a new block, so that a value of another type gets in (as from a JSON config)
    c.pseudo_label_accumulated = ml_collections.ConfigDict(
        {**c.pseudo_label_accumulated.to_dict(), "align": "yes"})
    with pytest.raises(ConfigError) as e:
        validate(c)
    assert e.value.field == "pseudo_label_accumulated.align" and "True" in str(e.value)


@pytest.mark.slow
def test_accumulated_pseudo_labels_through_the_loop(tmp_path):
    c = tiny_config(method="pseudo_label_accumulated",
                    **{"pseudo_label_accumulated.warmup_epochs": 1,
                       "pseudo_label_accumulated.epoch_steps": 2,
                       "pseudo_label_accumulated.threshold": 0.2})
    c.tensorboard = False
    procedures.run(c, str(tmp_path))
    refreshes = [r for r in read_jsonl(str(tmp_path / "metrics.jsonl")) if "refresh/members" in r]
    assert [r["step"] for r in refreshes] == [2, 4, 6]  # from the end of the warm-up epoch
    members = [r["refresh/members"] for r in refreshes]
    assert members == sorted(members) and members[-1] > 0
    assert all(0 <= r["refresh/label_accuracy"] <= 1 for r in refreshes if r["refresh/members"])


@pytest.mark.parametrize("method", ["pi_model", "mean_teacher"])
def test_target_pass_over_the_batch_normalises_with_the_batch_statistics(method):
    """target_pass "batch" (Oliver's code): the target pass sees labeled + unlabeled, so
    its unlabeled logits equal those of a pass over the whole batch (no augmentation
    here), not of a pass over the unlabeled images alone; "unlabeled" is the latter."""
    outs = {}
    for over in ("batch", "unlabeled"):
        c, exp, state, batch = _vat_setup(method, **{f"{method}.target_pass": over})
        out, _ = _outputs(exp, state, batch)
        outs[over] = np.asarray(out["logits_u_target" if method == "pi_model"
                                    else "logits_u_teacher"])
    # the clean pass also runs over the whole batch with batch statistics: with no
    # augmentation and no dropout the batch target equals it, the unlabeled one does not
    if method == "pi_model":  # the teacher has other weights than the clean pass
        np.testing.assert_allclose(outs["batch"], np.asarray(out["logits_u"]), rtol=1e-4,
                                   atol=1e-5)
    assert np.abs(outs["batch"] - outs["unlabeled"]).max() > 1e-3
