"""Label noise: exact counts, where flips may land, determinism; learning dynamics."""

import numpy as np
import pytest

from sslj.config import ConfigError, validate
from sslj.data import noise
from sslj.data.sources import Dataset
from sslj.losses import TargetModifier
from sslj.train.dynamics import learning_dynamics
from tests.conftest import tiny_config


def _labels(num_classes=10, per_class=(37, 50, 63), seed=0):
    rng = np.random.default_rng(seed)
    counts = [per_class[c % len(per_class)] for c in range(num_classes)]
    return rng.permutation(np.repeat(np.arange(num_classes), counts))


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 1.0])
def test_symmetric_exact_count_never_the_true_class(rate):
    labels = _labels()
    out = noise.symmetric(labels, rate, range(10), seed=3)
    np.testing.assert_array_equal(out.clean, labels)
    for c in range(10):
        in_c = labels == c
        # exactly round(r n_c) of class c changed, and each changed label is another
        # class: a flip onto the true class would leave the count short
        assert out.flipped[in_c].sum() == round(rate * in_c.sum())
    assert out.flipped.sum() == sum(round(rate * (labels == c).sum()) for c in range(10))
    assert set(np.unique(out.labels)) <= set(range(10))


def test_symmetric_flips_are_uniform_over_the_other_classes():
    labels = np.repeat(np.arange(5), 4000)
    out = noise.symmetric(labels, 0.5, range(5), seed=0)
    for c in range(5):
        new = out.labels[(labels == c) & out.flipped]
        counts = np.bincount(new, minlength=5)
        assert counts[c] == 0
        others = np.delete(counts, c)
        np.testing.assert_allclose(others / others.sum(), 0.25, atol=0.03)


def test_symmetric_stays_among_the_given_classes():
    labels = np.repeat([1, 4, 7], 100)
    out = noise.symmetric(labels, 0.5, (1, 4, 7), seed=1)
    assert set(np.unique(out.labels)) == {1, 4, 7}


def _cifar100_like(seed=0, per_class=20):
    """100 fine classes in 20 coarse classes of 5 (a random assignment, as CIFAR-100's)."""
    rng = np.random.default_rng(seed)
    coarse_of = rng.permutation(np.repeat(np.arange(20), 5))
    fine = np.repeat(np.arange(100), per_class)
    img = np.zeros((len(fine), 2, 2, 3), np.uint8)
    return Dataset("tfds:cifar100", img, fine, img[:0], fine[:0], 100,
                   train_coarse_labels=coarse_of[fine], test_coarse_labels=fine[:0])


@pytest.mark.parametrize("rate", [0.2, 0.3, 0.4])
def test_asymmetric_swaps_two_classes_inside_each_coarse_class(rate):
    ds = _cifar100_like()
    groups = noise.groups_for(ds)
    assert len(groups) == 20 and all(len(g) == 5 for g in groups)
    out = noise.asymmetric(ds.train_labels, rate, groups, seed=7)
    coarse_of = dict(zip(ds.train_labels.tolist(), ds.train_coarse_labels.tolist(),
                         strict=False))
    assert len(out.swapped_pairs) == 20
    touched = set()
    for a, b in out.swapped_pairs:
        assert coarse_of[a] == coarse_of[b] and a != b
        touched |= {a, b}
        for src, dst in ((a, b), (b, a)):
            moved = (out.clean == src) & out.flipped
            assert moved.sum() == round(rate * 20)
            assert np.all(out.labels[moved] == dst)
    # every flip stays in its coarse class, classes outside the pairs are untouched
    f = out.flipped
    np.testing.assert_array_equal(ds.train_coarse_labels[f],
                                  np.array([coarse_of[c] for c in out.labels[f]]))
    assert not np.any(f & ~np.isin(out.clean, sorted(touched)))
    assert f.mean() < rate  # "the overall label noise rate is smaller than r"


def test_asymmetric_digits_use_the_documented_pairs():
    labels = _labels()
    out = noise.asymmetric(labels, 0.4, [list(p) for p in noise.DIGIT_PAIRS], seed=0)
    assert {tuple(sorted(p)) for p in out.swapped_pairs} == set(noise.DIGIT_PAIRS)
    assert not out.flipped[np.isin(labels, [0, 1])].any()


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_same_seed_same_noise(kind):
    labels = _labels()

    def make(seed):
        if kind == "symmetric":
            return noise.symmetric(labels, 0.4, range(10), seed)
        return noise.asymmetric(labels, 0.4, [list(p) for p in noise.DIGIT_PAIRS], seed)

    np.testing.assert_array_equal(make(5).labels, make(5).labels)
    assert not np.array_equal(make(5).labels, make(6).labels)


def test_invalid_noise_config_names_the_field():
    with pytest.raises(ConfigError) as e:
        validate(tiny_config(**{"noise.kind": "pairflip"}))
    assert e.value.field == "noise.kind"
    with pytest.raises(ConfigError) as e:
        validate(tiny_config(**{"noise.kind": "symmetric", "noise.rate": 1.5}))
    assert e.value.field == "noise.rate"
    cfg = tiny_config(**{"noise.kind": "asymmetric", "noise.rate": 0.2,
                         "data.source": "tfds:cifar10"})
    with pytest.raises(ConfigError, match="coarse classes") as e:
        validate(cfg)
    assert e.value.field == "noise.kind"


def test_learning_dynamics_numbers():
    # six examples of 3 classes; examples 3-5 have flipped labels
    clean = np.array([0, 1, 2, 0, 1, 2])
    noisy = np.array([0, 1, 2, 1, 2, 0])
    big = 8.0
    pred = np.array([0, 1, 0, 0, 2, 0])  # clean: 2/3 right; noisy: 1 clean, 2 fitted
    logits = np.full((6, 3), 0.0)
    logits[np.arange(6), pred] = big
    logits[2] = 0.0  # one uniform prediction: entropy log 3
    logits[2, 0] = 1e-3
    dyn = learning_dynamics(logits, noisy, clean, TargetModifier("cce"), step=0)
    assert dyn["num_noisy"] == 3
    np.testing.assert_allclose(dyn["clean_subset_accuracy"], 2 / 3)
    np.testing.assert_allclose(dyn["noisy_subset_accuracy"], 1 / 3)
    np.testing.assert_allclose(dyn["noisy_fitted"], 2 / 3)
    assert dyn["noisy_corrected"] == 0.0  # CCE's target is the noisy label
    p_big = np.exp(big) / (np.exp(big) + 2)
    h_big = -(p_big * np.log(p_big) + 2 * (1 - p_big) / 2 * np.log((1 - p_big) / 2))
    np.testing.assert_allclose(dyn["clean_entropy"], (2 * h_big + np.log(3)) / 3, rtol=1e-5)
    np.testing.assert_allclose(dyn["noisy_entropy"], h_big, rtol=1e-5)
    # late in training ProSelfLC trusts the confident p: example 3 (p says its clean
    # class 0) gets a corrected target; 4 and 5 (p agrees with the noisy label) do not
    late = TargetModifier("proselflc", exp_base=16.0, total_steps=100)
    dyn = learning_dynamics(logits, noisy, clean, late, step=100)
    np.testing.assert_allclose(dyn["noisy_corrected"], 1 / 3)
