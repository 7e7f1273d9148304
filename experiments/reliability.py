"""Reliability harness (issue 19): runs that never mix configs, never die on a bad
checkpoint and never override what the user said, checked on real `run.py` processes.

    python experiments/reliability.py --short            # CI: ~5 min on this 2-core machine
    python experiments/reliability.py                    # full: ~8.5 min
    python experiments/reliability.py --short --out /tmp/rel --keep_workdirs
    python experiments/reliability.py --kills 20 --seed 3 --out runs/reliability/mine

(Measured on a nearly idle machine: --short 4 min 29 s, full 8 min 25 s; each launch of run.py costs
10-20 s of start-up, data and compilation, so the time is the number of launches, and
it doubles on a machine loaded by other jobs.)

Every training run is a subprocess `python experiments/run.py --workdir DIR ...` (cwd the
repository root, TF_CPP_MIN_LOG_LEVEL=3) of one of two short configs: a 60-step
supervised cnn_tiny run (checkpoints at 20 / 40 / 60) and a pi_model+spl run (40
pretraining steps, 3 SPL rounds of 4 + 4 steps, one checkpoint per round). Each is run
once uninterrupted first: its results.json and metrics.jsonl files (with every key
containing "time" dropped; for SPL also those of pretrain/) are the reference. Then:

  * kills at random steps: the supervised run is SIGKILLed at random points (when its
    metrics.jsonl reaches a random step past where the last kill left it, or a random
    delay after the start, up to the reference's wall time), each time rerun with the
    same command, and the last rerun goes to the end; the kills are grouped into trials
    of 1-3 (a seeded draw), one fresh workdir each;
  * kills inside saves: the same, killed the moment orbax's temporary directory of a
    save in progress (`<step>.orbax-checkpoint-tmp`) of a random step appears (1-2 per
    trial; the progress line says whether the directory was left behind, i.e. the kill
    landed before the save finished);
  * kills inside SPL rounds: the pi_model+spl run, killed after its pretraining, up to
    1 s after a random round's evaluation line (inside the next round), 1-2 per trial;
  * corrupt checkpoints: a supervised run killed once its checkpoint of step 40 exists
    (20 and 40 on disk, unfinished) is copied, its newest checkpoint damaged (a data
    file of the state truncated to half, meta/metadata deleted, state/manifest.ocdbt
    deleted, or the step directory emptied) and the same command rerun: it must say in
    one line that the checkpoint was moved to checkpoints.bad/ and resume from step 20;
  * concurrent runs: two processes started at once into one workdir; one must be
    refused with one line naming the other's pid, the other must finish;
  * invalid inputs: unknown / misspelt fields, missing or unloadable config files, a
    workdir that is a file or read-only, a stray argument, bad `reproduce.py` --seeds
    and --set values, out-of-range fields, a batch larger than the data. Each must exit
    non-zero, with no Traceback, at most 3 lines of stderr whose last one names the
    problem, and nothing written (the workdir absent, or unchanged).

Every run that is expected to finish is compared with its reference bit for bit (the
JSON values as written, times aside). Modes: `--short` makes 2 kills at random steps, 1
inside a save, 1 inside an SPL round, 2 of the 4 corruptions (the truncated data file
and a seeded choice), one concurrent pair and every invalid input; the default makes
`--kills` (10) kills at random steps, 3 inside saves, 3 inside SPL rounds, all 4
corruptions, 2 concurrent pairs and every invalid input. `--seed` seeds every draw;
where a kill lands also depends on the machine's timing, so the progress lines say where
each one did.

Reading the table (printed, and written with a figure to `--out`, default
runs/reliability/<UTC time>/, which must not exist or be empty): one row per category;
`trials` kill-and-resume sequences (one workdir each), damaged workdirs, processes of
the concurrent pairs, invalid commands; `survived bitwise-equal` those that ended equal
to the reference; `clean errors` those that stopped with a non-zero exit and a short
message naming the problem (what invalid inputs and the refused half of each concurrent
pair must do); `tracebacks` any stderr with a Python traceback; `other failures`
everything else (a difference from the reference, a refusal that did not happen or did
not name the problem, something written by a refused run, a timeout); `skipped` a trial
this machine cannot run (none now: where chmod does not restrict the user, as for root,
the read-only workdir is simulated by `DENY_WRITES`). Each failing trial follows as one
line with its command and the essence of the difference. The exit status is 1 when any
trial failed, 2 when a reference run failed (nothing else is run then). Per-launch
stdout / stderr are kept in `<out>/logs/`, the reference workdirs in `<out>/reference/`;
the workdirs of trials that passed are removed unless `--keep_workdirs`, those of
failing trials are kept in `<out>/work/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
RUN = [sys.executable, "experiments/run.py"]
REPRODUCE = [sys.executable, "experiments/reproduce.py"]
# `python -c DENY_WRITES DIR script args...`: runs `script` with os.access denying writes
# at and below DIR. chmod cannot make a directory read-only for root, so where it does
# not restrict this user the read-only-workdir case is run through it (the rest is the
# real script); tests/test_cli.py uses it as well.
DENY_WRITES = """import os, runpy, sys
root, access = os.path.abspath(sys.argv[1]), os.access
def denied(path, mode, *args, **kwargs):
    inside = os.path.abspath(path) == root or os.path.abspath(path).startswith(root + os.sep)
    return False if inside and mode & os.W_OK else access(path, mode, *args, **kwargs)
os.access = denied
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

SUPERVISED = ["--config.model=cnn_tiny", "--config.compare=supervised",
              "--config.num_steps=60", "--config.eval_every=20", "--config.checkpoint_every=20",
              "--config.log_every=5", "--config.progress_bar=False",
              "--config.eval_batch_size=200"]
SUPERVISED_STEPS, LOG_EVERY, CHECKPOINT_EVERY = 60, 5, 20
SPL_ROUNDS = 3
SPL = ["--config.model=cnn_tiny", "--config.compare=pi_model+spl",
       f"--config.spl.rounds={SPL_ROUNDS}", "--config.spl.inner_steps=4",
       "--config.spl.outer_steps=4", "--config.num_steps=40", "--config.eval_every=20",
       "--config.checkpoint_every=20", "--config.log_every=5",
       "--config.progress_bar=False", "--config.eval_batch_size=200"]
# reproduce.py: one short row, so that a wrongly accepted --set trains seconds, not hours
REPRODUCE_SHORT = ["--rows", "supervised", "--set", "model=cnn_tiny", "--set", "num_steps=20",
                   "--set", "eval_every=10", "--set", "checkpoint_every=10",
                   "--set", "progress_bar=false"]

CATEGORIES = ("kills at random steps", "kills inside saves", "kills inside SPL rounds",
              "corrupt checkpoints", "concurrent runs", "invalid inputs")
OUTCOMES = ("equal", "clean_error", "traceback", "other", "skipped")
OUTCOME_NAMES = {"equal": "survived bitwise-equal", "clean_error": "clean errors",
                 "traceback": "tracebacks", "other": "other failures", "skipped": "skipped"}
CORRUPTIONS = ("truncated data file", "no meta/metadata", "no state/manifest.ocdbt",
               "emptied step directory")
MAX_ERROR_LINES = 3


# ------------------------------------------------------------------ processes

@dataclasses.dataclass
class Launch:
    """One process: its exit code (None: killed by us), stderr and what the kill hit."""
    command: list[str]
    pid: int
    rc: int | None
    stderr: str
    seconds: float
    killed: bool = False
    note: str = ""

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr

    def error_lines(self) -> list[str]:
        return [x for x in self.stderr.splitlines() if x.strip()]


_LIVE: dict[int, subprocess.Popen] = {}


class Running:
    """A started process writing to `<logs>.stdout` / `<logs>.stderr`."""

    def __init__(self, command: list[str], logs: str):
        os.makedirs(os.path.dirname(logs), exist_ok=True)
        self.command, self.logs = command, logs
        self.out, self.err = open(logs + ".stdout", "w"), open(logs + ".stderr", "w")  # noqa: SIM115
        self.started = time.time()
        self.started_ns = time.time_ns()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=self.out,
                                     stderr=self.err, stdin=subprocess.DEVNULL)
        _LIVE[self.proc.pid] = self.proc

    def wait(self, timeout: float, kill_point=None, poll: float = 0.002) -> Launch:
        """Waits for the end, SIGKILLing the process when `kill_point` fires or after
        `timeout` seconds (then `note` says so)."""
        killed, note = False, ""
        while self.proc.poll() is None:
            elapsed = time.time() - self.started
            if kill_point is not None and kill_point.fires(elapsed, self.started_ns):
                self.proc.kill()
                killed, note = True, kill_point.describe(elapsed)
                break
            if elapsed > timeout:
                self.proc.kill()
                killed, note = True, f"timed out after {timeout:.0f} s"
                break
            time.sleep(poll)
        self.proc.wait()
        _LIVE.pop(self.proc.pid, None)
        self.out.close()
        self.err.close()
        with open(self.logs + ".stderr", errors="replace") as f:
            stderr = f.read()
        return Launch(self.command, self.proc.pid, None if killed else self.proc.returncode,
                      stderr, time.time() - self.started, killed, note)


def launch(command: list[str], logs: str, timeout: float, kill_point=None) -> Launch:
    return Running(command, logs).wait(timeout, kill_point)


def kill_everything_we_started() -> None:
    for proc in list(_LIVE.values()):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _LIVE.clear()


def traceback_summary(stderr: str) -> str:
    """How many tracebacks `stderr` holds and its most frequent exception line (threads
    may interleave their tracebacks, so "the last line of the first" can be garbled)."""
    import collections
    import re

    lines = stderr.splitlines()
    starts = sum(x.startswith("Traceback") for x in lines)
    exceptions = collections.Counter(
        x.strip() for x in lines if re.match(r"^[A-Za-z_][\w.]*: \S", x)
        and not x.startswith("sslj:"))
    common = exceptions.most_common(1)[0] if exceptions else ("(none found)", 0)
    return (f"{starts} traceback(s) in {len(lines)} lines of stderr, most often "
            f"{common[0][:150]!r} ({common[1]}x)")


def shown(command: list[str]) -> str:
    """The command as a user would type it in the repository root."""
    return shlex.join(["python", *command[1:]])


# ------------------------------------------------------------------ what a run wrote

def read_rows(path: str) -> list[dict]:
    """metrics.jsonl's complete lines (a half-written last line is left out)."""
    rows = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def timeless(value):
    """`value` without any dict key that contains "time" (wall and train times)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if "time" not in k}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def outputs(workdir: str) -> dict:
    """{relative path: JSON data, times dropped} of every results.json and metrics.jsonl
    in `workdir` (SPL: its pretrain/ too)."""
    found = {}
    for d, dirs, files in os.walk(workdir):
        dirs[:] = [x for x in dirs if not x.startswith(("checkpoints", "tensorboard"))]
        for name in files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, workdir)
            if name == "results.json":
                with open(path) as f:
                    found[rel] = timeless(json.load(f))
            elif name == "metrics.jsonl":
                found[rel] = [timeless(r) for r in read_rows(path)]
    return found


def _brief(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def first_difference(ref, got, where: str) -> str | None:
    """Where two JSON values first differ ("history[1].test_accuracy: 0.19 vs 0.2"), or
    None when they are equal as written (NaN equals NaN, 1 differs from 1.0)."""
    if isinstance(ref, dict) and isinstance(got, dict):
        for key in list(ref) + [k for k in got if k not in ref]:
            if key not in got:
                return f"{where}.{key}: missing (reference {_brief(ref[key])})"
            if key not in ref:
                return f"{where}.{key}: not in the reference ({_brief(got[key])})"
            diff = first_difference(ref[key], got[key], f"{where}.{key}")
            if diff:
                return diff
        return None
    if isinstance(ref, list) and isinstance(got, list):
        for i, (a, b) in enumerate(zip(ref, got, strict=False)):  # lengths: below
            diff = first_difference(a, b, f"{where}[{i}]")
            if diff:
                return diff + (f" ({len(got)} entries vs {len(ref)})"
                               if len(got) != len(ref) else "")
        if len(ref) != len(got):
            extra = got[len(ref)] if len(got) > len(ref) else ref[len(got)]
            return (f"{where}: {len(got)} entries vs {len(ref)} in the reference; first "
                    f"{'extra' if len(got) > len(ref) else 'missing'} one {_brief(extra)}")
        return None
    if json.dumps(ref) != json.dumps(got):
        return f"{where}: {_brief(got)} vs reference {_brief(ref)}"
    return None


def compare(reference: dict, workdir: str) -> str | None:
    """The first difference between `workdir`'s outputs and the reference, or None."""
    got = outputs(workdir)
    for rel in reference:
        if rel not in got:
            return f"{rel} missing"
    for rel in got:
        if rel not in reference:
            return f"{rel} written, but not by the reference run"
    for rel, ref in reference.items():
        diff = first_difference(ref, got[rel], rel)
        if diff:
            return diff
    return None


def max_step(path: str, key: str = "step") -> float:
    """The largest `key` in metrics.jsonl's rows (-1 when none)."""
    if not os.path.exists(path):
        return -1
    return max((r[key] for r in read_rows(path) if key in r), default=-1)


def checkpoint_steps(directory: str) -> list[int]:
    """The finished checkpoints in `directory` (orbax renames a save when complete)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def in_progress_saves(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    return [n for n in os.listdir(directory) if "tmp" in n]


# ------------------------------------------------------------------ kill points

class AfterDelay:
    """Fires `delay` seconds after the start."""

    def __init__(self, delay: float):
        self.delay = delay

    def fires(self, elapsed: float, started_ns: int) -> bool:
        return elapsed >= self.delay

    def describe(self, elapsed: float) -> str:
        return f"killed {elapsed:.1f} s after the start"


def _fresh(path: str, started_ns: int) -> bool:
    """Whether this launch has written `path` (the one a killed run left is older)."""
    try:
        return os.stat(path).st_mtime_ns > started_ns
    except FileNotFoundError:
        return False


class AtStep:
    """Fires when this launch's metrics.jsonl has a row at `step` or later."""

    def __init__(self, metrics: str, step: int):
        self.metrics, self.step = metrics, step
        self._next_read = 0.0

    def fires(self, elapsed: float, started_ns: int) -> bool:
        if elapsed < self._next_read or not _fresh(self.metrics, started_ns):
            return False
        self._next_read = elapsed + 0.01
        return max_step(self.metrics) >= self.step

    def describe(self, elapsed: float) -> str:
        return (f"killed at step {max_step(self.metrics):g} (target {self.step}), "
                f"{elapsed:.1f} s after the start")


class InSave:
    """Fires the moment a save of step >= `step` is in progress (orbax's temporary
    directory exists); `confirm` tells whether it was still there after the kill."""

    def __init__(self, checkpoints: str, step: int):
        self.checkpoints, self.step = checkpoints, step
        self.caught = ""

    def fires(self, elapsed: float, started_ns: int) -> bool:
        for name in in_progress_saves(self.checkpoints):
            head = name.split(".")[0]
            if head.isdigit() and int(head) >= self.step:
                self.caught = name
                return True
        return False

    def describe(self, elapsed: float) -> str:
        left = self.caught in in_progress_saves(self.checkpoints)
        return (f"killed inside the save of step {self.caught.split('.')[0]} (target "
                f"{self.step}; {self.caught} "
                f"{'left behind' if left else 'already renamed: the save had finished'})")


class InRound:
    """Fires `delay` seconds after this launch wrote SPL round `round`'s evaluation line
    (the next round's steps, evaluation or save are then under way)."""

    def __init__(self, metrics: str, round_: int, delay: float):
        self.metrics, self.round, self.delay = metrics, round_, delay
        self._seen_at: float | None = None
        self._next_read = 0.0

    def fires(self, elapsed: float, started_ns: int) -> bool:
        if self._seen_at is None:
            if elapsed < self._next_read or not _fresh(self.metrics, started_ns):
                return False
            self._next_read = elapsed + 0.01
            if max_step(self.metrics, "spl/round") >= self.round:
                self._seen_at = elapsed
            return False
        return elapsed - self._seen_at >= self.delay

    def describe(self, elapsed: float) -> str:
        return (f"killed {elapsed - self._seen_at:.2f} s after round {self.round}'s "
                f"evaluation (in round {self.round + 1})")


class CheckpointDone:
    """Fires once the checkpoint of `step` is finished."""

    def __init__(self, checkpoints: str, step: int):
        self.checkpoints, self.step = checkpoints, step

    def fires(self, elapsed: float, started_ns: int) -> bool:
        return os.path.isdir(os.path.join(self.checkpoints, str(self.step)))

    def describe(self, elapsed: float) -> str:
        return f"killed after the checkpoint of step {self.step}, {elapsed:.1f} s in"


# ------------------------------------------------------------------ trials

@dataclasses.dataclass
class Trial:
    category: str
    name: str
    command: str
    expected: str  # the outcome that passes: "equal" or "clean_error"
    outcome: str = ""
    detail: str = ""
    seconds: float = 0.0
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (self.expected, "skipped")


class Harness:
    """Runs the trials into `out` and keeps their records."""

    def __init__(self, out: str, rng: random.Random, keep_workdirs: bool):
        self.out, self.rng, self.keep_workdirs = out, rng, keep_workdirs
        self.trials: list[Trial] = []
        self.references: dict[str, dict] = {}
        self.durations: dict[str, float] = {}

    # -------------------------------------------------------------- bookkeeping
    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def record(self, trial: Trial, index: int, total: int) -> None:
        self.trials.append(trial)
        mark = "ok" if trial.ok else "FAIL"
        print(f"[{trial.category} {index}/{total}] {trial.name}: {mark} "
              f"({OUTCOME_NAMES[trial.outcome]}; {trial.detail}) {trial.seconds:.0f} s",
              flush=True)
        if trial.ok and trial.workdir and not self.keep_workdirs and os.path.lexists(
                trial.workdir) and trial.workdir.startswith(self.path("work")):
            if os.path.isdir(trial.workdir):
                shutil.rmtree(trial.workdir)
            else:  # the invalid input whose workdir is a file
                os.remove(trial.workdir)

    def timeout(self, config: str) -> float:
        return max(120.0, 6 * self.durations[config])

    def finished(self, trial: Trial, last: Launch, config: str, notes: list[str]) -> Trial:
        """Classifies a run that should have ended equal to `config`'s reference (a run
        that printed a traceback and finished is still compared, for the detail)."""
        diff = compare(self.references[config], trial.workdir) if last.rc == 0 else None
        ending = (f"results {diff or 'equal to the reference'}" if last.rc == 0 else
                  f"the last run ended with exit {last.rc}: "
                  f"{last.note or (last.error_lines() or ['no stderr'])[-1]}")
        if last.traceback:
            trial.outcome = "traceback"
            ending = f"{traceback_summary(last.stderr)}; {ending}"
        elif last.rc == 0:
            trial.outcome = "other" if diff else "equal"
        else:
            trial.outcome = "clean_error" if last.rc is not None else "other"
        trial.detail = "; ".join([*notes, ending])
        return trial

    # -------------------------------------------------------------- references
    def reference(self, config: str, args: list[str]) -> None:
        """One uninterrupted run: its outputs are the reference; its failure ends the
        harness (exit 2)."""
        workdir = self.path("reference", config)
        cmd = [*RUN, "--workdir", workdir, *args]
        result = launch(cmd, self.path("logs", "reference", config), timeout=1800)
        if result.rc != 0 or result.traceback:
            tail = "\n".join(result.error_lines()[-5:])
            raise SystemExit(f"error: the reference run {shown(cmd)} failed (exit "
                             f"{result.rc}):\n{tail}")
        self.references[config] = outputs(workdir)
        self.durations[config] = result.seconds
        print(f"[reference] {config}: {result.seconds:.0f} s, "
              f"{', '.join(sorted(self.references[config]))}", flush=True)

    # -------------------------------------------------------------- kills
    def kill_and_resume(self, trial: Trial, cmd: list[str], config: str, plan) -> int:
        """Launches `cmd`, kills it where `plan(i)` says (None: let it finish), reruns
        the same command, ...; then classifies `trial` by the last run against the
        reference. Returns how many kills landed."""
        t0, notes, i, landed = time.time(), [], 0, 0
        while True:
            kill_point = plan(i)
            result = launch(cmd, self.path("logs", trial.name.split(" ")[0], str(i)),
                            self.timeout(config), kill_point)
            i += 1
            if result.traceback and result.killed:  # printed before the kill landed
                notes.append(f"launch {i} printed a traceback before it was killed")
                break
            if kill_point is None or result.rc is not None:
                if kill_point is not None:
                    notes.append("the run ended before the kill")
                if kill_point is None or result.rc != 0 or result.traceback:
                    break
                continue
            notes.append(result.note)
            if result.note.startswith("timed out"):
                break
            landed += 1
        trial.seconds = time.time() - t0
        self.finished(trial, result, config, notes)
        return landed

    def kill_trials(self, category: str, prefix: str, config: str, kills: int, most: int,
                    point) -> None:
        """`kills` kill points, in trials of 1 to `most` of them (a seeded draw): each
        trial starts `config` in a fresh workdir, kills it at `point(workdir)` (None: no
        kill point left to reach), reruns the same command, ..., lets the last rerun
        finish and compares it with the reference."""
        groups = []
        while kills > 0:
            groups.append(self.rng.randint(1, min(most, kills)))
            kills -= groups[-1]
        for k, size in enumerate(groups, 1):
            name = f"{prefix}-{k}"
            workdir = self.path("work", name)
            cmd = [*RUN, "--workdir", workdir, *(SUPERVISED if config == "supervised" else SPL)]

            def plan(i, workdir=workdir, size=size):
                return point(workdir) if i < size else None

            trial = Trial(category, f"{name} ({size} kill{'s' * (size > 1)})", shown(cmd),
                          "equal", workdir=workdir)
            landed = self.kill_and_resume(trial, cmd, config, plan)
            trial.detail = f"{landed} of {size} kills landed: {trial.detail}"
            self.record(trial, k, len(groups))

    def random_step_point(self, workdir: str):
        """When metrics.jsonl reaches a random step past the killed run's last line, or
        (half of the draws) a random delay up to the reference's wall time."""
        metrics = os.path.join(workdir, "metrics.jsonl")
        reached = max_step(metrics)
        steps = [s for s in range(LOG_EVERY, SUPERVISED_STEPS + 1, LOG_EVERY) if s > reached]
        if steps and self.rng.random() < 0.5:
            return AtStep(metrics, self.rng.choice(steps))
        return AfterDelay(self.rng.uniform(0, self.durations["supervised"]))

    def save_point(self, workdir: str):
        """Inside the save of a random step past the newest finished checkpoint."""
        checkpoints = os.path.join(workdir, "checkpoints")
        done = max(checkpoint_steps(checkpoints), default=0)
        steps = [s for s in range(CHECKPOINT_EVERY, SUPERVISED_STEPS + 1, CHECKPOINT_EVERY)
                 if s > done]
        return InSave(checkpoints, self.rng.choice(steps)) if steps else None

    def round_point(self, workdir: str):
        """Up to 1 s after the evaluation line of a random SPL round past the killed run's
        last one (round 0: identification), i.e. inside the next round."""
        metrics = os.path.join(workdir, "metrics.jsonl")
        reached = max_step(metrics, "spl/round")
        rounds = [r for r in range(SPL_ROUNDS) if r > reached]
        if not rounds:
            return None
        return InRound(metrics, self.rng.choice(rounds), self.rng.uniform(0, 1.0))

    # -------------------------------------------------------------- corrupt checkpoints
    def damaged_base(self) -> tuple[str, list[int]] | str:
        """A supervised workdir killed after its checkpoint of step 40: (path, finished
        checkpoint steps), or why it could not be made."""
        workdir = self.path("work", "corrupt-base")
        cmd = [*RUN, "--workdir", workdir, *SUPERVISED]
        checkpoints = os.path.join(workdir, "checkpoints")
        result = launch(cmd, self.path("logs", "corrupt-base", "0"),
                        self.timeout("supervised"), CheckpointDone(checkpoints, 40))
        steps = checkpoint_steps(checkpoints)
        if not result.killed or result.note.startswith("timed out"):
            return f"{shown(cmd)} was not killed after step 40: {result.note or result.rc}"
        if os.path.exists(os.path.join(workdir, "results.json")) or len(steps) < 2:
            return f"{shown(cmd)} killed after step 40 left checkpoints {steps} (finished?)"
        return workdir, steps

    @staticmethod
    def corrupt(step_dir: str, how: str) -> str:
        """Damages one finished checkpoint; returns what was done."""
        if how == "truncated data file":
            files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state"))
                     for f in fs if os.path.basename(d) == "d"]
            biggest = max(files, key=os.path.getsize)
            size = os.path.getsize(biggest)
            with open(biggest, "r+b") as f:
                f.truncate(size // 2)
            return f"{os.path.relpath(biggest, step_dir)} truncated {size} -> {size // 2} B"
        if how == "no meta/metadata":
            os.remove(os.path.join(step_dir, "meta", "metadata"))
        elif how == "no state/manifest.ocdbt":
            os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))
        elif how == "emptied step directory":
            for child in os.listdir(step_dir):
                path = os.path.join(step_dir, child)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        else:
            raise ValueError(how)
        return how

    def corruptions(self, kinds: list[str]) -> None:
        t0 = time.time()
        base = self.damaged_base()
        for k, how in enumerate(kinds, 1):
            name = f"corrupt-{k}"
            workdir = self.path("work", name)
            cmd = [*RUN, "--workdir", workdir, *SUPERVISED]
            trial = Trial(CATEGORIES[3], f"{name} ({how})", shown(cmd), "equal",
                          workdir=workdir)
            if isinstance(base, str):
                trial.outcome, trial.detail = "other", f"harness: {base}"
                self.record(trial, k, len(kinds))
                continue
            source, steps = base
            shutil.copytree(source, workdir, symlinks=True)
            newest, previous = steps[-1], steps[-2]
            done = self.corrupt(os.path.join(workdir, "checkpoints", str(newest)), how)
            result = launch(cmd, self.path("logs", name, "0"), self.timeout("supervised"))
            trial.seconds = time.time() - t0 if k == 1 else result.seconds
            self.finished(trial, result, "supervised", [f"step {newest}: {done}"])
            if trial.outcome == "equal":
                problem = self.moved_aside_problem(workdir, result, newest, previous)
                if problem:
                    trial.outcome, trial.detail = "other", f"{trial.detail}; but {problem}"
            self.record(trial, k, len(kinds))
        if not isinstance(base, str) and not self.keep_workdirs:
            shutil.rmtree(base[0])  # each trial damaged its own copy

    @staticmethod
    def moved_aside_problem(workdir: str, result: Launch, newest: int,
                            previous: int) -> str | None:
        """What is missing of: one stderr line saying checkpoint `newest` does not load,
        was moved to checkpoints.bad/ and the run resumes from `previous`; the directory
        there."""
        lines = [x for x in result.error_lines() if "does not load" in x]
        if len(lines) != 1:
            return f"{len(lines)} stderr lines say a checkpoint does not load"
        line = lines[0]
        wanted = (f"checkpoint at step {newest} does not load", "checkpoints.bad",
                  f"resuming from step {previous}")
        missing = [w for w in wanted if w not in line]
        if missing:
            return f"the line lacks {missing}: {line}"
        bad = os.path.join(workdir, "checkpoints.bad")
        moved = os.listdir(bad) if os.path.isdir(bad) else []
        if len(moved) != 1 or not moved[0].startswith(f"{newest}-"):
            return f"checkpoints.bad/ holds {moved}"
        return None

    # -------------------------------------------------------------- concurrency
    def concurrent_pairs(self, n: int) -> None:
        for k in range(1, n + 1):
            name = f"concurrent-{k}"
            workdir = self.path("work", name)
            cmd = [*RUN, "--workdir", workdir, *SUPERVISED]
            first = Running(cmd, self.path("logs", name, "a"))
            second = Running(cmd, self.path("logs", name, "b"))
            timeout = self.timeout("supervised")
            results = [first.wait(timeout), second.wait(timeout)]
            for j, trial in enumerate(self.pair_trials(name, cmd, workdir, results)):
                self.record(trial, 2 * (k - 1) + j + 1, 2 * n)

    def pair_trials(self, name: str, cmd: list[str], workdir: str,
                    results: list[Launch]) -> list[Trial]:
        """Two trials: the process that should finish (equal to the reference) and the
        one that should be refused naming the other's pid (a clean error)."""
        refused = [r for r in results if r.rc not in (0, None)
                   and "in use by another run" in r.stderr]
        winner = next((r for r in results if r not in refused), results[0])
        loser = next(r for r in results if r is not winner)
        run = Trial(CATEGORIES[4], f"{name} (pid {winner.pid}, should finish)", shown(cmd),
                    "equal", seconds=winner.seconds, workdir=workdir)
        self.finished(run, winner, "supervised", [])
        stop = Trial(CATEGORIES[4], f"{name} (pid {loser.pid}, should be refused)",
                     shown(cmd), "clean_error", seconds=loser.seconds)
        lines = loser.error_lines()
        if loser.traceback:
            stop.outcome, stop.detail = "traceback", traceback_summary(loser.stderr)
        elif loser.rc == 0:
            stop.outcome = "other"
            stop.detail = "not refused: both processes exited 0 (ran in one workdir)"
        elif loser.rc is None:
            stop.outcome, stop.detail = "other", loser.note
        elif not lines or f"pid {winner.pid}" not in lines[-1] or len(lines) > 1:
            stop.outcome = "other"
            stop.detail = (f"exit {loser.rc}, {len(lines)} stderr lines, the last not naming "
                           f"pid {winner.pid}: {(lines or [''])[-1]}")
        else:
            stop.outcome, stop.detail = "clean_error", f"exit {loser.rc}: {lines[-1]}"
        return [run, stop]

    # -------------------------------------------------------------- invalid inputs
    def invalid_inputs(self) -> None:
        cases = invalid_cases()
        for k, (label, tool, args, kind, expect) in enumerate(cases, 1):
            name = f"invalid-{k}"
            workdir = self.path("work", name)
            base = ([*RUN, "--workdir", workdir, *SUPERVISED] if tool == "run"
                    else [*REPRODUCE, "--workdir", workdir])
            cmd = [*base, *args] if tool == "run" else [*base, *args, *REPRODUCE_SHORT]
            trial = Trial(CATEGORIES[5], label, shown(cmd), "clean_error", workdir=workdir)
            if prepare_workdir(workdir, kind) == "deny":  # root: chmod does not restrict
                trial.command = "(os.access denying writes, DENY_WRITES) " + trial.command
                cmd = [sys.executable, "-c", DENY_WRITES, workdir, *cmd[1:]]
            before = state_of(workdir)
            result = launch(cmd, self.path("logs", name, "0"),
                            timeout=30 + 4 * self.durations["supervised"])
            trial.seconds = result.seconds
            trial.outcome, trial.detail = judge_refusal(result, expect, before,
                                                        state_of(workdir))
            if kind == "readonly":
                os.chmod(workdir, 0o755)
            self.record(trial, k, len(cases))


def invalid_cases() -> list[tuple[str, str, list[str], str, str]]:
    """(label, "run" | "reproduce", arguments, workdir kind, what the last stderr line
    must name). Workdir kinds: absent, file (an existing file), readonly (a directory
    without write permission)."""
    table = ["--table", "main_job"]
    return [
        ("--config.foo=1", "run", ["--config.foo=1"], "absent", "foo"),
        ("--config.optimizer.lrr=1e-3", "run", ["--config.optimizer.lrr=1e-3"], "absent",
         "lrr"),
        ("--config nonexistent.py", "run", ["--config", "nonexistent.py"], "absent",
         "nonexistent.py"),
        ("--config default.py:bogus", "run",
         ["--config", "experiments/configs/default.py:bogus"], "absent", "bogus"),
        ("workdir is an existing file", "run", [], "file", "is a file"),
        ("read-only workdir", "run", [], "readonly", "not writable"),
        ("stray positional argument", "run", ["experiments/configs/label_noise.py"],
         "absent", "label_noise.py"),
        ("reproduce --seeds 0", "reproduce", [*table, "--seeds", "0"], "absent", "--seeds"),
        ("reproduce --seeds -1", "reproduce", [*table, "--seeds", "-1"], "absent",
         "--seeds"),
        ("reproduce --set num_steps", "reproduce", [*table, "--set", "num_steps"], "absent",
         "num_steps"),
        ("reproduce --set a=b=c", "reproduce", [*table, "--set", "a=b=c"], "absent",
         "a=b=c"),
        # a field the table's columns set (ns3l_table1's svhn-1000 column: ten classes)
        ("reproduce --table ns3l_table1 --set split.seen_classes=[0,1,2]", "reproduce",
         ["--table", "ns3l_table1", "--set", "split.seen_classes=[0,1,2]"], "absent",
         "split.seen_classes"),
        ("reproduce --set num_steps=1.5", "reproduce", [*table, "--set", "num_steps=1.5"],
         "absent", "num_steps=1.5"),
        ("reproduce --set tensorboard=no", "reproduce", [*table, "--set", "tensorboard=no"],
         "absent", "tensorboard"),
        ("reproduce --table oliver_table1 --set split.mismatch_ratio=1.5", "reproduce",
         ["--table", "oliver_table1", "--set", "split.mismatch_ratio=1.5"], "absent",
         "split.mismatch_ratio"),
        ("--config.keep_checkpoints=0", "run", ["--config.keep_checkpoints=0"], "absent",
         "keep_checkpoints"),
        ("--config.keep_checkpoints=-1", "run", ["--config.keep_checkpoints=-1"], "absent",
         "keep_checkpoints"),
        ("--config.median_last_evals=-1", "run", ["--config.median_last_evals=-1"],
         "absent", "median_last_evals"),
        ("--config.optimizer.b1=7", "run", ["--config.optimizer.b1=7"], "absent", "b1"),
        ("--config.optimizer.eps=-1", "run", ["--config.optimizer.eps=-1"], "absent",
         "optimizer.eps"),
        ("--config.ema_decay=1.0", "run", ["--config.ema_decay=1.0"], "absent", "ema_decay"),
        ("--config.pi_model.weight=-5", "run", ["--config.pi_model.weight=-5"], "absent",
         "pi_model.weight"),
        ("--config.model_kwargs.bn_momentum=2", "run", ["--config.model_kwargs.bn_momentum=2"],
         "absent", "bn_momentum"),
        ("--config.model_kwargs.nonexistent=1", "run",
         ["--config.model_kwargs.nonexistent=1"], "absent", "nonexistent"),
        ("--config.batch_size=100000 (larger than the data)", "run",
         ["--config.batch_size=100000"], "absent", "batch_size"),
    ]


def prepare_workdir(workdir: str, kind: str) -> str | None:
    """Makes the workdir a case starts from; "deny" when a read-only workdir must be
    simulated (`DENY_WRITES`) because chmod does not restrict this user."""
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    if kind == "file":
        with open(workdir, "w") as f:
            f.write("not a workdir\n")
    elif kind == "readonly":
        os.makedirs(workdir)
        os.chmod(workdir, 0o555)
        if os.access(workdir, os.W_OK):
            os.chmod(workdir, 0o755)
            return "deny"
    elif kind != "absent":
        raise ValueError(kind)
    return None


def state_of(path: str):
    """What is at `path`: None, a file's bytes, or a directory's {relative path: bytes}."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    found = {}
    for d, _dirs, files in os.walk(path):
        found[os.path.relpath(d, path) + "/"] = b""
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                found[os.path.relpath(os.path.join(d, name), path)] = f.read()
    return found


def judge_refusal(result: Launch, expect: str, before, after) -> tuple[str, str]:
    """(outcome, detail) of a run that must be refused: non-zero exit, no traceback, at
    most MAX_ERROR_LINES stderr lines, the last naming `expect`, nothing written."""
    lines = result.error_lines()
    last = lines[-1] if lines else ""
    if result.traceback:
        return "traceback", f"exit {result.rc}: {traceback_summary(result.stderr)}"
    if result.rc is None:
        return "other", f"not refused: {result.note} (training?)"
    if result.rc == 0:
        return "other", "not refused: exit 0" + (f" ({last})" if last else "")
    problems = []
    if len(lines) > MAX_ERROR_LINES:
        problems.append(f"{len(lines)} lines of stderr")
    if expect not in last:
        problems.append(f"the last line does not name {expect!r}")
    if after != before:
        if before is None and after == {"./": b""}:
            problems.append("created the workdir (an empty directory)")
        elif before is None:
            problems.append(f"wrote the workdir ({len(after)} entries)")
        else:
            problems.append("changed the workdir")
    if problems:
        return "other", f"exit {result.rc}, {'; '.join(problems)}: {last}"
    return "clean_error", f"exit {result.rc}: {last}"


# ------------------------------------------------------------------ report

def counts(trials: list[Trial]) -> dict[str, dict[str, int]]:
    table = {c: dict.fromkeys(OUTCOMES, 0) for c in CATEGORIES}
    for t in trials:
        table[t.category][t.outcome] += 1
    return table


def markdown(trials: list[Trial], header: list[str]) -> str:
    """The table, one row per category, then one line per failing trial."""
    table = counts(trials)
    cols = ["trials", *(OUTCOME_NAMES[o] for o in OUTCOMES)]
    lines = [*header, "", "| category | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for c in CATEGORIES:
        n = sum(table[c].values())
        lines.append(f"| {c} | {n} | " + " | ".join(str(table[c][o]) for o in OUTCOMES)
                     + " |")
    failing = [t for t in trials if not t.ok]
    skipped = [t for t in trials if t.outcome == "skipped"]
    lines += ["", f"{len(failing)} failing trial(s)" + (":" if failing else "."), ""]
    lines += [f"- {t.category} / {t.name}: `{t.command}` -- {t.detail}" for t in failing]
    if skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- {t.category} / {t.name}: {t.detail}" for t in skipped]
    return "\n".join(lines) + "\n"


def figure(trials: list[Trial], path: str, title: str) -> None:
    """A horizontal stacked bar of outcomes per category, with how many trials passed
    (ended as they must: equal, or refused cleanly) at the end of each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = counts(trials)
    colors = {"equal": "tab:green", "clean_error": "tab:blue", "traceback": "tab:red",
              "other": "tab:orange", "skipped": "lightgrey"}
    fig, ax = plt.subplots(figsize=(8, 4))
    ys = range(len(CATEGORIES))
    left = [0] * len(CATEGORIES)
    for o in OUTCOMES:
        widths = [table[c][o] for c in CATEGORIES]
        ax.barh(ys, widths, left=left, color=colors[o], label=OUTCOME_NAMES[o])
        for y, (x0, w) in enumerate(zip(left, widths, strict=True)):
            if w:
                ax.text(x0 + w / 2, y, str(w), ha="center", va="center", fontsize=8)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, c in enumerate(CATEGORIES):
        mine = [t for t in trials if t.category == c and t.outcome != "skipped"]
        skipped = table[c]["skipped"]
        ax.text(left[y] + 0.2, y, f"passed {sum(t.ok for t in mine)}/{len(mine)}"
                + (f", {skipped} skipped" if skipped else ""), va="center", fontsize=7)
    ax.set_xlim(0, max(left + [1]) * 1.15 + 1)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(CATEGORIES, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("trials")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fresh_out(path: str | None) -> str:
    """`path` (default runs/reliability/<UTC time>), which must not exist or be empty."""
    if path is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(ROOT, "runs", "reliability", stamp)
    path = os.path.abspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise SystemExit(f"error: --out {path} exists and is not an empty directory; "
                         "choose a fresh one")
    os.makedirs(path, exist_ok=True)
    return path


def source_digest() -> str:
    """sha256 (12 hex digits) of every .py file under sslj/ and experiments/: the code the
    runs execute, compared at the start and the end of the harness."""
    import hashlib

    h = hashlib.sha256()
    for top in ("sslj", "experiments"):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs.sort()
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(d, name)
                h.update(os.path.relpath(path, ROOT).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:12]


def git_state() -> str:
    """HEAD and the files of sslj/ and experiments/ changed since (or why unknown)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "--", "sslj", "experiments"],
                               cwd=ROOT, text=True, capture_output=True,
                               check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError) as e:
        return f"git state unknown ({e})"
    changed = [x.strip() for x in dirty if x.strip()]
    return f"commit {head}" + (f", changed: {', '.join(changed)}" if changed else ", clean")


def plan_sizes(args) -> dict:
    """How many trials of each kind: --short's CI set or the full one."""
    if args.short:
        return {"kills": 2 if args.kills is None else args.kills, "saves": 1, "spl": 1,
                "corruptions": 2, "pairs": 1}
    return {"kills": 10 if args.kills is None else args.kills, "saves": 3, "spl": 3,
            "corruptions": 4, "pairs": 2}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true",
                        help="the CI set: 2 kills at random steps, 1 inside a save, 1 "
                        "inside an SPL round, 2 corruptions, 1 concurrent pair, all "
                        "invalid inputs")
    parser.add_argument("--kills", type=int, default=None,
                        help="kills at random steps, 1-3 per trial (default 10; 2 with "
                        "--short)")
    parser.add_argument("--seed", type=int, default=0, help="seeds every random choice")
    parser.add_argument("--out", default=None,
                        help="output folder (default runs/reliability/<UTC time>)")
    parser.add_argument("--keep_workdirs", action="store_true",
                        help="keep the workdirs of trials that passed too")
    args = parser.parse_args(argv)
    if args.kills is not None and args.kills < 0:
        parser.error("--kills must be >= 0")
    sizes = plan_sizes(args)
    out = fresh_out(args.out)
    rng = random.Random(args.seed)
    harness = Harness(out, rng, args.keep_workdirs)
    started, digest, code = time.time(), source_digest(), git_state()
    print(f"reliability: {'short' if args.short else 'full'} mode, seed {args.seed}, "
          f"{sizes}; writing to {out}", flush=True)
    try:
        harness.reference("supervised", SUPERVISED)
        if sizes["spl"]:
            harness.reference("spl", SPL)
        harness.kill_trials(CATEGORIES[0], "kill-step", "supervised", sizes["kills"], 3,
                            harness.random_step_point)
        harness.kill_trials(CATEGORIES[1], "kill-save", "supervised", sizes["saves"], 2,
                            harness.save_point)
        harness.kill_trials(CATEGORIES[2], "kill-spl", "spl", sizes["spl"], 2,
                            harness.round_point)
        # --short always takes the truncated file (the case whose failed reads printed
        # 1,800 lines before sslj.train.checkpoint dropped them) and one drawn other
        first = [CORRUPTIONS[0]] if args.short else []
        rest = [c for c in CORRUPTIONS if c not in first]
        harness.corruptions(sorted(first + rng.sample(rest, sizes["corruptions"] - len(first)),
                                   key=CORRUPTIONS.index))
        harness.concurrent_pairs(sizes["pairs"])
        harness.invalid_inputs()
    except SystemExit as e:
        print(e, file=sys.stderr, flush=True)
        return 2
    finally:
        kill_everything_we_started()
    wall = time.time() - started
    header = [f"# Reliability (issue 19): {'short' if args.short else 'full'} mode, "
              f"seed {args.seed}",
              "",
              f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC in "
              f"{wall:.0f} s; load average {os.getloadavg()[0]:.1f}; references: supervised "
              f"{harness.durations['supervised']:.0f} s"
              + (f", pi_model+spl {harness.durations['spl']:.0f} s"
                 if "spl" in harness.durations else "") + f"; kills and trials {sizes}.",
              "",
              f"Code: {code}; sources {digest}."]
    if source_digest() != digest:
        header += ["", f"WARNING: sslj/ or experiments/ changed during the run (sources "
                   f"{digest} -> {source_digest()}): the references and the trials may have "
                   "run different code."]
    report = markdown(harness.trials, header)
    print("\n" + report, flush=True)
    with open(os.path.join(out, "reliability.md"), "w") as f:
        f.write(report)
    with open(os.path.join(out, "trials.json"), "w") as f:
        json.dump([dataclasses.asdict(t) | {"ok": t.ok} for t in harness.trials], f,
                  indent=2)
    figure(harness.trials, os.path.join(out, "reliability.png"),
           f"sslj reliability, {'short' if args.short else 'full'} mode, seed {args.seed}")
    print(f"wrote {out}/reliability.md, reliability.png, trials.json", flush=True)
    return 1 if any(not t.ok for t in harness.trials) else 0


if __name__ == "__main__":
    sys.exit(main())
