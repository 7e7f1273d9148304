"""Synthetic label noise, deterministic by seed, with the clean labels kept alongside.

Two protocols (ProSelfLC paper Sec. 5.2, after Wang et al. 2019; docs/REFERENCE.md):
  * ``symmetric`` with rate r: in every class c exactly round(r * n_c) examples, chosen at
    random, get a label drawn uniformly from the *other* classes, so no flip lands on
    the true class and the count is exact (per class, hence overall);
  * ``asymmetric`` with rate r: the classes come in groups (CIFAR-100: the 20 coarse
    classes of 5 fine classes each); in every group two classes A and B are picked at
    random and exactly round(r * n_A) labels of A become B and round(r * n_B) of B
    become A. Only 2 of a group's classes are touched, so the overall noise rate is
    below r, as the paper remarks.
Digit data sets have no coarse classes. Their groups are the fixed pairs
`DIGIT_PAIRS`: Patrini et al.'s (2017) MNIST flips 2->7, 3->8, 5<->6 made into swaps,
plus 4<->9 (MNIST's most confused pair); 0 and 1 stay clean, as the untouched classes of
a CIFAR-100 coarse class do. With pairs, "pick two at random" has one choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from sslj.common.checks import ConfigError, check_choice, check_number

NOISE_KINDS = ("none", "symmetric", "asymmetric")
DIGIT_PAIRS = ((2, 7), (3, 8), (5, 6), (4, 9))
DIGIT_SOURCES = ("mnist5k", "digits", "tfds:mnist")  # grouped by DIGIT_PAIRS
ASYMMETRIC_SOURCES = DIGIT_SOURCES + ("tfds:cifar100",)  # + coarse classes
_SEED_TAG = 0x4015E  # keeps the noise stream apart from the split stream of the same seed


@dataclasses.dataclass(frozen=True)
class NoisyLabels:
    """Noisy labels of a labeled set, with the clean ones and which were flipped."""

    labels: np.ndarray  # the labels training sees
    clean: np.ndarray
    swapped_pairs: tuple[tuple[int, int], ...] = ()  # asymmetric: the (A, B) of each group

    @property
    def flipped(self) -> np.ndarray:
        return self.labels != self.clean

    def summary(self) -> dict:
        return {"num_examples": int(len(self.labels)), "num_flipped": int(self.flipped.sum()),
                "noise_rate": float(self.flipped.mean()) if len(self.labels) else 0.0,
                "swapped_pairs": [list(p) for p in self.swapped_pairs]}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SEED_TAG])


def symmetric(labels: np.ndarray, rate: float, classes: Sequence[int], seed: int) -> NoisyLabels:
    """Symmetric noise among `classes` (every label must be one of them)."""
    labels = np.asarray(labels)
    classes = np.asarray(sorted(int(c) for c in classes))
    rng = _rng(seed)
    noisy = labels.copy()
    for c in classes:
        idx = np.flatnonzero(labels == c)
        chosen = np.sort(rng.choice(idx, int(round(rate * len(idx))), replace=False))
        others = classes[classes != c]
        noisy[chosen] = others[rng.integers(0, len(others), len(chosen))]
    return NoisyLabels(noisy, labels.copy())


def asymmetric(labels: np.ndarray, rate: float, groups: Sequence[Sequence[int]],
               seed: int) -> NoisyLabels:
    """Asymmetric (pair-swap) noise within each group of classes."""
    labels = np.asarray(labels)
    rng = _rng(seed)
    noisy = labels.copy()
    pairs = []
    for group in groups:
        group = sorted(int(c) for c in group)
        if len(group) < 2:
            continue
        a, b = (int(c) for c in rng.choice(group, 2, replace=False))
        pairs.append((a, b))
        for src, dst in ((a, b), (b, a)):
            idx = np.flatnonzero(labels == src)
            chosen = rng.choice(idx, int(round(rate * len(idx))), replace=False)
            noisy[chosen] = dst
    return NoisyLabels(noisy, labels.copy(), tuple(pairs))


def groups_for(dataset) -> list[list[int]] | None:
    """The class groups of asymmetric noise for a `sources.Dataset` (None: none known)."""
    if dataset.train_coarse_labels is not None:
        fine, coarse = dataset.train_labels, dataset.train_coarse_labels
        return [sorted(set(fine[coarse == k].tolist())) for k in np.unique(coarse)]
    if dataset.name in DIGIT_SOURCES:
        return [list(p) for p in DIGIT_PAIRS]
    return None


def apply(labels: np.ndarray, noise_config, seen_classes: Sequence[int], dataset,
          seed: int) -> NoisyLabels | None:
    """Noise from `config.noise` on labels of the seen classes (original class ids).

    Flips stay among the seen classes: a symmetric flip never lands on an unseen class,
    and asymmetric groups are cut down to their seen classes.
    """
    kind = noise_config.get("kind", "none") if noise_config else "none"
    if kind == "none":
        return None
    rate = float(noise_config.rate)
    if kind == "symmetric":
        return symmetric(labels, rate, seen_classes, seed)
    if kind == "asymmetric":
        groups = groups_for(dataset)
        if groups is None:
            raise ValueError(f"asymmetric noise needs class groups; {dataset.name} has none "
                             f"(allowed sources: {ASYMMETRIC_SOURCES})")
        seen = set(int(c) for c in seen_classes)
        return asymmetric(labels, rate, [[c for c in g if c in seen] for g in groups], seed)
    raise ValueError(f"unknown noise kind {kind!r}; allowed: {NOISE_KINDS}")


def validate_config(config) -> None:
    """Checks the `noise` section (and that the data set allows the noise kind)."""
    check_choice(config, "noise.kind", NOISE_KINDS)
    check_number(config, "noise.rate", low=0.0, high=1.0)
    kind = config.noise.kind
    if kind == "asymmetric" and config.data.source not in ASYMMETRIC_SOURCES:
        raise ConfigError("noise.kind", f"asymmetric noise needs coarse classes or a class "
                          f"pairing, which {config.data.source} lacks",
                          f"'symmetric' or 'none' (asymmetric: {list(ASYMMETRIC_SOURCES)})")
    if kind == "symmetric" and len(tuple(config.split.seen_classes)) < 2:
        raise ConfigError("noise.kind", "symmetric noise needs at least two seen classes",
                          "'none'")
