"""FixMatch (Sohn et al. 2020) and MixMatch (Berthelot et al. 2019) on CIFAR-10, their
own protocols: WRN-28-2, all ten classes seen, TFDS data.

    python experiments/run.py --config experiments/configs/fixmatch_cifar10.py:fixmatch,250 \
        --config.data.data_dir=/data/tfds --workdir runs/fixmatch_c10_250
    python experiments/run.py --config experiments/configs/fixmatch_cifar10.py:mixmatch,4000 \
        --config.data.data_dir=/data/tfds --workdir runs/mixmatch_c10_4000
    python experiments/reproduce.py --table fixmatch_cifar10 --scale full --seeds 5

`get_config("<method>,<labels>")`: method fixmatch | mixmatch | supervised (default
fixmatch), labels 40 | 250 | 4000 (default 250).

Shared (both papers' code): labels balanced over the classes, 5,000 validation images
(the code's `cifar10.<seed>@<labels>-5000` split), the rest of the 50,000 training images
unlabeled (both codes also feed the labeled images as unlabeled; sslj keeps them out),
weak augmentation = horizontal flip + translation by up to 4 px (reflect padding), no
Gaussian noise; 2^20 steps of 64 labeled images; EMA 0.999 of the weights, evaluated;
the reported number is the median test accuracy of the last 20 evaluations of the EMA
model (`median_ema_test_accuracy`; every 1,024 steps = 64 kimg, as the code reports).
  * FixMatch (docs/REFERENCE.md): mu = 7 (448 unlabeled images per step), tau 0.95,
    lambda_u 1, RandAugment (2 ops, random magnitude) + Cutout 16 px as the strong view,
    SGD Nesterov momentum 0.9, lr 0.03 cos(7 pi k / 16 K), weight decay 5e-4 on kernels
    (added to the gradient);
  * MixMatch (google-research/mixmatch mixmatch.py and runs/: w_match 75, beta 0.75,
    wd 0.02, lr 0.002, ema 0.999, train_kimg 2^16, warmup_kimg 1,024): K = 2, T = 0.5,
    alpha 0.75, lambda_u 75 ramped linearly over 1,024 kimg (16,384 steps of 64),
    lambda per example, Adam 0.002 with decoupled weight decay 0.02 x lr per step on
    kernels (`v <- v (1 - wd lr)`).
Published CIFAR-10 test error (%):
    fixmatch (RandAugment): 13.81 +- 3.37 / 5.07 +- 0.65 / 4.26 +- 0.05 at 40 / 250 / 4,000
    mixmatch: 11.08 +- 0.87 at 250, 6.24 +- 0.06 at 4,000 (the paper has no 40-label row)
"""

from experiments.configs import oliver_cifar10_4000
from sslj.config import nested_fields, set_fields

METHODS = ("fixmatch", "mixmatch", "supervised")
LABELS = (40, 250, 4000)
PAPER_ERROR = {"fixmatch": {40: 13.81, 250: 5.07, 4000: 4.26},
               "mixmatch": {250: 11.08, 4000: 6.24}}
STEPS = 1 << 20

# FixMatch's training setup (docs/REFERENCE.md); the supervised row trains with it too
FIXMATCH_SETUP = {
    "unlabeled_batch_size": 7 * 64,
    "optimizer.name": "nesterov", "optimizer.lr": 0.03, "optimizer.momentum": 0.9,
    "optimizer.schedule": "fixmatch_cosine", "optimizer.weight_decay": 5e-4,
    "optimizer.decoupled_weight_decay": False, "optimizer.decay_params": "kernels",
    "fixmatch.weight": 1.0, "fixmatch.threshold": 0.95, "fixmatch.num_ops": 2,
    "fixmatch.cutout": True, "fixmatch.cutout_fraction": 0.5,
}
# MixMatch's (google-research/mixmatch mixmatch.py, runs/)
MIXMATCH_SETUP = {
    "unlabeled_batch_size": 64,
    "optimizer.name": "adam", "optimizer.lr": 0.002, "optimizer.schedule": "constant",
    "optimizer.weight_decay": 0.02, "optimizer.decoupled_weight_decay": True,
    "optimizer.decay_params": "kernels",
    "ramp.kind": "linear", "ramp.steps": 1024 * 1024 // 64,
    "mixmatch.weight": 75.0, "mixmatch.temperature": 0.5, "mixmatch.k": 2,
    "mixmatch.alpha": 0.75, "mixmatch.mix": "example",
}


def parse_arg(arg: str | None):
    parts = [p for p in (arg or "").split(",") if p]
    method, labels = "fixmatch", 250
    for p in parts:
        if p in METHODS:
            method = p
        elif p.isdigit() and int(p) in LABELS:
            labels = int(p)
        else:
            raise ValueError(f"fixmatch_cifar10.py: unknown part {p!r}; allowed: methods "
                             f"{METHODS}, labels {LABELS}")
    return method, labels


def get_config(arg: str | None = None):
    """The config of one run; with no argument (reproduce.py's base), FixMatch at 250
    labels with MixMatch's setup in `method_overrides.mixmatch`, so that every row of
    `compare` / a table trains with its own paper's settings. With a method named, its
    setup is set directly (command-line flags then override it)."""
    method, labels = parse_arg(arg)
    c = oliver_cifar10_4000.get_config(method)
    c.split.labels_per_class = labels // 10
    c.split.num_validation = 5000
    c.split.unlabeled_size = 50_000 - labels - 5000
    c.data.flip = True
    c.data.crop_pad = 4
    c.data.pad_mode = "reflect"
    c.data.noise_std = 0.0
    c.num_steps = STEPS
    c.batch_size = 64
    c.eval_every = 1024
    c.checkpoint_every = 1024 * 16
    c.log_every = 256
    c.median_last_evals = 20
    c.ema_decay = 0.999
    c.method_overrides = type(c)()
    setup = MIXMATCH_SETUP if method == "mixmatch" else FIXMATCH_SETUP
    set_fields(c, setup)
    if not arg:
        c.compare = "supervised,fixmatch,mixmatch"
        c.method_overrides.mixmatch = nested_fields(MIXMATCH_SETUP)
    return c
