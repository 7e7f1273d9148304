"""Host streams, padded evaluation, on-device augmentation, AUROC."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import roc_auc_score

from sslj.common import sharding
from sslj.data import augment, pipeline
from sslj.train.evaluate import auroc, seen_unseen_auroc


def take(it, n):
    return [b for b in itertools.islice(it, n)]


def test_stream_epochs_are_permutations_and_deterministic():
    arrays = {"x": np.arange(10, dtype=np.int32)}
    a = take(pipeline.numpy_stream(arrays, 5, seed=1), 6)
    b = take(pipeline.numpy_stream(arrays, 5, seed=1), 6)
    c = take(pipeline.numpy_stream(arrays, 5, seed=2), 6)
    xs = np.concatenate([x["x"] for x in a])
    for epoch in range(3):
        assert sorted(xs[10 * epoch:10 * (epoch + 1)]) == list(range(10))
    np.testing.assert_array_equal(xs, np.concatenate([x["x"] for x in b]))
    assert not np.array_equal(xs, np.concatenate([x["x"] for x in c]))
    assert not np.array_equal(xs[:10], xs[10:20])  # reshuffled each epoch


def test_stream_started_at_step_equals_tail_of_full_stream():
    arrays = {"x": np.arange(7, dtype=np.int32)}  # batch 3 does not divide 7
    full = take(pipeline.numpy_stream(arrays, 3, seed=0), 9)
    tail = take(pipeline.numpy_stream(arrays, 3, seed=0, start_step=4), 5)
    for f, t in zip(full[4:], tail, strict=True):
        np.testing.assert_array_equal(f["x"], t["x"])


def test_eval_batches_cover_each_example_once(devices):
    mesh = sharding.make_mesh(devices)
    images = np.arange(21, dtype=np.uint8).reshape(21, 1, 1, 1)
    labels = np.arange(21, dtype=np.int32)
    batches = list(pipeline.eval_batches(images, labels, 8, mesh))
    assert len(batches) == 3
    assert batches[0]["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    got = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"]) > 0] for b in batches])
    np.testing.assert_array_equal(got, labels)
    assert float(sum(np.asarray(b["mask"]).sum() for b in batches)) == 21


def test_weak_augmentation_is_a_reflect_padded_translation():
    x = jax.random.uniform(jax.random.PRNGKey(0), (6, 8, 8, 1))
    y = augment.weak(x, jax.random.PRNGKey(1), flip=False, crop_pad=2, noise_std=0.0)
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(6):  # every output is one 8x8 window of the padded image
        windows = [padded[i, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        assert any(np.array_equal(np.asarray(y[i]), w) for w in windows)
    y2 = augment.weak(x, jax.random.PRNGKey(2), flip=False, crop_pad=2, noise_std=0.0)
    assert not np.array_equal(np.asarray(y), np.asarray(y2))


def test_flip_and_noise():
    x = jax.random.uniform(jax.random.PRNGKey(0), (64, 4, 4, 1))
    y = augment.weak(x, jax.random.PRNGKey(3), flip=True, crop_pad=0, noise_std=0.0)
    flipped = np.array([np.array_equal(y[i], x[i, :, ::-1]) for i in range(64)])
    same = np.array([np.array_equal(y[i], x[i]) for i in range(64)])
    assert np.all(flipped | same) and 10 < flipped.sum() < 54
    z = augment.weak(jnp.zeros((256, 8, 8, 1)), jax.random.PRNGKey(4), flip=False, crop_pad=0,
                     noise_std=0.15)
    np.testing.assert_allclose(float(jnp.std(z)), 0.15, rtol=0.03)
    np.testing.assert_allclose(augment.to_float(jnp.array([0, 255], jnp.uint8)), [-1.0, 1.0])


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(1.0, 1.0, 50), 1)
    neg = np.round(rng.normal(0.0, 1.0, 70), 1)
    expected = roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[pos, neg])
    np.testing.assert_allclose(auroc(pos, neg), expected, rtol=1e-12)
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5


def test_seen_unseen_auroc_uses_max_softmax():
    logits = np.array([[5.0, 0.0], [4.0, 0.0], [0.1, 0.0], [0.0, 0.2]])
    labels = np.array([0, 0, -1, -1])  # confident seen, unsure unseen
    assert seen_unseen_auroc(logits, labels) == 1.0
