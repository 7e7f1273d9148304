"""Host input pipeline in tf.data, delivering global `jax.Array`s sharded over the mesh.

Training streams are infinite and shuffled, and their position is a pure function of
(seed, step): epoch e visits the examples in the order of a stateless permutation keyed
by (seed, e). A stream started at step s yields exactly what an uninterrupted stream
yields from its s-th batch on, so a checkpoint needs only the step to resume the data
exactly. Images stay uint8 on the host; they become floats on the device.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator

import numpy as np

from sslj.common import sharding


def _tf():
    from sslj.common.notice import native_stderr_silenced

    with native_stderr_silenced():  # TF's C++ import banners
        import tensorflow as tf

    # TensorFlow must never take the accelerator from JAX.
    tf.config.set_visible_devices([], "GPU")
    return tf


def _fixed(ds):
    """`ds` with tf.data's autotuning off. The pipelines set their own buffer sizes, and an
    autotuned iterator's destructor waits for the tuning thread's next wake-up (up to a
    minute): measured 43-92 s lost between the main job's runs."""
    tf = _tf()
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def index_stream(num_examples: int, batch_size: int, seed: int, start_step: int = 0):
    """tf.data.Dataset of global index batches (batch_size,) int64, infinite."""
    tf = _tf()
    start = start_step * batch_size
    start_epoch, offset = divmod(start, num_examples)

    def epoch_order(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        noise = tf.random.stateless_uniform([num_examples], seed=key)
        return tf.data.Dataset.from_tensor_slices(tf.argsort(noise, stable=True))

    ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_order).skip(offset)
    return ds.batch(batch_size, drop_remainder=True)


def numpy_stream(arrays: dict[str, np.ndarray], batch_size: int, seed: int,
                 start_step: int = 0, mesh=None) -> Iterator[dict[str, np.ndarray]]:
    """Infinite shuffled batches of this process's rows of `arrays` (a dict of arrays);
    `mesh`: the one the batches will be sharded over (default `sharding.make_mesh()`)."""
    tf = _tf()
    n = len(next(iter(arrays.values())))
    rows = tf.constant(sharding.process_rows(batch_size, mesh))
    tensors = {k: tf.constant(v) for k, v in arrays.items()}

    def gather(idx):
        idx = tf.gather(idx, rows)
        return {k: tf.gather(v, idx) for k, v in tensors.items()}

    ds = index_stream(n, batch_size, seed, start_step).map(gather)
    return _fixed(ds.prefetch(2)).as_numpy_iterator()


def prefetch_to_mesh(iterator, mesh, size: int = 2):
    """Keeps `size` batches in flight as sharded global arrays."""
    queue = collections.deque()
    for batch in iterator:
        queue.append(sharding.shard_batch(mesh, batch))
        if len(queue) == size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


@dataclasses.dataclass
class TrainStreams:
    """Labeled and unlabeled streams zipped into one batch dict per step."""

    labeled: dict[str, np.ndarray]
    unlabeled: dict[str, np.ndarray] | None
    batch_size: int
    unlabeled_batch_size: int
    seed: int

    def iterate(self, mesh, start_step: int = 0):
        lab = numpy_stream(self.labeled, self.batch_size, self.seed * 2 + 0, start_step, mesh)

        def labeled(b):  # image, label, and any other field as labeled_<name> (index)
            return {"image": b["image"], "label": b["label"],
                    **{f"labeled_{k}": v for k, v in b.items() if k not in ("image", "label")}}

        if self.unlabeled is None:
            host = (labeled(b) for b in lab)
        else:
            unl = numpy_stream(self.unlabeled, self.unlabeled_batch_size, self.seed * 2 + 1,
                               start_step, mesh)
            # every unlabeled field as unlabeled_<name>: image, index, label (monitors
            # only) and any per-example array a method adds (NS3L's neighbour classes)
            host = ({**labeled(a), **{f"unlabeled_{k}": v for k, v in b.items()}}
                    for a, b in zip(lab, unl, strict=False))
        return prefetch_to_mesh(host, mesh)


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, mesh):
    """Fixed-size batches covering every example once; padding rows have mask 0.

    Yields dicts with `image`, `label` and `mask` as global sharded arrays.
    """
    tf = _tf()
    n = len(labels)
    total = -(-n // batch_size) * batch_size
    pad = total - n
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    rows = sharding.process_rows(batch_size, mesh)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "mask": mask})
    for batch in _fixed(ds.batch(batch_size)).as_numpy_iterator():
        yield sharding.shard_batch(mesh, {k: v[rows] for k, v in batch.items()})
