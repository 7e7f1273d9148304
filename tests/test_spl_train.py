"""End to end on the embedded MNIST-5k class-mismatch protocol at mismatch 0.6: the
Pi-model, then Pi-model + SPL pretrained by that very run (fixed seed, small scale).

Small scale = TinyCNN, 300 pretraining steps of 32 labeled + 32 unlabeled images, 10
labels per seen digit, Adam 3e-3, then SPL with the embedded default's settings (hard mask,
p = 1 - 0.6 (1 - 60/1500) = 0.424) over 3 rounds of 20 inner + 20 outer steps. The base
run selects its test accuracy on the whole validation set, SPL on V2 only.
"""

import pytest

from sslj import procedures
from tests.conftest import short_run_config

pytestmark = pytest.mark.slow

STEPS = 300


def _config(run):
    c = short_run_config(run, STEPS)
    c.split.mismatch_ratio = 0.6
    c.spl.rounds, c.spl.inner_steps, c.spl.outer_steps = 3, 20, 20
    return c


def test_pi_model_plus_spl_at_least_as_accurate_as_pi_model(tmp_path):
    base = procedures.run(_config("pi_model"), str(tmp_path / "pi_model"))
    spl = procedures.run(_config("pi_model+spl"), str(tmp_path / "spl"),
                    pretrained_dir=str(tmp_path / "pi_model"))
    assert spl["spl"]["pretrain"]["test_accuracy_at_best_val"] == base[
        "test_accuracy_at_best_val"]
    print("pi_model", base["test_accuracy_at_best_val"], "pi_model+spl",
          spl["test_accuracy_at_best_val"])
    assert spl["test_accuracy_at_best_val"] >= base["test_accuracy_at_best_val"], (
        spl["test_accuracy_at_best_val"], base["test_accuracy_at_best_val"])
