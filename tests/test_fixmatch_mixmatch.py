"""FixMatch, the attention-KL FixMatch and MixMatch: numbers against NumPy, the masks'
zero gradients, and which pass writes BatchNorm's running statistics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslj.config import ConfigError, for_method, validate
from sslj.methods.base import StepContext
from sslj.methods.fixmatch import attention_kl, confidence_mask, masked_unlabeled_xe
from sslj.methods.mixmatch import l2_unlabeled, mix_coefficients, mixup, sharpen
from sslj.procedures import standard
from sslj.train import loop
from sslj.train.step import Forward
from tests.conftest import tiny_config


def np_softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# ------------------------------------------------------------------ MixMatch's pieces

def test_sharpen_matches_the_formula():
    rng = np.random.default_rng(0)
    p = np_softmax(rng.normal(size=(5, 6)) * 2)
    for t in (0.5, 0.25, 1.0):
        expected = p ** (1 / t) / (p ** (1 / t)).sum(-1, keepdims=True)
        chex.assert_trees_all_close(np.asarray(sharpen(jnp.asarray(p), t)), expected,
                                    rtol=1e-5, atol=1e-7)
    # T -> 0 tends to one-hot; T = 1 is the identity
    hard = np.asarray(sharpen(jnp.asarray(p), 0.01))
    np.testing.assert_array_equal(hard.argmax(-1), p.argmax(-1))
    assert hard.max(-1).min() > 0.99


def test_mixup_with_a_fixed_lambda_preserves_label_mass():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
    y = np_softmax(rng.normal(size=(6, 3))).astype(np.float32)
    perm = np.array([3, 0, 5, 1, 2, 4])
    lam = 0.7
    xm, ym = mixup(jnp.asarray(x), jnp.asarray(y), lam, jnp.asarray(perm))
    chex.assert_trees_all_close(np.asarray(xm), lam * x + (1 - lam) * x[perm], atol=1e-6)
    chex.assert_trees_all_close(np.asarray(ym), lam * y + (1 - lam) * y[perm], atol=1e-6)
    np.testing.assert_allclose(np.asarray(ym).sum(-1), 1.0, atol=1e-6)  # each row a distribution
    np.testing.assert_allclose(np.asarray(ym).sum(), y.sum(), atol=1e-5)  # total mass kept
    # per-example lambdas
    lams = np.linspace(0.5, 1.0, 6).astype(np.float32)
    xm, ym = mixup(jnp.asarray(x), jnp.asarray(y), jnp.asarray(lams), jnp.asarray(perm))
    chex.assert_trees_all_close(np.asarray(ym), lams[:, None] * y + (1 - lams[:, None]) * y[perm],
                                atol=1e-6)


def test_mix_coefficients_are_at_least_one_half():
    lam = np.asarray(mix_coefficients(jax.random.PRNGKey(0), 4096, 0.75, "example"))
    assert lam.min() >= 0.5 and lam.max() <= 1.0
    assert len(np.unique(lam)) > 4000  # per example
    # max(l, 1 - l) of Beta(0.75, 0.75): mean = 0.5 + E|l - 0.5| (about 0.77), by sampling
    ref = np.random.default_rng(0).beta(0.75, 0.75, 200_000)
    assert abs(lam.mean() - np.maximum(ref, 1 - ref).mean()) < 0.01
    one = np.asarray(mix_coefficients(jax.random.PRNGKey(1), 16, 0.75, "batch"))
    assert len(np.unique(one)) == 1


def test_l2_unlabeled_is_the_mean_over_examples_and_classes():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 4)).astype(np.float32)
    t = np_softmax(rng.normal(size=(5, 4))).astype(np.float32)
    expected = np.mean((np_softmax(z) - t) ** 2)
    np.testing.assert_allclose(float(l2_unlabeled(jnp.asarray(z), jnp.asarray(t))), expected,
                               rtol=1e-5)


# ------------------------------------------------------------------ FixMatch's pieces

def test_fixmatch_loss_averages_over_all_unlabeled_examples():
    rng = np.random.default_rng(3)
    weak = rng.normal(size=(8, 5)).astype(np.float32) * 1.5
    strong = rng.normal(size=(8, 5)).astype(np.float32)
    label, mask, conf = confidence_mask(jnp.asarray(weak), 0.6)
    p = np_softmax(weak.astype(np.float64))
    np.testing.assert_array_equal(np.asarray(mask), (p.max(-1) >= 0.6).astype(np.float32))
    assert 0 < float(np.asarray(mask).sum()) < 8  # the test needs both kinds
    logp = np.log(np_softmax(strong.astype(np.float64)))
    expected = np.sum(-logp[np.arange(8), p.argmax(-1)] * (p.max(-1) >= 0.6)) / 8
    got = masked_unlabeled_xe(jnp.asarray(strong), label, mask)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_fixmatch_mask_gives_zero_loss_and_gradient_when_nothing_is_confident():
    rng = np.random.default_rng(4)
    weak = jnp.asarray(rng.normal(size=(8, 5)).astype(np.float32))  # max p well below 0.95
    strong = jnp.asarray(rng.normal(size=(8, 5)).astype(np.float32))

    def loss(weak, strong):
        label, mask, _ = confidence_mask(weak, 0.95)
        return masked_unlabeled_xe(strong, label, mask)

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(weak, strong)
    assert float(value) == 0.0
    chex.assert_trees_all_equal(grads, (jnp.zeros_like(weak), jnp.zeros_like(strong)))


def test_attention_kl_matches_numpy_and_respects_the_mask():
    rng = np.random.default_rng(5)
    a_w = rng.normal(size=(4, 49)).astype(np.float32)
    a_s = rng.normal(size=(4, 49)).astype(np.float32)
    mask = np.array([1, 0, 1, 1], np.float32)
    q, p = np_softmax(a_w.astype(np.float64)), np_softmax(a_s.astype(np.float64))
    kl = np.sum(q * (np.log(q) - np.log(p)), -1)
    expected = np.sum(kl * mask) / 4
    got = attention_kl(jnp.asarray(a_w), jnp.asarray(a_s), jnp.asarray(mask))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # identical maps: zero; masked-out rows carry no gradient
    assert abs(float(attention_kl(jnp.asarray(a_w), jnp.asarray(a_w), jnp.asarray(mask)))) < 1e-6
    g = jax.grad(lambda s: attention_kl(jnp.asarray(a_w), s, jnp.asarray(mask)))(jnp.asarray(a_s))
    assert float(jnp.abs(g[1]).max()) == 0.0 and float(jnp.abs(g[0]).max()) > 0


# ------------------------------------------------------ the methods on a real network

def _setup(method, **overrides):
    c = for_method(tiny_config(method=method, **overrides), method)
    c.data.noise_std = 0.0
    exp = standard.prepare(c, devices=jax.devices()[:1])
    state = loop.init_state(exp, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, 28, 28, 1), np.uint8),
             "label": rng.integers(0, 6, 4).astype(np.int32),
             "unlabeled_image": rng.integers(0, 256, (8, 28, 28, 1), np.uint8),
             "unlabeled_index": np.arange(8, dtype=np.int32),
             "unlabeled_label": np.array([0, 1, 2, 3, -1, -1, 4, 5], np.int32)}
    return c, exp, state, batch


class RecordingForward(Forward):
    """Forward that records each pass's input and whether it may write the statistics."""

    def __call__(self, images, **kw):
        self.calls = getattr(self, "calls", []) + [(images, kw.get("clean"))]
        return super().__call__(images, **kw)


def _passes(exp, state, batch):
    def run(state, batch):
        forward = RecordingForward(exp.model, state.params, state.batch_stats, "clean",
                                   state.masks)
        ctx = StepContext(forward, exp.augment if hasattr(exp, "augment") else
                          (lambda x, r: x), state.step, state)
        out = exp.method.outputs(ctx, batch, jax.random.PRNGKey(7))
        return out, forward.new_batch_stats, [x for x, _ in forward.calls], \
            [bool(c) for _, c in forward.calls]

    out, stats, inputs, clean = run(state, batch)
    return out, stats, inputs, clean


@pytest.mark.parametrize("method,sizes", [("fixmatch", [4 + 8 + 8]),
                                          ("mixmatch", [2 * 8, 4 + 2 * 8])])
def test_batchnorm_statistics_come_from_the_concatenated_pass_only(method, sizes):
    c, exp, state, batch = _setup(method)
    out, stats, inputs, clean = _passes(exp, state, batch)
    assert [x.shape[0] for x in inputs] == sizes
    assert clean == [False] * (len(sizes) - 1) + [True]
    # the running statistics after the step are those of one pass over the last input
    _, updates = exp.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                 inputs[-1], train=True, rngs={"dropout": jax.random.PRNGKey(0)},
                                 mutable=["batch_stats"])
    chex.assert_trees_all_close(stats, updates["batch_stats"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(stats)[0], jax.tree.leaves(state.batch_stats)[0])


def test_fixmatch_views_and_monitors():
    c, exp, state, batch = _setup("fixmatch", **{"fixmatch.threshold": 0.0})
    out, _, inputs, _ = _passes(exp, state, batch)
    x = np.asarray(inputs[0])
    weak, strong = x[4:12], x[12:]
    assert not np.allclose(weak, strong)  # the strong view is another image
    assert weak.min() >= -1.0 - 1e-6 and strong.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(np.asarray(out["mask"]), 1.0)  # tau = 0 keeps all
    mon = exp.method.monitors(out, batch)
    label = np.asarray(out["pseudo_label"])
    np.testing.assert_allclose(float(mon["fixmatch_pseudo_label_accuracy"]),
                               np.mean(label == batch["unlabeled_label"]), rtol=1e-6)
    assert float(mon["fixmatch_unseen_pass_rate"]) == 1.0
    assert float(mon["fixmatch_mask_rate"]) == 1.0


def test_mixmatch_targets_are_sharpened_mixed_distributions():
    c, exp, state, batch = _setup("mixmatch", **{"mixmatch.mix": "batch"})
    out, _, inputs, _ = _passes(exp, state, batch)
    t = np.concatenate([np.asarray(out["label_target"]), np.asarray(out["unlabeled_target"])])
    np.testing.assert_allclose(t.sum(-1), 1.0, atol=1e-5)
    lam = float(np.asarray(out["lambda"])[0])
    assert lam >= 0.5
    # each labeled row keeps at least lambda' of its own one-hot label
    own = np.asarray(out["label_target"])[np.arange(4), batch["label"]]
    assert np.all(own >= lam - 1e-5)
    # the guess: mean over K views of softmax, sharpened at T (from the guess pass)
    guess_logits = exp.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                   inputs[0], train=True, rngs={"dropout": jax.random.PRNGKey(0)},
                                   mutable=["batch_stats"])[0]
    p = np_softmax(np.asarray(guess_logits, np.float64)).reshape(2, 8, -1).mean(0)
    q = p ** 2 / (p ** 2).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out["guess"]), q, atol=1e-5)


def test_attention_fixmatch_needs_the_attention_head():
    c = for_method(tiny_config(method="fixmatch_attention"), "fixmatch_attention")
    assert c.model_kwargs.attention  # the embedded default's method_overrides set it
    validate(c)
    c.model_kwargs.attention = False
    with pytest.raises(ConfigError, match="model_kwargs.attention"):
        validate(c)
    del c.model_kwargs["attention"]
    with pytest.raises(ConfigError, match="model_kwargs.attention"):
        validate(c)


def test_attention_fixmatch_adds_the_masked_attention_kl():
    c, exp, state, batch = _setup("fixmatch_attention", **{"model_kwargs.attention": True,
                                                          "fixmatch.threshold": 0.0})
    out, _, inputs, _ = _passes(exp, state, batch)
    assert out["attention_weak"].shape == (8, 7 * 7)
    names = [t.name for t in exp.method.loss_terms()]
    assert names == ["xe", "fixmatch", "attention_kl"]
    term = exp.method.loss_terms()[2]
    q = np_softmax(np.asarray(out["attention_weak"], np.float64))
    p = np_softmax(np.asarray(out["attention_strong"], np.float64))
    expected = np.mean(np.sum(q * (np.log(q) - np.log(p)), -1))
    np.testing.assert_allclose(float(term.value(out, batch, 0)), expected, rtol=1e-4)


# ------------------------------------------------- with SPL and the target modifiers

@pytest.mark.slow
@pytest.mark.parametrize("run,outer_loss", [("fixmatch_attention+spl", "base"),
                                            ("mixmatch+ls+spl", "base"),
                                            ("supervised+ns3l+spl", "consistency")])
def test_methods_combine_with_spl_and_target_modifiers(run, outer_loss, tmp_path):
    """A short `<method>+spl` procedure runs end to end, the outer steps on the base
    method's own loss (outer_loss = base) or SPL's consistency; the log has the
    method's monitors and, with a modifier, its terms."""
    from sslj.procedures import run as run_procedure
    from sslj.train.metrics import read_jsonl

    c = for_method(tiny_config(), run)
    c.num_steps = 6
    c.eval_every = c.checkpoint_every = 6
    c.split.mismatch_ratio = 0.6
    c.spl.rounds, c.spl.inner_steps, c.spl.outer_steps = 1, 2, 2
    c.spl.inner_batch_size = 16
    c.spl.outer_loss = outer_loss
    c.tensorboard = False
    if "attention" in run:
        c.model_kwargs.attention = True
    validate(c)
    res = run_procedure(c, str(tmp_path))
    assert res["method"] == run and res["selection"] == "V2"
    assert np.isfinite(res["test_accuracy_at_best_val"])
    assert "median_ema_test_accuracy" in res
    logged = {k for path in tmp_path.rglob("metrics.jsonl") for m in read_jsonl(str(path))
              for k in m}
    method = run.split("+")[0]
    if method != "supervised":
        prefix = "fixmatch" if method.startswith("fixmatch") else "mixmatch"
        assert any(k.startswith(f"monitors/{prefix}_") for k in logged), sorted(logged)
    if "+ls" in run:
        assert "monitors/target_eps" in logged
    if "+ns3l" in run:  # the pretraining's NS3L term and monitors
        assert {"losses/ns3l", "monitors/ns3l_negatives", "monitors/ns3l_wrong_rate"} <= logged
        assert res["ns3l"]["strategy"] == "threshold"
