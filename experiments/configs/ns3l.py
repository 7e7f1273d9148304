"""NS3L (Chen et al., "Negative sampling in semi-supervised learning"), Tables 1-5: TFDS
data, full scale.

    python experiments/run.py --config experiments/configs/ns3l.py:cifar10-4000 \
        --config.data.data_dir=/data/tfds --workdir runs/ns3l_c10        # Table 1's six rows
    python experiments/run.py --config experiments/configs/ns3l.py:mm-cifar10-250 \
        --config.data.data_dir=/data/tfds --workdir runs/ns3l_mm_c10_250  # MixMatch +- NS3L
    python experiments/reproduce.py --table ns3l_table1 --scale full --seeds 5

`get_config("<setting>")`, settings in `SETTINGS`:
  * Table 1 (`cifar10-4000`, `svhn-1000`, `cifar100-10000`): Oliver et al.'s protocol
    (oliver_cifar10_4000.py, oliver_svhn_1000.py; CIFAR-100 as CIFAR-10 with 100 labels
    per class, 5,000 validation and the other 35,000 images unlabeled, VAT's CIFAR-10
    settings as the paper says), with the paper's only changes (Sec. 4.1): 200,000
    iterations, a 50,000-step warm-up (the consistency ramp) and the learning-rate decay
    at 130,000; SVHN with 7,325 validation images and 64,932 unlabeled (its Sec. 4.1
    split; Oliver's code has 7,326). Rows: supervised, Pseudo-Label, VAT, VAT + EntMin with
    Oliver's settings; NS3L (`supervised+ns3l`): T 0.04 (CIFAR-100: 0.004), lambda_1 1,
    lr 6e-4; VAT + NS3L: lr 6e-4, lambda_1 = lambda_2 = 0.3 (CIFAR-100: lr 3e-3,
    lambda_1 0.3, lambda_2 0.6) (Sec. 4.1.3). Test error at the best validation step.
  * Tables 2-4 (`mm-cifar10-250`, `mm-cifar10-4000`, `mm-svhn-250`, `mm-svhn-1000`,
    `mm-stl10-1000`): MixMatch's official setup (fixmatch_cifar10.py's MIXMATCH_SETUP:
    WRN-28-2, Adam 0.002, decoupled weight decay 0.02, EMA 0.999, K 2, T 0.5, alpha 0.75)
    with lambda_3 = lambda_u 75 (CIFAR-10), 250 (SVHN), 50 (STL-10); "300 epochs" for
    CIFAR-10 and SVHN (Sec. 4.2; an epoch = 64 kimg as MixMatch's code counts, i.e.
    300 x 1,024 steps of 64); NS3L on X' and U' with negatives from the generated labels,
    T 0.05, lambda_1 5 (CIFAR-10 250), 10 (CIFAR-10 4,000), 2 (SVHN, STL-10); the median
    of the EMA model's last 20 evaluations (Sec. 4.2). STL-10: the paper trains "for
    significantly fewer epochs" without saying how many (here 100); its 100,000 unlabeled
    images are STL-10's `unlabelled` split, which sslj's TFDS source does not load, so
    this setting uses the other 4,000 - 500 images of the labeled train split as
    unlabeled data (500 for validation) -- not the paper's protocol, stated here.
  * Table 5 (`fmnist-2000`): Fashion-MNIST, 2,000 labeled / 58,000 unlabeled, the small
    CNN (`cnn_small`), 50 epochs over the unlabeled set at 64 + 64 images per step
    (the paper gives neither batch size nor optimizer; Adam 6e-4 as its other NS3L runs),
    no validation set (the paper reports the error at the end of training); rows: the
    NS3L strategies of `TABLE5_ROWS`, each NS3L alone with lambda_1 1.

Published test error (%), NS3L paper:
    Table 1   supervised  PL     VAT    VAT+EntMin  NS3L   VAT+NS3L
    CIFAR-10  20.76       17.56  14.72  14.34       16.03  13.94
    SVHN      12.39        7.70   6.20   6.10        6.52   5.51
    CIFAR-100 48.26       46.91  44.38  43.92       46.34  43.70
    Tables 2-4   MixMatch   + NS3L
    CIFAR-10 250  14.49     12.48      CIFAR-10 4,000  7.05  6.92
    SVHN 250       3.75      3.38      SVHN 1,000      3.28  3.14
    STL-10 1,000  22.20     21.74
    Table 5 (F-MNIST 2,000): supervised 17.25, uniform-1 18.64, uniform-3 19.35,
    exclude class of NN - 1 17.12, exclude 4 nearest classes - 1 17.13, furthest class
    with NN - 1 16.76, threshold 0.03 16.47, threshold 0.05 16.59, oracle-1 16.37,
    oracle-3 15.20.
"""

from experiments.configs import fixmatch_cifar10, oliver_cifar10_4000, oliver_svhn_1000
from sslj.common.checks import changed_fields
from sslj.config import nested_fields, set_fields

TABLE1_ROWS = ("supervised", "pseudo_label", "vat", "vat_entmin", "supervised+ns3l",
               "vat+ns3l")
TABLE1_SETTINGS = ("cifar10-4000", "svhn-1000", "cifar100-10000")
MIXMATCH_SETTINGS = ("mm-cifar10-250", "mm-cifar10-4000", "mm-svhn-250", "mm-svhn-1000",
                     "mm-stl10-1000")
SETTINGS = TABLE1_SETTINGS + MIXMATCH_SETTINGS + ("fmnist-2000",)
# Table 5's rows: label -> NS3L strategy and threshold (None: supervised alone)
TABLE5_ROWS = {
    "supervised": None,
    "uniform-1": ("uniform-1", None), "uniform-3": ("uniform-3", None),
    "nn-exclude-1": ("nn-exclude-1", None), "nn-exclude4-1": ("nn-exclude4-1", None),
    "nn-furthest-class": ("nn-furthest-class", None),
    "threshold-0.03": ("threshold", 0.03), "threshold-0.05": ("threshold", 0.05),
    "oracle-1": ("oracle-1", None), "oracle-3": ("oracle-3", None),
}

PAPER_TABLE1 = {  # test error (%), rows x settings
    "supervised": {"cifar10-4000": 20.76, "svhn-1000": 12.39, "cifar100-10000": 48.26},
    "pseudo_label": {"cifar10-4000": 17.56, "svhn-1000": 7.70, "cifar100-10000": 46.91},
    "vat": {"cifar10-4000": 14.72, "svhn-1000": 6.20, "cifar100-10000": 44.38},
    "vat_entmin": {"cifar10-4000": 14.34, "svhn-1000": 6.10, "cifar100-10000": 43.92},
    "supervised+ns3l": {"cifar10-4000": 16.03, "svhn-1000": 6.52, "cifar100-10000": 46.34},
    "vat+ns3l": {"cifar10-4000": 13.94, "svhn-1000": 5.51, "cifar100-10000": 43.70},
}
PAPER_MIXMATCH = {  # Tables 2-4
    "mixmatch": {"mm-cifar10-250": 14.49, "mm-cifar10-4000": 7.05, "mm-svhn-250": 3.75,
                 "mm-svhn-1000": 3.28, "mm-stl10-1000": 22.20},
    "mixmatch+ns3l": {"mm-cifar10-250": 12.48, "mm-cifar10-4000": 6.92, "mm-svhn-250": 3.38,
                      "mm-svhn-1000": 3.14, "mm-stl10-1000": 21.74},
}
PAPER_TABLE5 = {"supervised": 17.25, "uniform-1": 18.64, "uniform-3": 19.35,
                "nn-exclude-1": 17.12, "nn-exclude4-1": 17.13, "nn-furthest-class": 16.76,
                "threshold-0.03": 16.47, "threshold-0.05": 16.59, "oracle-1": 16.37,
                "oracle-3": 15.20}

# Sec. 4.1.3
NS3L_ALONE = {"optimizer.lr": 6e-4, "ns3l.weight": 1.0}
VAT_NS3L = {"optimizer.lr": 6e-4, "ns3l.weight": 0.3, "vat.weight": 0.3}
VAT_NS3L_CIFAR100 = {"optimizer.lr": 3e-3, "ns3l.weight": 0.3, "vat.weight": 0.6}
# Sec. 4.2.3: lambda_u (MixMatch's) and lambda_1 (NS3L's) per setting
MIXMATCH_WEIGHTS = {"mm-cifar10-250": (75.0, 5.0), "mm-cifar10-4000": (75.0, 10.0),
                    "mm-svhn-250": (250.0, 2.0), "mm-svhn-1000": (250.0, 2.0),
                    "mm-stl10-1000": (50.0, 2.0)}
EPOCH_STEPS = 1024  # MixMatch's epoch: 64 kimg at 64 images per step
MIXMATCH_EPOCHS = {"mm-stl10-1000": 100}  # the others: 300


def _ns3l_section(c, threshold: float):
    c.ns3l = nested_fields({"enabled": False, "weight": 1.0, "strategy": "threshold",
                            "threshold": threshold, "ramp": False})


def _table1(setting: str):
    if setting == "svhn-1000":
        c = oliver_svhn_1000.get_config()
    else:
        c = oliver_cifar10_4000.get_config()
    if setting == "svhn-1000":  # the paper's split (Sec. 4.1)
        c.split.num_validation = 7325
        c.split.unlabeled_size = 64_932
    # Sec. 4.1: "reducing the total iterations to 200,000, warmup period to 50,000, and
    # iteration of learning rate decay to 130,000"
    c.num_steps, c.ramp.steps, c.optimizer.decay_steps = 200_000, 50_000, 130_000
    threshold = 0.04
    vat_ns3l = VAT_NS3L
    if setting == "cifar100-10000":
        c.data.source = "tfds:cifar100"
        c.split.seen_classes = tuple(range(100))
        c.split.labels_per_class = 100
        c.split.unlabeled_size = 50_000 - 10_000 - 5_000
        threshold, vat_ns3l = 0.004, VAT_NS3L_CIFAR100
    _ns3l_section(c, threshold)
    c.compare = ",".join(TABLE1_ROWS)
    c.method_overrides["supervised+ns3l"] = nested_fields(NS3L_ALONE)
    c.method_overrides["vat+ns3l"] = nested_fields(vat_ns3l)
    return c


def _mixmatch(setting: str):
    _, dataset, labels = setting.split("-")
    labels = int(labels)
    c = fixmatch_cifar10.get_config(f"mixmatch,{4000 if labels == 1000 else labels}")
    if dataset == "svhn":
        c.data.source = "tfds:svhn_cropped"
        c.data.flip = False
    elif dataset == "stl10":
        c.data.source = "tfds:stl10"
        c.split.num_validation = 500
        c.split.unlabeled_size = 5000 - labels - 500
    if dataset == "svhn":  # the paper's split: 7,325 validation, 65,932 - labels unlabeled
        c.split.num_validation = 7325
        c.split.unlabeled_size = 65_932 - labels
    c.split.labels_per_class = labels // 10
    if dataset == "cifar10":
        c.split.unlabeled_size = 50_000 - labels - 5000
    lambda_u, lambda_1 = MIXMATCH_WEIGHTS[setting]
    c.mixmatch.weight = lambda_u
    c.num_steps = MIXMATCH_EPOCHS.get(setting, 300) * EPOCH_STEPS
    _ns3l_section(c, 0.05)
    c.compare = "mixmatch,mixmatch+ns3l"
    c.method = "mixmatch"
    c.method_overrides = type(c)()
    c.method_overrides["mixmatch+ns3l"] = nested_fields({"ns3l.weight": lambda_1})
    return c


def _fmnist():
    c = oliver_cifar10_4000.get_config()
    c.data.source = "tfds:fashion_mnist"
    c.data.flip = False
    c.data.noise_std = 0.0
    c.model = "cnn_small"
    c.split.labels_per_class = 200
    c.split.num_validation = 0
    c.split.unlabeled_size = 58_000
    c.batch_size = c.unlabeled_batch_size = 64
    c.num_steps = 50 * (58_000 // 64)
    c.eval_every = 58_000 // 64
    c.checkpoint_every = 10 * c.eval_every
    set_fields(c, {"optimizer.lr": 6e-4, "optimizer.schedule": "constant"})
    _ns3l_section(c, 0.04)
    c.method, c.compare = "supervised", "supervised"
    c.method_overrides = type(c)()
    return c


def get_config(setting: str | None = None):
    """The config of one setting (default `cifar10-4000`); `compare` holds its rows."""
    setting = setting or "cifar10-4000"
    if setting not in SETTINGS:
        raise ValueError(f"ns3l.py: unknown setting {setting!r}; allowed: {SETTINGS}")
    if setting in TABLE1_SETTINGS:
        return _table1(setting)
    if setting in MIXMATCH_SETTINGS:
        return _mixmatch(setting)
    return _fmnist()


def column_fields(setting: str) -> dict:
    """The fields that turn `get_config()` (reproduce.py's base) into `get_config(setting)`:
    every leaf field whose value differs, `method_overrides` included (a table column)."""
    return changed_fields(get_config(), get_config(setting), skip=("compare", "method"))
