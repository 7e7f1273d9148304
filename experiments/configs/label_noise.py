"""Label noise on MNIST-5k: the embedded twin of the ProSelfLC paper's CIFAR-100 runs
(`proselflc_cifar100.py`), on a 2-core CPU in minutes.

    python experiments/run.py --config experiments/configs/label_noise.py \
        --workdir runs/label_noise                    # CCE vs ProSelfLC, symmetric 0.4
    python experiments/run.py --config experiments/configs/label_noise.py:proselflc,asym0.3
    python experiments/reproduce.py --table proselflc_table4 --scale embedded

`get_config("<target>,<noise>[,final]")`, every part optional, as in
proselflc_cifar100.py: target in cce, ls, cp, boot_soft, boot_hard, proselflc; noise in
asym0.2 ... sym0.6, clean (default sym0.4); `final` trains on all 4,000 pool images
(400 per digit) with no validation set and reports the final model. With no target,
`compare` runs plain cross-entropy (`supervised`) and `supervised+proselflc`.

Protocol, scaled down from the paper's (Sec. 5, docs/REFERENCE.md):
  * all ten digits; the 4,000-image MNIST-5k training pool is split 80 / 20 into 3,200
    training images (320 per digit), whose labels get the noise, and 800 clean, trusted
    validation images (the paper's 80 % / 20 %); the 1,000 held-out images are the clean
    test set;
  * asymmetric noise swaps the digit pairs of `sslj.data.noise.DIGIT_PAIRS` (digits
    have no coarse classes);
  * the TinyCNN; SGD 0.1, momentum 0.9, weight decay 5e-4 on every parameter, batch
    64, 1,500 steps (30 epochs), lr / 10 at 50 % and 73 % of the steps (the paper's 15k
    and 22k of 30k), 2-px translation of the zero-padded image (as the official code);
  * the reported number is the final clean test accuracy (the paper reports results
    when training ends, which also tests robustness to long exposure to noisy labels).
ProSelfLC: B = 16, eta = 0.5, Gamma = the run's steps; LS, CP, Boot-soft: eps 0.5 (the
paper's best fixed eps); Boot-hard: eps 0.2 (Reed et al.'s beta = 0.8).
"""

from experiments.configs import proselflc_cifar100
from experiments.configs.proselflc_cifar100 import parse_arg, set_rows


def get_config(arg: str | None = None):
    """The CIFAR-100 protocol of proselflc_cifar100.py, scaled down to MNIST-5k."""
    target, noise, final = parse_arg(arg, "sym0.4")
    c = proselflc_cifar100.get_config(",".join(p for p in (target, noise) if p))
    c.data.source = "mnist5k"
    c.data.flip = False  # digits are not mirror-symmetric
    c.data.crop_pad = 2
    c.model = "cnn_tiny"
    c.split.seen_classes = tuple(range(10))
    c.split.labels_per_class = 400 if final else 320
    c.split.num_validation = 0 if final else 800

    c.batch_size = 64
    c.unlabeled_batch_size = 64  # unused: no method here uses unlabeled data
    c.eval_batch_size = 400
    c.num_steps = 1500
    c.eval_every = 100
    c.log_every = 50
    c.checkpoint_every = 500
    c.optimizer.decay_steps = (750, 1100)
    if target is None:
        set_rows(c, None, ("cce", "proselflc"))
    return c
