"""The TFDS path end to end under tfds.testing.mock_data (no download, no data).

tfds 4.9.10's built-in random generator aborts the process inside TF 2.21's decoding
(`std::length_error` in a generator dataset), so the mock is given `as_dataset_fn`, the
hook its docstring documents: examples are drawn from each builder's own feature spec
(image shape, number of classes), and everything else is TFDS's mocked builder.
"""

import contextlib
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sslj.data import sources
from sslj.procedures import run as run_experiment
from tests.conftest import tiny_config


def _fake_as_dataset(num_examples):
    def as_dataset(self, split=None, *args, **kwargs):
        features = self.info.features
        keys = [k for k in ("image", "label", "coarse_label") if k in features]
        seed = abs(hash((self.name, str(split)))) % 2**31

        def gen():
            rng = np.random.default_rng(seed)
            for _ in range(num_examples):
                ex = {}
                for k in keys:
                    f = features[k]
                    if k == "image":
                        ex[k] = rng.integers(0, 256, f.shape, dtype=np.uint8)
                    else:
                        ex[k] = np.int64(rng.integers(0, f.num_classes))
                yield ex

        sig = {k: tf.TensorSpec(features[k].shape, tf.uint8 if k == "image" else tf.int64)
               for k in keys}
        return tf.data.Dataset.from_generator(gen, output_signature=sig)

    return as_dataset


@contextlib.contextmanager
def mock_tfds(num_examples):
    with tfds.testing.mock_data(num_examples=num_examples,
                                as_dataset_fn=_fake_as_dataset(num_examples)):
        yield


def test_missing_data_gives_preparation_message(tmp_path):
    with pytest.raises(sources.DataNotPreparedError, match="python -m sslj.data.prepare cifar10"):
        sources.load("tfds:cifar10", str(tmp_path))


@pytest.mark.parametrize("name,shape,coarse", [
    ("cifar10", (32, 32, 3), False), ("cifar100", (32, 32, 3), True),
    ("svhn_cropped", (32, 32, 3), False), ("fashion_mnist", (28, 28, 1), False),
])
def test_tfds_sources_under_mock_data(tmp_path, name, shape, coarse):
    with mock_tfds(40):
        d = sources.load(f"tfds:{name}", str(tmp_path))
    assert d.train_images.shape == (40, *shape) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (40, *shape)
    assert d.train_labels.dtype == np.int32 and d.train_labels.max() < d.num_classes
    assert (d.train_coarse_labels is not None) == coarse
    if coarse:
        assert d.train_coarse_labels.max() < 20


@pytest.mark.slow
def test_train_and_evaluate_on_mock_cifar10(tmp_path):
    c = tiny_config(**{"data.source": "tfds:cifar10", "data.data_dir": str(tmp_path / "tfds"),
                       "data.flip": True, "split.labels_per_class": 5,
                       "split.unlabeled_size": 100, "split.num_validation": 40,
                       "split.mismatch_ratio": 0.25, "method": "pi_model",
                       "eval_batch_size": 40})
    with mock_tfds(600):
        results = run_experiment(c, str(tmp_path / "run"))
    assert results["split"] == "cifar10.oliver.mm0.25@30.s0"
    assert 0.0 <= results["test_accuracy_at_best_val"] <= 1.0
    assert 0.0 <= results["unseen_auroc_at_best_val"] <= 1.0
    assert os.path.exists(tmp_path / "run" / "results.json")


def _fake_tiny_imagenet(root, per_class=2, val_per_class=1):
    """A miniature tiny-imagenet-200/ folder with the archive's layout."""
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # file order rules
    rng = np.random.default_rng(0)
    rows = []
    for i, w in enumerate(wnids):
        folder = base / "train" / w / "images"
        folder.mkdir(parents=True)
        for j in range(per_class):  # a flat grey level per class: i, readable after JPEG
            Image.fromarray(np.full((64, 64, 3), i, np.uint8)).save(folder / f"{w}_{j}.JPEG")
        for j in range(val_per_class):
            name = f"val_{w}_{j}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64), np.uint8)).save(  # greyscale
                base / "val" / "images" / name)
            rows.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return wnids


def test_tiny_imagenet_manual_dir_builds_and_loads(tmp_path):
    from sslj.data import prepare

    data_dir = tmp_path / "tfds"
    with pytest.raises(sources.DataNotPreparedError, match="tiny-imagenet-200.zip"):
        sources.load("tfds:tiny_imagenet", str(data_dir))
    wnids = _fake_tiny_imagenet(tmp_path / "dl")
    prepare.main(["tiny_imagenet", "--data_dir", str(data_dir),
                  "--manual_dir", str(tmp_path / "dl")])
    ds = sources.load("tfds:tiny_imagenet", str(data_dir))
    assert ds.train_images.shape == (400, 64, 64, 3) and ds.test_images.shape == (200, 64, 64, 3)
    assert ds.num_classes == 200
    assert np.bincount(ds.train_labels, minlength=200).tolist() == [2] * 200
    assert sorted(set(ds.test_labels.tolist())) == list(range(200))
    # labels follow wnids.txt's order, reversed here: wnid i (grey level i) is class 199 - i
    grey = np.round(ds.train_images.mean(axis=(1, 2, 3))).astype(int)
    np.testing.assert_array_equal(ds.train_labels, 199 - grey)
    # tiny_imagenet_sorted: labels follow the sorted wnids (ImageFolder's order)
    prepare.main(["tiny_imagenet_sorted", "--data_dir", str(data_dir),
                  "--manual_dir", str(tmp_path / "dl")])
    ds_sorted = sources.load("tfds:tiny_imagenet_sorted", str(data_dir))
    grey = np.round(ds_sorted.train_images.mean(axis=(1, 2, 3))).astype(int)
    np.testing.assert_array_equal(ds_sorted.train_labels, grey)
    assert sorted(wnids) == wnids


def test_damaged_prepared_data_gives_one_message_not_a_traceback(tmp_path):
    """Issue 19: a corrupt prepared data set gave a protobuf traceback."""
    from google.protobuf.message import DecodeError

    def broken(self, *args, **kwargs):
        raise DecodeError("Error parsing message with type 'tensorflow.Example'")

    with tfds.testing.mock_data(num_examples=4, as_dataset_fn=broken), pytest.raises(
            sources.DataNotPreparedError, match=r"does not read \(DecodeError: Error parsing"
            r".*prepare it again \(python -m sslj.data.prepare cifar10"):
        sources.load("tfds:cifar10", str(tmp_path))
