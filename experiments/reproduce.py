"""Run every row of a paper table over seeds; write a Markdown table and a plot.

    python experiments/reproduce.py --table oliver_mismatch --scale embedded --seeds 3
    python experiments/reproduce.py --table oliver_mismatch --scale full --seeds 5 \\
        --set data.data_dir=/data/tfds
    python experiments/reproduce.py --table proselflc_table4 --scale embedded --columns sym0.4

`embedded` runs on MNIST-5k on a CPU; `full` uses the paper's data set through TFDS.
Runs go to <workdir>/<row>/<sweep value>/seed<k>; a finished run of the same settings is
reused, an interrupted one resumes from its checkpoints, and one of other settings (an
earlier `--set num_steps=...`, say) stops the table before any run starts, naming the
fields (`--overwrite` replaces it). `--set` may not change a field the table's columns
or rows set. `proselflc_table4`
also plots every row's learning dynamics at one noise setting (the paper's Fig. 3); SPL
tables share one pretraining between a base row and its +SPL rows (same column and
seed), and Fig. 3's table also plots the per-layer safe ratios (Fig. 4).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import common  # noqa: E402  (XLA flags before JAX starts)
from experiments.tables import TABLES  # noqa: E402

# the config-setting helpers are shared with run.py's --config.<field> (experiments/common)
_set = common.set_field
parse_set = common.parse_assignment


def run_config(base, run_name: str, fields: dict, explicit=()):
    """The config of one run: `fields` (a column's and a row's) set on top of
    `for_method(base, run_name)`, except `method_overrides.*` fields, which are set on the
    base first so that `for_method` merges them like the config's own."""
    import copy

    from sslj import config as config_lib

    overrides = {f: v for f, v in fields.items() if f.startswith("method_overrides.")}
    if overrides:
        base = copy.deepcopy(base)
        for field, value in overrides.items():
            _set(base, field, value)
    cfg = config_lib.for_method(base, run_name, explicit)
    for field, value in fields.items():
        if field not in overrides:
            _set(cfg, field, value)
    return cfg


def run_table(name: str, scale: str, seeds: int, workdir: str, sets=(),
              columns=None, rows=None, seed_offset: int = 0, overwrite: bool = False,
              dry_run: bool = False) -> str:
    """Runs (or reuses) every run of table `name` for the seeds seed_offset ...
    seed_offset + seeds - 1; `columns` / `rows` restrict it to some sweep values (as
    printed in the table header) / rows.

    Each run's workdir follows `sslj.train.workdir`: a finished run of the same settings
    is reused, an unfinished one resumes, one of other settings stops the table before
    any run starts unless `overwrite` (which replaces it). `dry_run`: only the checks,
    then the list of runs (nothing written, no data loaded)."""
    import dataclasses

    from sslj import config as config_lib
    from sslj.train import workdir as workdir_lib

    if int(seeds) < 1 or int(seed_offset) < 0:
        raise SystemExit(f"error: --seeds must be >= 1 and --seed-offset >= 0 (got "
                         f"{seeds}, {seed_offset})")

    table = TABLES[name]
    if scale not in table.configs:
        raise SystemExit(f"error: table {name} has no {scale} scale; allowed: "
                         f"{sorted(table.configs)}")
    twins = table.scale_sweep_overrides.get(scale)
    if twins is not None:  # only the columns with a twin at this scale exist there
        missing = [str(v) for v in table.sweep_values if v not in twins]
        asked = [c for c in columns or () if c in missing]
        if asked:
            raise SystemExit(f"error: column(s) {asked} of {name} have no {scale} twin; "
                             f"allowed: {[str(v) for v in table.sweep_values if v in twins]}")
        table = dataclasses.replace(
            table, sweep_values=tuple(v for v in table.sweep_values if v in twins))
    if columns:
        names = {_column_name(table, v): v for v in table.sweep_values}
        unknown = [c for c in columns if c not in names and c not in map(str, names.values())]
        if unknown:
            raise SystemExit(f"error: unknown column(s) {unknown} of {name}; "
                             f"allowed: {list(names)}")
        keep = [v for v in table.sweep_values
                if _column_name(table, v) in columns or str(v) in columns]
        table = dataclasses.replace(table, sweep_values=tuple(keep))
    if rows:
        unknown = [r for r in rows if r not in table.methods]
        if unknown:
            raise SystemExit(f"error: unknown row(s) {unknown} of {name}; "
                             f"allowed: {list(table.methods)}")
        table = dataclasses.replace(table, methods=tuple(r for r in table.methods if r in rows))
    module, _, arg = table.configs[scale].partition(":")  # "icn:mnist" -> get_config("mnist")
    base = importlib.import_module(f"experiments.configs.{module}").get_config(
        *([arg] if arg else []))
    for field, value in table.overrides.get(scale, {}).items():
        _set(base, field, value)
    parsed = [parse_set(item) for item in sets]
    varied = {table.sweep_field, "seed", "method", "compare"}  # --seeds / --rows set these
    for value in table.sweep_values:
        varied |= set(table.column(value, scale))
    for row in table.methods:
        varied |= set(table.row(row)[1])
    for field, _ in parsed:
        if field in varied:
            raise SystemExit(f"error: --set {field}: table {name} sets this field itself "
                             "(its columns, rows or seeds); choose them with --columns / "
                             "--rows / --seeds / --seed-offset instead")
    for field, value in parsed:
        _set(base, field, value, strict=True)
    if "progress_bar" not in {f for f, _ in parsed}:  # each run's bar on a terminal only
        base.progress_bar = sys.stderr.isatty()

    runs = []
    for row in table.methods:
        run_name, row_overrides = table.row(row)
        for value in table.sweep_values:
            for seed in range(seed_offset, seed_offset + seeds):
                if (row, value) in table.skip:
                    continue
                cfg = run_config(base, run_name, {**table.column(value, scale),
                                                  **row_overrides},
                                 explicit={f for f, _ in parsed})
                cfg.seed = seed
                config_lib.validate(cfg)  # all rows are checked before the first one runs
                runs.append((row, value, seed, cfg))
    # SPL runs pretrain with their base run: base rows run first, and every SPL run
    # whose pretraining another run of the table already did reuses it
    runs.sort(key=lambda r: bool(r[3].spl.enabled))
    for row, value, seed, cfg in runs:  # every workdir is checked before the first run
        workdir_lib.check(cfg, os.path.join(workdir, row, str(value), f"seed{seed}"),
                          overwrite=overwrite)
    if dry_run:
        return "\n".join(f"would run {row} {_column_name(table, value)} seed={seed} "
                         f"({cfg.num_steps} steps on {cfg.data.source})"
                         for row, value, seed, cfg in runs)
    os.makedirs(workdir, exist_ok=True)
    shared = common.Pretrainings()
    results, full, where = {}, {}, {}
    for i, (row, value, seed, cfg) in enumerate(runs):
        out = os.path.join(workdir, row, str(value), f"seed{seed}")
        path = os.path.join(out, "results.json")
        done = shared.lookup(cfg)
        if not cfg.spl.enabled and done:  # the same base run again (Fig. 3's p sweep)
            path = os.path.join(done, "results.json")
        label = f"[{i + 1}/{len(runs)}] {row} {_column_name(table, value)} seed={seed}"
        # its settings were checked above; a shared base run (`done`) is this table's own
        if os.path.exists(path) and (not overwrite or (done and not cfg.spl.enabled)):
            with open(path) as f:
                r = json.load(f)
            print(f"{label}: finished run reused", flush=True)
        else:
            print(label, flush=True)
            r = common.train(row, cfg, out, pretrained_dir=done, overwrite=overwrite)
        shared.record(cfg, out)
        results.setdefault((row, value), []).append(r[table.metric])
        full.setdefault((row, value), []).append(r)
        where[(row, value, seed)] = (cfg, os.path.dirname(path))
    md = markdown(table, results, scale, list(range(seed_offset, seed_offset + seeds)))
    if table.fgsm_pair is not None and set(table.fgsm_pair) <= set(table.methods):
        md += fgsm_markdown(table, where, range(seed_offset, seed_offset + seeds), full)
    with open(os.path.join(workdir, f"{name}_{scale}.md"), "w") as f:
        f.write(md)
    data = f"{base.data.source}, {base.model}"
    plot(table, results, os.path.join(workdir, f"{name}_{scale}.png"),
         title=(table.title.split(":")[0] if scale == "full"
                else f"{name}: embedded twin ({data})"))
    if table.layer_ratios_at is not None:  # Fig. 4 from the first SPL row's run there
        from sslj.spl.plots import plot_layer_ratios

        at = (table.layer_ratios_at if table.layer_ratios_at in table.sweep_values
              else table.sweep_values[0])
        spl_rows = [m for m in table.methods if "spl" in full[(m, at)][0]]
        if spl_rows:
            plot_layer_ratios(full[(spl_rows[0], at)][0],
                              os.path.join(workdir, f"{name}_{scale}_layer_ratios.png"))
    if table.dynamics_at is not None:
        from sslj.train.dynamics import plot_dynamics

        # the paper's setting when it was run, else the first column that was
        at = (table.dynamics_at if table.dynamics_at in table.sweep_values
              else table.sweep_values[0])
        histories = {row: full[(row, at)][0].get("history", []) for row in table.methods}
        plot_dynamics(histories, os.path.join(workdir, f"{name}_{scale}_dynamics.png"),
                      title=f"{name}, scale {scale}: {_column_name(table, at)}, seed 0")
    if table.unseen_share:
        plot_unseen_share(table, where, full, seed_offset,
                          os.path.join(workdir, f"{name}_{scale}_unseen_share.png"),
                          f"{name}, scale {scale}, seed {seed_offset}")
    return md


def plot_unseen_share(table, where, full, seed, path, title) -> None:
    """Every base row's unseen-class share of its selection over training (x: the
    fraction of its training), one panel line per row and column, seed `seed`: the
    step-wise monitor (`sslj.train.selection`), Curriculum Labeling's per-round kept set.
    +spl / +finetune rows share their base's pretraining and are left out."""
    from sslj.train import selection

    curves = {}
    for row in table.methods:
        if "+" in row:
            continue
        for value in table.sweep_values:
            if (row, value, seed) not in where:
                continue
            cfg, run_dir = where[(row, value, seed)]
            label = f"{row} ({_column_name(table, value)})"
            result = full[(row, value)][0]
            if "curriculum" in result:
                rounds = [r for r in result["curriculum"]["rounds"] if "unseen_fraction" in r]
                last = max(len(result["curriculum"]["rounds"]) - 1, 1)
                curves[label] = ([r["round"] / last for r in rounds],
                                 [r["unseen_fraction"] for r in rounds])
                continue
            steps, shares = selection.series(os.path.join(run_dir, "metrics.jsonl"))
            total = max(int(cfg.num_steps), 1)
            curves[label] = ([s / total for s in steps], shares)
    selection.plot(curves, path, title, xlabel="fraction of training")


def fgsm_markdown(table, where, seeds, full) -> str:
    """The ICN paper's two-way FGSM comparison (Sec. 4.1) between the rows of
    `table.fgsm_pair` (baseline a, ICN b), per column and seed: a's adversarials (made from
    the test images a classifies correctly) that fool a, how many of those also fool b,
    and the reverse (`sslj.procedures.icn.cross_fgsm`)."""
    import numpy as np

    from sslj.procedures.icn import cross_fgsm

    a, b = table.fgsm_pair
    eps = full[(a, table.sweep_values[0])][0].get("fgsm", {}).get("eps")
    lines = ["", f"FGSM (eps {eps} on the [0, 1] scale), final models, per seed and "
             f"mean: adversarials of {a} that fool {a} -> of them also fooling {b}; "
             f"adversarials of {b} that fool {b} -> of them also fooling {a}:", "",
             f"| column | {a} fooled -> also {b} | {b} fooled -> also {a} | "
             f"{b} fooled by {a}'s, reduction |", "|---|---|---|---|"]
    for value in table.sweep_values:
        per_seed = []
        for seed in seeds:
            (ca, da), (cb, db) = where[(a, value, seed)], where[(b, value, seed)]
            path = os.path.join(db, "fgsm_cross.json")
            if os.path.exists(path):
                with open(path) as f:
                    x = json.load(f)
            else:
                x = cross_fgsm(ca, da, cb, db)
                with open(path, "w") as f:
                    json.dump(x, f, indent=2)
            per_seed.append(x)
        ab = [f"{x['a_fooled_a']} -> {x['a_fooled_a_and_b']}" for x in per_seed]
        ba = [f"{x['b_fooled_b']} -> {x['b_fooled_b_and_a']}" for x in per_seed]
        red = [1 - x["a_fooled_a_and_b"] / max(x["a_fooled_a"], 1) for x in per_seed]
        spread = 100 * np.std(red, ddof=1) if len(red) > 1 else 0.0
        lines.append(f"| {_column_name(table, value)} | {' / '.join(ab)} | {' / '.join(ba)} "
                     f"| {100 * np.mean(red):.1f} % +- {spread:.1f} |")
    return "\n".join(lines) + "\n"


def _column_name(table, value) -> str:
    return str(value) if table.sweep_overrides else f"{table.sweep_field}={value}"


def _percent(table, accuracies):
    import numpy as np

    acc = 100 * np.asarray(accuracies, np.float64)
    return 100 - acc if table.report == "error" else acc


def markdown(table, results, scale, seeds) -> str:
    """The table (mean +- sample std over `seeds`, the list of seeds run), the paper's
    numbers where it gives them, then every seed's own number."""
    one_column_paper = bool(table.paper) and not any(
        isinstance(v, dict) for v in table.paper.values())
    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1 else
                 f"mean +- std (ddof 1) over seeds {seeds[0]}-{seeds[-1]}")
    head = [f"{table.title}; scale {scale}, {seed_text}", "",
            "| row | " + " | ".join(_column_name(table, v) for v in table.sweep_values)
            + (" | paper (full scale)" if one_column_paper else "") + " |",
            "|---" * (len(table.sweep_values) + 1 + one_column_paper) + "|"]
    for m in table.methods:
        cells = []
        for v in table.sweep_values:
            if (m, v) not in results:  # a cell the table skips (e.g. LS with one-vs-all)
                cells.append("-")
                continue
            x = _percent(table, results[(m, v)])
            cell = f"{x.mean():.2f}" + (f" +- {x.std(ddof=1):.2f}" if len(x) > 1 else "")
            paper = table.paper.get(m)
            if isinstance(paper, dict) and v in paper:
                cell += f" ({paper[v]:.1f})"
            cells.append(cell)
        if one_column_paper:
            cells.append(f"{table.paper[m]:.2f}" if m in table.paper else "-")
        head.append(f"| {m} | " + " | ".join(cells) + " |")
    if table.reported:
        head += ["", table.reported]
    if len(seeds) > 1:
        head += ["", f"Per seed ({' / '.join(map(str, seeds))}):", "",
                 "| row | " + " | ".join(_column_name(table, v) for v in table.sweep_values)
                 + " |", "|---" * (len(table.sweep_values) + 1) + "|"]
        for m in table.methods:
            head.append(f"| {m} | " + " | ".join(
                " / ".join(f"{x:.2f}" for x in _percent(table, results[(m, v)]))
                if (m, v) in results else "-" for v in table.sweep_values) + " |")
    return "\n".join(head) + "\n"


def plot(table, results, path, title: str | None = None) -> None:
    """Mean +- std per row over the sweep values (a line per row), or, for a table of one
    column, a bar per row. `title` defaults to the table's (the paper's data set): the
    embedded scale passes its own data set and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ylabel = (f"{'seen-class test error' if table.report == 'error' else 'test accuracy'}"
              " (%)")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if len(table.sweep_values) == 1:
        v = table.sweep_values[0]
        rows = [m for m in table.methods if (m, v) in results]
        vals = [_percent(table, results[(m, v)]) for m in rows]
        ax.bar(range(len(rows)), [e.mean() for e in vals], yerr=[e.std() for e in vals],
               capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(rows, rotation=45, ha="right", fontsize=7)
        ax.set_xlabel(f"{table.sweep_field} = {_column_name(table, v)}")
    else:
        xs = [_column_name(table, v) if table.sweep_overrides else v
              for v in table.sweep_values]
        for m in table.methods:
            cells = [(x, _percent(table, results[(m, v)]))
                     for x, v in zip(xs, table.sweep_values, strict=True) if (m, v) in results]
            ax.errorbar([x for x, _ in cells], [e.mean() for _, e in cells],
                        yerr=[e.std() for _, e in cells], marker="o", capsize=3, label=m)
        ax.set_xlabel(table.sweep_field)
        ax.legend(fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title or table.title.split(":")[0], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, choices=sorted(TABLES))
    parser.add_argument("--scale", default="embedded", choices=["embedded", "full"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="run seeds OFFSET ... OFFSET + SEEDS - 1 (default 0)")
    parser.add_argument("--isa", default="", choices=["", "AVX512", "AVX2", "SSE4_2"],
                        help="append --xla_cpu_max_isa=ISA to the XLA flags: the same "
                        "runs, numerically equivalent, compiled for another instruction "
                        "set (their spread shows what rounding alone changes)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override applied to every row, e.g. num_steps=600")
    parser.add_argument("--columns", default="", help="comma-separated sweep values to run "
                        "(as in the table header, e.g. sym0.4); default: all")
    parser.add_argument("--rows", default="", help="comma-separated rows; default: all")
    parser.add_argument("--dry_run", action="store_true",
                        help="check every run's config and workdir, print the runs and exit "
                        "(nothing written, no data loaded)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace runs of other settings found in the workdir (deleted); "
                        "without it such a run stops the table before any compute")
    args = parser.parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if args.isa:  # before JAX starts: it reads XLA_FLAGS when its backend initialises
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_cpu_max_isa={args.isa}").strip()
    workdir = args.workdir or os.path.join(
        "runs", f"{args.table}_{args.scale}" + (f"_{args.isa.lower()}" if args.isa else ""))
    # the workdir is created by run_table once every run's config has passed its checks
    columns, rows = ([x for x in arg.split(",") if x] for arg in (args.columns, args.rows))
    from sslj.train.interrupt import RunInterrupted

    try:
        print(run_table(args.table, args.scale, args.seeds, workdir, args.set, columns, rows,
                        seed_offset=args.seed_offset, overwrite=args.overwrite,
                        dry_run=args.dry_run))
    except (*common.user_errors(), RunInterrupted, KeyboardInterrupt) as e:
        raise common.report_stop(e) from None


if __name__ == "__main__":
    main()
