"""The pseudo-negative pool S_pn^t: every pseudo-negative synthesized so far with the
class it is a negative of (S_pn^{t+1} = S_pn^t U new, Eq. 4 / Sec. 3.4).

Kept on the host as float32 images in the model's input range plus int32 classes, and
saved with each round's checkpoint (`save` / `load`, one .npz per round, written to a
temporary name and renamed, so a crash never leaves a half-written pool) so a resumed run
continues with exactly the same pool. Memory: 4 bytes per pixel, e.g. 28 x 28 x 1 x 4 =
3.1 kB per MNIST image, 31 MB per 10,000 pseudo-negatives; `cap` (0: none) keeps the
newest `cap` samples when the pool outgrows it (the paper keeps all: T x K x l, 200 per
round on MNIST). The reclassification step draws negative batches from it
(`PseudoNegativePool.stream`) with the same stateless per-epoch permutation as the real
data (`sslj.data.pipeline.index_stream`).
"""

from __future__ import annotations

import os

import numpy as np

from sslj.data import pipeline


class PseudoNegativePool:
    def __init__(self, image_shape, cap: int = 0):
        self.image_shape = tuple(image_shape)
        self.cap = int(cap)
        self.images = np.zeros((0, *self.image_shape), np.float32)
        self.classes = np.zeros((0,), np.int32)
        self.rounds = np.zeros((0,), np.int32)  # the round each sample was made in

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.classes.nbytes + self.rounds.nbytes

    def add(self, images, classes, round_: int) -> None:
        images = np.asarray(images, np.float32).reshape((-1, *self.image_shape))
        classes = np.asarray(classes, np.int32)
        self.images = np.concatenate([self.images, images])
        self.classes = np.concatenate([self.classes, classes])
        self.rounds = np.concatenate([self.rounds, np.full(len(classes), round_, np.int32)])
        if self.cap and len(self) > self.cap:
            self.images, self.classes, self.rounds = (
                a[-self.cap:] for a in (self.images, self.classes, self.rounds))

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, images=self.images, classes=self.classes, rounds=self.rounds)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, cap: int = 0) -> PseudoNegativePool:
        with np.load(path) as f:
            pool = cls(f["images"].shape[1:], cap)
            pool.images, pool.classes, pool.rounds = (
                f["images"].astype(np.float32), f["classes"].astype(np.int32),
                f["rounds"].astype(np.int32))
        return pool

    def stream(self, batch_size: int, seed: int, weight: float, start_step: int = 0,
               mesh=None):
        """Endless host batches {neg_image, neg_class, neg_weight} (this process's rows)
        over the pool in per-epoch permutations. An empty pool (round 0) yields zero
        images with weight 0, so the step's shapes never change."""
        if len(self) == 0:
            arrays = {"neg_image": np.zeros((1, *self.image_shape), np.float32),
                      "neg_class": np.zeros((1,), np.int32),
                      "neg_weight": np.zeros((1,), np.float32)}
        else:
            arrays = {"neg_image": self.images, "neg_class": self.classes,
                      "neg_weight": np.full((len(self),), weight, np.float32)}
        return pipeline.numpy_stream(arrays, batch_size, seed, start_step, mesh)
