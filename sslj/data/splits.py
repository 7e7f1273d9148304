"""Deterministic split index functions of (labels, seed): class-mismatch protocols.

Every function here is pure NumPy: the same labels and seed give the same indices on
every machine, so splits can be saved, audited and recomputed on resume.

Two class-mismatch protocols (docs/REFERENCE.md):
  * ``oliver`` (Oliver et al. 2018): `labels_per_class` labels of every seen class; the
    unlabeled set has exactly `round(delta * U)` images drawn at random from the unseen
    classes and the rest drawn at random from the seen classes (not class-balanced).
  * ``ds3l`` (DS3L / SPL code): `labels_per_class` labels of every seen class; the
    unlabeled set takes `int(U (1 - delta)) // S` images of each of the S seen classes
    and `(U - S * that) // (C - S)` of each unseen class, so its size can fall a few
    images short of U, exactly as in the official code.
In both, labeled, unlabeled and validation are disjoint; the validation set holds seen
classes only and is split into V1 (mask learning) and V2 (model selection). Where it
comes from (`validation_source`):
  * ``seen`` (default): `num_validation` images drawn from the seen classes after the
    labels;
  * ``seen_of_random`` (the DS3L / SPL code's `load_dataset.py`): `num_validation`
    images drawn from the whole pool first, of which the seen-class ones (about
    num_validation * S / C) are the validation set and the unseen-class ones are
    dropped from the pool; labels and unlabeled images come from the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from sslj.common.checks import ConfigError

SPLIT_PROTOCOLS = ("oliver", "ds3l")
VALIDATION_SOURCES = ("seen", "seen_of_random")


@dataclasses.dataclass(frozen=True)
class Splits:
    """Index arrays into the training pool (and the test set for `test`)."""

    name: str
    seen_classes: tuple[int, ...]
    labeled: np.ndarray
    unlabeled: np.ndarray
    val_v1: np.ndarray
    val_v2: np.ndarray
    test: np.ndarray  # indices into the test set: every image of every class

    @property
    def validation(self) -> np.ndarray:
        return np.sort(np.concatenate([self.val_v1, self.val_v2]))

    def save(self, path: str) -> None:
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        np.savez(path, seen_classes=np.asarray(self.seen_classes), name=np.asarray(self.name),
                 **arrays)

    @classmethod
    def load(cls, path: str) -> Splits:
        with np.load(path) as f:
            return cls(name=str(f["name"]), seen_classes=tuple(int(c) for c in f["seen_classes"]),
                       labeled=f["labeled"], unlabeled=f["unlabeled"], val_v1=f["val_v1"],
                       val_v2=f["val_v2"], test=f["test"])

    def summary(self) -> dict:
        return {"name": self.name, "seen_classes": list(self.seen_classes),
                **{k: int(len(getattr(self, k)))
                   for k in ("labeled", "unlabeled", "val_v1", "val_v2", "test")}}


def split_name(dataset: str, protocol: str, mismatch_ratio: float, num_labels: int,
               seed: int) -> str:
    """E.g. ``mnist5k.oliver.mm0.50@150.s0`` (data set, protocol, delta, labels, seed)."""
    return f"{dataset.replace('tfds:', '')}.{protocol}.mm{mismatch_ratio:.2f}@{num_labels}.s{seed}"


def _take(rng: np.random.Generator, pool: np.ndarray, n: int, field: str, what: str):
    if n > len(pool):
        raise ConfigError(field, f"asks for {n} {what} but only {len(pool)} exist",
                          f"at most {len(pool)}")
    chosen = rng.choice(pool, n, replace=False) if n else np.zeros(0, pool.dtype)
    return np.sort(chosen), np.setdiff1d(pool, chosen)


def _check_oliver_size(size: int, ratio: float, n_seen: int, n_unseen: int) -> None:
    """ConfigError naming the largest `split.unlabeled_size` this data set allows at this
    mismatch ratio, when `size` needs more images of either kind than are left."""
    def fits(u):
        k = int(round(ratio * u))
        return k <= n_unseen and u - k <= n_seen

    if fits(size):
        return
    best = next(u for u in range(size, -1, -1) if fits(u))
    k = int(round(ratio * size))
    raise ConfigError("split.unlabeled_size",
                      f"{size} unlabeled images at mismatch {ratio} need {k} of unseen and "
                      f"{size - k} of seen classes; {n_unseen} and {n_seen} are left after "
                      "the labeled, validation and test images",
                      f"at most {best} at this mismatch ratio")


def class_mismatch(
    labels: np.ndarray,
    *,
    seen_classes: Sequence[int],
    mismatch_ratio: float,
    labels_per_class: int,
    unlabeled_size: int,
    num_validation: int,
    v1_fraction: float = 0.7,
    protocol: str = "oliver",
    seed: int = 0,
    num_test: int = 0,
    dataset: str = "data",
    validation_source: str = "seen",
) -> Splits:
    """Class-mismatch split of a training pool with labels `labels` (see module doc)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x55AA])
    seen = tuple(int(c) for c in seen_classes)
    all_classes = np.unique(labels)
    unseen = tuple(int(c) for c in all_classes if c not in seen)
    remaining = {c: np.flatnonzero(labels == c) for c in all_classes}
    if validation_source not in VALIDATION_SOURCES:
        raise ConfigError("split.validation_source", f"unknown value {validation_source!r}",
                          list(VALIDATION_SOURCES))
    if validation_source == "seen_of_random":  # first, from the whole pool
        drawn, _ = _take(rng, np.arange(len(labels)), num_validation,
                         "split.num_validation", "validation images")
        validation = np.sort(drawn[np.isin(labels[drawn], seen)])
        for c in all_classes:
            remaining[c] = np.setdiff1d(remaining[c], drawn)

    labeled = []
    for c in seen:
        chosen, remaining[c] = _take(rng, remaining[c], labels_per_class,
                                     "split.labels_per_class", f"labels of class {c}")
        labeled.append(chosen)
    labeled = np.sort(np.concatenate(labeled))

    seen_pool = np.sort(np.concatenate([remaining[c] for c in seen]))
    if validation_source == "seen":
        validation, seen_pool = _take(rng, seen_pool, num_validation, "split.num_validation",
                                      "validation images of seen classes")
        for c in seen:
            remaining[c] = np.intersect1d(remaining[c], seen_pool)
    perm = rng.permutation(validation)
    n_v1 = int(round(v1_fraction * len(validation)))
    val_v1, val_v2 = np.sort(perm[:n_v1]), np.sort(perm[n_v1:])

    if protocol == "oliver":
        n_unseen = int(round(mismatch_ratio * unlabeled_size))
        unseen_pool = (np.sort(np.concatenate([remaining[c] for c in unseen]))
                       if unseen else np.zeros(0, np.int64))
        _check_oliver_size(unlabeled_size, mismatch_ratio, len(seen_pool), len(unseen_pool))
        from_unseen, _ = _take(rng, unseen_pool, n_unseen, "split.unlabeled_size",
                               "unlabeled images of unseen classes")
        from_seen, _ = _take(rng, seen_pool, unlabeled_size - n_unseen, "split.unlabeled_size",
                             "unlabeled images of seen classes")
        unlabeled = np.sort(np.concatenate([from_seen, from_unseen]))
    elif protocol == "ds3l":
        per_seen = int(unlabeled_size * (1.0 - mismatch_ratio)) // len(seen)
        per_unseen = ((unlabeled_size - per_seen * len(seen)) // len(unseen)) if unseen else 0
        parts = []
        for c, n in [(c, per_seen) for c in seen] + [(c, per_unseen) for c in unseen]:
            chosen, _ = _take(rng, remaining[c], n, "split.unlabeled_size",
                              f"unlabeled images of class {c}")
            parts.append(chosen)
        unlabeled = np.sort(np.concatenate(parts))
    else:
        raise ConfigError("split.protocol", f"unknown value {protocol!r}", list(SPLIT_PROTOCOLS))

    name = split_name(dataset, protocol, mismatch_ratio, len(labeled), seed)
    return Splits(name, seen, labeled, unlabeled, val_v1, val_v2,
                  test=np.arange(num_test))


def make_splits(dataset, split_config, seed: int) -> Splits:
    """Splits of a `sources.Dataset` from the `config.split` fields."""
    return class_mismatch(
        dataset.train_labels,
        seen_classes=tuple(split_config.seen_classes),
        mismatch_ratio=float(split_config.mismatch_ratio),
        labels_per_class=int(split_config.labels_per_class),
        unlabeled_size=int(split_config.unlabeled_size),
        num_validation=int(split_config.num_validation),
        v1_fraction=float(split_config.v1_fraction),
        protocol=split_config.protocol,
        seed=seed,
        num_test=len(dataset.test_labels),
        dataset=dataset.name,
        validation_source=split_config.get("validation_source", "seen"),
    )


def relabel(labels: np.ndarray, seen_classes: Sequence[int]) -> np.ndarray:
    """Seen class c -> its position in `seen_classes`; unseen classes -> -1."""
    table = np.full(int(max(labels.max(), max(seen_classes))) + 1, -1, np.int32)
    table[np.asarray(seen_classes)] = np.arange(len(seen_classes), dtype=np.int32)
    return table[labels]


def save_splits(splits: Splits, workdir: str) -> str:
    path = os.path.join(workdir, "splits.npz")
    splits.save(path)
    with open(os.path.join(workdir, "splits.json"), "w") as f:
        json.dump(splits.summary(), f, indent=2)
    return path
