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


_INITIALIZED = False


class DistributedSetupError(ValueError):
    """SSLJ_DISTRIBUTED=1 with an environment that does not describe the processes."""


def _has_accelerator_plugin() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None
               for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu"))


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize()` when the environment describes several processes.

    Set SSLJ_DISTRIBUTED=1 (with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, or on a Cloud TPU / SLURM cluster, where JAX finds them itself).
    """
    if os.environ.get("SSLJ_DISTRIBUTED", "0") != "1" or _INITIALIZED:
        return
    platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    if platforms in ("", "cpu") and not _has_accelerator_plugin():
        # XLA:CPU has no cross-process collectives unless one is chosen
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    for arg, var, kind in (("coordinator_address", "JAX_COORDINATOR_ADDRESS", str),
                           ("num_processes", "JAX_NUM_PROCESSES", int),
                           ("process_id", "JAX_PROCESS_ID", int)):
        value = os.environ.get(var, "")
        if value:
            try:
                kwargs[arg] = kind(value)
            except ValueError:
                raise DistributedSetupError(f"{var}={value!r} is not an integer") from None
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # no cluster JAX detects and some of the three unset
        raise DistributedSetupError(
            f"SSLJ_DISTRIBUTED=1 but {e} Set JAX_COORDINATOR_ADDRESS (host:port of process "
            "0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process, or run where JAX "
            "finds them itself (Cloud TPU, SLURM)") from None
    globals()["_INITIALIZED"] = True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(mesh: Mesh, local_batch):
    """Host numpy arrays (this process's rows, `process_rows(mesh, n)` of a global batch
    of n, in that order) -> global jax.Arrays sharded on axis 0."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                            local_batch)
    return jax.tree.map(lambda x: global_from_process_rows(sharding, x), local_batch)


def global_from_process_rows(sharding: NamedSharding, x: np.ndarray):
    """One global array from this process's rows, placed device by device from the
    sharding's own index map (no assumption that a process's devices are contiguous)."""
    devices = list(sharding.addressable_devices)
    n = x.shape[0] * sharding.mesh.size // len(devices)
    rows = _rows_of(sharding, n, devices)
    position = {int(r): i for i, r in enumerate(rows)}
    index_map = sharding.addressable_devices_indices_map((n, *x.shape[1:]))
    shards = []
    for d in devices:
        start, stop, _ = index_map[d][0].indices(n)
        shards.append(jax.device_put(x[position[start]:position[start] + stop - start], d))
    return jax.make_array_from_single_device_arrays((n, *x.shape[1:]), sharding, shards)


def _rows_of(sharding: NamedSharding, n: int, devices) -> np.ndarray:
    """The rows of an n-row batch sharded on axis 0 that `devices` hold, ascending, each
    once (replicas of a row on several of them count once)."""
    index_map = sharding.devices_indices_map((n,))
    spans = sorted({index_map[d][0].indices(n)[:2] for d in devices})
    return np.concatenate([np.arange(a, b) for a, b in spans]) if spans else \
        np.zeros((0,), np.int64)


def process_rows(global_batch_size: int, mesh: Mesh | None = None,
                 devices: Sequence[jax.Device] | None = None) -> np.ndarray:
    """The rows of a global batch that this process feeds (or that `devices` hold),
    ascending: read from the batch sharding's device-to-index map, so it is right for any
    device order in the mesh (on TPU pods `jax.devices()` need not be process-contiguous).
    `mesh`: the mesh the batch is sharded over (default `make_mesh()`)."""
    if devices is None and jax.process_count() == 1:
        return np.arange(global_batch_size)
    sharding = batch_sharding(mesh if mesh is not None else make_mesh())
    if devices is None:
        devices = sharding.addressable_devices
    return _rows_of(sharding, global_batch_size, devices)


def replicate(mesh: Mesh, tree):
    return jax.device_put(tree, replicated(mesh))


def fetch(tree):
    """Host numpy copies of `tree`'s arrays, whole on every process.

    One process: `jax.device_get`. Several: an array sharded over devices of other
    processes cannot be read locally, so those are gathered with
    `multihost_utils.process_allgather` (a collective: every process must call `fetch`
    at the same point); replicated arrays are read from a local copy."""
    if jax.process_count() == 1:
        return jax.device_get(tree)  # one batched transfer
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return jax.device_get(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)

