"""Run an sslj experiment from a config file.

    python experiments/run.py                                   # the embedded default
    python experiments/run.py --config experiments/configs/default.py \\
        --config.split.mismatch_ratio=0.25 --workdir runs/mm025

A config whose `compare` lists several methods (comma-separated) trains each into
<workdir>/<method> and prints a comparison table; otherwise `config.method` is trained
into <workdir>.

Every field of the config can be set with `--config.<field>=<value>` (dotted, e.g.
`--config.optimizer.lr=0.01`, `--config.model_kwargs.bn_momentum=0.9`); a value is
parsed as JSON (numbers, true / false, [lists]) or taken as a string, and must fit the
field's type. A field set here is never replaced by a method's `method_overrides`.
`--fields` prints every field of the config with its value; `--dry_run` checks the
config(s) and workdir(s) and prints the runs without starting them. A workdir belongs
to one run's settings: a rerun with the same ones resumes or reuses it, other ones stop
with the differing fields (`--overwrite` replaces the run).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from experiments import common  # noqa: E402  (sets XLA flags before JAX starts)

_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")
_CONFIG_FILE = flags.DEFINE_string(
    "config", _DEFAULT, "Config file, `path.py` or `path.py:arg` (its get_config(arg)); "
    "set any field with --config.<field>=<value>.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Directory for all outputs.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a run of other settings found in the workdir (deleted); "
    "without it such a workdir stops the run before any compute.")

_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Check the config(s) and workdir(s), print the runs that would start "
    "and exit: no data is loaded and nothing is written.")

_SHOW_FIELDS = flags.DEFINE_bool(
    "fields", False, "Print every field of the config (after the --config.<field> "
    "settings) as --config.<field>=<value> lines and exit.")

_FIELDS: list[tuple[str, object]] = []  # the --config.<field>=<value> settings, in order
_LOADED: list = []  # the config, once parse_flags loaded it


def load_config(spec: str):
    """`path.py[:arg]` -> its `get_config([arg])`; SystemExit with one line if it fails."""
    import importlib.util

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise SystemExit(f"error: --config {spec!r}: no such file {path!r}")
    try:
        module_spec = importlib.util.spec_from_file_location("_sslj_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's config file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SystemExit(f"error: --config {spec!r} does not load: {first}") from None


def split_config_fields(argv: list[str]) -> tuple[list[str], list[tuple[str, object]]]:
    """(argv without `--config.<field>` settings, [(field, parsed value)]); both the
    `--config.f=v` and the `--config.f v` forms."""
    rest, fields = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" in arg:
                name, value = arg[len("--config."):].split("=", 1)
            elif i + 1 < len(argv):
                name, value = arg[len("--config."):], argv[i + 1]
                i += 1
            else:
                raise SystemExit(f"error: {arg} has no value; write {arg}=<value>")
            fields.append((name, common.parse_value(value)))
        else:
            rest.append(arg)
        i += 1
    return rest, fields


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with one-line errors: the config file and the flags first, then
    each `--config.<field>` checked against the loaded config (unknown field, with a
    did-you-mean; a value of the wrong type)."""
    rest, fields = split_config_fields(argv)
    try:
        positional = flags.FLAGS(rest)
    except flags.Error as e:
        raise SystemExit(f"error: {e}") from None
    if len(positional) > 1:
        extra = positional[1]
        hint = (f"; did you mean --config {extra}?" if extra.endswith(".py") or ".py:" in extra
                else "")
        raise SystemExit(f"error: unexpected argument {extra!r} (run.py takes only flags)"
                         f"{hint}")
    config = load_config(_CONFIG_FILE.value)
    for name, value in fields:
        common.set_field(config, name, value, strict=True, flag="--config.")
    _FIELDS[:] = fields
    _LOADED[:] = [config]
    return positional


def show_fields(config) -> str:
    """Every leaf of `config` as a `--config.<field>=<value>` line (values as JSON)."""
    import json

    from sslj.common.checks import get_field, leaf_fields

    def value(v):
        return json.dumps(list(v) if isinstance(v, tuple) else v)

    return "\n".join(f"--config.{f}={value(get_field(config, f))}"
                     for f in leaf_fields(config))


def main(argv):
    del argv
    if _SHOW_FIELDS.value:
        print(show_fields(_LOADED[0]))
        return
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    common.run_config(_LOADED[0], _WORKDIR.value, overwrite=_OVERWRITE.value,
                      explicit={name for name, _ in _FIELDS}, dry_run=_DRY_RUN.value)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
