"""A memory check before the first step: a batch that cannot fit is refused up front.

Without it, a batch far too large for the machine ends in an out-of-memory traceback
after data loading and compilation (39 s for `--config.batch_size=100000` on MNIST-5k).
The check is a *lower bound*, so it does not refuse a run that fits: half the bytes of
every module output of one training-mode forward pass (`capture_intermediates`,
abstract: `jax.eval_shape`, nothing runs) times the examples of one step. Half, because
XLA fuses BatchNorm and ReLU into the convolutions around them and keeps fewer tensors
than the modules output: measured with `compiled.memory_analysis()` (temporaries +
outputs of the jitted train step, one CPU device, batch 64 + 64), the step needs 0.92x
the full sum for supervised WRN-28-2, 0.87x for the Pi-model, 2.15x for cnn_tiny, so
1.7-4.3x the bound (tests/test_memory.py checks bound < need). Memory available: on a
CPU the host's (`MemAvailable`), shared by all its devices; on an accelerator each
device's `bytes_limit` times the process's devices.

Because it is a lower bound, a batch can pass it and still not fit (cnn_tiny's step
needs 4.3x the bound). So the training loop also checks XLA's own figure for the
compiled step (`check_compiled`: temporaries plus outputs not aliased to donated inputs,
per device, times the process's devices) before the first step runs. That compilation
is the one the first step uses (jit keeps the executable), so it costs nothing extra;
what a too-large batch then costs is its compilation, not an out-of-memory error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class MemoryEstimateError(ValueError):
    """The batch cannot fit: the message names the fields and the numbers."""


def activation_bytes_per_example(model, image_shape) -> int:
    """Bytes of all module outputs of one training-mode forward pass of one example."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}

    def forward(x):
        variables = model.init(rngs, x, train=False)
        _, state = model.apply(variables, x, train=True, capture_intermediates=True,
                               mutable=["intermediates", "batch_stats"],
                               rngs={"dropout": rngs["dropout"]})
        return state["intermediates"]

    leaves = jax.tree.leaves(jax.eval_shape(forward, x))
    return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in leaves))


def available_bytes() -> tuple[int | None, str]:
    """(bytes one step's batch may use, where the figure comes from); None if unknown."""
    device = jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        if limit:
            return int(limit) * jax.local_device_count(), f"{device.device_kind} memory"
        return None, "unknown"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "available host memory"
    except (OSError, KeyError, ValueError):
        return None, "unknown"


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_batch_fits(model, image_shape, batches: dict[str, int],
                     available: tuple[int | None, str] | None = None) -> int:
    """Raises `MemoryEstimateError` when one step's activations alone exceed the memory
    available; returns the lower bound in bytes. `batches`: the config fields that set
    the examples one step forwards on this process, with their values (this process's
    share)."""
    examples = int(sum(batches.values()))
    need = activation_bytes_per_example(model, image_shape) * examples // 2
    _refuse_above(need, f"at least {_size(need)} per step", batches, available)
    return need


def check_compiled(jitted, args: tuple, batches: dict[str, int], devices: int = 1,
                   available: tuple[int | None, str] | None = None) -> int | None:
    """Compiles `jitted` for `args` (the first step's arguments) and raises
    `MemoryEstimateError` when XLA's figure for one step, times the `devices` of this
    process it runs on, exceeds the memory available; returns that figure in bytes
    (None when the backend gives no memory analysis). Arguments already live in memory
    and are not counted; outputs aliased to donated arguments reuse theirs. `batches`
    names the fields to lower, as in `check_batch_fits`."""
    stats = jitted.lower(*args).compile().memory_analysis()
    if stats is None:
        return None
    per_device = int(stats.temp_size_in_bytes) + max(
        int(stats.output_size_in_bytes) - int(stats.alias_size_in_bytes), 0)
    need = per_device * int(devices)
    _refuse_above(need, f"{_size(need)} per step (XLA's compiled step)", batches, available)
    return need


def _refuse_above(need: int, needs: str, batches: dict[str, int],
                  available: tuple[int | None, str] | None) -> None:
    """`MemoryEstimateError` naming the batch fields when `need` bytes exceed the memory
    available (`available_bytes()` unless given); `needs` says what the figure is."""
    have, where = available if available is not None else available_bytes()
    if have is not None and need > have:
        setting = " + ".join(f"{k}={v}" for k, v in batches.items())
        raise MemoryEstimateError(
            f"{setting} needs {needs}, more than the {_size(have)} of {where}: lower "
            f"{' or '.join(batches)}" + ("" if where == "available host memory" else
                                          " (or spread the batch over more devices)"))
