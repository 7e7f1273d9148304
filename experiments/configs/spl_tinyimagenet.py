"""SPL (He et al. 2022), TinyImageNet class mismatch: Table 1's third column.

    python -m sslj.data.prepare tiny_imagenet --data_dir /data/tfds --manual_dir ~/dl
    python experiments/run.py --config experiments/configs/spl_tinyimagenet.py \
        --config.data.data_dir=/data/tfds --workdir runs/spl_tin
    python experiments/reproduce.py --table spl_table1_tinyimagenet --scale full --seeds 5

TinyImageNet is not in the TFDS catalog: `sslj.data.tiny_imagenet` builds it from the
archive placed by hand in a manual dir (tfds:tiny_imagenet; 64x64 RGB, 500 training and
50 validation images per class; the validation images are the test set). Protocol as
spl_cifar10.py (DS3L split, WRN-28-2, V1 / V2 = 70 / 30 %) with the first 100 classes
of wnids.txt seen. The paper does not say which order "first 100" refers to: with
`--config.data.source=tfds:tiny_imagenet_sorted` (prepared the same way under that
name) the first 100 sorted WordNet ids are seen instead, torchvision ImageFolder's
order. As for CIFAR-100, docs/REFERENCE.md gives no counts: 100 labels per seen
class, 2,500 validation images, 20,000 unlabeled images are our choice (tau = 0.5).

Expected seen-class test accuracy (%, Table 1) at delta = 0.3 / 0.6: supervised
36.5 / 36.5, Pi 36.9 / 36.4, PL 36.6 / 35.8, VAT 36.7 / 36.3, UASD 37.1 / 36.9, MTC
37.0 / 36.6, CL 37.3 / 36.7, Pi+SPL 37.8 / 37.1, PL+SPL 37.3 / 36.6, VAT+SPL
37.7 / 37.1, UASD+SPL 38.1 / 37.1, MTC+SPL 38.3 / 37.3, CL+SPL 38.6 / 37.7. Curriculum
Labeling's rounds: 750 epochs of 10,000 + 20,000 images at batch 512 = 44,000 steps.
"""

from experiments.configs import spl_cifar100


def get_config(run=None):
    c = spl_cifar100.get_config(run)
    c.data.source = "tfds:tiny_imagenet"
    c.split.seen_classes = tuple(range(100))
    c.split.labels_per_class = 100
    c.split.num_validation = 2500
    c.method_overrides.curriculum_labeling.num_steps = 44_000
    return c
