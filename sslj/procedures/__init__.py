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
reclassification), `curriculum` (Curriculum Labeling's self-paced rounds) and
`standard` (train once). The registry and the dispatch live in
`sslj.procedures.registry`, which imports no procedure, so one procedure can run
another's config (SPL pretrains its base, Curriculum Labeling included, through it).
"""

from __future__ import annotations

from sslj.procedures import curriculum, icn, spl, standard
from sslj.procedures.registry import PROCEDURES, final_model_dir, procedure_name, register, run

register("standard", standard)
register("spl", spl)
register("icn", icn)
register("curriculum", curriculum)

__all__ = ["PROCEDURES", "final_model_dir", "procedure_name", "register", "run"]
