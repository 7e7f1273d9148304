"""A 1-D data mesh over all devices: batches sharded on axis 0, state replicated.

No pmap: `jax.jit` with these shardings partitions the step (GSPMD), so BatchNorm
statistics and loss means are over the global batch on 1 CPU, 8 fake CPU devices, a GPU
or a TPU pod alike. Multi-host: call `maybe_initialize_distributed()` first; each
process then feeds its own slice of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize()` when the environment describes several processes.

    Set SSLJ_DISTRIBUTED=1 (with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, or on a Cloud TPU / SLURM cluster, where JAX finds them itself).
    """
    if os.environ.get("SSLJ_DISTRIBUTED", "0") == "1":
        jax.distributed.initialize()


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(mesh: Mesh, local_batch):
    """Host numpy arrays (this process's rows) -> global jax.Arrays sharded on axis 0."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                        local_batch)


def replicate(mesh: Mesh, tree):
    return jax.device_put(tree, replicated(mesh))


def process_slice(global_batch_size: int) -> slice:
    """The rows of a global batch that this process feeds."""
    per = global_batch_size // jax.process_count()
    start = jax.process_index() * per
    return slice(start, start + per)
