"""One-line notices to the user (stderr, process 0 only): resumes, reuses, fallbacks."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """Prints `message` on stderr from JAX process 0 (every process when JAX has not
    started a distributed runtime)."""
    import jax

    if jax.process_index() == 0:
        print(f"sslj: {message}", file=sys.stderr, flush=True)


__all__ = ["say"]
