import numpy as np
import pytest

from sslj.config import ConfigError
from sslj.data import sources, splits

LABELS = np.repeat(np.arange(10), 400)  # the mnist5k training pool: 400 per class
SEEN = (0, 1, 2, 3, 4, 5)


def make(protocol="oliver", mismatch=0.5, seed=0, **kw):
    args = dict(seen_classes=SEEN, mismatch_ratio=mismatch, labels_per_class=25,
                unlabeled_size=1500, num_validation=300, protocol=protocol, seed=seed)
    args.update(kw)
    return splits.class_mismatch(LABELS, **args)


@pytest.mark.parametrize("protocol", ["oliver", "ds3l"])
@pytest.mark.parametrize("mismatch", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_counts_disjoint_and_seen_only(protocol, mismatch):
    s = make(protocol, mismatch)
    # labeled: exactly 25 of every seen class, nothing else
    assert len(s.labeled) == 25 * 6
    np.testing.assert_array_equal(np.bincount(LABELS[s.labeled], minlength=10),
                                  [25] * 6 + [0] * 4)
    # validation: seen classes only, 70 / 30
    assert (len(s.val_v1), len(s.val_v2)) == (210, 90)
    assert np.isin(LABELS[s.validation], SEEN).all()
    parts = [s.labeled, s.unlabeled, s.val_v1, s.val_v2]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx), "labeled / unlabeled / V1 / V2 overlap"
    for p in parts:
        assert np.all(np.diff(p) > 0)


@pytest.mark.parametrize("mismatch", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_oliver_mismatch_fraction_exact(mismatch):
    s = make("oliver", mismatch)
    unseen = ~np.isin(LABELS[s.unlabeled], SEEN)
    assert len(s.unlabeled) == 1500
    assert unseen.sum() == round(mismatch * 1500)


@pytest.mark.parametrize("mismatch", [0.0, 0.3, 0.6, 1.0])
def test_ds3l_per_class_counts_follow_official_formula(mismatch):
    s = make("ds3l", mismatch)
    per_seen = int(1500 * (1 - mismatch)) // 6
    per_unseen = (1500 - per_seen * 6) // 4
    counts = np.bincount(LABELS[s.unlabeled], minlength=10)
    np.testing.assert_array_equal(counts, [per_seen] * 6 + [per_unseen] * 4)


def test_same_seed_same_split_other_seed_differs():
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    for f in ("labeled", "unlabeled", "val_v1", "val_v2"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert not np.array_equal(getattr(a, f), getattr(c, f))
    assert a.name == "data.oliver.mm0.50@150.s3"


def test_save_load_roundtrip(tmp_path):
    s = make()
    splits.save_splits(s, str(tmp_path))
    t = splits.Splits.load(str(tmp_path / "splits.npz"))
    assert t.name == s.name and t.seen_classes == s.seen_classes
    np.testing.assert_array_equal(t.unlabeled, s.unlabeled)
    assert (tmp_path / "splits.json").exists()


def test_too_many_labels_names_the_field():
    with pytest.raises(ConfigError, match="split.labels_per_class") as e:
        make(labels_per_class=401)
    assert e.value.field == "split.labels_per_class"
    with pytest.raises(ConfigError, match="split.unlabeled_size"):
        make(mismatch=1.0, unlabeled_size=1700)  # only 1,600 unseen images exist


def test_relabel():
    np.testing.assert_array_equal(splits.relabel(np.array([0, 3, 5, 7]), (3, 5, 0)),
                                  [2, 0, 1, -1])


def test_mnist5k_holdout_is_fixed_and_stratified():
    d = sources.load("mnist5k")
    assert d.train_images.shape == (4000, 28, 28, 1) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(d.test_labels), [100] * 10)
    np.testing.assert_array_equal(np.bincount(d.train_labels), [400] * 10)
    np.testing.assert_array_equal(sources.load("mnist5k").test_labels, d.test_labels)


def test_digits_source():
    d = sources.load("digits")
    assert d.train_images.shape[1:] == (8, 8, 1) and d.train_images.max() == 255
    assert len(d.train_labels) + len(d.test_labels) == 1797
    np.testing.assert_array_equal(np.bincount(d.test_labels), [35] * 10)


def test_oliver_unseen_count_rounds_an_inexact_product():
    # 0.29 * 100 is 28.999999999999996 in floating point: 29 unseen images, not 28
    s = make("oliver", 0.29, unlabeled_size=100)
    assert (~np.isin(LABELS[s.unlabeled], SEEN)).sum() == 29


def test_seen_of_random_validation_is_the_seen_part_of_random_images():
    """The DS3L / SPL code: num_validation random pool images, the seen ones kept (about
    6/10 of them here), the unseen ones dropped from the pool."""
    s = make("ds3l", 0.6, validation_source="seen_of_random", num_validation=1000)
    n_val = len(s.val_v1) + len(s.val_v2)
    assert 540 < n_val < 660 and np.isin(LABELS[s.validation], SEEN).all()
    assert len(s.val_v1) == round(0.7 * n_val)
    allidx = np.concatenate([s.labeled, s.unlabeled, s.validation])
    assert len(np.unique(allidx)) == len(allidx)
    again = make("ds3l", 0.6, validation_source="seen_of_random", num_validation=1000)
    np.testing.assert_array_equal(s.validation, again.validation)
    with pytest.raises(ConfigError, match="split.validation_source"):
        make(validation_source="everything")


def test_oliver_size_error_names_the_real_maximum():
    """The bound in the message is the largest unlabeled_size that works (issue 19: the
    digits default asked 1,500 and was told "at most 574", the unseen pool's size)."""
    labels = np.repeat(np.arange(10), 100)

    def attempt(size):
        return splits.class_mismatch(labels, seen_classes=SEEN, mismatch_ratio=0.6,
                                     labels_per_class=10, unlabeled_size=size,
                                     num_validation=100, protocol="oliver", seed=0)

    with pytest.raises(ConfigError, match="unlabeled_size") as e:
        attempt(1500)
    best = int(str(e.value).split("at most ")[1].split()[0])
    # unseen pool 400: round(0.6 u) <= 400 up to u = 667 (0.6 * 667 = 400.2); the seen
    # pool (600 - 60 labeled - 100 validation = 440) is not the limit
    assert best == 667
    assert len(attempt(best).unlabeled) == best
    with pytest.raises(ConfigError):
        attempt(best + 1)
