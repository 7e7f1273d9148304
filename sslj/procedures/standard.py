"""The standard procedure: train the configured method once with the one loop.

Also `prepare`, which every procedure uses to turn a config into a built experiment:
validate the whole config for the mesh, take the method from the registry, build.
"""

from __future__ import annotations

from sslj import config as config_lib
from sslj.methods import get_method
from sslj.train import loop


def applies(config) -> bool:
    """The fallback: every config no other procedure claims."""
    del config
    return True


def prepare(config, workdir: str | None = None, devices=None) -> loop.Experiment:
    """Validates `config` (batch sizes against `devices`, default all), then builds the
    experiment around the registered method, named by the run name."""
    import jax

    mesh_size = len(devices) if devices is not None else jax.device_count()
    config_lib.validate(config, device_count=mesh_size)
    return loop.build(config, get_method(config), workdir, devices,
                      name=config_lib.run_name(config))


def run(config, workdir: str, *, pretrained_dir: str | None = None,
        stop_at: int | None = None, devices=None) -> dict:
    """Trains `config.method` into `workdir` (resuming from its checkpoints); returns the
    results, or `{"stopped_at": step}` when `stop_at` pre-empted the run."""
    if pretrained_dir is not None:
        raise ValueError(f"the standard procedure trains from scratch; pretrained_dir="
                         f"{pretrained_dir!r} is for a procedure that starts from a base run")
    return loop.train_and_evaluate(prepare(config, workdir, devices), workdir,
                                   stop_at=stop_at)
