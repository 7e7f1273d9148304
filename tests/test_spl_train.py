"""End to end on the embedded MNIST-5k class-mismatch protocol at mismatch 0.6: the
Pi-model, then Pi-model + SPL pretrained by that very run (fixed seed, small scale).

Small scale = TinyCNN, 300 pretraining steps of 32 labeled + 32 unlabeled images, 10
labels per seen digit, Adam 3e-3, then SPL with the embedded default's settings (hard mask,
p = 1 - 0.6 (1 - 60/1500) = 0.424) over 3 rounds of 20 inner + 20 outer steps. The base
run selects its test accuracy on the whole validation set, SPL on V2 only.
"""

import json
import os
import subprocess
import sys

import pytest

from sslj import procedures
from tests.conftest import shared_once, short_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow

STEPS = 300


def config_for(run):
    c = short_run_config(run, STEPS)
    c.split.mismatch_ratio = 0.6
    c.spl.rounds, c.spl.inner_steps, c.spl.outer_steps = 3, 20, 20
    c.model_kwargs.bn_momentum = 0.99  # as measured (set: a 300-step run would get 0.967)
    return c


def pi_and_spl(workdir: str) -> dict:
    """The Pi-model run and the Pi-model + SPL run it pretrains (test accuracies)."""
    base = procedures.run(config_for("pi_model"), os.path.join(workdir, "pi_model"))
    spl = procedures.run(config_for("pi_model+spl"), os.path.join(workdir, "spl"),
                         pretrained_dir=os.path.join(workdir, "pi_model"))
    return {"pi_model": base["test_accuracy_at_best_val"],
            "pretrain": spl["spl"]["pretrain"]["test_accuracy_at_best_val"],
            "spl": spl["test_accuracy_at_best_val"],
            "rounds": [e["test_accuracy"] for e in spl["history"]]}


@pytest.fixture(scope="module")
def default_isa(tmp_path_factory):
    return shared_once(tmp_path_factory, "spl_train_default_isa", pi_and_spl)


def test_pi_model_plus_spl_at_least_as_accurate_as_pi_model(default_isa):
    r = default_isa
    assert r["pretrain"] == r["pi_model"]
    print("pi_model", r["pi_model"], "pi_model+spl", r["spl"])
    assert r["spl"] >= r["pi_model"], (r["spl"], r["pi_model"])


# the chaos guard's bound on |SPL(default ISA) - SPL(SSE4.2)| in test accuracy (see below)
ISA_TOLERANCE = 0.025


def test_spl_outcome_is_stable_across_instruction_sets(default_isa, tmp_path):
    """The chaos guard (issue 21): the same short run compiled for SSE4.2 instead of this
    machine's default instruction set -- numerically equivalent, only rounding differs --
    must end within ISA_TOLERANCE of the default's SPL accuracy.

    Measured on this configuration with 8 fake devices (test accuracy % at the best V2
    round, this machine's default ISA (AVX-512) / AVX2, seeds 0 / 1 / 2):
      * SPL as it is (BatchNorm statistics recalibrated): 95.83 / 96.00, 95.33 / 96.50,
        96.50 / 95.33 -- at most 1.17 points apart (7 of 600 test images);
      * without the recalibration (`spl.recalibrate_bn = False`, the behaviour issue 21
        found chaotic on the main job): 82.83 / 81.00, 57.83 / 58.33, 80.00 / 83.17 -- up
        to 3.17 points apart, and 25-40 points lower;
      * the Pi-model pretraining itself: 73.00 / 73.00, 62.67 / 64.17, 75.67 / 77.83;
      * this test, seed 0, default / SSE4.2: Pi 73.00 / 75.33, SPL 95.83 / 95.33.
    This short run shows only part of the main job's sensitivity (there, seed 0 gave
    96.33 / 92.50 / 85.67 across three ways of compiling it), so the bound, 2.5 points
    (15 images), is set above the measured spread with recalibration and below the worst
    without it; seed 0 is the one checked.
    """
    script = (f"import json, sys; sys.path.insert(0, {ROOT!r}); "
              "from tests.test_spl_train import pi_and_spl; "
              f"print('RESULT', json.dumps(pi_and_spl({str(tmp_path)!r})))")
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + " --xla_cpu_max_isa=SSE4_2"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stdout
    other = json.loads(out.split("RESULT ", 1)[1])
    print("default", default_isa, "SSE4.2", other)
    assert abs(other["spl"] - default_isa["spl"]) <= ISA_TOLERANCE, (default_isa, other)
