"""ICN (Jin, Lazarow & Tu, "Introspective classification with convolutional nets",
NeurIPS 2017): Tables 1-4 and Fig. 3, full scale on TFDS data, and the embedded twins on
MNIST-5k.

    python experiments/run.py --config experiments/configs/icn.py:mnist5k-500 \
        --workdir runs/icn_500                     # CNN, ICN-noise, ICN (softmax)
    python experiments/reproduce.py --table icn_fig3 --seeds 3
    python experiments/run.py --config experiments/configs/icn.py:mnist \
        --config.data.data_dir=/data/tfds --workdir runs/icn_mnist        # Table 1

`get_config("<setting>[,ova]")`, settings in `SETTINGS`; `ova` selects the one-vs-all
formulation (K binary nets, Eq. 5) instead of softmax (Eq. 9). `compare` runs the CNN
baseline (`supervised+icn_base`: the same rounds, schedule and model selection, no
pseudo-negatives), ICN-noise (`supervised+icn_noise`) and ICN (`supervised+icn`).

Protocol (the paper's Sec. 4), full scale:
  * MNIST (Tables 1-2): 55,000 training / 5,000 validation / 10,000 test images; the
    four-layer 5x5 stride-2 net (`icn_mnist`: 64/128/256/512, leaky ReLU, no pooling);
    reclassification by SGD, momentum 0.9, batch 64, lr 0.025 / 10 at t = 25, 5 epochs
    per round; synthesis by Adam (beta1 0.5), 200 pseudo-negatives per round (read as
    per class, l = 20 per class x 10 classes = 200 per round; the paper's "a fixed number
    (200 in our experiments)" does not say which); T = 30 rounds (the paper decays the
    lr at t = 25 and gives no T). The paper's ResNet-32 row (0.50 -> 0.47) is
    `--config.model=resnet32`.
  * Fig. 3 (`mnist-500`, `mnist-2000`, `mnist-10000`): the same with fewer training
    images, balanced per class.
  * CIFAR-10 (Table 3; `cifar10` without, `cifar10-aug` with the standard augmentation:
    4-px zero padding + crop + flip): ResNet-32, batch 128, 45,000 / 5,000 validation,
    lr 0.1 (the paper gives no CIFAR lr; He et al.'s ResNet-32 lr) / 10 at t = 25.
  * SVHN (Table 4; `svhn`): train + extra (sslj's TFDS source loads `train` only, so
    this setting trains on the 73,257 train images: not the paper's protocol, stated
    here), no augmentation, ResNet-32, batch 128.
Embedded twins (`mnist5k-500`, `mnist5k-2000`; issue: "where the paper says ICN helps
most"): MNIST-5k, all ten digits, 50 or 200 training images per digit, 500 validation
images (50 per digit) from the 4,000-image pool, the 1,000 held-out test images; the ICN
net at a quarter of its width (16/32/64/128: the full net's sampler alone would take
minutes per round on a 2-core CPU), SGD 0.025 momentum 0.9, batch 64, 5 epochs per
round, T = 10 rounds, l = 10 per class per round, no augmentation (as the paper's MNIST).

Published test error (%), ICN paper:
    Table 1 (MNIST)   one-vs-all  softmax
      CNN (baseline)     0.87       0.77
      CNN w/ LS            -        0.69
      ICN-noise          0.89       0.77
      ICN                0.78       0.72
    Table 2 (MNIST, sampling)  SGD opt1 0.81 / 0.72, Langevin opt1 0.80 / 0.72,
      SGD opt2 0.78 / 0.72, Langevin opt2 0.78 / 0.74, SGD opt3 0.81 / 0.75,
      Langevin opt3 0.80 / 0.73 (one-vs-all / softmax)
    Table 3 (CIFAR-10, ResNet-32)   w/o aug: baseline 13.44 / 12.38, LS - / 12.65,
      ICN-noise 13.28 / 11.94, ICN 12.94 / 11.46;  w/ aug: baseline 6.70 / 7.06,
      LS - / 6.89, ICN-noise 6.58 / 6.90, ICN 6.52 / 6.70 (one-vs-all / softmax)
    Table 4 (SVHN, softmax): baseline 2.01, LS 1.96, ICN-noise 1.99, ICN 1.95
    Fig. 3 (MNIST vs training size 500 / 2,000 / 10,000 / 55,000): read off the plot
      only (no table); ICN's gain is largest at 500.
    FGSM (Sec. 4.1, eps 0.125): 5,111 adversarials fool the CNN, 3,134 of them fool ICN
      (38.7 % fewer); 2,679 of ICN's fool ICN, 2,079 of them the CNN.
"""

import ml_collections

from experiments.configs import default

ROWS = ("supervised+icn_base", "supervised+icn_noise", "supervised+icn")
PAPER_TABLE1 = {"softmax": {"supervised+icn_base": 0.77, "supervised+ls+icn_base": 0.69,
                            "supervised+icn_noise": 0.77, "supervised+icn": 0.72},
                "ova": {"supervised+icn_base": 0.87, "supervised+icn_noise": 0.89,
                        "supervised+icn": 0.78}}
# Table 2: (sampler, stop rule) -> (one-vs-all, softmax) error %
PAPER_TABLE2 = {("sgd", "positive"): (0.81, 0.72), ("langevin", "positive"): (0.80, 0.72),
                ("sgd", "confidence"): (0.78, 0.72), ("langevin", "confidence"): (0.78, 0.74),
                ("sgd", "steps"): (0.81, 0.75), ("langevin", "steps"): (0.80, 0.73)}
PAPER_TABLE3 = {"cifar10": {"softmax": {"supervised+icn_base": 12.38,
                                        "supervised+ls+icn_base": 12.65,
                                        "supervised+icn_noise": 11.94, "supervised+icn": 11.46},
                            "ova": {"supervised+icn_base": 13.44, "supervised+icn_noise": 13.28,
                                    "supervised+icn": 12.94}},
                "cifar10-aug": {"softmax": {"supervised+icn_base": 7.06,
                                            "supervised+ls+icn_base": 6.89,
                                            "supervised+icn_noise": 6.90,
                                            "supervised+icn": 6.70},
                                "ova": {"supervised+icn_base": 6.70,
                                        "supervised+icn_noise": 6.58, "supervised+icn": 6.52}}}
PAPER_TABLE4 = {"supervised+icn_base": 2.01, "supervised+ls+icn_base": 1.96,
                "supervised+icn_noise": 1.99, "supervised+icn": 1.95}
PAPER_FGSM = {"eps": 0.125, "cnn_adversarials_fooling_cnn": 5111,
              "of_which_fool_icn": 3134, "icn_adversarials_fooling_icn": 2679,
              "of_which_fool_cnn": 2079}

SETTINGS = ("mnist5k-500", "mnist5k-2000", "mnist", "mnist-500", "mnist-2000",
            "mnist-10000", "cifar10", "cifar10-aug", "svhn")


def _common(c):
    c.compare = ",".join(ROWS)
    c.method = "supervised"
    c.split.mismatch_ratio = 0.0
    c.split.unlabeled_size = 0
    c.split.v1_fraction = 0.5
    c.data.flip = False
    c.data.crop_pad = 0
    c.data.noise_std = 0.0
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.schedule = "constant"  # ICN decays the lr by rounds (icn.lr_decay_round)
    c.optimizer.weight_decay = 0.0
    c.ema_decay = 0.999
    c.median_last_evals = 1
    c.icn.sampler = "adam"
    c.icn.stop_rule = "positive"
    c.icn.epochs_per_round = 5
    c.icn.lr_decay_factor = 0.1


def get_config(arg: str | None = None):
    parts = [p for p in (arg or "mnist5k-500").split(",") if p]
    setting, ova = parts[0], "ova" in parts[1:]
    if setting not in SETTINGS:
        raise ValueError(f"unknown ICN setting {setting!r}; allowed: {list(SETTINGS)}")
    c = default.get_config()
    _common(c)
    if setting.startswith("mnist5k"):
        per_class = int(setting.split("-")[1]) // 10
        c.data.source = "mnist5k"
        c.split.seen_classes = tuple(range(10))
        c.split.labels_per_class = per_class
        c.split.num_validation = 500
        c.model = "icn_mnist"
        # patches: the convolution the published twin numbers were measured with; the
        # net's default, "slices", is 6.5x faster for the step and 5.6x for the sampler at
        # this width, with other rounding (experiments/benchmarks/README.md, "ICN")
        c.model_kwargs = ml_collections.ConfigDict({"widths": (16, 32, 64, 128),
                                                    "conv_impl": "patches"})
        c.batch_size = 64
        c.eval_batch_size = 200
        c.optimizer.lr = 0.025
        c.icn.rounds = 10
        c.icn.per_class = 10
        c.icn.lr_decay_round = 0
        c.log_every = 20
        c.ema_decay = 0.99  # 400-1,700 steps: a 0.999 average would not settle
    elif setting.startswith("mnist"):
        n = 55000 if setting == "mnist" else int(setting.split("-")[1])
        c.data.source = "tfds:mnist"
        c.split.seen_classes = tuple(range(10))
        c.split.labels_per_class = n // 10
        c.split.num_validation = 5000
        c.model = "icn_mnist"
        c.batch_size = 64
        c.eval_batch_size = 1000
        c.optimizer.lr = 0.025
        c.icn.rounds = 30
        c.icn.per_class = 20
        c.icn.lr_decay_round = 25
        c.log_every = 100
    else:
        c.data.source = ("tfds:cifar10" if setting.startswith("cifar10")
                         else "tfds:svhn_cropped")
        c.split.seen_classes = tuple(range(10))
        c.split.labels_per_class = 4500 if setting.startswith("cifar10") else 6500
        c.split.num_validation = 5000
        c.model = "resnet32"
        c.batch_size = 128
        c.eval_batch_size = 1000
        c.optimizer.lr = 0.1
        c.optimizer.weight_decay = 1e-4
        c.icn.rounds = 30
        c.icn.per_class = 20
        c.icn.lr_decay_round = 25
        c.log_every = 100
        if setting == "cifar10-aug":
            c.data.flip = True
            c.data.crop_pad = 4
            c.data.pad_mode = "zeros"
    c.unlabeled_batch_size = c.batch_size  # unused: ICN trains on labeled data only
    c.icn.formulation = "ova" if ova else "softmax"
    return c


def column_fields(setting: str, base: str) -> dict:
    """The fields that turn `get_config(base)` (a table's base config) into
    `get_config(setting)`: every leaf field whose value differs (a table column)."""
    from sslj.common.checks import changed_fields

    return changed_fields(get_config(base), get_config(setting), skip=("compare", "method"))
