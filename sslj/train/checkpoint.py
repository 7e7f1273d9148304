"""Orbax checkpoints of the TrainState plus JSON metadata, resumed from the newest step.

Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save leaves the previous checkpoint as the newest finished one. A finished
checkpoint damaged later (a truncated or deleted file, an emptied directory) does not
end a run either: `restore` falls back to the newest checkpoint that loads, moves each
newer one that does not to `<workdir>/checkpoints.bad/` (kept, not deleted) and says so
in one line. When none loads (another state structure, no memory: a cause common to all
is likelier than damage to each) nothing is moved and `CheckpointError` names the first
error.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

import jax
import orbax.checkpoint as ocp

from sslj.common.notice import say


def quiet_abandoned_io(unraisable) -> None:
    """`sys.unraisablehook` that drops two harmless reports and passes on the rest.

    When orbax's restore of a damaged checkpoint fails (the failure itself reaches
    `restore`, which moves the checkpoint aside and says so in one line), the reads it
    abandoned still end later, each reported by Python as an unraisable exception: 1,800
    lines on stderr (seen by experiments/reliability.py) for a run that then resumes
    correctly from the previous checkpoint. Dropped, and only these:
    - TensorStore callbacks into the event loop orbax has closed:
      `RuntimeError('Event loop is closed')` raised in asyncio's `_check_closed`;
    - orbax's per-array read coroutines that were never awaited after the first one
      failed: the exception orbax raises in `_read_array_index_and_device_put`
      ("Encountered error while reading array index")."""
    exc, tb = unraisable.exc_value, unraisable.exc_traceback
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    where = (last.tb_frame.f_code.co_name, os.path.basename(last.tb_frame.f_code.co_filename)
             ) if last is not None else None
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed" and \
            where == ("_check_closed", "base_events.py"):
        return
    if (where is not None and where[0] == "_read_array_index_and_device_put"
            and "orbax" in last.tb_frame.f_code.co_filename
            and str(exc).startswith("Encountered error while reading array index")):
        return
    _PREVIOUS_UNRAISABLE_HOOK(unraisable)


# orbax's read coroutines whose failures a failed restore abandons
_ORBAX_READS = ("async_deserialize", "_read_array_index_and_device_put")


class AbandonedReadFilter(logging.Filter):
    """Drops asyncio's "<Task | _GatheringFuture | ...> exception was never retrieved"
    log record for an orbax read of a failed restore (the third report of the same
    abandoned reads; see `quiet_abandoned_io`; the `asyncio.gather` future that collects
    the reads is reported as well as each task: seen in CI's reliability run on 5498c37,
    four chained tracebacks after a correct resume): its exception says "Encountered
    error while reading array index", or was raised in one of orbax's read coroutines
    (`async_deserialize` when a missing manifest fails every array's open: seen once in
    experiments/reliability.py's full mode, a 10-line traceback after the one-line notice
    and a correct resume, when the garbage collector reached the abandoned tasks before
    the process ended). Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        first = str(record.msg).split("\n", 1)[0]
        if exc is None or not first.endswith(" exception was never retrieved"):
            return True
        if str(exc).startswith("Encountered error while reading array index"):
            return False
        tb = (record.exc_info[2] if record.exc_info[2] is not None else exc.__traceback__)
        while tb is not None:
            code = tb.tb_frame.f_code
            if "orbax" in code.co_filename and code.co_name in _ORBAX_READS:
                return False
            tb = tb.tb_next
        return True


_PREVIOUS_UNRAISABLE_HOOK = sys.unraisablehook
sys.unraisablehook = quiet_abandoned_io
logging.getLogger("asyncio").addFilter(AbandonedReadFilter())


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
        failed: list[tuple[int, Exception]] = []
        for s in sorted(self.manager.all_steps(), reverse=True):
            try:
                out = self._restore(s, abstract)
            except Exception as e:  # noqa: BLE001 - decided below, once an older one loads
                failed.append((s, e))
                continue
            # an older checkpoint loads, so the newer ones are damaged: keep them aside
            for bad, e in failed:
                where = self._move_aside(bad)
                reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
                say(f"checkpoint at step {bad} does not load ({type(e).__name__}"
                    f"{': ' + reason if reason else ''}); moved to {where}, resuming from "
                    f"step {s}")
            if failed:
                self.manager.reload()
            return out
        if not failed:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        # none loads: the same cause for all (another state structure, memory) is likelier
        # than damage to every one, so nothing is moved
        step0, e0 = failed[0]
        first = str(e0).strip().splitlines()[0][:200] if str(e0).strip() else ""
        raise CheckpointError(f"no checkpoint in {self.directory} loads (step {step0}: "
                              f"{type(e0).__name__}{': ' + first if first else ''}); nothing "
                              "was moved; move the directory away to start this run again")

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
        return dst

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
