"""The procedure registry and the dispatch every caller (and a procedure that runs a
base method, as SPL's pretraining) goes through.

A procedure is a module (or object) with

    applies(config) -> bool
    run(config, workdir, *, pretrained_dir=None, stop_at=None, devices=None) -> results

and optionally `final_model_dir(config, workdir) -> str`: the directory whose
`checkpoints/` hold the finished run's reported model at step `num_steps` (default: the
workdir itself; Curriculum Labeling: its best-validation round's directory).
`sslj.procedures` registers the built-in ones; this module imports none of them, so a
procedure may dispatch a base config without an import cycle.
"""

from __future__ import annotations

import json
import os

from sslj.common.notice import say
from sslj.train import workdir as workdir_lib

PROCEDURES: dict[str, object] = {}


def register(name: str, procedure, *, before: str | None = None) -> None:
    """Adds a procedure; it is tried before `before` (default: before `standard`, the
    fallback), so a specific procedure always wins over the generic one."""
    items = [(k, v) for k, v in PROCEDURES.items() if k != name]
    at = next((i for i, (k, _) in enumerate(items) if k == (before or "standard")),
              len(items))
    items.insert(at, (name, procedure))
    PROCEDURES.clear()
    PROCEDURES.update(items)


def procedure_name(config) -> str:
    """The name of the procedure that runs `config`."""
    return next(name for name, proc in PROCEDURES.items() if proc.applies(config))


def run(config, workdir: str, *, pretrained_dir: str | None = None,
        stop_at: int | None = None, devices=None, overwrite: bool = False) -> dict:
    """Runs `config` into `workdir` with its procedure; returns the results.

    The workdir belongs to one config (`sslj.train.workdir`): a finished run of the same
    settings is reloaded, not retrained ("finished run reused"); an unfinished one
    resumes; one of other settings raises `WorkdirConflict` before any compute, unless
    `overwrite` (which deletes it). The workdir is locked while the run lasts.

    `pretrained_dir`: a finished base run to start from (SPL's shared pretraining);
    `stop_at`: pre-empt after that train step with a checkpoint (rerun to finish).
    """
    procedure = PROCEDURES[procedure_name(config)]
    claim = workdir_lib.claim(config, workdir, overwrite=overwrite)
    try:
        if workdir_lib.is_finished(workdir):
            with open(os.path.join(workdir, "results.json")) as f:
                results = json.load(f)
            say(f"finished run reused: {workdir}")
            return results
        results = procedure.run(config, workdir, pretrained_dir=pretrained_dir,
                                stop_at=stop_at, devices=devices)
        if "stopped_at" not in results:
            claim.finish()
        return results
    except Exception:
        claim.abandon()
        raise
    finally:
        claim.release()


def final_model_dir(config, workdir: str) -> str:
    """Where the finished run of `config` in `workdir` keeps its reported model."""
    procedure = PROCEDURES[procedure_name(config)]
    finder = getattr(procedure, "final_model_dir", None)
    return finder(config, workdir) if finder is not None else workdir


__all__ = ["PROCEDURES", "final_model_dir", "procedure_name", "register", "run"]
