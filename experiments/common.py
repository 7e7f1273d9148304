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
    ("unseen_auroc_at_best_val", "unseen AUROC"),
    ("wall_time_s", "time (s)"),
]


def run_config(config, workdir: str) -> list[dict]:
    """Trains `config` (each method of `config.compare`) and prints the results table."""
    from sslj.data.sources import DataNotPreparedError
    from sslj.train.loop import run

    methods = config_lib.parse_methods(config.get("compare", "")) or (config.method,)
    results = []
    try:
        configs = [config_lib.for_method(config, m) for m in methods]
        for cfg in configs:  # every run's config is checked before the first one starts
            config_lib.validate(cfg)
        outs = [workdir if len(methods) == 1 else os.path.join(workdir, m) for m in methods]
        for i in sorted(range(len(methods)), key=lambda i: bool(configs[i].spl.enabled)):
            cfg = configs[i]
            results.append((i, run(cfg, outs[i], pretrained_dir=pretrained_dir(
                cfg, list(zip(configs, outs, strict=True))))))
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


def pretrained_dir(cfg, runs) -> str | None:
    """For an SPL run: the workdir of a finished base run among `runs` ((config, workdir)
    pairs) that trains exactly the SPL run's pretraining, so both share it."""
    if not cfg.spl.enabled or not cfg.spl.pretrain:
        return None
    for other, out in runs:
        if (not other.spl.enabled and config_lib.same_base_run(other, cfg)
                and os.path.exists(os.path.join(out, "results.json"))):
            return out
    return None


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
