"""NS3L: the loss against a float64 NumPy derivation, each negative-selection strategy on
hand-built inputs, the nearest-neighbour table against brute force, the add-on wiring
(run names, overrides, which predictions each method hands it) and the monitors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslj.config import ConfigError, for_method, run_name, validate
from sslj.losses import negative_sampling
from sslj.methods import get_method
from sslj.methods.ns3l import (
    Strategy,
    monitors,
    neighbour_classes,
    parse_strategy,
    select_negatives,
)
from tests.conftest import tiny_config


def np_loss_and_grad(z, neg):
    """-log(1 - sum_{j in N} p_j) and its gradient in z, float64 (the paper's formula;
    d/dz_k = p_k - [k not in N] p_k / sum_{j not in N} p_j)."""
    z = np.asarray(z, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    keep = ~neg
    mass = (p * keep).sum(-1, keepdims=True)
    loss = -np.log1p(-(p * neg).sum(-1))
    grad = p - keep * p / mass
    return loss, grad


def test_loss_and_gradient_match_the_formula_in_float64():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (16, 10)).astype(np.float32)
    neg = rng.random((16, 10)) < 0.4
    neg[0] = False  # no negatives
    neg[1] = True
    neg[1, 3] = False  # every class but one
    loss, grad = np_loss_and_grad(z, neg)
    got = negative_sampling(jnp.asarray(z), jnp.asarray(neg))
    # float32 log-sum-exp of 10 terms: relative error a few ulp of the larger lse
    chex.assert_trees_all_close(np.asarray(got), loss, rtol=2e-5, atol=2e-6)
    g = jax.grad(lambda x: jnp.sum(negative_sampling(x, jnp.asarray(neg))))(jnp.asarray(z))
    chex.assert_trees_all_close(np.asarray(g), grad, atol=5e-6)
    assert float(got[0]) == 0.0 and np.all(np.asarray(g[0]) == 0.0)


def test_negatives_holding_all_but_1e7_of_the_mass_give_the_exact_finite_loss():
    # class 0 keeps 1e-7 of the probability, the nine negatives share the rest
    p = np.full(10, (1 - 1e-7) / 9)
    p[0] = 1e-7
    z = jnp.asarray(np.log(p), jnp.float32)[None]
    neg = jnp.asarray(np.arange(10) > 0)[None]
    got = float(negative_sampling(z, neg)[0])
    np.testing.assert_allclose(got, -np.log(1e-7), rtol=1e-5)  # 16.118
    # the official float32 form 1 - sum(p_neg) can only land on multiples of 2^-24 near
    # 1e-7 (k = 1, 2, 3: -log = 16.63, 15.94, 15.53), at least 0.17 from the exact value
    p32 = np.asarray(jax.nn.softmax(z)[0])
    official = -np.log(np.clip(np.float32(1) - p32[1:].sum(dtype=np.float32), 1e-8, 1))
    assert abs(official - got) > 0.1
    g = jax.grad(lambda x: negative_sampling(x, neg)[0])(z)
    assert np.all(np.isfinite(np.asarray(g))) and np.max(np.abs(np.asarray(g))) <= 1.0


def test_a_sample_without_negatives_or_with_all_of_them_adds_nothing():
    z = jnp.asarray([[1.0, -2.0, 0.5]])
    for neg in (np.zeros((1, 3), bool), np.ones((1, 3), bool)):
        loss, g = jax.value_and_grad(
            lambda x, neg=neg: negative_sampling(x, jnp.asarray(neg))[0])(z)
        assert float(loss) == 0.0
        np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_term_averages_over_the_whole_batch():
    from sslj.methods.ns3l import loss

    z = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    neg = jnp.asarray([[False, True, True], [False, False, False]])
    per = np.asarray(negative_sampling(z, neg))
    np.testing.assert_allclose(float(loss({"ns3l_logits": z, "ns3l_negatives": neg}, {})),
                               per.sum() / 2, rtol=1e-6)


# ------------------------------------------------------------------ strategies

def test_strategy_names_parse():
    assert parse_strategy("threshold") == Strategy("threshold")
    assert parse_strategy("uniform-3") == Strategy("uniform", 3)
    assert parse_strategy("oracle-1") == Strategy("oracle", 1)
    assert parse_strategy("nn-exclude4-1") == Strategy("nn-exclude4", 1)
    assert parse_strategy("nn-exclude") == Strategy("nn-exclude", 0)
    assert parse_strategy("nn-exclude4-examples-2") == Strategy("nn-exclude4-examples", 2)
    assert parse_strategy("nn-furthest-class") == Strategy("nn-furthest-class")
    for bad in ("uniform", "nn-exclude3", "threshold-2", "oracle-x"):
        with pytest.raises(ValueError, match="allowed"):
            parse_strategy(bad)


def test_threshold_negatives_are_the_classes_below_t_and_carry_no_gradient():
    p = jnp.asarray([[0.7, 0.2, 0.03, 0.05, 0.02], [0.2] * 5])
    neg = select_negatives(Strategy("threshold"), p, jax.random.PRNGKey(0), threshold=0.04)
    np.testing.assert_array_equal(np.asarray(neg), [[0, 0, 1, 0, 1], [0, 0, 0, 0, 0]])
    assert neg.dtype == jnp.bool_  # a selection, not a weight a gradient could flow through

    # through the whole add-on path: the reference is the model's own softmax, and the
    # gradient equals that of the loss with the chosen mask held fixed
    z = jnp.log(p)

    def through(x):
        m = select_negatives(Strategy("threshold"), jax.nn.softmax(x), None, threshold=0.04)
        return jnp.sum(negative_sampling(x, m))

    fixed = jax.grad(lambda x: jnp.sum(negative_sampling(x, neg)))(z)
    chex.assert_trees_all_close(jax.grad(through)(z), fixed, atol=1e-7)


@pytest.mark.parametrize("k", [1, 3])
def test_uniform_draws_k_distinct_classes_covering_all(k):
    p = jnp.full((4000, 6), 1 / 6)
    neg = np.asarray(select_negatives(Strategy("uniform", k), p, jax.random.PRNGKey(1),
                                      threshold=0.04))
    np.testing.assert_array_equal(neg.sum(1), k)
    freq = neg.mean(0)  # each class drawn with probability k / 6
    np.testing.assert_allclose(freq, k / 6, atol=0.03)


def test_oracle_never_picks_the_true_class():
    true = jnp.asarray(np.tile(np.array([0, 1, 2, 3, 4, 5, -1]), 300))
    p = jnp.full((true.shape[0], 6), 1 / 6)
    for k in (1, 3, 5):
        neg = np.asarray(select_negatives(Strategy("oracle", k), p, jax.random.PRNGKey(k),
                                          threshold=0.04, true_label=true))
        np.testing.assert_array_equal(neg.sum(1), k)
        t = np.asarray(true)
        assert not np.any(neg[t >= 0, t[t >= 0]])
    # an unseen-class example (-1) may get any class, the true ones of others included
    neg = np.asarray(select_negatives(Strategy("oracle", 1), p, jax.random.PRNGKey(0),
                                      threshold=0.04, true_label=true))
    assert neg[np.asarray(true) == -1].any(0).all()


def test_nearest_neighbour_strategies_read_the_table():
    # rows: 4 nearest examples (nearest first), furthest example, furthest class, 4 nearest
    # classes
    table = jnp.asarray([[2, 1, 2, 4, 0, 5, 2, 1, 4, 3],
                         [3, 3, 3, 3, 5, 1, 3, 0, 2, 4]], jnp.int32)
    p = jnp.full((2, 6), 1 / 6)
    sel = lambda s: np.asarray(select_negatives(parse_strategy(s), p, jax.random.PRNGKey(0),
                                                threshold=0.04, neighbours=table)).astype(int)
    np.testing.assert_array_equal(sel("nn-exclude"), [[1, 1, 0, 1, 1, 1], [1, 1, 1, 0, 1, 1]])
    np.testing.assert_array_equal(sel("nn-exclude4-examples"),
                                  [[1, 0, 0, 1, 0, 1], [1, 1, 1, 0, 1, 1]])
    np.testing.assert_array_equal(sel("nn-exclude4"), [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 1]])
    np.testing.assert_array_equal(sel("nn-furthest"), [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(sel("nn-furthest-class"),
                                  [[0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0]])
    one = sel("nn-exclude4-1")
    np.testing.assert_array_equal(one.sum(1), 1)
    assert np.all(one <= sel("nn-exclude4"))


def test_neighbour_table_matches_brute_force():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 256, (23, 5, 5, 1), np.uint8)
    labels = rng.integers(0, 7, 23)  # class 7 of 8 has no labeled image
    unl = rng.integers(0, 256, (37, 5, 5, 1), np.uint8)
    table, seconds = neighbour_classes(lab, labels, unl, 8, chunk=16)
    assert table.shape == (37, 10) and seconds > 0
    f = lambda x: (x.reshape(len(x), -1).astype(np.float64) / 127.5 - 1.0)
    d = ((f(unl)[:, None] - f(lab)[None]) ** 2).sum(-1)
    order = np.argsort(d, 1)
    np.testing.assert_array_equal(table[:, 0], labels[order[:, 0]])
    np.testing.assert_array_equal(table[:, 0:4], labels[order[:, :4]])
    np.testing.assert_array_equal(table[:, 4], labels[order[:, -1]])
    per_class = np.stack([np.where(labels == c, d, np.inf).min(1) for c in range(8)], 1)
    per_class[:, ~np.isin(np.arange(8), labels)] = -np.inf  # a class with no labeled image
    np.testing.assert_array_equal(table[:, 5], per_class.argmax(1))
    # the 4 nearest classes
    per_class[np.isneginf(per_class)] = np.inf
    np.testing.assert_array_equal(np.sort(table[:, 6:10], 1),
                                  np.sort(np.argsort(per_class, 1)[:, :4], 1))


def test_monitors_count_negatives_and_wrong_ones():
    neg = jnp.asarray([[1, 1, 0], [0, 1, 1], [1, 0, 0], [1, 1, 1]], bool)
    true = jnp.asarray([0, 0, 2, -1])
    m = monitors({"ns3l_negatives": neg, "ns3l_true_label": true}, {})
    np.testing.assert_allclose(float(m["ns3l_negatives"]), 8 / 4)
    np.testing.assert_allclose(float(m["ns3l_wrong_rate"]), 1 / 5)  # row 0 hits class 0
    np.testing.assert_allclose(float(m["ns3l_negatives_seen"]), 5 / 3)
    np.testing.assert_allclose(float(m["ns3l_negatives_unseen"]), 3.0)
    assert set(monitors({"ns3l_negatives": neg}, {})) == {"ns3l_negatives"}


# ------------------------------------------------------------------ wiring

def test_run_names_turn_ns3l_on_with_their_overrides():
    base = tiny_config()
    c = for_method(base, "vat+ns3l+spl")
    validate(c)
    assert c.method == "vat" and c.ns3l.enabled and c.spl.enabled
    # method_overrides: "vat" first, then "vat+ns3l" (the paper's shared lr and weights)
    assert (c.optimizer.lr, c.vat.weight, c.ns3l.weight) == (6e-4, 0.3, 0.3)
    assert run_name(c) == "vat+ns3l+spl"
    assert run_name(for_method(base, "supervised+ls+ns3l")) == "supervised+ls+ns3l"
    plain = for_method(base, "vat")
    assert not plain.ns3l.enabled and plain.optimizer.lr == base.optimizer.lr
    names = [t.name for t in get_method(for_method(base, "vat_entmin+ns3l")).loss_terms()]
    assert names == ["xe", "vat", "entmin", "ns3l"]
    with pytest.raises(ConfigError, match="compare"):
        validate(tiny_config(compare="vat+ns3l+ns3l"))
    with pytest.raises(ConfigError, match="method_overrides"):
        validate(tiny_config(**{"method_overrides": {"nope+ns3l": {}}}))


@pytest.mark.parametrize("field,value,match", [
    ("ns3l.strategy", "uniform-6", "ns3l.strategy"),  # 6 seen classes
    ("ns3l.strategy", "random", "ns3l.strategy"),
    ("ns3l.threshold", 0.0, "ns3l.threshold"),
    ("ns3l.weight", -1.0, "ns3l.weight"),
])
def test_bad_ns3l_fields_are_named(field, value, match):
    c = for_method(tiny_config(), "supervised+ns3l")
    c[field.split(".")[0]][field.split(".")[1]] = value
    with pytest.raises(ConfigError, match=match):
        validate(c)


def test_mixmatch_refuses_neighbour_negatives():
    c = for_method(tiny_config(**{"ns3l.strategy": "nn-exclude"}), "mixmatch+ns3l")
    with pytest.raises(ConfigError, match="ns3l.strategy"):
        validate(c)


def _batch():
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (4, 28, 28, 1), np.uint8),
            "label": np.array([0, 1, 2, 3], np.int32),
            "unlabeled_image": rng.integers(0, 256, (8, 28, 28, 1), np.uint8),
            "unlabeled_index": np.arange(8, dtype=np.int32),
            "unlabeled_label": np.array([0, 1, 2, 3, -1, -1, 4, 5], np.int32)}


def _outputs(run, **fields):
    from sslj.procedures import standard
    from sslj.train import loop
    from sslj.train.interface import StepContext
    from sslj.train.step import Forward

    c = for_method(tiny_config(**fields), run)
    exp = standard.prepare(c, devices=jax.devices()[:1])
    state = loop.init_state(exp, jax.random.PRNGKey(0))
    forward = Forward(exp.model, state.params, state.batch_stats, "clean", state.masks)
    ctx = StepContext(forward, lambda x, r: x, state.step, state)
    batch = _batch()
    out = exp.method.outputs(ctx, batch, jax.random.PRNGKey(3))
    return exp, exp.method.addon_outputs(ctx, out, batch, jax.random.PRNGKey(4)), batch


def test_ns3l_alone_reads_the_unlabeled_part_of_one_clean_pass():
    exp, out, batch = _outputs("supervised+ns3l")
    assert exp.method.uses_unlabeled
    assert out["ns3l_logits"].shape == (8, 6)
    p = np.asarray(jax.nn.softmax(out["logits_u"]))
    np.testing.assert_array_equal(np.asarray(out["ns3l_negatives"]), p < 0.4 / 6)
    np.testing.assert_array_equal(np.asarray(out["ns3l_true_label"]), batch["unlabeled_label"])
    assert not get_method(for_method(tiny_config(), "supervised")).uses_unlabeled


def test_mixmatch_negatives_come_from_the_generated_labels_of_x_and_u():
    exp, out, batch = _outputs("mixmatch+ns3l")
    targets = np.concatenate([np.asarray(out["label_target"]),
                              np.asarray(out["unlabeled_target"])])
    assert out["ns3l_logits"].shape == (4 + 2 * 8, 6)
    threshold = float(exp.config.ns3l.threshold)
    np.testing.assert_array_equal(np.asarray(out["ns3l_negatives"]), targets < threshold)
    np.testing.assert_array_equal(np.asarray(out["ns3l_true_label"]),
                                  np.concatenate([batch["label"]] + [batch["unlabeled_label"]] * 2))


def test_reproduce_builds_each_full_scale_run_as_its_setting_config():
    """reproduce.py's run of (row, column) equals `for_method(get_config(setting), row)`:
    the per-setting `method_overrides` (CIFAR-100's VAT + NS3L lr and lambda_2, MixMatch's
    lambda_1 per setting) reach the runs."""
    from experiments.configs import ns3l as ns3l_configs
    from experiments.reproduce import run_config
    from experiments.tables import TABLES

    def plain(c):
        d = c.to_dict()
        for key in ("compare", "method_overrides", "progress_bar"):
            d.pop(key, None)
        return d

    checked = 0
    for name in ("ns3l_table1", "ns3l_mixmatch", "ns3l_table5"):
        table = TABLES[name]
        base = ns3l_configs.get_config()
        for row in table.methods:
            run_name, row_fields = table.row(row)
            for setting in table.sweep_values:
                got = run_config(base, run_name, {**table.column(setting, "full"), **row_fields})
                want = for_method(ns3l_configs.get_config(setting), run_name)
                for field, value in row_fields.items():
                    want[field.split(".")[0]][field.split(".")[1]] = value
                assert plain(got) == plain(want), (name, row, setting)
                checked += 1
    assert checked == 6 * 3 + 2 * 5 + 10
    c100 = run_config(ns3l_configs.get_config(), "vat+ns3l",
                      TABLES["ns3l_table1"].column("cifar100-10000", "full"))
    assert (c100.optimizer.lr, c100.vat.weight, c100.ns3l.weight) == (3e-3, 0.6, 0.3)


def test_addons_enabled_by_a_field_select_their_overrides_and_spl_controls_drop_them():
    from sslj.methods.base import without_addons

    c = tiny_config(**{"ns3l.enabled": True})
    c = for_method(c, "supervised")
    assert run_name(c) == "supervised+ns3l" and c.optimizer.lr == 6e-4
    off = without_addons(for_method(tiny_config(**{"entmin.weight": 0.1}), "vat+ns3l"))
    assert not off.ns3l.enabled and off.entmin.weight == 0.0
    # the fine-tune control's method trains on V1 alone: no unlabeled pass left
    control = without_addons(for_method(tiny_config(), "supervised+ns3l+finetune"))
    assert not get_method(control).uses_unlabeled
