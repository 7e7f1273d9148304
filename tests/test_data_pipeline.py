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


def test_seen_unseen_auroc_ranks_by_softmax_not_by_logit():
    # max logit ranks the first above the second; max softmax the other way round
    logits = np.array([[3.0, 0.0, 0.0], [5.0, 4.9, 0.0]])
    labels = np.array([0, -1])
    assert seen_unseen_auroc(logits, labels) == 1.0
    assert auroc(logits[:1].max(-1), logits[1:].max(-1)) == 0.0  # what max-logit would say


def _saturating(rng, n, low, high, classes=6):
    """Logits whose top class leads the others by a margin in [low, high]."""
    margin = rng.uniform(low, high, n)
    z = np.zeros((n, classes))
    z[:, 0] = margin
    return z.astype(np.float32), margin


def test_seen_unseen_auroc_does_not_saturate_on_confident_logits():
    rng = np.random.default_rng(0)
    seen, m_seen = _saturating(rng, 200, 18.0, 40.0)
    unseen, m_unseen = _saturating(rng, 100, 17.0, 30.0)
    logits = np.concatenate([seen, unseen])
    labels = np.r_[np.zeros(200, int), -np.ones(100, int)]
    # every score is an increasing function of the margin, so the AUROC is the margins'
    expected = roc_auc_score(labels >= 0, np.r_[m_seen, m_unseen])
    np.testing.assert_allclose(seen_unseen_auroc(logits, labels), expected, rtol=1e-12)
    assert 0.7 < expected < 0.8
    p32 = np.asarray(jax.nn.softmax(jnp.asarray(logits)).max(-1))  # float32 max-softmax
    assert np.all(p32 == 1.0)  # ties everywhere: it would give AUROC 0.5


def test_mismatch_estimate_on_saturating_logits():
    from sslj.spl.masks import estimate_mismatch
    from sslj.train.evaluate import max_log_softmax

    rng = np.random.default_rng(1)
    v1, _ = _saturating(rng, 400, 20.0, 40.0)
    seen_u, _ = _saturating(rng, 600, 20.0, 40.0)
    unseen_u, _ = _saturating(rng, 400, 17.0, 19.9)  # delta = 0.4, all below every seen one
    u = np.concatenate([seen_u, unseen_u])
    delta = estimate_mismatch(max_log_softmax(u), max_log_softmax(v1), 0.5)
    assert abs(delta - 0.4) < 0.06, delta
    p32 = lambda z: np.asarray(jax.nn.softmax(jnp.asarray(z)).max(-1))
    assert estimate_mismatch(p32(u), p32(v1), 0.5) == 0.0  # float32 softmax: all 1.0


def test_zero_padding_pads_black_and_reflect_padding_does_not():
    x = jnp.ones((64, 6, 6, 1))  # a white image, 1.0 after scaling
    rng = jax.random.PRNGKey(0)
    zeros = augment.weak(x, rng, flip=False, crop_pad=2, noise_std=0.0, pad_mode="zeros")
    reflect = augment.weak(x, rng, flip=False, crop_pad=2, noise_std=0.0, pad_mode="reflect")
    assert set(np.unique(np.asarray(zeros)).tolist()) == {-1.0, 1.0}  # black = uint8 0
    assert np.all(np.asarray(reflect) == 1.0)
    # the same key shifts both the same way: black exactly where reflect copied the image
    np.testing.assert_array_equal(np.asarray(zeros) == -1.0,
                                  np.asarray(augment.weak(
                                      x * 0.5, rng, flip=False, crop_pad=2, noise_std=0.0,
                                      pad_mode="zeros")) == -1.0)


def _streams(on_device, labeled_size=53, unlabeled_size=71, block=None):
    rng = np.random.default_rng(0)
    lab = {"image": rng.integers(0, 256, (labeled_size, 8, 8, 1), np.uint8),
           "label": rng.integers(0, 6, labeled_size).astype(np.int32),
           "index": np.arange(labeled_size, dtype=np.int32)}
    unl = {"image": rng.integers(0, 256, (unlabeled_size, 8, 8, 1), np.uint8),
           "index": np.arange(unlabeled_size, dtype=np.int32),
           "label": rng.integers(-1, 6, unlabeled_size).astype(np.int32)}
    return pipeline.TrainStreams(lab, unl, 16, 24, 3, on_device=on_device, device_block=block)


def _assert_same_batches(a, b, steps):
    for _ in range(steps):
        x, y = next(a), next(b)
        assert sorted(x) == sorted(y)
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].sharding == y[k].sharding, k
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]))


def test_index_batches_equal_the_tf_data_stream():
    """The epoch orders computed in chunks are the tf.data stream's, across epochs, from
    any start step."""
    for start in (0, 5, 11):
        host = pipeline.index_stream(37, 8, 4, start).as_numpy_iterator()
        fast = pipeline.index_batches(37, 8, 4, start)
        for _ in range(40):  # ~9 epochs
            np.testing.assert_array_equal(next(fast), next(host))


def test_batches_staged_on_device_equal_host_batches(devices):
    """data.on_device: the same batches bit for bit, the same shardings and names, from
    step 0 and from a resumed step, with labeled and unlabeled staged or only one."""
    mesh = sharding.make_mesh(devices[:1])
    for start in (0, 7):
        _assert_same_batches(_streams("no").iterate(mesh, start),
                             _streams("yes").iterate(mesh, start), 15)
        # however many steps one gather prepares (the default here: MAX_BLOCK)
        for block in (1, 4):
            _assert_same_batches(_streams("no").iterate(mesh, start),
                                 _streams("yes", block=block).iterate(mesh, start), 9)
    assert _streams("yes").iterate(mesh).block == pipeline.MAX_BLOCK
    # "auto" by size: here the labeled split fits the limit and the unlabeled does not
    limit = pipeline.DEVICE_STAGE_BYTES
    try:
        s = _streams("auto", 53, 400)
        pipeline.DEVICE_STAGE_BYTES = sum(v.nbytes for v in s.labeled.values())
        assert pipeline.stage_on_device(s.labeled, "auto", mesh)
        assert not pipeline.stage_on_device(s.unlabeled, "auto", mesh)
        _assert_same_batches(_streams("no", 53, 400).iterate(mesh, 3), s.iterate(mesh, 3), 8)
    finally:
        pipeline.DEVICE_STAGE_BYTES = limit


def test_on_device_choices(devices):
    """"auto" stages only on one device (several CPU devices can deadlock XLA:CPU's
    in-process collectives with device-side gathers), "yes" is refused there."""
    import pytest

    one, eight = sharding.make_mesh(devices[:1]), sharding.make_mesh(devices)
    x = {"x": np.zeros(3)}
    with pytest.raises(ValueError, match="on_device='maybe'; allowed"):
        pipeline.stage_on_device(x, "maybe", one)
    assert pipeline.stage_on_device(x, "auto", one)
    assert not pipeline.stage_on_device(x, "auto", eight)
    assert not pipeline.stage_on_device(x, "no", one)
    with pytest.raises(ValueError, match="deadlock"):
        pipeline.stage_on_device(x, "yes", eight)
