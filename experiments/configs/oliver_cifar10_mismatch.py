"""Oliver et al. 2018, class mismatch on CIFAR-10 (their Fig. 2): WRN-28-2, TFDS data.

    python experiments/run.py --config experiments/configs/oliver_cifar10_mismatch.py \
        --config.data.data_dir=/data/tfds --workdir runs/oliver_mm050
    python experiments/reproduce.py --table oliver_mismatch --scale full --seeds 5

Protocol: seen = the six animal classes (bird 2, cat 3, deer 4, dog 5, frog 6, horse 7),
400 labels per seen class (2,400), 20,000 unlabeled images of which a fraction
delta in {0, .25, .5, .75, 1} comes from the four unseen classes; validation: the
seen-class part (~3,000) of 5,000 random training images, as Oliver's code
(`--labeled_classes_filter` over its 5,000-image validation split;
split.validation_source = "seen_of_random"); test on the seen classes. Oliver's code
builds each delta's unlabeled set by filtering classes out of the whole training split
(labeled images included); sslj draws exactly round(delta * 20,000) unseen-class images
and keeps the labeled ones out. Batch 100 (50 labeled + 50 unlabeled),
Adam 3e-3 (Pi 3e-4), x0.2 at 400k of 500k steps, consistency weight 20 ramped over
200k steps, BN decay 0.999 with only the clean pass writing the statistics, VAT
eps 6.0.
Expected: the paper plots test error vs delta; at delta = 0 on its 4,000-label
benchmark it reports supervised 20.26 % and Pi 16.37 % error, and with delta = 0.75+
the Pi-model falls to about the supervised error. With 8 devices use batch sizes
divisible by 8 (e.g. --config.batch_size=48 --config.unlabeled_batch_size=48).
"""

from experiments.configs import default


def get_config():
    c = default.get_config()
    c.model = "wrn28_2"
    c.data.source = "tfds:cifar10"
    c.data.flip = True
    c.data.crop_pad = 2
    c.data.noise_std = 0.15
    c.split.protocol = "oliver"
    c.split.seen_classes = (2, 3, 4, 5, 6, 7)
    c.split.mismatch_ratio = 0.5
    c.split.labels_per_class = 400
    c.split.unlabeled_size = 20000
    c.split.num_validation = 5000
    c.split.validation_source = "seen_of_random"
    c.batch_size = 50
    c.unlabeled_batch_size = 50
    c.eval_batch_size = 1000
    c.num_steps = 500_000
    c.log_every = 500
    c.eval_every = 5000
    c.checkpoint_every = 5000
    c.median_last_evals = 20
    c.optimizer.lr = 3e-3
    c.optimizer.decay_steps = 400_000
    c.optimizer.decay_factor = 0.2
    c.ramp.steps = 200_000
    c.ema_decay = 0.999
    c.vat.eps = 6.0  # Oliver et al.'s CIFAR-10 value (lib/hparams.py), not the MNIST 2.0
    return c
