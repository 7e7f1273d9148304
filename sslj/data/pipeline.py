"""Host input pipeline in tf.data, delivering global `jax.Array`s sharded over the mesh.

Training streams are infinite and shuffled, and their position is a pure function of
(seed, step): epoch e visits the examples in the order of a stateless permutation keyed
by (seed, e). A stream started at step s yields exactly what an uninterrupted stream
yields from its s-th batch on, so a checkpoint needs only the step to resume the data
exactly. Images stay uint8 on the host; they become floats on the device.

Small data sets (`on_device`: "auto" stages them when the run has one process and one
device and the arrays take at most `DEVICE_STAGE_BYTES`; see `stage_on_device`) are put
on the device once; the steps then move only their index vectors and gather their batches
on the device, several steps' in one call (`DeviceStream`). The indices are the same
stateless permutation, computed a whole epoch at a time (`epoch_orders`), so the batches
are bit for bit those of the tf.data stream (tested). On the 8x8 digits data the host
pipeline made the loop 1.17-1.37x slower than batches already on the device (issue 22).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterator

import jax
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


ON_DEVICE = ("auto", "yes", "no")
DEVICE_STAGE_BYTES = 512 * 2**20  # "auto": the most a split's arrays may take


@functools.cache
def _epoch_orders_graph():
    """`epoch_orders`' computation as one TensorFlow graph (traced once): eager, the
    per-epoch loop of `tf.map_fn` ran in Python, ~1.3 ms per epoch, which on a 50-image
    labeled split came to 0.85 ms per step, more than a quarter of the digits Pi step."""
    tf = _tf()

    @tf.function(input_signature=[tf.TensorSpec([], tf.int64)] * 4)
    def orders(num_examples, seed, first_epoch, count):
        def one(epoch):
            noise = tf.random.stateless_uniform(tf.reshape(num_examples, [1]),
                                                seed=tf.stack([seed, epoch]))
            return tf.argsort(noise, stable=True)

        epochs = tf.range(first_epoch, first_epoch + count, dtype=tf.int64)
        return tf.map_fn(one, epochs, fn_output_signature=tf.int32)

    return orders


def epoch_orders(num_examples: int, seed: int, first_epoch: int, count: int) -> np.ndarray:
    """The visiting orders of epochs first_epoch .. first_epoch + count - 1, (count, n),
    as `index_stream` computes them (a stable argsort of stateless uniforms keyed by
    (seed, epoch)), from one call of a TensorFlow graph (tested equal)."""
    out = _epoch_orders_graph()(*(np.int64(v) for v in (num_examples, seed, first_epoch,
                                                         count)))
    return out.numpy().astype(np.int64)


def index_batches(num_examples: int, batch_size: int, seed: int,
                  start_step: int = 0) -> Iterator[np.ndarray]:
    """The batches of `index_stream` as numpy, epochs' orders computed ~8,192 indices at
    a time."""
    chunk = max(1, -(-8192 // num_examples))
    epoch, offset = divmod(start_step * batch_size, num_examples)
    buf = epoch_orders(num_examples, seed, epoch, chunk).reshape(-1)[offset:]
    epoch += chunk
    while True:
        while len(buf) < batch_size:
            buf = np.concatenate([buf, epoch_orders(num_examples, seed, epoch,
                                                    chunk).reshape(-1)])
            epoch += chunk
        yield buf[:batch_size]
        buf = buf[batch_size:]


def stage_on_device(arrays: dict[str, np.ndarray], on_device: str, mesh) -> bool:
    """Whether `arrays` (one split's fields) go to the devices once (`on_device` "yes"),
    or stay on the host ("no"), or, "auto": a single-process run on a one-device `mesh`
    whose copy of the arrays takes at most `DEVICE_STAGE_BYTES`.

    Not on several CPU devices (`--xla_force_host_platform_device_count`): with the
    gathers interleaved between the train steps, XLA:CPU's in-process all-reduce of the
    step deadlocked (a rendezvous timeout after 40 s that aborts the process: seen once
    in the test suite, reproduced by a stress loop), so "auto" keeps the host pipeline
    there and "yes" is refused."""
    if on_device not in ON_DEVICE:
        raise ValueError(f"on_device={on_device!r}; allowed: {list(ON_DEVICE)}")
    devices = mesh.devices.size
    if on_device == "yes" and devices > 1 and jax.default_backend() == "cpu":
        raise ValueError(f"data.on_device=yes on {devices} CPU devices: XLA:CPU's in-process "
                         "collectives can deadlock with device-side gathers; use auto or no")
    if on_device != "auto":
        return on_device == "yes"
    size = sum(np.asarray(v).nbytes for v in arrays.values())
    return jax.process_count() == 1 and devices == 1 and size <= DEVICE_STAGE_BYTES


BLOCK_BYTES = 4 * 2**20  # DeviceStream: one gather prepares the steps whose batches fit
MAX_BLOCK = 32


class DeviceStream:
    """The batches of `numpy_stream`, gathered on the device from arrays staged there
    once (replicated on every device of `mesh`). `parts`: one (arrays, batch_size, seed,
    rename) per stream (labeled, unlabeled). One jitted call gathers the batches of
    `block` steps at once (default: as many as take `BLOCK_BYTES`, at most `MAX_BLOCK`),
    from one transfer of their index vectors; each is one dict of global arrays sharded
    like `prefetch_to_mesh`'s, keyed by `rename(field)`. The batches do not depend on
    `block` (tested). A gather per step: 6.4 % of the digits Pi step, a block 1.4 %
    (`experiments/benchmarks/input_share.py`).
    Single-process only (each process would need the full arrays and a global index
    vector)."""

    def __init__(self, parts, start_step: int, mesh, block: int | None = None):
        if jax.process_count() != 1:
            raise ValueError("data.on_device=yes needs a single-process run; use auto or "
                             "no with several processes")
        repl, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
        self.repl = repl
        self.data = jax.device_put([{rename(k): v for k, v in arrays.items()}
                                    for arrays, _, _, rename in parts], repl)
        self.indices = [index_batches(len(next(iter(arrays.values()))), size, seed,
                                      start_step) for arrays, size, seed, _ in parts]
        if block is None:
            step_bytes = sum(size * sum(np.asarray(v)[:1].nbytes for v in arrays.values())
                             for arrays, size, _, _ in parts)
            block = min(MAX_BLOCK, BLOCK_BYTES // max(1, step_bytes))
        self.block = max(1, int(block))
        self.ready = collections.deque()

        def gather(data, idx):  # idx: one (block, batch) array per part
            return [{k: v[i[j]] for d, i in zip(data, idx, strict=True) for k, v in d.items()}
                    for j in range(self.block)]

        self.gather = jax.jit(gather, in_shardings=(repl, repl), out_shardings=batch)

    def __iter__(self):
        return self

    def __next__(self):
        if not self.ready:
            idx = [np.stack([next(i) for _ in range(self.block)]).astype(np.int32)
                   for i in self.indices]
            self.ready.extend(self.gather(self.data, jax.device_put(idx, self.repl)))
        return self.ready.popleft()


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
    on_device: str = "no"  # "auto" | "yes" | "no": see the module docstring
    device_block: int | None = None  # steps per device gather (None: DeviceStream's default)

    def iterate(self, mesh, start_step: int = 0):
        def labeled(k):  # image, label, and any other field as labeled_<name> (index)
            return k if k in ("image", "label") else f"labeled_{k}"

        def unlabeled(k):
            # every unlabeled field as unlabeled_<name>: image, index, label (monitors
            # only) and any per-example array a method adds (NS3L's neighbour classes)
            return f"unlabeled_{k}"

        parts = [(self.labeled, self.batch_size, self.seed * 2 + 0, labeled)]
        if self.unlabeled is not None:
            parts.append((self.unlabeled, self.unlabeled_batch_size, self.seed * 2 + 1,
                          unlabeled))
        staged = [p for p in parts if stage_on_device(p[0], self.on_device, mesh)]
        streams = []
        if staged:
            streams.append(DeviceStream(staged, start_step, mesh, self.device_block))
        for arrays, size, seed, rename in parts:
            if not any(p[0] is arrays for p in staged):
                host = numpy_stream(arrays, size, seed, start_step, mesh)
                streams.append(prefetch_to_mesh(_renamed(host, rename), mesh))
        if len(streams) == 1:
            return streams[0]
        return ({k: v for b in batches for k, v in b.items()}
                for batches in zip(*streams, strict=False))


def _renamed(batches, rename):
    for b in batches:
        yield {rename(k): v for k, v in b.items()}


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
