"""Every full-scale experiment config carries the hyperparameters published for it.

`PAPER_VALUES` is the table: (config, run, dotted field, expected value, source), one row
per published value, with the paper, reference-code file or docs/REFERENCE.md section it comes
from named in the source column. The config is a module of experiments/configs/, with
`:<arg>` for `get_config(<arg>)` as on the command line (`proselflc_cifar100:final`).
A row's effective config is what the run trains: `sslj.config.for_method(get_config(),
run)` (the path of `compare` and experiments/reproduce.py) and, where the module takes a
run as its argument, the config of `--config <module>.py:<run>` too. A row with run None
must hold in every run the config trains (`compare`, else `method`).

Where sslj departs on purpose and says so in the config's docstring, the row holds the
documented value and its source names both. A value that disagrees with its source is a
config bug: its row is an xfail(strict=True) naming the correct value, until the config
is fixed. Only configs are built here (milliseconds): nothing trains or loads data.
"""

import importlib
from functools import reduce
from pathlib import Path

import pytest

from sslj.config import for_method, parse_methods, validate_run_name

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "experiments" / "configs"
EMBEDDED = {"default", "label_noise"}  # the CPU-scale twins, not paper-scale configs

OLIVER_MODULES = ("oliver_cifar10_4000", "oliver_cifar10_mismatch", "oliver_svhn_1000")
SPL_MODULES = ("spl_cifar10", "spl_cifar100", "spl_tinyimagenet")
# modules whose get_config(<run>) configures that one run (`--config <module>.py:<run>`)
RUN_ARGUMENT = {"oliver_cifar10_4000", "oliver_svhn_1000", "fixmatch_cifar10", *SPL_MODULES}

OLIVER = "Oliver et al. 2018"
HP = "realistic-ssl-evaluation lib/hparams.py"
RSE = "realistic-ssl-evaluation"
SPL = "He et al. 2022 (SPL)"
SPL_CODE = "Zhanlo/SPL"
PSLC = "Wang et al. 2021 (ProSelfLC)"
PSLC_CODE = "ProSelfLC-AT"
FM = "Sohn et al. 2020 (FixMatch)"
FM_CODE = "google-research/fixmatch"
MM = "Berthelot et al. 2019 (MixMatch)"
MM_CODE = "google-research/mixmatch"
REPORT = "the SSL report (PL, VAT, attention FixMatch)"
NS3L = "Chen et al. (NS3L)"
ICN = "Jin et al. 2017 (ICN)"

# Oliver et al.'s training setup, shared by their benchmarks: (run, field, value, source).
# Checked on every Oliver config, and on every SPL config for the runs SPL pretrains with
# (SPL's experiments "are built upon (Oliver et al. 2018)").
OLIVER_TRAINING = [
    (None, "model", "wrn28_2",
     f"{OLIVER} Sec. 4: WRN-28-2; {HP} base width=2, num_residual_units=4"),
    (None, "optimizer.name", "adam", f"{RSE} lib/ssl_framework.py tf.train.AdamOptimizer"),
    ("supervised", "optimizer.lr", 3e-3, f"{HP} base initial_lr"),
    ("pi_model", "optimizer.lr", 3e-4, f"{HP} pi_model initial_lr"),
    ("mean_teacher", "optimizer.lr", 4e-4, f"{HP} mean_teacher initial_lr"),
    ("vat", "optimizer.lr", 3e-3, f"{HP} base initial_lr (vat overrides no lr)"),
    ("vat_entmin", "optimizer.lr", 3e-3, f"{HP} base initial_lr (vat overrides no lr)"),
    ("pseudo_label", "optimizer.lr", 3e-4, f"{HP} pseudo_label initial_lr"),
    (None, "optimizer.schedule", "staircase",
     f"{RSE} lib/ssl_framework.py exponential_decay(staircase=True)"),
    (None, "optimizer.decay_steps", 400_000, f"{HP} base lr_decay_steps"),
    (None, "optimizer.decay_factor", 0.2, f"{HP} base lr_decay_rate"),
    (None, "num_steps", 500_000, f"{OLIVER}: 500k steps; {RSE} train_model.py training_length"),
    (None, "batch_size", 50,
     f"{OLIVER}: batch 100, half labeled; {RSE} train_model.py batch_size=100, "
     "lib/data_provider.py shuffle_merge"),
    (None, "unlabeled_batch_size", 50,
     f"{OLIVER}: batch 100, half unlabeled; {RSE} train_model.py batch_size=100, "
     "lib/data_provider.py shuffle_merge"),
    (None, "ramp.kind", "oliver_exp",
     f"{RSE} lib/ssl_framework.py cons_multiplier exp(-5 (1 - t / warmup_steps)^2)"),
    (None, "ramp.steps", 200_000, f"{HP} base warmup_steps"),
    (None, "bn_update", "clean",
     f"{RSE} lib/ssl_framework.py: only the clean pass has update_batch_stats=True; "
     "docs/REFERENCE.md (Oliver testbed)"),
    ("pi_model", "pi_model.weight", 20.0, f"{HP} pi_model max_cons_multiplier"),
    ("mean_teacher", "mean_teacher.weight", 8.0, f"{HP} mean_teacher max_cons_multiplier"),
    ("mean_teacher", "mean_teacher.ema_decay", 0.95, f"{HP} base ema_factor"),
    ("vat", "vat.weight", 0.3, f"{HP} vat max_cons_multiplier"),
    ("vat", "vat.power_iterations", 1, "docs/REFERENCE.md (Oliver testbed): 1 power iteration"),
    ("vat", "vat.divergence", "perturbed_clean",
     f"{RSE} lib/ssl_utils.py diff_costs forward_kl: KL(p(x + r) || p(x))"),
    ("vat", "vat.probe", "hvp",
     "sslj's departure documented in oliver_cifar10_4000.py (exact Hessian-vector "
     f"product); {HP} vat_xi is a finite-difference probe (vat.probe='finite_difference')"),
    ("vat", "vat.xi", 1e-6, f"{HP} base vat_xi (the finite-difference probe)"),
    ("vat_entmin", "vat.weight", 0.3, f"{HP} vat max_cons_multiplier"),
    ("vat_entmin", "vat.entmin_weight", 0.1, f"{OLIVER} Sec. 4: VAT + EntMin entropy weight 0.1"),
    ("vat_entmin", "vat.entmin_pass", "adversarial",
     f"{RSE} lib/ssl_framework.py entropy_penalty(logits_student): p(x + r_adv) for VAT"),
    ("pseudo_label", "pseudo_label.weight", 1.0, f"{HP} pseudo_label max_cons_multiplier"),
    ("pseudo_label", "pseudo_label.threshold", 0.95, f"{HP} base pseudo_label_threshold"),
]

# Oliver et al.'s CIFAR-10 input pipeline (base + cifar10_overrides).
OLIVER_CIFAR10_DATA = [
    (None, "data.source", "tfds:cifar10", f"{OLIVER} Table 1 / Fig. 2: CIFAR-10"),
    (None, "data.flip", True, f"{HP} cifar10_overrides horizontal_flip=True"),
    (None, "data.crop_pad", 2,
     f"{HP} base random_translation=True; {RSE} lib/networks.py jitter: 2-px shifts"),
    (None, "data.pad_mode", "reflect", f"{RSE} lib/networks.py jitter tf.pad mode='REFLECT'"),
    (None, "data.noise_std", 0.15,
     f"{HP} base gaussian_noise=True; {RSE} lib/networks.py noise std 0.15"),
    (None, "vat.eps", 6.0, f"{HP} base vat_epsilon (CIFAR-10)"),
]

# SPL's protocol, shared by its three configs (spl_cifar10.py: "Protocol as spl_cifar10.py").
SPL_PROTOCOL = [
    (None, "split.protocol", "ds3l",
     f"{SPL} official code {SPL_CODE} load_dataset.py (the DS3L split)"),
    (None, "split.validation_source", "seen_of_random",
     f"{SPL_CODE} load_dataset.py: n_valid random training images, split_test keeps the seen"),
    (None, "split.v1_fraction", 0.7,
     f"{SPL_CODE} load_dataset.py seg = int(len(validation) * 0.7): V1 70 % / V2 30 %"),
    (None, "spl.consistency_weight", 10.0, f"{SPL_CODE} myutils/options.py consis_coef=10.0"),
    (None, "spl.mask_classifier", False,
     f"{SPL_CODE} SPL.py generate_pr_cfg skips 'fc' / 'classifier'; docs/REFERENCE.md (SPL)"),
    ("vat+spl", "spl.mask", "hard", f"{SPL} Sec. 3: 'We adopt the hard mask strategy'"),
    ("pi_model+spl", "spl.mask", "hard", f"{SPL} Sec. 3: 'We adopt the hard mask strategy'"),
    (None, "spl.rounds", 5,
     "sslj's choice, spl_cifar10.py docstring (the paper gives no R); the official "
     f"{SPL_CODE} myutils/options.py default is iteration=10"),
    (None, "spl.inner_steps", 1000,
     "sslj's choice, spl_cifar10.py docstring (the paper gives no T, only T << E); the "
     f"official {SPL_CODE} myutils/options.py default is epochs_m=30 epochs over V1"),
    (None, "spl.outer_steps", 1000,
     "sslj's choice, spl_cifar10.py docstring (the paper gives no T, only T << E); the "
     f"official {SPL_CODE} myutils/options.py default is epochs_w=30 epochs"),
    (None, "split.unlabeled_size", 20_000, f"{SPL_CODE} myutils/options.py n_unlabels=20000"),
    (None, "split.mismatch_ratio", 0.3,
     f"{SPL} Table 1 ratio=0.3 column (options.py's default ratio=0.6 is the other column)"),
]
_SPL_RUNS = (None, "supervised", "pi_model", "pseudo_label", "vat")
_SPL_OLIVER_ROWS = ("supervised", "pi_model", "pseudo_label", "vat", "pi_model+spl",
                    "pseudo_label+spl", "vat+spl")
_OUR_COUNTS = ("sslj's choice, {} docstring (docs/REFERENCE.md and the paper give no count); "
               f"the official {SPL_CODE} myutils/options.py defaults, ")

# The safe-SSL bases of SPL's Table 1 on SPL's split: their official codes' settings
# (docs/SAFE_SSL_BASELINES.md; spl_cifar10.safe_ssl_overrides), in every SPL config.
UASD_CODE = "yanbeic/ssl-class-mismatch"
DS3L_CODE = "guolz-ml/DS3L train.py"
MTC_CODE = "YU1ut/Multi-Task-Curriculum-Framework-for-Open-Set-SSL train_multi.py"
CL_CODE = "uvavision/Curriculum-Labeling"
SAFE_SSL_VALUES = [
    ("uasd", "optimizer.lr", 1e-3, f"{UASD_CODE} lib/hparams.py 'ours' lr 1e-3 (Adam)"),
    ("uasd", "num_steps", 500_000, f"{UASD_CODE} run-uasd/cifar10-4000.yml: 500k steps"),
    ("uasd", "uasd.threshold_init", 0.9, f"{UASD_CODE} train_model_uasd.py: tau starts 0.9"),
    ("uasd", "uasd.start_fraction", 0.2,
     f"{UASD_CODE} train_model_uasd.py: L_lab only before step 100,000 of 500k"),
    ("uasd", "uasd.ramp_fraction", 0.4,
     f"{UASD_CODE} hparams warmup_steps=200000: exp(-5(1 - t/200k)^2), of 500k"),
    ("uasd", "uasd.filter_labeled", True,
     f"{UASD_CODE} train_model_uasd.py: the mask over all rows ('accumulation on all')"),
    ("uasd+spl", "optimizer.lr", 1e-3, f"{UASD_CODE} lib/hparams.py 'ours' lr 1e-3"),
    ("ds3l", "optimizer.lr", 3e-4, f"{DS3L_CODE}: Adam lr 3e-4 (CIFAR)"),
    ("ds3l", "optimizer.schedule", "constant",
     f"{DS3L_CODE}: lr_decay_iter=400000 > iterations, so no decay"),
    ("ds3l", "num_steps", 200_000, f"{DS3L_CODE}: iterations=200000"),
    ("ds3l", "batch_size", 50, f"{DS3L_CODE}: l_batch_size 100 // 2"),
    ("ds3l", "unlabeled_batch_size", 50, f"{DS3L_CODE}: ul_batch_size 100 // 2"),
    ("ds3l", "ds3l.weight", 10.0, f"{DS3L_CODE}: coef = 10 exp(-5(1 - it/warmup)^2)"),
    ("ds3l", "ds3l.ramp_fraction", 1.0, f"{DS3L_CODE}: warmup=200000 = iterations"),
    ("ds3l", "ds3l.meta_lr", 1e-3, f"{DS3L_CODE}: meta_lr=1e-3"),
    ("ds3l", "ds3l.wnet_lr", 6e-5, f"{DS3L_CODE}: lr_wnet=6e-5 (last tuned value)"),
    ("ds3l", "ds3l.hidden", 100, f"{DS3L_CODE}: WNet(6, 100, 1)"),
    ("ds3l", "ds3l.supervised_mean", "batch",
     f"{DS3L_CODE}: cross_entropy(ignore_index=-1).mean() over all rows"),
    ("mtc", "optimizer.lr", 2e-3, f"{MTC_CODE}: Adam lr 0.002"),
    ("mtc", "num_steps", 1024 * 1024, f"{MTC_CODE}: epochs 1024 x val-iteration 1024"),
    ("mtc", "batch_size", 64, f"{MTC_CODE}: batch-size 64"),
    ("mtc", "ema_decay", 0.999, f"{MTC_CODE}: ema-decay 0.999"),
    ("mtc", "mixmatch.weight", 75.0, f"{MTC_CODE}: lambda-u 75"),
    ("mtc", "mixmatch.temperature", 0.5, f"{MTC_CODE}: T 0.5"),
    ("mtc", "mixmatch.alpha", 0.75, f"{MTC_CODE}: alpha 0.75"),
    ("mtc", "mixmatch.k", 2, f"{MTC_CODE}: K = 2 augmentations"),
    ("mtc", "ramp.steps", 16 * 1024, f"{MTC_CODE}: linear_rampup over 16 epochs of 1,024"),
    ("mtc", "mtc.pre_epochs", 100.0, f"{MTC_CODE}: pre-epochs 100"),
    ("mtc", "mtc.ring_epochs", 10, f"{MTC_CODE} dataset/cifar10.py: the past 10 epochs"),
    ("mtc", "mtc.start_label", 0.0, f"{MTC_CODE}: start_label=0 (the flag is not passed)"),
    ("mtc", "data.noise_std", 0.0, f"{MTC_CODE}: crop and flip, no Gaussian noise"),
    ("curriculum_labeling", "optimizer.name", "nesterov",
     f"{CL_CODE} README recipe: SGD nesterov"),
    ("curriculum_labeling", "optimizer.lr", 0.1, f"{CL_CODE} README recipe: lr 0.1"),
    ("curriculum_labeling", "optimizer.weight_decay", 5e-4, f"{CL_CODE} README: wd 5e-4"),
    ("curriculum_labeling", "optimizer.schedule", "cosine",
     f"{CL_CODE} methods/base.py: cosine rampdown of the lr"),
    ("curriculum_labeling", "batch_size", 512, f"{CL_CODE} README recipe: batch 512"),
    ("curriculum_labeling", "curriculum_labeling.percent_step", 20,
     f"{CL_CODE} wrapper.py percentiles_holder = 20"),
    ("curriculum_labeling", "curriculum_labeling.mixup", True, f"{CL_CODE} README: --mixup"),
    ("curriculum_labeling", "curriculum_labeling.mixup_alpha", 1.0,
     f"{CL_CODE}: lam ~ Beta(1, 1)"),
    ("curriculum_labeling", "curriculum_labeling.class_weighted", True,
     f"{CL_CODE} methods/base.py: CE with class weights (N - n_c) / n_c / 100"),
]

PAPER_VALUES = [
    # ---- Oliver et al. 2018, "Realistic Evaluation of Deep SSL" ----
    *[(m, *row) for m in OLIVER_MODULES for row in OLIVER_TRAINING],
    *[(m, *row) for m in ("oliver_cifar10_4000", "oliver_cifar10_mismatch")
      for row in OLIVER_CIFAR10_DATA],
    ("oliver_cifar10_4000", None, "split.protocol", "oliver", "docs/REFERENCE.md (Oliver testbed)"),
    ("oliver_cifar10_4000", None, "split.seen_classes", tuple(range(10)),
     f"{OLIVER} Table 1: all ten CIFAR-10 classes labeled"),
    ("oliver_cifar10_4000", None, "split.mismatch_ratio", 0.0,
     f"{OLIVER} Table 1: no class mismatch"),
    ("oliver_cifar10_4000", None, "split.labels_per_class", 400,
     f"{OLIVER} Table 1: 4,000 labels; {RSE} data/cifar10/label_map_count_4000"),
    ("oliver_cifar10_4000", None, "split.num_validation", 5000,
     f"{RSE} build_tfrecords.py COUNTS['cifar10']['valid'] = 5000"),
    ("oliver_cifar10_mismatch", None, "split.protocol", "oliver",
     "docs/REFERENCE.md (Oliver testbed)"),
    ("oliver_cifar10_mismatch", None, "split.seen_classes", (2, 3, 4, 5, 6, 7),
     f"{OLIVER} Fig. 2: the six animal classes; {RSE} runs/figure-2-*.yml "
     "--labeled_classes_filter=2,3,4,5,6,7"),
    ("oliver_cifar10_mismatch", None, "split.labels_per_class", 400,
     f"{OLIVER} Sec. 4.4: 400 labels per class; docs/REFERENCE.md (Oliver testbed)"),
    ("oliver_cifar10_mismatch", None, "split.num_validation", 5000,
     f"docs/REFERENCE.md (Oliver testbed): validation 5,000; {RSE} build_tfrecords.py "
     "COUNTS['cifar10']['valid'] = 5000"),
    ("oliver_cifar10_mismatch", None, "split.mismatch_ratio", 0.5,
     f"{OLIVER} Fig. 2 sweeps {{0, .25, .5, .75, 1}}; {RSE} runs/figure-2-*-ol2.yml "
     "--unlabeled_classes_filter=0,1,6,7 (half unseen)"),
    ("oliver_svhn_1000", None, "data.source", "tfds:svhn_cropped",
     f"{OLIVER} Table 1: SVHN (train split, extra unused)"),
    ("oliver_svhn_1000", None, "data.flip", False,
     f"{HP} base horizontal_flip=False (svhn_overrides keeps it)"),
    ("oliver_svhn_1000", None, "data.crop_pad", 2,
     f"{HP} base random_translation=True; {RSE} lib/networks.py jitter: 2-px shifts"),
    ("oliver_svhn_1000", None, "data.pad_mode", "reflect",
     f"{RSE} lib/networks.py jitter tf.pad mode='REFLECT'"),
    ("oliver_svhn_1000", None, "data.noise_std", 0.0, f"{HP} svhn_overrides gaussian_noise=False"),
    ("oliver_svhn_1000", None, "vat.eps", 1.0, f"{HP} svhn_overrides vat_epsilon=1.0"),
    ("oliver_svhn_1000", None, "split.protocol", "oliver", "docs/REFERENCE.md (Oliver testbed)"),
    ("oliver_svhn_1000", None, "split.seen_classes", tuple(range(10)),
     f"{OLIVER} Table 1: all ten digits labeled"),
    ("oliver_svhn_1000", None, "split.mismatch_ratio", 0.0, f"{OLIVER} Table 1: no class mismatch"),
    ("oliver_svhn_1000", None, "split.labels_per_class", 100,
     f"{OLIVER} Table 1: 1,000 labels; {RSE} data/svhn/label_map_count_1000"),
    ("oliver_svhn_1000", None, "split.num_validation", 7326,
     f"{RSE} build_tfrecords.py COUNTS['svhn']['valid'] = 7326 and lib/dataset_utils.py "
     "DATASET_EXAMPLE_COUNT['valid']['svhn'] = 7326"),
    ("oliver_svhn_1000", None, "split.unlabeled_size", 73_257 - 1_000 - 7_326,
     f"{RSE}: the 73,257 SVHN training images less labels and validation (sslj keeps the "
     "labeled images out of the unlabeled set; Oliver's code feeds them as both)"),
    ("oliver_cifar10_mismatch", None, "split.validation_source", "seen_of_random",
     f"{RSE} evaluate_model.py --labeled_classes_filter: the seen part of the 5,000 "
     "validation images"),

    # ---- ProSelfLC, Wang et al. CVPR 2021, CIFAR-100 (Tables 4-5) ----
    ("proselflc_cifar100", None, "model", "resnet44",
     f"{PSLC} Table 4: 'All compared methods use ResNet-44'"),
    ("proselflc_cifar100", None, "data.source", "tfds:cifar100", f"{PSLC} Sec. 5.1: CIFAR-100"),
    ("proselflc_cifar100", None, "split.seen_classes", tuple(range(100)),
     f"{PSLC} Sec. 5.1: all 100 classes"),
    ("proselflc_cifar100", None, "split.labels_per_class", 400,
     f"{PSLC} Sec. 5: train on 80 % of the training data (400 of 500 per class)"),
    ("proselflc_cifar100", None, "split.num_validation", 10_000,
     f"{PSLC} Sec. 5: 20 % trusted training data as the validation set"),
    ("proselflc_cifar100:final", None, "split.labels_per_class", 500,
     f"{PSLC} Sec. 5: 'we retrain a model on the entire training data'"),
    ("proselflc_cifar100:final", None, "split.num_validation", 0,
     f"{PSLC} Sec. 5: 'we retrain a model on the entire training data'"),
    ("proselflc_cifar100", None, "noise.kind", "asymmetric",
     f"{PSLC} Table 4: asymmetric noise columns (the config's default column, r = 0.4)"),
    ("proselflc_cifar100", None, "noise.rate", 0.4, f"{PSLC} Table 4: asymmetric r = 0.4"),
    ("proselflc_cifar100:sym0.6", None, "noise.kind", "symmetric",
     f"{PSLC} Table 4: symmetric noise columns"),
    ("proselflc_cifar100:sym0.6", None, "noise.rate", 0.6, f"{PSLC} Table 4: symmetric r = 0.6"),
    ("proselflc_cifar100", None, "optimizer.name", "sgd", f"{PSLC} Sec. 5.1: SGD"),
    ("proselflc_cifar100", None, "optimizer.lr", 0.1, f"{PSLC} Sec. 5.1: learning rate 0.1"),
    ("proselflc_cifar100", None, "optimizer.momentum", 0.9, f"{PSLC} Sec. 5.1: momentum 0.9"),
    ("proselflc_cifar100", None, "optimizer.weight_decay", 5e-4,
     f"{PSLC} Sec. 5.1: weight decay 5e-4"),
    ("proselflc_cifar100", None, "optimizer.decay_params", "all",
     f"official code {PSLC_CODE} src/proselflc/optim/sgd_multistep.py: torch.optim.SGD over "
     "every parameter; proselflc_cifar100.py docstring"),
    ("proselflc_cifar100", None, "batch_size", 256,
     f"{PSLC} Sec. 5.1: batch size 256 (the official code's 128 is the documented "
     "alternative; proselflc_cifar100.py follows the paper)"),
    ("proselflc_cifar100", None, "num_steps", 30_000, f"{PSLC} Sec. 5.1: 30k iterations"),
    ("proselflc_cifar100", None, "optimizer.schedule", "staircase",
     f"{PSLC} Sec. 5.1: divide the learning rate by 10 at 15k and 22k"),
    ("proselflc_cifar100", None, "optimizer.decay_steps", (15_000, 22_000),
     f"{PSLC} Sec. 5.1: divide the learning rate by 10 at 15k and 22k"),
    ("proselflc_cifar100", None, "optimizer.decay_factor", 0.1,
     f"{PSLC} Sec. 5.1: divide the learning rate by 10"),
    ("proselflc_cifar100", None, "data.flip", True,
     f"{PSLC} Sec. 5.1: the crop is flipped with probability 0.5"),
    ("proselflc_cifar100", None, "data.crop_pad", 4,
     f"{PSLC} Sec. 5.1: pad 4 pixels on every side, random 32x32 crop"),
    ("proselflc_cifar100", None, "data.pad_mode", "zeros",
     f"{PSLC} Sec. 5.1 (He et al. 2016 padding); official code torchvision zero padding; "
     "proselflc_cifar100.py docstring"),
    ("proselflc_cifar100", None, "data.noise_std", 0.0,
     f"{PSLC} Sec. 5.1: 'simple data augmentation' (pad-crop and flip only)"),
    ("proselflc_cifar100", "supervised+proselflc", "target.exp_base", 16.0,
     f"{PSLC} Table 5 searches B in {{8, 10, 12, 14, 16}}; proselflc_cifar100.py docstring: "
     "B = 16"),
    ("proselflc_cifar100", "supervised+proselflc", "target.eta", 0.5,
     f"{PSLC} Eq. for g(t) = h(t / Gamma - 0.5, B)"),
    ("proselflc_cifar100", "supervised+proselflc", "target.total_steps", 0,
     f"{PSLC} Sec. 3: Gamma = the number of total iterations (sslj: 0 = num_steps, 30k)"),
    ("proselflc_cifar100", "supervised+ls", "target.eps", 0.5,
     f"{PSLC} Sec. 3: fixed eps tried in {{0.125, 0.25, 0.5}}, the best (0.5) displayed"),
    ("proselflc_cifar100", "supervised+cp", "target.eps", 0.5,
     f"{PSLC} Sec. 3 and Table 5: CP eps 0.5, the best fixed eps"),
    ("proselflc_cifar100", "supervised+boot_soft", "target.eps", 0.5,
     f"{PSLC} Sec. 3 and Table 5: Boot-soft eps 0.5, the best fixed eps"),
    ("proselflc_cifar100", "supervised+boot_hard", "target.eps", 0.2,
     "Reed et al. 2015 hard bootstrapping beta = 0.8 (proselflc_cifar100.py docstring; "
     f"{PSLC} Table 4 copies Boot-hard from Wang et al. 2019, not retrained)"),

    # ---- SPL, He et al. AAAI 2022 (pretraining as Oliver et al., then SPL) ----
    # Oliver's training facts hold for the Oliver-based rows; the safe-SSL bases run with
    # their own codes' settings (SAFE_SSL_VALUES)
    *[(m, r, *row[1:3], f"{SPL} 'built upon (Oliver et al. 2018)': {row[3]}")
      for m in SPL_MODULES for row in OLIVER_TRAINING if row[0] in _SPL_RUNS
      for r in ((row[0],) if row[0] else _SPL_OLIVER_ROWS)],
    *[(m, *row) for m in SPL_MODULES for row in SPL_PROTOCOL],
    *[(m, *row) for m in SPL_MODULES for row in SAFE_SSL_VALUES],
    *[(m, "curriculum_labeling", "num_steps", steps,
       f"{CL_CODE} README: 750 epochs per round of (labels + 20,000) images at batch 512")
      for m, steps in (("spl_cifar10", 32_800), ("spl_cifar100", 36_600),
                       ("spl_tinyimagenet", 44_000))],
    *[("spl_cifar10", r, *row[1:3], f"{SPL} 'built upon (Oliver et al. 2018)': {row[3]}")
      for row in OLIVER_CIFAR10_DATA for r in ((row[0],) if row[0] else _SPL_OLIVER_ROWS)
      if (r, row[1]) != ("vat+spl", "vat.eps")],  # that one cites SPL's code below
    ("spl_cifar10", None, "split.seen_classes", (2, 3, 4, 5, 6, 7),
     f"{SPL_CODE} load_dataset.py labels -= 2 (plane, car -> 8, 9) with n_class=6: bird "
     "... horse seen; docs/REFERENCE.md (Oliver testbed, class mismatch)"),
    ("spl_cifar10", None, "split.labels_per_class", 400,
     f"{SPL_CODE} myutils/options.py n_labels=2400 / n_class=6"),
    ("spl_cifar10", None, "split.num_validation", 5000,
     f"{SPL_CODE} myutils/options.py n_valid=5000"),
    ("spl_cifar10", "vat+spl", "vat.eps", 6.0, f"{SPL_CODE} SPL.py VAT(6, 1e-67, 1): eps 6"),
    ("spl_cifar10", "vat+spl", "vat.xi", 1e-6,
     f"docs/REFERENCE.md (SPL): {SPL_CODE} SPL.py VAT(6, 1e-67, 1) has xi = 1e-67, zero in "
     f"float32; {HP} vat_xi=1e-6 instead"),
    ("spl_cifar10", "pseudo_label+spl", "pseudo_label.threshold", 0.95,
     f"{SPL_CODE} SPL.py PL(0.95)"),
    ("spl_cifar100", None, "data.source", "tfds:cifar100", f"{SPL} Sec. 4: CIFAR-100"),
    ("spl_cifar100", None, "split.seen_classes", tuple(range(50)),
     f"{SPL} Sec. 4: 'the first 50 classes as labeled classes'"),
    ("spl_cifar100", None, "split.labels_per_class", 100,
     _OUR_COUNTS.format("spl_cifar100.py") + "n_labels=2400 / n_class=6, are CIFAR-10's"),
    ("spl_cifar100", None, "split.num_validation", 2500,
     _OUR_COUNTS.format("spl_cifar100.py") + "n_valid=5000, are CIFAR-10's"),
    ("spl_tinyimagenet", None, "data.source", "tfds:tiny_imagenet",
     f"{SPL} Sec. 4: TinyImageNet (classes in wnids.txt order, spl_tinyimagenet.py docstring)"),
    ("spl_tinyimagenet", None, "split.seen_classes", tuple(range(100)),
     f"{SPL} Sec. 4: 'the first 100 classes as labeled classes'"),
    ("spl_tinyimagenet", None, "split.labels_per_class", 100,
     _OUR_COUNTS.format("spl_tinyimagenet.py") + "n_labels=2400 / n_class=6, are CIFAR-10's"),
    ("spl_tinyimagenet", None, "split.num_validation", 2500,
     _OUR_COUNTS.format("spl_tinyimagenet.py") + "n_valid=5000, are CIFAR-10's"),

    # ---- FixMatch (Sohn et al. 2020) and MixMatch (Berthelot et al. 2019), CIFAR-10 ----
    *[("fixmatch_cifar10", run, *row) for run in ("fixmatch", "mixmatch") for row in [
        ("model", "wrn28_2", f"{FM} Sec. 4.2 / {MM} Sec. 4.1: WRN-28-2 (1.5M parameters)"),
        ("data.source", "tfds:cifar10", f"{FM} Table 2 / {MM} Fig. 2: CIFAR-10"),
        ("split.seen_classes", tuple(range(10)), "all ten classes labeled"),
        ("split.mismatch_ratio", 0.0, "no class mismatch"),
        ("split.num_validation", 5000,
         f"{FM_CODE} / {MM_CODE} dataset names cifar10.<seed>@<labels>-5000"),
        ("batch_size", 64, f"{FM} Sec. 4 / {MM_CODE} mixmatch.py batch 64"),
        ("num_steps", 1 << 20, f"{FM} 2^20 training steps; {MM_CODE} train_kimg 1 << 16 at 64"),
        ("ema_decay", 0.999, f"docs/REFERENCE.md: EMA 0.999 ({FM_CODE}, {MM_CODE} ema)"),
        ("median_last_evals", 20, "docs/REFERENCE.md: median of the last 20 checkpoints"),
        ("data.flip", True, "docs/REFERENCE.md: weak = flip + 4-px reflect-pad crop"),
        ("data.crop_pad", 4, "docs/REFERENCE.md: weak = flip + 4-px reflect-pad crop"),
        ("data.pad_mode", "reflect", "docs/REFERENCE.md: weak = flip + 4-px reflect-pad crop"),
        ("data.noise_std", 0.0, "docs/REFERENCE.md: weak = flip + crop only"),
    ]],
    ("fixmatch_cifar10", "fixmatch", "unlabeled_batch_size", 448, f"{FM}: mu = 7, B = 64"),
    ("fixmatch_cifar10", "fixmatch", "fixmatch.threshold", 0.95, f"{FM}: tau = 0.95"),
    ("fixmatch_cifar10", "fixmatch", "fixmatch.weight", 1.0, f"{FM}: lambda_u = 1"),
    ("fixmatch_cifar10", "fixmatch", "fixmatch.num_ops", 2,
     f"{FM} Sec. 2.3: RandAugment, two ops with random magnitude"),
    ("fixmatch_cifar10", "fixmatch", "fixmatch.cutout", True, f"{FM}: strong = RA + Cutout"),
    ("fixmatch_cifar10", "fixmatch", "optimizer.name", "nesterov",
     f"{FM}: SGD with Nesterov momentum"),
    ("fixmatch_cifar10", "fixmatch", "optimizer.momentum", 0.9, f"{FM}: momentum 0.9"),
    ("fixmatch_cifar10", "fixmatch", "optimizer.lr", 0.03, f"{FM}: lr 0.03"),
    ("fixmatch_cifar10", "fixmatch", "optimizer.schedule", "fixmatch_cosine",
     f"{FM}: lr cos(7 pi k / 16 K)"),
    ("fixmatch_cifar10", "fixmatch", "optimizer.weight_decay", 5e-4, f"{FM}: wd 5e-4"),
    ("fixmatch_cifar10", "fixmatch", "optimizer.decoupled_weight_decay", False,
     f"{FM_CODE}: wd as an L2 loss on the kernels"),
    ("fixmatch_cifar10", "fixmatch", "optimizer.decay_params", "kernels",
     f"{FM_CODE}: wd on the kernels only"),
    ("fixmatch_cifar10", "mixmatch", "unlabeled_batch_size", 64, f"{MM_CODE}: batch 64"),
    ("fixmatch_cifar10", "mixmatch", "mixmatch.weight", 75.0,
     f"{MM} Sec. 4.1 / {MM_CODE} runs: w_match 75 on CIFAR-10"),
    ("fixmatch_cifar10", "mixmatch", "mixmatch.temperature", 0.5, f"{MM}: T = 0.5"),
    ("fixmatch_cifar10", "mixmatch", "mixmatch.k", 2, f"{MM}: K = 2"),
    ("fixmatch_cifar10", "mixmatch", "mixmatch.alpha", 0.75, f"{MM}: alpha = 0.75"),
    ("fixmatch_cifar10", "mixmatch", "mixmatch.mix", "example",
     f"{MM_CODE} libml/layers.py MixMode: a Beta sample per example"),
    ("fixmatch_cifar10", "mixmatch", "ramp.kind", "linear",
     f"{MM_CODE} mixmatch.py: w_match x clip(step / warmup_kimg)"),
    ("fixmatch_cifar10", "mixmatch", "ramp.steps", 16384,
     f"{MM_CODE} mixmatch.py warmup_kimg 1024 (x 1024 images / 64 per step)"),
    ("fixmatch_cifar10", "mixmatch", "optimizer.name", "adam", f"{MM_CODE}: AdamOptimizer"),
    ("fixmatch_cifar10", "mixmatch", "optimizer.lr", 0.002, f"{MM_CODE}: lr 0.002"),
    ("fixmatch_cifar10", "mixmatch", "optimizer.schedule", "constant", f"{MM_CODE}: no decay"),
    ("fixmatch_cifar10", "mixmatch", "optimizer.weight_decay", 0.02,
     f"{MM_CODE}: wd 0.02, applied as v (1 - wd lr)"),
    ("fixmatch_cifar10", "mixmatch", "optimizer.decoupled_weight_decay", True,
     f"{MM_CODE}: v <- v (1 - wd lr) after the Adam step"),
    ("fixmatch_cifar10", "mixmatch", "optimizer.decay_params", "kernels",
     f"{MM_CODE}: only variables with 'kernel' in the name"),

    # ---- NS3L (Chen et al.), Tables 1-5 ----
    *[(f"ns3l:{setting}", "supervised+ns3l", field, value, src)
      for setting in ("cifar10-4000", "svhn-1000", "cifar100-10000")
      for field, value, src in [
          ("ns3l.enabled", True, f"{NS3L} Sec. 4.1.2: NS3L alone = supervised + lambda_1 NS3L"),
          ("ns3l.weight", 1.0, f"{NS3L} Sec. 4.1.3: lambda_1 = 1"),
          ("optimizer.lr", 6e-4, f"{NS3L} Sec. 4.1.3: learning rate 6e-4"),
          ("ns3l.strategy", "threshold", f"{NS3L} Sec. 4.1.2 / Algorithm 1")]],
    ("ns3l", "supervised+ns3l", "ns3l.threshold", 0.04, f"{NS3L} Sec. 4.1.3: T = 0.04"),
    ("ns3l:svhn-1000", "supervised+ns3l", "ns3l.threshold", 0.04,
     f"{NS3L} Sec. 4.1.3: SVHN as CIFAR-10"),
    ("ns3l:cifar100-10000", "supervised+ns3l", "ns3l.threshold", 0.004,
     f"{NS3L} Sec. 4.1.3: T = 0.04 / 10"),
    ("ns3l", "vat+ns3l", "optimizer.lr", 6e-4, f"{NS3L} Sec. 4.1.3: shared lr 6e-4"),
    ("ns3l", "vat+ns3l", "ns3l.weight", 0.3, f"{NS3L} Sec. 4.1.3: lambda_1 from 1 to 0.3"),
    ("ns3l", "vat+ns3l", "vat.weight", 0.3, f"{NS3L} Sec. 4.1.3: identical to lambda_2"),
    ("ns3l:svhn-1000", "vat+ns3l", "ns3l.weight", 0.3, f"{NS3L} Sec. 4.1.3: as CIFAR-10"),
    ("ns3l:cifar100-10000", "vat+ns3l", "optimizer.lr", 3e-3,
     f"{NS3L} Sec. 4.1.3: CIFAR-100 shared lr 3e-3"),
    ("ns3l:cifar100-10000", "vat+ns3l", "ns3l.weight", 0.3,
     f"{NS3L} Sec. 4.1.3: CIFAR-100 lambda_1 = 0.3"),
    ("ns3l:cifar100-10000", "vat+ns3l", "vat.weight", 0.6,
     f"{NS3L} Sec. 4.1.3: CIFAR-100 lambda_2 = 0.6"),
    ("ns3l:cifar100-10000", None, "vat.eps", 6.0,
     f"{NS3L} Sec. 4.1.3: VAT's CIFAR-10 settings on CIFAR-100; {OLIVER}: eps 6.0"),
    ("ns3l:cifar100-10000", None, "split.labels_per_class", 100,
     f"{NS3L} Sec. 4.1.3: 10,000 labels, 100 classes"),
    ("ns3l:cifar100-10000", None, "split.unlabeled_size", 35_000,
     f"{NS3L} Sec. 4.1.3: 35,000 unlabeled"),
    ("ns3l", "vat", "optimizer.lr", 3e-3, f"{HP} base initial_lr (VAT row as Oliver)"),
    *[(f"ns3l:{setting}", None, field, value, f"{NS3L} Sec. 4.1: {src}")
      for setting in ("cifar10-4000", "svhn-1000", "cifar100-10000")
      for field, value, src in [("num_steps", 200_000, "total iterations 200,000"),
                                ("ramp.steps", 50_000, "warmup period 50,000"),
                                ("optimizer.decay_steps", 130_000, "lr decay at 130,000")]],
    ("ns3l:svhn-1000", None, "split.num_validation", 7325,
     f"{NS3L} Sec. 4.1: 7,325 validation"),
    ("ns3l:svhn-1000", None, "split.unlabeled_size", 64_932,
     f"{NS3L} Sec. 4.1.3: 64,932 unlabeled"),
    ("ns3l:mm-svhn-250", None, "split.unlabeled_size", 65_682,
     f"{NS3L} Sec. 4.2.3: 65,682 unlabeled"),
    ("ns3l:mm-svhn-1000", None, "split.unlabeled_size", 64_932,
     f"{NS3L} Sec. 4.2.3: 64,932 unlabeled"),
    ("ns3l", None, "split.unlabeled_size", 41_000, f"{NS3L} Sec. 4.1.3: 41,000 unlabeled"),
    *[(f"ns3l:{setting}", run, field, value, src)
      for setting, lambda_u, lambda_1, labels in [
          ("mm-cifar10-250", 75.0, 5.0, 25), ("mm-cifar10-4000", 75.0, 10.0, 400),
          ("mm-svhn-250", 250.0, 2.0, 25), ("mm-svhn-1000", 250.0, 2.0, 100),
          ("mm-stl10-1000", 50.0, 2.0, 100)]
      for run, field, value, src in [
          (None, "mixmatch.weight", lambda_u, f"{NS3L} Sec. 4.2.3: lambda_3 = {lambda_u:g}"),
          (None, "mixmatch.alpha", 0.75, f"{NS3L} Sec. 4.2.3: alpha = 0.75"),
          (None, "split.labels_per_class", labels, f"{NS3L} Sec. 4.2.3: {labels * 10} labels"),
          (None, "optimizer.lr", 0.002, f"{MM_CODE}: lr 0.002 (NS3L runs the official code)"),
          ("mixmatch+ns3l", "ns3l.threshold", 0.05, f"{NS3L} Sec. 4.2.3: T = 0.05"),
          ("mixmatch+ns3l", "ns3l.weight", lambda_1,
           f"{NS3L} Sec. 4.2.3: lambda_1 = {lambda_1:g}")]],
    ("ns3l:mm-cifar10-250", None, "num_steps", 300 * 1024,
     f"{NS3L} Sec. 4.2: 300 epochs (of 64 kimg, MixMatch's code: 1,024 steps of 64)"),
    ("ns3l:mm-svhn-1000", None, "num_steps", 300 * 1024, f"{NS3L} Sec. 4.2: 300 epochs"),
    ("ns3l:mm-cifar10-250", None, "median_last_evals", 20,
     f"{NS3L} Sec. 4.2: median of the last 20 checkpoints"),
    ("ns3l:mm-cifar10-250", None, "ema_decay", 0.999, f"{MM}: EMA 0.999"),
    ("ns3l:fmnist-2000", None, "data.source", "tfds:fashion_mnist", f"{NS3L} Sec. 5: F-MNIST"),
    ("ns3l:fmnist-2000", None, "split.labels_per_class", 200,
     f"{NS3L} Sec. 5: 2,000 labeled"),
    ("ns3l:fmnist-2000", None, "split.unlabeled_size", 58_000,
     f"{NS3L} Sec. 5: 58,000 unlabeled"),
    ("ns3l:fmnist-2000", None, "model", "cnn_small", f"{NS3L} Sec. 5: a small CNN"),
    ("ns3l:fmnist-2000", None, "num_steps", 50 * (58_000 // 64),
     f"{NS3L} Table 5: 50 epochs (over the unlabeled set, 64 per step; the paper gives no "
     "batch size)"),

    # ---- ICN (introspective CNNs; no official code) ----
    *[("icn:mnist", "supervised+icn", field, value, f"{ICN} {src}") for field, value, src in [
        ("model", "icn_mnist", "Sec. 4.1: 4 conv layers 5x5, 64/128/256/512, stride 2"),
        ("optimizer.name", "sgd", "Sec. 4: SGD for the reclassification step"),
        ("optimizer.momentum", 0.9, "Sec. 4: momentum 0.9"),
        ("batch_size", 64, "Sec. 4: mini-batch 64 (MNIST)"),
        ("optimizer.lr", 0.025, "Sec. 4.1: initial learning rate 0.025"),
        ("icn.lr_decay_round", 25, "Sec. 4.1: decreased by a factor of 10 at t = 25"),
        ("icn.lr_decay_factor", 0.1, "Sec. 4.1: a factor of 10"),
        ("icn.epochs_per_round", 5, "Sec. 4.1: SGD for 5 epochs per round"),
        ("icn.sampler", "adam", "Sec. 4: Adam for the synthesis step"),
        ("icn.adam_b1", 0.5, "Sec. 4: beta1 = 0.5"),
        ("icn.noise_std", 0.3, "Sec. 3.1: reference distribution N(0, 0.3^2)"),
        ("icn.per_class", 20, "Sec. 4.1: 200 pseudo-negatives per round (20 x 10 classes)"),
        ("icn.fgsm_eps", 0.125, "Sec. 4.1: FGSM eps = 0.125"),
        ("icn.formulation", "softmax", "Sec. 3.4 / Eq. 9: softmax column"),
        ("icn.negatives", "synthesized", "Algorithm 1: synthesized pseudo-negatives"),
        ("split.labels_per_class", 5500, "Sec. 4.1: 55,000 training images"),
        ("split.num_validation", 5000, "Sec. 4.1: 5,000 validation"),
        ("data.crop_pad", 0, "Sec. 4.1: no augmentation on MNIST")]],
    ("icn:mnist", "supervised+icn_noise", "icn.negatives", "noise",
     f"{ICN} Sec. 4.1: ICN-noise, random noise as pseudo-negatives"),
    ("icn:mnist", "supervised+ls+icn_base", "target.kind", "ls",
     f"{ICN} Table 1: CNN w/ LS (Szegedy et al.)"),
    ("icn:mnist,ova", None, "icn.formulation", "ova", f"{ICN} Sec. 3.4: one-vs-all"),
    ("icn:mnist-500", None, "split.labels_per_class", 50, f"{ICN} Fig. 3: 500 examples"),
    ("icn:mnist-2000", None, "split.labels_per_class", 200, f"{ICN} Fig. 3: 2,000 examples"),
    ("icn:mnist-10000", None, "split.labels_per_class", 1000,
     f"{ICN} Fig. 3: 10,000 examples"),
    *[(f"icn:{setting}", None, field, value, f"{ICN} {src}")
      for setting in ("cifar10", "cifar10-aug", "svhn")
      for field, value, src in [
          ("model", "resnet32", "Sec. 4.2-4.3: ResNet-32"),
          ("batch_size", 128, "Sec. 4: mini-batch 128 (CIFAR-10, SVHN)")]],
    ("icn:cifar10", None, "data.crop_pad", 0, f"{ICN} Table 3: w/o data augmentation"),
    ("icn:cifar10-aug", None, "data.crop_pad", 4, f"{ICN} Sec. 4.2: zero-pad 4 px + crop"),
    ("icn:cifar10-aug", None, "data.flip", True, f"{ICN} Sec. 4.2: random flipping"),
    ("icn:cifar10-aug", None, "data.pad_mode", "zeros", f"{ICN} Sec. 4.2: zero-padding"),
    ("icn:cifar10", None, "split.labels_per_class", 4500,
     f"{ICN} Sec. 4.2: 50,000 training images (45,000 + 5,000 validation)"),
    ("icn:svhn", None, "data.source", "tfds:svhn_cropped", f"{ICN} Sec. 4.3: SVHN"),
    ("icn:svhn", None, "data.crop_pad", 0, f"{ICN} Sec. 4.3: no data augmentation"),

    # ---- the SSL report (PL, VAT, attention-KL FixMatch) ----
    ("ssl_report", None, "data.source", "tfds:cifar10", f"{REPORT} Sec. 2.4: CIFAR-10"),
    ("ssl_report:fixmatch_attention,cifar100,2500,0.75", None, "data.source",
     "tfds:cifar100", f"{REPORT} Sec. 2.4: CIFAR-100"),
    ("ssl_report:fixmatch_attention,cifar100,2500,0.75", None, "split.labels_per_class", 25,
     f"{REPORT} Table 3: CIFAR-100 2,500 labels"),
    ("ssl_report:fixmatch_attention,cifar100,2500,0.75", None, "fixmatch.threshold", 0.75,
     f"{REPORT} Table 3: tau in 0.95 / 0.75 / 0.6"),
    ("ssl_report", None, "split.labels_per_class", 400,
     f"{REPORT} Table 3: CIFAR-10 4,000 labels"),
    ("ssl_report", None, "model", "wrn28_2", f"{REPORT} Sec. 2.3: WideResNet"),
    ("ssl_report", None, "model_kwargs.attention", True,
     f"{REPORT} Sec. 2.3: the attention module on the last feature maps"),
    ("ssl_report", None, "fixmatch.threshold", 0.95, f"{REPORT} Table 3: tau = 0.95 row"),
    ("ssl_report", None, "num_steps", 200 * 92,
     f"{REPORT} Sec. 2.4: Task 3 trains 200 epochs (of ceil(41,000 / 448) = 92 steps)"),
    ("ssl_report:pseudo_label_accumulated,cifar10,250,0.6", None,
     "pseudo_label_accumulated.threshold", 0.6, f"{REPORT} Table 1: tau = 0.6 row"),
    ("ssl_report:pseudo_label_accumulated,cifar10,250,0.6", None,
     "pseudo_label_accumulated.warmup_epochs", 10, f"{REPORT} Sec. 2.4: 10 warm-up epochs"),
    ("ssl_report:pseudo_label_accumulated,cifar10,250,0.6", None,
     "pseudo_label_accumulated.align", False, f"{REPORT} Sec. 2.1: no alignment"),
    ("ssl_report:pseudo_label_accumulated,cifar10,250,0.6", None, "num_steps", 300 * 700,
     f"{REPORT} Sec. 2.4: 300 epochs (of ceil(44,750 / 64) = 700 steps)"),
    ("ssl_report:vat,cifar10,4000", None, "vat.xi", 10.0, f"{REPORT} Sec. 2.4: xi = 10"),
    ("ssl_report:vat,cifar10,4000", None, "vat.eps", 10.0, f"{REPORT} Sec. 2.4: eps = 10"),
    ("ssl_report:vat,cifar10,4000", None, "vat.power_iterations", 5,
     f"{REPORT} Sec. 2.4: iter = 5"),
    ("ssl_report:vat,cifar10,4000", None, "ramp.kind", "warmup",
     f"{REPORT} Sec. 2.4: warm-up epochs on labeled data only"),
    ("ssl_report:vat,cifar10,4000", None, "ramp.steps", 35 * 641,
     f"{REPORT} Sec. 2.4: 35 warm-up epochs (of ceil(41,000 / 64) = 641 steps)"),
]


def _values(row):
    """(module, run, field, expected, source) of a plain row or a pytest.param."""
    return tuple(row.values) if hasattr(row, "values") else tuple(row)


def _row_id(values) -> str:
    module, run, field = values[:3]
    return f"{module}[{run or '*'}]{field}"


def _params(rows):
    out = []
    for row in rows:
        values = _values(row)
        out.append(pytest.param(*values, id=_row_id(values), marks=getattr(row, "marks", ())))
    return out


def _cli_config(mod, run):
    """The config `--config <module>.py:<run>` trains: its one run, as experiments/common.py
    builds it."""
    c = mod.get_config(run)
    (only,) = parse_methods(c.get("compare", "")) or (c.method,)
    return for_method(c, only)


def effective_configs(spec: str, run: str | None) -> dict:
    """{where it came from: effective config} for one row (see the module docstring)."""
    module, _, arg = spec.partition(":")
    mod = importlib.import_module(f"experiments.configs.{module}")
    base = mod.get_config(arg) if arg else mod.get_config()
    runs = (run,) if run else parse_methods(base.get("compare", "")) or (base.method,)
    out = {f"for_method({spec}.get_config(), {r!r})": for_method(base, r) for r in runs}
    if run and module in RUN_ARGUMENT and not arg:
        out[f"--config {module}.py:{run}"] = _cli_config(mod, run)
    return out


def _field(config, dotted: str):
    return reduce(lambda node, key: node[key], dotted.split("."), config)


def _matches(actual, expected) -> bool:
    """Floats approximately; bools, ints, strings and tuples exactly, type included."""
    if isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, float):
        return (isinstance(actual, int | float) and not isinstance(actual, bool)
                and actual == pytest.approx(expected, rel=1e-9, abs=0.0))
    if isinstance(expected, int):
        return isinstance(actual, int) and not isinstance(actual, bool) and actual == expected
    return type(actual) is type(expected) and actual == expected


@pytest.mark.parametrize("module,run,field,expected,source", _params(PAPER_VALUES))
def test_full_scale_config_carries_the_papers_value(module, run, field, expected, source):
    if run:
        validate_run_name(run)
    for where, config in effective_configs(module, run).items():
        actual = _field(config, field)
        assert _matches(actual, expected), (
            f"{where}: {field} = {actual!r}, but {source} gives {expected!r}")


def test_every_full_scale_config_has_rows():
    """A new paper-scale config cannot be added without its rows, and no row names a
    config that is gone; no (config, run, field) appears twice."""
    modules = {p.stem for p in CONFIGS_DIR.glob("*.py")} - {"__init__"} - EMBEDDED
    keys = [_values(row)[:3] for row in PAPER_VALUES]
    covered = {spec.partition(":")[0] for spec, _, _ in keys}
    assert modules - covered == set(), "full-scale configs without a row in PAPER_VALUES"
    assert covered - modules == set(), "rows for configs that do not exist"
    assert len(set(keys)) == len(keys), "duplicate (config, run, field) rows"
