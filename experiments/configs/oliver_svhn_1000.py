"""Oliver et al. 2018, Table 1, SVHN with 1,000 labels: WRN-28-2, TFDS `svhn_cropped`.

    python experiments/run.py --config experiments/configs/oliver_svhn_1000.py \
        --config.data.data_dir=/data/tfds --workdir runs/oliver_svhn   # all six rows
    python experiments/run.py --config experiments/configs/oliver_svhn_1000.py:vat_entmin \
        --config.data.data_dir=/data/tfds --workdir runs/oliver_svhn_vatent
    python experiments/reproduce.py --table oliver_table1_svhn --scale full --seeds 5

Protocol: all ten digits seen, 100 labels per class (1,000), 7,326 validation images
(Oliver's build_tfrecords.py COUNTS["svhn"]["valid"]), the other 64,931 of the 73,257
training images unlabeled (the extra split unused; Oliver's code also feeds the labeled
images as unlabeled ones, sslj keeps the two sets apart);
no horizontal flips (digits), translation by 2 px, no Gaussian input noise and VAT eps
1.0 (Oliver et al.'s `svhn_overrides`: gaussian_noise=False, vat_epsilon=1.0);
everything else as the CIFAR-10 row (oliver_cifar10_4000.py).

Expected test error (%, Oliver et al. 2018 Table 1; these SVHN values are not in
docs/REFERENCE.md, which lists CIFAR-10 only):
    supervised   12.83
    pi_model      7.19
    mean_teacher  5.65
    vat           5.63
    vat_entmin    5.35
    pseudo_label  7.62
"""

from experiments.configs import oliver_cifar10_4000

ROWS = oliver_cifar10_4000.ROWS
EXPECTED_ERROR = {"supervised": 12.83, "pi_model": 7.19, "mean_teacher": 5.65,
                  "vat": 5.63, "vat_entmin": 5.35, "pseudo_label": 7.62}


def get_config(method=None):
    c = oliver_cifar10_4000.get_config(method)
    c.data.source = "tfds:svhn_cropped"
    c.data.flip = False
    c.split.labels_per_class = 100
    c.split.num_validation = 7326
    c.split.unlabeled_size = 73_257 - 1_000 - 7_326
    c.data.noise_std = 0.0
    c.vat.eps = 1.0
    return c
