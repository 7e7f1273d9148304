"""Procedures: the ways to run an experiment, above the one training loop.

    results = sslj.procedures.run(config, workdir)

`run` is the one place that picks the procedure from the config: the first registered
procedure whose `applies(config)` holds, `standard` last. A procedure is a module (or
object) with

    applies(config) -> bool
    run(config, workdir, *, pretrained_dir=None, stop_at=None, devices=None) -> results

built from the loop's public blocks (`sslj.train.loop`: build, init_state,
train_streams, train_and_evaluate with a stop step, check_finite, summarize;
`sslj.train.evaluate`; `sslj.train.checkpoint`). Registered: `spl` (pretrain ->
identify -> rounds of inner / outer steps), `icn` (rounds of synthesis ->
reclassification) and `standard` (train once).
"""

from __future__ import annotations

from sslj.procedures import icn, spl, standard

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


register("standard", standard)
register("spl", spl)
register("icn", icn)


def procedure_name(config) -> str:
    """The name of the procedure that runs `config`."""
    return next(name for name, proc in PROCEDURES.items() if proc.applies(config))


def run(config, workdir: str, *, pretrained_dir: str | None = None,
        stop_at: int | None = None, devices=None) -> dict:
    """Runs `config` into `workdir` with its procedure; returns the results.

    `pretrained_dir`: a finished base run to start from (SPL's shared pretraining);
    `stop_at`: pre-empt after that train step with a checkpoint (rerun to finish).
    """
    procedure = PROCEDURES[procedure_name(config)]
    return procedure.run(config, workdir, pretrained_dir=pretrained_dir, stop_at=stop_at,
                         devices=devices)


__all__ = ["PROCEDURES", "procedure_name", "register", "run"]
