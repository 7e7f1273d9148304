"""One-line notices to the user (stderr, process 0 only): resumes, reuses, fallbacks."""

from __future__ import annotations

import contextlib
import os
import sys


def say(message: str) -> None:
    """Prints `message` on stderr from JAX process 0 (every process when JAX has not
    started a distributed runtime)."""
    import jax

    if jax.process_index() == 0:
        print(f"sslj: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends what native code writes to file descriptor 2 to /dev/null for the block
    (TensorFlow's import prints oneDNN / CPU-feature banners from C++ that no
    environment variable of TF 2.21 turns off). Python exceptions still propagate and
    print after the block; `SSLJ_NATIVE_LOGS=1` keeps the output."""
    if os.environ.get("SSLJ_NATIVE_LOGS") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


__all__ = ["native_stderr_silenced", "say"]
