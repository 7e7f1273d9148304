"""Shared by the entry points: XLA flags, running a config, the results table."""

from __future__ import annotations

import json
import os

# XLA:CPU sends convolutions to YNNPACK by default, which keeps ~1.3 of 2 cores busy;
# turning its fusion off made the supervised step 1.3x and FixMatch 2.4x faster here
# (REFERENCE.md). Only for CPU runs, only if the user set no XLA flag of their own.
if "XLA_FLAGS" not in os.environ and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
    os.environ["XLA_FLAGS"] = "--xla_cpu_experimental_ynn_fusion_type="

from sslj import config as config_lib  # noqa: E402

COLUMNS = [
    ("test_accuracy_at_best_val", "test acc @ best val"),
    ("ema_test_accuracy", "EMA test acc"),
    ("median_test_accuracy", "median test acc"),
    ("median_ema_test_accuracy", "median EMA test acc"),
    ("unseen_auroc_at_best_val", "unseen AUROC"),
    ("wall_time_s", "time (s)"),
]


def run_config(config, workdir: str) -> list[dict]:
    """Trains `config` (each method of `config.compare`) and prints the results table."""
    from sslj.data.sources import DataNotPreparedError
    from sslj.procedures import run

    methods = config_lib.parse_methods(config.get("compare", "")) or (config.method,)
    results = []
    try:
        configs = [config_lib.for_method(config, m) for m in methods]
        for cfg in configs:  # every run's config is checked before the first one starts
            config_lib.validate(cfg)
        outs = [workdir if len(methods) == 1 else os.path.join(workdir, m) for m in methods]
        shared = Pretrainings()
        for i in sorted(range(len(methods)), key=lambda i: bool(configs[i].spl.enabled)):
            cfg = configs[i]
            results.append((i, run(cfg, outs[i], pretrained_dir=shared.lookup(cfg))))
            shared.record(cfg, outs[i])
        results = [r for _, r in sorted(results, key=lambda x: x[0])]
    except (config_lib.ConfigError, DataNotPreparedError) as e:
        raise SystemExit(f"error: {e}") from None
    table = results_table(results)
    print("\n" + table)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    if len(methods) > 1:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results


class Pretrainings:
    """Finished runs by the base run they trained (`config.base_run_key`), so an SPL run
    reuses the pretraining of its base run, or of an earlier SPL run of the same base.
    Record a run after it finished; run base runs first."""

    def __init__(self):
        self.dirs: dict[str, str] = {}

    def lookup(self, cfg) -> str | None:
        """The workdir of a finished run of `cfg`'s base run, or None."""
        if cfg.spl.enabled and not cfg.spl.pretrain:
            return None
        return self.dirs.get(config_lib.base_run_key(cfg))

    def record(self, cfg, workdir: str) -> None:
        if not cfg.spl.enabled:
            self.dirs.setdefault(config_lib.base_run_key(cfg), workdir)
        elif cfg.spl.pretrain:
            self.dirs.setdefault(config_lib.base_run_key(cfg), os.path.join(workdir, "pretrain"))


def _fmt(key, value):
    if value is None:
        return "-"
    if key == "wall_time_s":
        return f"{value:.0f}"
    return f"{100 * value:.2f}" if value == value else "n/a"


# label-noise runs: the paper reports the final clean test accuracy
NOISE_COLUMNS = [("final_test_accuracy", "final test acc")]


def results_table(results: list[dict]) -> str:
    split = results[0]["split"] if results else ""
    noisy = [r["noise"] for r in results if r.get("noise", "none") != "none"]
    columns = COLUMNS[:1] + NOISE_COLUMNS + COLUMNS[1:] if noisy else COLUMNS
    title = f"Results on {split}" + (f", label noise {noisy[0]}" if noisy else "")
    lines = [f"{title} (accuracies and AUROC in %)", "",
             "| method | " + " | ".join(name for _, name in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for r in results:
        lines.append(f"| {r['method']} | " + " | ".join(_fmt(k, r.get(k)) for k, _ in columns)
                     + " |")
    return "\n".join(lines)
