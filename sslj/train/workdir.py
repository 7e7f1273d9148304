"""A workdir belongs to one run: its settings' fingerprint, its finished flag, its lock.

    claim = workdir.claim(config, path, overwrite=False)  # checks, locks, records
    ...train...
    claim.finish(); claim.release()

`run.json` in the workdir records the fingerprint of the settings that change results
and whether the run finished. A rerun with the same fingerprint resumes an unfinished
run (the loop says "resuming from step N") or reloads a finished one ("finished run
reused"); a different fingerprint stops before any compute with `WorkdirConflict`, one
line naming the differing fields and offering `--overwrite` or another workdir.

The fingerprint is every config field except those that change no number a run reports
(`NEUTRAL_FIELDS`: logging, progress, TensorBoard, checkpoint interval and count, the
data directory, the comparison list), `method_overrides` (already merged into the
fields it sets) and the blocks of the procedures and add-ons the run does not turn on
(`spl`, `icn`, `ns3l` when their `enabled` is off), so SPL settings never make the base
run they pretrain with look different. Other methods' sections stay in: refusing a rerun
is recoverable, reusing a run that read a changed field would not be. A field added to
the config after a workdir was written is read there as its `ADDED_FIELDS` value, the
value that does what sslj did before the field existed, so an older workdir resumes or
is reused when the new field is left at that value; a field missing from `ADDED_FIELDS`
reads as `<unset>`, a difference (tests/test_reliability.py fails when a new config field
that changes results is not listed).
Resume is exact whatever `checkpoint_every`, and `log_every` only sets how often
metrics are written and checked for NaN, so these may change between invocations.
Everything else (seed, steps, batch sizes, learning rates, evaluation interval, ...)
may not. A workdir written before `run.json` existed is compared through its `config.json`.

The lock is an exclusive `fcntl` lock on `.sslj.lock` held for the whole run; the kernel
drops it when the process ends however it ends, so a dead process never leaves a stale
lock, and the file names the holder's pid for the refusal message. With several JAX
processes only process 0 locks and writes; every process checks the fingerprint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil

import jax

FINGERPRINT_FILE = "run.json"
LOCK_FILE = ".sslj.lock"
# fields that change no reported number (see the module docstring)
NEUTRAL_FIELDS = frozenset({
    "log_every", "progress_bar", "tensorboard", "checkpoint_every", "keep_checkpoints",
    "data.data_dir", "data.on_device", "compare",
})
# Fields added to the config since run.json existed (51fe90c), each with the value that
# does what sslj did before it existed; an older workdir is read as having that value.
# data.on_device (617b03c) is neutral, so none yet.
ADDED_FIELDS: dict[str, object] = {}


class WorkdirConflict(RuntimeError):
    """The workdir holds a run of other settings, or another process is running in it."""


def flatten(tree, prefix: str = "") -> dict:
    """{dotted field: value} of a nested dict (an empty dict is a value)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# blocks read only when their `enabled` field is on
_SWITCHED_BLOCKS = ("spl", "icn", "ns3l")


def _relevant(tree: dict) -> dict:
    flat = flatten(tree)
    dropped = set(NEUTRAL_FIELDS) | {"method_overrides"}
    dropped |= {b for b in _SWITCHED_BLOCKS if flat.get(f"{b}.enabled") is False}
    switches = {f"{b}.enabled" for b in _SWITCHED_BLOCKS}
    return {k: v for k, v in sorted(flat.items())
            if k in switches or (k not in dropped
                                 and not any(k.startswith(n + ".") for n in dropped))}


def fingerprint(config) -> dict:
    """{dotted field: JSON value} of every field of `config` that changes results."""
    return _relevant(json.loads(config.to_json_best_effort()))  # tuples -> lists, as stored


def stored_fingerprint(path: str) -> dict | None:
    """The fingerprint a workdir was started with (`run.json`, else `config.json`), or
    None for a workdir no run has written to."""
    run_json = os.path.join(path, FINGERPRINT_FILE)
    if os.path.isfile(run_json):
        with open(run_json) as f:
            return _with_added_fields(json.load(f)["fingerprint"])
    config_json = os.path.join(path, "config.json")
    if os.path.isfile(config_json) and _written_by_sslj(path):
        with open(config_json) as f:
            tree = json.load(f)
        if isinstance(tree, dict):
            return _with_added_fields(tree)
    return None


def _with_added_fields(tree: dict) -> dict:
    """The stored settings with every `ADDED_FIELDS` field they lack at its old value."""
    flat = flatten(tree)
    for key, value in ADDED_FIELDS.items():
        flat.setdefault(key, value)
    return _relevant(flat)


def _written_by_sslj(path: str) -> bool:
    """A workdir sslj wrote: its run.json, or config.json beside splits / checkpoints."""
    return os.path.isfile(os.path.join(path, FINGERPRINT_FILE)) or (
        os.path.isfile(os.path.join(path, "config.json"))
        and (os.path.isfile(os.path.join(path, "splits.json"))
             or os.path.isdir(os.path.join(path, "checkpoints"))))


def is_finished(path: str) -> bool:
    """Whether the run in `path` finished (`run.json` says so and results.json exists)."""
    run_json = os.path.join(path, FINGERPRINT_FILE)
    results = os.path.join(path, "results.json")
    if not os.path.isfile(run_json) or not os.path.isfile(results):
        return False
    with open(run_json) as f:
        if not json.load(f).get("finished", False):
            return False
    with open(results) as f:  # a comparison's list of runs is not this run's results
        return isinstance(json.load(f), dict)


def differences(old: dict, new: dict) -> list[str]:
    """'field: old -> new' for every field that differs (missing: '<unset>', a field the
    stored run does not know: see `ADDED_FIELDS`)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def check_path(path: str) -> None:
    """Raises `WorkdirConflict` if `path` is a file or cannot be created / written."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirConflict(f"workdir {path} is a file; choose a directory (--workdir)")
    parent = path
    while not os.path.exists(parent):  # the nearest existing ancestor must be writable
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.access(parent, os.W_OK):
        raise WorkdirConflict(f"workdir {path} is not writable; choose another (--workdir)")


def check(config, path: str, *, overwrite: bool = False) -> None:
    """Raises `WorkdirConflict` if `path` holds a run of other settings (unless
    `overwrite`) or is not a usable directory (`check_path`). Writes nothing."""
    check_path(path)
    if overwrite:
        return
    old = stored_fingerprint(path)
    if old is None:
        return
    diff = differences(old, fingerprint(config))
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise WorkdirConflict(
            f"workdir {path} holds a run with other settings ({shown}); rerun with "
            "--overwrite to replace it, or choose another --workdir")


def remove_run(path: str) -> None:
    """Deletes the run in `path` (for `--overwrite`): only a directory sslj wrote."""
    if not _written_by_sslj(path):
        raise WorkdirConflict(f"--overwrite: {path} does not look like an sslj workdir "
                              "(no run.json, or config.json beside splits.json or "
                              "checkpoints/); remove it yourself")
    shutil.rmtree(path)


class Claim:
    """A locked workdir (process 0) with its fingerprint recorded."""

    def __init__(self, path: str, lock_file, created: tuple[str, ...] = (),
                 before: tuple[str, ...] = ()):
        self.path = path
        self._lock_file = lock_file
        self._created = created  # what the claim itself made: directory and / or run.json
        self._before = before  # the directory's entries when it was claimed

    def finish(self) -> None:
        """Marks the run finished (after its results.json is written)."""
        if jax.process_index() == 0:
            _update(self.path, finished=True)

    def abandon(self) -> None:
        """After a failed run: when this run started fresh here (it recorded the
        fingerprint) and saved no checkpoint, everything it wrote is removed, so a failed
        start (missing data, a batch that ran out of memory, a NaN at step 1) leaves no
        trace and a rerun with other settings needs no `--overwrite`. A run that saved a
        checkpoint keeps it all (rerun to resume)."""
        if self._lock_file is None or "run.json" not in self._created:
            return
        if _has_checkpoint(self.path):
            return
        if "dir" in self._created:
            self.release()
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in set(os.listdir(self.path)) - set(self._before) - {LOCK_FILE}:
            target = os.path.join(self.path, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(target)
        if LOCK_FILE not in self._before:
            self.release()
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.path, LOCK_FILE))

    def release(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _update(path: str, **fields) -> None:
    file = os.path.join(path, FINGERPRINT_FILE)
    with open(file) as f:
        data = json.load(f)
    data.update(fields)
    tmp = file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, file)


def lock(path: str):
    """An open file holding the exclusive lock on `path`, or `WorkdirConflict` naming the
    process that holds it."""
    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, LOCK_FILE), "a+")  # noqa: SIM115 - kept open while locked
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise WorkdirConflict(f"workdir {path} is in use by another run (pid {holder}); "
                              "wait for it to end or choose another --workdir") from None
    except OSError as e:  # a file system without flock (Lustre without -o flock, ...)
        from sslj.common.notice import say

        say(f"workdir {path} cannot be locked on this file system ({e.strerror}); "
            "running unlocked: start one run per workdir")
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def claim(config, path: str, *, overwrite: bool = False) -> Claim:
    """Checks `path` against `config` (`check`), takes its lock and records the
    fingerprint (process 0). With `overwrite`, a previous run of other settings is
    deleted first."""
    check(config, path, overwrite=overwrite)
    if jax.process_index() != 0:
        return Claim(path, None)
    created = () if os.path.isdir(path) else ("dir",)
    before = tuple(os.listdir(path)) if not created else ()
    handle = lock(path)
    try:
        new = fingerprint(config)
        old = stored_fingerprint(path)
        if overwrite and old is not None and differences(old, new):
            handle.close()
            remove_run(path)
            handle = lock(path)
            old = None
            created, before = ("dir",), ()  # all of it is this run's now
        if not os.path.isfile(os.path.join(path, FINGERPRINT_FILE)):
            file = os.path.join(path, FINGERPRINT_FILE)
            with open(file + ".tmp", "w") as f:  # atomic: a kill never leaves half a file
                json.dump({"fingerprint": new, "finished": False}, f, indent=2)
            os.replace(file + ".tmp", file)
            created += ("run.json",)
    except BaseException:
        handle.close()
        raise
    return Claim(path, handle, created, before)


def _has_checkpoint(path: str) -> bool:
    """Whether any `checkpoints/<step>` directory exists at or below `path`."""
    for root, dirs, _ in os.walk(path):
        if os.path.basename(root) == "checkpoints" and any(d.isdigit() for d in dirs):
            return True
    return False


__all__ = ["ADDED_FIELDS", "Claim", "FINGERPRINT_FILE", "LOCK_FILE", "NEUTRAL_FIELDS",
           "WorkdirConflict", "check", "check_path", "claim", "differences", "fingerprint",
           "flatten", "is_finished", "lock", "remove_run", "stored_fingerprint"]
