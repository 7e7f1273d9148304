"""Orbax checkpoints of the TrainState plus JSON metadata, resumed from the newest step.

Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save leaves the previous checkpoint as the newest finished one. A finished
checkpoint damaged later (a truncated or deleted file, an emptied directory) does not
end a run either: `restore` falls back to the newest checkpoint that loads, moves each
one that does not to `<workdir>/checkpoints.bad/` (kept, not deleted) and says so in one
line; only when none loads does it raise `CheckpointError`.
"""

from __future__ import annotations

import os
import shutil
import time

import jax
import orbax.checkpoint as ocp

from sslj.common.notice import say


class CheckpointError(RuntimeError):
    """No checkpoint in the directory loads (each bad one was moved aside)."""


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 2):
        if int(max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.restored_step: int | None = None  # the step the last `restore` loaded
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 cleanup_tmp_directories=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        """Saves a device copy of `state`: the loops donate the state's buffers to the
        next train step right after this call, and orbax reads the arrays it was given
        asynchronously when transfer priorities or `device_host_max_bytes` are set, so it
        must never hold the caller's buffers (the copy is enqueued before that step)."""
        import jax.numpy as jnp

        own = jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, state)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(own), meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, state_like, step: int | None = None):
        """Restores (state, meta) with `state_like`'s shardings: at `step`, or (default)
        at the newest step that loads, moving the ones that do not aside."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
        if step is not None:
            return self._restore(step, abstract)
        for s in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self._restore(s, abstract)
            except Exception as e:  # noqa: BLE001 - any damage: fall back to an older step
                where = self._move_aside(s)
                reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
                say(f"checkpoint at step {s} does not load ({type(e).__name__}"
                    f"{': ' + reason if reason else ''}); moved to {where}, trying the "
                    "previous one")
        raise CheckpointError(f"no checkpoint in {self.directory} loads (the damaged ones "
                              "are in checkpoints.bad/); rerun with --overwrite to start "
                              "this run again")

    def _restore(self, step: int, abstract):
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        if not isinstance(out["meta"], dict):
            raise CheckpointError(f"checkpoint at step {step} has no metadata")
        self.restored_step = int(step)
        return out["state"], out["meta"]

    def _move_aside(self, step: int) -> str:
        """Moves step `step`'s directory to checkpoints.bad/ beside this directory."""
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(os.path.dirname(self.directory),
                           os.path.basename(self.directory) + ".bad",
                           f"{step}-{int(time.time())}")
        if jax.process_index() == 0 and os.path.exists(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.move(src, dst)
        self.manager.reload()
        return dst

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
