"""End to end on the embedded MNIST-5k protocol with no class mismatch: SSL methods
against the supervised baseline (fixed seed, small scale, seen-class test accuracy at
the best validation step).

Small scale = TinyCNN, 300 steps of 32 labeled + 32 unlabeled images, 10 labels per
seen digit, one learning rate (3e-3) for every method. Measured at this scale (seed 0):
supervised 75.2 %, VAT and VAT+EntMin above 80.2 %, online Pseudo-Label 71.5 %. Only
VAT is asserted (VAT+EntMin adds a term whose numerics are tested elsewhere, and each
VAT run costs ~2 CPU minutes). The consistency methods (Pi, Mean Teacher, Temporal
Ensembling) and both Pseudo-Labels did not beat supervised reliably at any scale a CI
run affords (measured 200 to 1,200 steps, 3 or 10 labels per digit), so they are not
asserted here; their numerics are tested in test_consistency_methods.py.
"""

import pytest

from sslj.train.loop import train_and_evaluate
from tests.conftest import short_run_config

STEPS = 300
MARGIN = 0.05  # required lead over supervised (measured: 0.08 to 0.22)


def _small(method):
    c = short_run_config(method, STEPS)  # one learning rate for all: the comparison is the method
    c.split.mismatch_ratio = 0.0
    c.pseudo_label_accumulated.warmup_epochs = 1
    return c


@pytest.fixture(scope="module")
def supervised_accuracy(tmp_path_factory):
    out = tmp_path_factory.mktemp("supervised")
    return train_and_evaluate(_small("supervised"), str(out))["test_accuracy_at_best_val"]


@pytest.mark.parametrize("method", ["vat"])
def test_method_beats_supervised_without_mismatch(method, supervised_accuracy, tmp_path):
    result = train_and_evaluate(_small(method), str(tmp_path))
    acc = result["test_accuracy_at_best_val"]
    assert acc > supervised_accuracy + MARGIN, (method, acc, supervised_accuracy)
