"""Ctrl-C and SIGTERM end a run cleanly: finish the step, save a checkpoint, stop.

    with StopRequests() as stop:
        for step in ...:
            state = train_step(...)
            if stop.requested:   # save a checkpoint here, then
                raise RunInterrupted(stop.signum, step, workdir)

The entry points turn `RunInterrupted` into one line saying how to resume and exit with
128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal while the
step finishes is not caught: the default action (KeyboardInterrupt / termination) ends
the process at once, and orbax's atomic saves keep the last good checkpoint intact.
Handlers are installed only from the main thread (Python's rule); elsewhere the context
is inert.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """A run stopped at a signal after saving a checkpoint at `step`."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step, self.workdir = signum, step, workdir
        self.exit_code = 128 + int(signum)
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint saved in "
                         f"{workdir}; rerun the same command to resume")


class StopRequests:
    """Records SIGINT / SIGTERM instead of raising; `requested` / `signum` tell."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def poll(self, step: int, every: int = 10) -> bool:
        """Whether to stop after `step`. One process: a signal arrived. Several: a signal
        arrived at any of them, agreed every `every` steps by one all-gather of the signal
        numbers (every process calls `poll` at every step, in lock-step), so all of them
        save the same step together and stop; a signal between agreements waits for the
        next one."""
        if jax.process_count() == 1:
            return self.requested
        if step % every:
            return False
        from jax.experimental import multihost_utils

        seen = [int(x) for x in np.ravel(multihost_utils.process_allgather(
            np.int32(self.signum or 0))) if x]
        if seen and self.signum is None:
            self.signum = seen[0]
        return bool(seen)

    def _handle(self, signum, frame):
        del frame
        self.signum = signum
        for s, h in self._previous.items():  # a second signal acts at once
            signal.signal(s, h)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}
        return False


__all__ = ["RunInterrupted", "StopRequests"]
