"""The entry point as a user meets it: clear messages, no tracebacks."""

import os
import subprocess
import sys

import pytest

from sslj.procedures import run as run_experiment
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "run.py"),
                           "--workdir", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("args,message", [
    (["--config.split.mismatch_ratio=1.5"],
     "config.split.mismatch_ratio: 1.5 is out of range (allowed: [0.0, 1.0])"),
    (["--config.data.source=tfds:cifar10", "--config.data.data_dir=/nonexistent/tfds"],
     "python -m sslj.data.prepare cifar10 --data_dir /nonexistent/tfds"),
    # issue 19, section 6: each a one-line message, nothing written
    (["--config.optimizer.lrr=1e-3"], "unknown config field 'optimizer.lrr' "
     "(--config.optimizer.lrr); did you mean 'lr'?"),
    (["--config.foo=1"], "unknown config field 'foo'"),
    (["--config=nonexistent.py"], "--config 'nonexistent.py': no such file"),
    (["--config=experiments/configs/default.py:bogus"], "does not load: get_config()"),
    (["experiments/configs/label_noise.py"], "unexpected argument "
     "'experiments/configs/label_noise.py' (run.py takes only flags); did you mean --config"),
    (["--config.num_steps=1.5"], "--config.num_steps=1.5: expected an integer"),
    (["--config.tensorboard=no"], "--config.tensorboard='no': expected true or false"),
    (["--config.model_kwargs.bn_mom=0.9"], "config.model_kwargs.bn_mom: not an argument"),
    (["--config.keep_checkpoints=0"], "config.keep_checkpoints: 0 is out of range"),
    (["--config.data.source=digits"], "allowed: at most 957 at this mismatch ratio"),
])
def test_cli_reports_bad_input_without_traceback(tmp_path, args, message):
    proc = run_cli(*args, tmp_path=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "supervised" / "checkpoints").exists()
    assert not (tmp_path / "run" / "supervised" / "run.json").exists()




def test_read_only_workdir_is_refused_in_one_line(tmp_path):
    """chmod cannot make a directory read-only for root (this machine runs tests as
    root), so the file system's answer is replaced by a denying `os.access` for the
    directory (`experiments.reliability.DENY_WRITES`); the rest is the real run.py."""
    locked = tmp_path / "locked"
    locked.mkdir()
    env = {**os.environ, "XLA_FLAGS": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    from experiments.reliability import DENY_WRITES

    proc = subprocess.run([sys.executable, "-c", DENY_WRITES, str(locked),
                           os.path.join(ROOT, "experiments", "run.py"),
                           "--workdir", str(locked / "run")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    assert f"workdir {locked / 'run'} is not writable; choose another (--workdir)" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(locked) == []


@pytest.mark.slow
def test_digits_source_end_to_end(tmp_path):
    c = tiny_config(**{"data.source": "digits", "data.crop_pad": 1, "split.labels_per_class": 5,
                       "split.unlabeled_size": 400, "split.num_validation": 100,
                       "method": "pi_model", "eval_batch_size": 96})
    r = run_experiment(c, str(tmp_path))
    assert r["split"] == "digits.oliver.mm0.60@30.s0"
    assert 0.0 <= r["test_accuracy_at_best_val"] <= 1.0
