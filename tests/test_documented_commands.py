"""Every `run.py` / `reproduce.py` command in README and in the docstrings is checked as a
user would type it, with `--dry_run` (the configs and workdirs are validated, nothing is
trained, written or loaded): a documented command that names a table, config, column,
row or field that does not exist fails here (issue 19, section 8)."""

import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_COMMAND = re.compile(r"python (experiments/(?:run|reproduce)\.py)\b")


def _sources() -> list[str]:
    paths = [os.path.join(ROOT, "README.md")]
    for d, _, files in os.walk(os.path.join(ROOT, "experiments")):
        paths += [os.path.join(d, f) for f in files if f.endswith((".py", ".md"))]
    return sorted(paths)


def documented_commands() -> list[tuple[str, str, tuple[str, ...]]]:
    """(where, script, args) of every documented command, continuation lines joined."""
    out = {}
    for path in _sources():
        lines = open(path, encoding="utf-8").read().splitlines()
        for i, line in enumerate(lines):
            m = _COMMAND.search(line)
            if not m:
                continue
            text, j = line[m.end():], i
            while text.rstrip().endswith("\\") and j + 1 < len(lines):
                j += 1
                text = text.rstrip().rstrip("\\") + " " + lines[j].strip()
            text = text.split("#")[0].split("`")[0]
            if "<" in text or "..." in text or "[" in text.replace("[0", ""):
                continue  # a template (`--out DIR`, `<dir>`, optional [flags]), not a command
            args = tuple(shlex.split(text))
            where = f"{os.path.relpath(path, ROOT)}:{i + 1}"
            out.setdefault((m.group(1), args), where)
    return [(where, script, args) for (script, args), where in sorted(out.items())]


COMMANDS = documented_commands()


def test_the_documentation_has_commands_to_check():
    scripts = {script for _, script, _ in COMMANDS}
    assert scripts == {"experiments/run.py", "experiments/reproduce.py"}
    assert len(COMMANDS) >= 30


def _without_workdir(args):
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--workdir":
            skip = True
            continue
        if not a.startswith("--workdir="):
            out.append(a)
    return out


@pytest.mark.parametrize("where,script,args", COMMANDS,
                         ids=[f"{w}" for w, _, _ in COMMANDS])
def test_documented_command_is_valid(where, script, args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # --isa appends
    # the commands are written for one accelerator (the suite has 8 fake CPU devices,
    # which the full-scale batch of 50 does not divide)
    from sslj.common import checks
    from sslj.spl import validation as spl_validation
    from sslj.train import validation as train_validation

    for module in (checks, spl_validation, train_validation):
        monkeypatch.setattr(module, "device_count", lambda: 1)
    workdir = str(tmp_path / "w")
    argv = [*_without_workdir(args), "--workdir", workdir, "--dry_run"]
    try:
        if script.endswith("reproduce.py"):
            from experiments import reproduce

            reproduce.main(argv)
        else:
            from absl import flags

            from experiments import run

            flags.FLAGS.unparse_flags()
            run.parse_flags(["run.py", *argv])
            run.main([])
    except SystemExit as e:
        pytest.fail(f"{where}: `python {script} {' '.join(args)}` fails: {e}")
    assert "would run" in capsys.readouterr().out, where
    assert not os.path.exists(workdir), f"{where}: a dry run wrote {workdir}"
