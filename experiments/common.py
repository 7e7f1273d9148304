"""Shared by the entry points: XLA flags, running a config, the results table."""

from __future__ import annotations

import json
import os
import sys

# XLA:CPU sends convolutions to YNNPACK by default, which keeps ~1.3 of 2 cores busy;
# turning its fusion off made the supervised step 1.3x and FixMatch 2.4x faster here
# (docs/REFERENCE.md). Set unless the user set XLA flags of their own or JAX_PLATFORMS
# names a platform other than the CPU; with JAX_PLATFORMS unset it is set on a GPU host
# too, where it is inert (the flag is read by XLA:CPU only).
if "XLA_FLAGS" not in os.environ and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
    os.environ["XLA_FLAGS"] = "--xla_cpu_experimental_ynn_fusion_type="

CACHE_OFF = ("0", "off", "no", "none", "false")


def machine_tag() -> str:
    """A short digest of this machine's architecture and CPU feature flags. JAX's cache key
    holds the program, the jaxlib version, the XLA flags and the devices, but on the CPU
    not the instruction set XLA compiled for (the platform version is just "cpu"): an
    executable compiled on an AVX-512 host and loaded on an AVX2 one would fault or, at
    best, round like the other machine. Keying the directory by the feature flags keeps
    a home directory shared by different machines safe."""
    import hashlib
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86, Arm
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        flags = platform.processor()
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:12]


def compilation_cache_dir(environ=os.environ) -> str | None:
    """Where the entry points keep JAX's persistent compilation cache, or None (off).

    `SSLJ_COMPILATION_CACHE`: unset, the per-user cache folder
    (`$XDG_CACHE_HOME/sslj/jax`, default `~/.cache/sslj/jax`); a path, that folder;
    0/off/no/none/false, no cache. Either way one subfolder per `machine_tag()`. A
    `JAX_COMPILATION_CACHE_DIR` the user set wins and is used as it is."""
    if "JAX_COMPILATION_CACHE_DIR" in environ:
        return environ["JAX_COMPILATION_CACHE_DIR"] or None
    setting = environ.get("SSLJ_COMPILATION_CACHE", "").strip()
    if setting.lower() in CACHE_OFF:
        return None
    root = setting or os.path.join(
        environ.get("XDG_CACHE_HOME")
        or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache"),
        "sslj", "jax")
    return os.path.join(root, machine_tag())


# JAX's persistent compilation cache: a step compiled once (5-6 s for WRN-28-2 on the
# 2-core CPU) loads in ~0.6 s in any later process or run with the same program, shapes
# and flags (another seed, a resume, the next row of a table; experiments/benchmarks/
# compile_time.py). Loading the executable XLA wrote gives the same results bit for bit.
# Set before JAX starts (JAX reads its environment once); steps compiling in under 1 s
# (JAX's default threshold) are not stored.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _dir = compilation_cache_dir()
    if _dir is not None:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _dir

from sslj import config as config_lib  # noqa: E402

COLUMNS = [
    ("test_accuracy_at_best_val", "test acc @ best val"),
    ("ema_test_accuracy", "EMA test acc"),
    ("median_test_accuracy", "median test acc"),
    ("median_ema_test_accuracy", "median EMA test acc"),
    ("unseen_auroc_at_best_val", "unseen AUROC"),
    ("wall_time_s", "time (s)"),
]


# blocks whose keys are free-form (passed through as keyword arguments)
_OPEN_BLOCKS = ("model_kwargs",)


def _unknown(field: str, known, flag: str) -> SystemExit:
    import difflib

    leaf = field.rsplit(".", 1)[-1]
    near = difflib.get_close_matches(leaf, list(known), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f"; allowed: {sorted(known)}"
    return SystemExit(f"error: unknown config field {field!r} ({_flag(flag, field)}){hint}")


def _flag(flag: str, field: str) -> str:
    return f"{flag}{field}" if flag.endswith(".") else f"{flag} {field}"


def set_field(config, field, value, strict: bool = False, flag: str = "--set"):
    """Sets `field` (dotted) of `config`; `strict` (a value the user typed) refuses a value
    that does not fit the field's type instead of converting it. An unknown field is a
    SystemExit naming it, with a did-you-mean; `model_kwargs.*` is open (the model
    validation checks its keys)."""
    *parents, leaf = field.split(".")
    node = config
    for depth, p in enumerate(parents):
        if p not in node or not hasattr(node[p], "keys"):
            raise _unknown(".".join(parents[:depth + 1]), node.keys(), flag)
        node = node[p]
    if leaf not in node:
        if ".".join(parents) in _OPEN_BLOCKS:
            with node.unlocked() if hasattr(node, "unlocked") else _null():
                node[leaf] = value
            return
        raise _unknown(field, node.keys(), flag)
    if strict:
        node[leaf] = coerce(field, node[leaf], value, flag)
    else:
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], tuple) else value


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def coerce(field: str, old, value, flag: str = "--set"):
    """`value` as the type of the field's current value `old`; SystemExit naming the field
    when it does not fit (1.5 for an integer, "no" for a bool, ...)."""
    def bad(kind):
        return SystemExit(f"error: {_flag(flag, field)}={value!r}: expected {kind}")

    if isinstance(old, bool):
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if isinstance(old, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            raise bad("an integer")
        return int(value)
    if isinstance(old, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(old, str):
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(old, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list, e.g. [0,1,2]")
        return tuple(value)
    return value


def parse_value(value: str):
    """A typed value: JSON (1, 1.5, true, [0,1]), else a Python literal (.01, True, None,
    (0, 1)), else the string itself."""
    import ast

    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def parse_assignment(item: str, flag: str = "--set") -> tuple[str, object]:
    """`FIELD=VALUE` -> (field, parsed value); SystemExit for any other shape."""
    if item.count("=") != 1 or not item.split("=", 1)[0].strip():
        raise SystemExit(f"error: {flag} {item!r}: expected FIELD=VALUE with one '=', "
                         "e.g. --set num_steps=600")
    field, value = item.split("=", 1)
    return field.strip(), parse_value(value)


def user_errors():
    """The exceptions an entry point reports as one line (no traceback)."""
    from sslj.common.sharding import DistributedSetupError
    from sslj.data.sources import DataNotPreparedError
    from sslj.train.checkpoint import CheckpointError
    from sslj.train.loop import NonFiniteLossError
    from sslj.train.memory import MemoryEstimateError
    from sslj.train.workdir import WorkdirConflict

    return (config_lib.ConfigError, DataNotPreparedError, WorkdirConflict, CheckpointError,
            NonFiniteLossError, DistributedSetupError, MemoryEstimateError)


def report_stop(e: BaseException):
    """SystemExit for an error of `user_errors()` or an interrupted run: one line."""
    from sslj.train.interrupt import RunInterrupted

    if isinstance(e, RunInterrupted):
        print(f"interrupted: {e}", file=sys.stderr, flush=True)
        return SystemExit(e.exit_code)
    if isinstance(e, KeyboardInterrupt):  # a phase without a step-wise stop (a 2nd Ctrl-C)
        print("interrupted: stopped at once; the last checkpoint of each run is kept; rerun "
              "the same command to resume", file=sys.stderr, flush=True)
        return SystemExit(130)
    return SystemExit(f"error: {e}")


def out_of_memory(e: BaseException) -> bool:
    """An allocation failure of XLA or of the host. XLA:CPU says RESOURCE_EXHAUSTED when a
    transfer's buffer cannot be allocated, and "INTERNAL: Error dispatching computation:
    Out of memory allocating N bytes" when a computation's can't (seen since batches are
    gathered on the device, issue 22)."""
    return isinstance(e, MemoryError) or (
        type(e).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
        and ("RESOURCE_EXHAUSTED" in str(e) or "Out of memory allocating" in str(e)))


def out_of_memory_message(name: str, cfg, e: BaseException) -> str:
    """One line for a run that ran out of memory despite the up-front check (a lower
    bound, `sslj.train.memory`): which run, the batch fields to lower."""
    first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    return (f"error: {name} ran out of memory ({first}) with batch_size={cfg.batch_size}, "
            f"unlabeled_batch_size={cfg.unlabeled_batch_size}: lower them (checkpoints "
            "already saved are kept)")


def train(name: str, cfg, out: str, *, pretrained_dir=None, overwrite: bool = False):
    """`sslj.procedures.run` of one run (`name` in messages); an out-of-memory error is
    one line (`out_of_memory_message`) instead of XLA's traceback."""
    from sslj.procedures import run

    try:
        return run(cfg, out, pretrained_dir=pretrained_dir, overwrite=overwrite)
    except Exception as e:
        if out_of_memory(e):
            raise SystemExit(out_of_memory_message(name, cfg, e)) from None
        raise


def run_config(config, workdir: str, *, overwrite: bool = False,
               explicit=(), dry_run: bool = False) -> list[dict]:
    """Trains `config` (each method of `config.compare`) and prints the results table.

    Every run's config and workdir are checked before the first run starts; a workdir
    holding a run of other settings stops everything unless `overwrite`. `explicit`:
    the fields the user set, which no method's overrides replace; the values a method's
    overrides did set are printed, one line per run. `dry_run`: only the checks, then
    one line per run that would start (nothing is written, no data is loaded)."""
    from sslj.common.sharding import maybe_initialize_distributed
    from sslj.train import workdir as workdir_lib
    from sslj.train.interrupt import RunInterrupted

    methods = config_lib.parse_methods(config.get("compare", "")) or (config.method,)
    results = []
    try:
        maybe_initialize_distributed()  # SSLJ_DISTRIBUTED=1: before anything asks for devices
        configs = [config_lib.for_method(config, m, explicit) for m in methods]
        for cfg in configs:  # every run's config is checked before the first one starts
            config_lib.validate(cfg)
        for m, cfg in zip(methods, configs, strict=True):
            say_overrides(m, config, cfg)
        outs = [workdir if len(methods) == 1 else os.path.join(workdir, m) for m in methods]
        workdir_lib.check_path(workdir)  # a file / read-only path
        if len(methods) > 1 and workdir_lib.stored_fingerprint(workdir) is not None:
            raise workdir_lib.WorkdirConflict(
                f"workdir {workdir} holds a single run; a comparison writes one directory "
                "per method: choose another --workdir")
        for cfg, out in zip(configs, outs, strict=True):
            workdir_lib.check(cfg, out, overwrite=overwrite)
        if dry_run:
            for m, cfg, out in zip(methods, configs, outs, strict=True):
                print(f"would run {m} ({cfg.num_steps} steps on {cfg.data.source}) "
                      f"into {out}")
            return []
        shared = Pretrainings()
        for i in sorted(range(len(methods)), key=lambda i: bool(configs[i].spl.enabled)):
            cfg = configs[i]
            results.append((i, train(methods[i], cfg, outs[i],
                                     pretrained_dir=shared.lookup(cfg), overwrite=overwrite)))
            shared.record(cfg, outs[i])
        results = [r for _, r in sorted(results, key=lambda x: x[0])]
    except (*user_errors(), RunInterrupted, KeyboardInterrupt) as e:
        raise report_stop(e) from None
    table = results_table(results)
    print("\n" + table)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    if len(methods) > 1:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results


def say_overrides(name: str, config, cfg) -> None:
    """One line naming the values `name`'s method overrides set (the effective ones)."""
    from sslj.common.checks import changed_fields

    skip = {"method", "target.kind", "target.eps"} | {
        f for f in changed_fields(config, cfg) if f.split(".")[0] in ("spl", "ns3l", "icn")}
    changed = {f: v for f, v in changed_fields(config, cfg, skip=tuple(skip)).items()
               if not f.startswith("method_overrides.")}
    if changed:
        shown = ", ".join(f"{f}={v!r}" for f, v in sorted(changed.items()))
        print(f"sslj: {name}: method_overrides give {shown}; set a field yourself to change it",
              file=sys.stderr, flush=True)


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
