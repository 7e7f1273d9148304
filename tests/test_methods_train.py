"""End to end on the embedded MNIST-5k protocol with no class mismatch: each SSL method
against the supervised baseline (fixed seed, small scale, seen-class test accuracy at
the best validation step).

Small scale = TinyCNN, 600 steps of 32 labeled + 32 unlabeled images, 10 labels per
seen digit, one learning rate (Adam 3e-3) for every method, BatchNorm running averages
with decay 0.9. The decay matters: with the model's default 0.99 the running statistics
lag a network trained this fast, and the evaluation measures the lag rather than the
method (seed 0, 300 steps: the supervised run's training loss was 0.15 at step 150 while
its test accuracy was 20 %; Pi-model 59 % vs supervised 75 % at the end). With 0.9
the same 300-step runs give Pi 92.3 % vs 90.3 %.

Measured at this scale (seed 0, 2-core CPU), test accuracy at the best validation step:

| method | accuracy | lead |
|---|---|---|
| supervised | 90.8 | |
| VAT | 97.5 | +6.7 |
| Mean Teacher | 95.5 | +4.7 |
| Pseudo-Label (online) | 95.5 | +4.7 |
| Temporal Ensembling (weight 10, 64 unlabeled per step) | 94.2 | +3.4 |
| Pi-model | 93.7 | +2.9 |
| Pseudo-Label, accumulated (report; before issue 22, see below) | 95.2 | +4.4 |
| FixMatch (mu = 1, no input noise) | 96.5 | +5.7 |
| MixMatch (linear ramp, no input noise) | 98.2 | +7.4 |
| NS3L alone (`supervised+ns3l`: threshold 0.4 / 6, weight 1) | 97.0 | +6.2 |

FixMatch and MixMatch were measured in a later session, where the supervised run gave
90.0 (its lead column above is against 90.8); their leads over that run were +6.5 and
+8.2. NS3L alone was measured in a later one still, against the 90.8 run.

Temporal Ensembling's per-example targets improve once per pass over the 1,500
unlabeled images, so it gets 64 unlabeled images per step (25 passes in 600 steps
instead of 13) and weight 10: with Laine & Aila's 30 and 32 per step it scored 90.5 %,
with 30 and 64 92.7 %, with 10 and 32 91.3 %.

The report's accumulated Pseudo-Label starts after 6 warm-up epochs (282 steps) and uses
distribution alignment (its default; `sslj/methods/pseudo_label.py`): 95.2 % (+4.4).
Without alignment, the report exactly, it scored 85.5-87.3 % (below supervised) with
1, 4 or 6 warm-up epochs: the confirmation bias the report describes. Its first
admission is 99.6 % right but skewed to the easiest digit (219 of 568 labeled 0), and
after one epoch on it the model is confident on wrong classes; the set ends 84 % right.

Accumulated Pseudo-Label left this test when BatchNorm's sums became matrix products
(issue 22): the same seed-0 run then gave 90.2 % (warm-up 6, best step 450) against
supervised 90.3 %, and 88.8-93.2 % over the two BatchNorm implementations and warm-ups
4 / 6 (8 devices, this machine), so at this scale its lead over supervised is within
what rounding alone moves; no single-seed test can rely on it. Its mechanics stay tested
in `test_consistency_methods.py` and `test_train_step.py`.

Why MNIST-5k and one seed: scikit-learn's 8x8 digits run these 600 steps 4-8x faster,
but there (all ten digits seen, 10 labels each) the methods lead supervised by only
+1.7 to +3.0 points on average over seeds 0-4, with a spread of 1.0-2.2 points between
seeds (seed 4: supervised 95.7 %, Temporal Ensembling and accumulated PL below it), and
the same seed moved by 2.6 points between 1 and 8 devices: not a separation a test can
rely on.
"""

import pytest

from sslj.config import set_fields
from sslj.procedures import run as run_experiment
from tests.conftest import shared_once, short_run_config

pytestmark = pytest.mark.slow

STEPS = 600
MARGIN = 0.015  # required lead over supervised (measured leads: 0.029 to 0.067)

# per-method settings on top of the shared small run (see the module docstring)
METHODS = {
    "vat": {},
    "pi_model": {},
    "mean_teacher": {},
    "pseudo_label": {},
    "temporal_ensembling": {"temporal_ensembling.weight": 10.0, "unlabeled_batch_size": 64},
    # pseudo_label_accumulated: not here, its lead is rounding noise (module docstring)
    # the embedded default's method_overrides: FixMatch's / MixMatch's weak augmentation
    # (no Gaussian noise), MixMatch's linear ramp; FixMatch at mu = 1
    "fixmatch": {"data.noise_std": 0.0},
    "mixmatch": {"data.noise_std": 0.0, "ramp.kind": "linear"},
    # NS3L alone: the supervised loss + NS3L on the unlabeled part of one clean pass
    "supervised+ns3l": {},
}


def _small(method, overrides=()):
    c = short_run_config(method, STEPS)  # one learning rate for all: the comparison is the method
    c.split.mismatch_ratio = 0.0
    c.model_kwargs.bn_momentum = 0.9
    return set_fields(c, overrides)


@pytest.fixture(scope="module")
def supervised_accuracy(tmp_path_factory):
    return shared_once(tmp_path_factory, "methods_train_supervised", lambda workdir: (
        run_experiment(_small("supervised"), workdir)["test_accuracy_at_best_val"]))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_beats_supervised_without_mismatch(method, supervised_accuracy, tmp_path):
    result = run_experiment(_small(method, METHODS[method]), str(tmp_path))
    acc = result["test_accuracy_at_best_val"]
    assert acc > supervised_accuracy + MARGIN, (method, acc, supervised_accuracy)
