"""Paper tables as data: which configs, methods and settings make each row."""

from __future__ import annotations

import dataclasses

from experiments.configs import icn as icn_configs
from experiments.configs import ns3l as ns3l_configs
from experiments.configs.fixmatch_cifar10 import LABELS as FM_LABELS
from experiments.configs.fixmatch_cifar10 import PAPER_ERROR as FM_PAPER_ERROR
from experiments.configs.proselflc_cifar100 import NOISE, PAPER_TABLE4, run_name
from experiments.configs.proselflc_cifar100 import ROWS as TARGET_ROWS
from experiments.configs.spl_cifar10 import PAPER_TABLE1, SAFE_SSL
from experiments.configs.spl_cifar10 import ROWS as SPL_ROWS
from experiments.configs.ssl_report import DATASETS as REPORT_DATASETS
from experiments.configs.ssl_report import PAPER_ERROR as REPORT_PAPER
from experiments.configs.ssl_report import TASK_FIELDS, column_fields


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows x sweep values x seeds, one run each.

    A row is a run name for `sslj.config.for_method` (`"vat"`, `"supervised+ls"`) unless
    `rows` maps it to (run name, {field: value}). A sweep value sets `sweep_field`
    unless `sweep_overrides` maps it (a column label) to {field: value}.
    """

    title: str
    methods: tuple[str, ...]  # the rows
    sweep_field: str  # the x axis: one run per value
    sweep_values: tuple
    configs: dict  # scale -> config module path (under experiments/configs)
    overrides: dict = dataclasses.field(default_factory=dict)  # scale -> {field: value}
    metric: str = "test_accuracy_at_best_val"
    reported: str = ""
    # row -> the paper's number (one column), or row -> {sweep value: number}
    paper: dict = dataclasses.field(default_factory=dict)
    rows: dict = dataclasses.field(default_factory=dict)  # row -> (run name, overrides)
    sweep_overrides: dict = dataclasses.field(default_factory=dict)
    report: str = "error"  # "error" or "accuracy", in %
    dynamics_at: object = None  # a sweep value: plot every row's learning dynamics there
    # scale -> {column label: {field: value}}: columns whose fields differ by scale
    scale_sweep_overrides: dict = dataclasses.field(default_factory=dict)
    layer_ratios_at: object = None  # a sweep value: plot the SPL per-layer ratios (Fig. 4)
    skip: frozenset = frozenset()  # (row, sweep value) cells that do not exist ("-")
    fgsm_pair: tuple | None = None  # (baseline row, ICN row): the two-way FGSM table
    unseen_share: bool = False  # plot every row's unseen-class share of its selection

    def row(self, name: str) -> tuple[str, dict]:
        return self.rows.get(name, (name, {}))

    def column(self, value, scale: str | None = None) -> dict:
        overrides = self.scale_sweep_overrides.get(scale, self.sweep_overrides)
        return overrides.get(value, {self.sweep_field: value})


ALL_SSL = ("supervised", "pi_model", "mean_teacher", "temporal_ensembling", "vat",
           "vat_entmin", "pseudo_label", "pseudo_label_accumulated")
_TABLE1_ROWS = ("supervised", "pi_model", "mean_teacher", "vat", "vat_entmin", "pseudo_label")
# the embedded twin of Table 1: the embedded default with every class of the unlabeled
# set seen (no mismatch)
_NO_MISMATCH = {"embedded": {"split.mismatch_ratio": 0.0}}

TABLES = {
    "oliver_table1": Table(
        title="Oliver et al. 2018 Table 1, CIFAR-10 4,000 labels: test error (%)",
        methods=_TABLE1_ROWS + ("temporal_ensembling", "pseudo_label_accumulated"),
        sweep_field="split.mismatch_ratio",
        sweep_values=(0.0,),
        configs={"embedded": "default", "full": "oliver_cifar10_4000"},
        overrides=_NO_MISMATCH,
        paper={"supervised": 20.26, "pi_model": 16.37, "mean_teacher": 15.87, "vat": 13.86,
               "vat_entmin": 13.13, "pseudo_label": 17.78},
        reported="Paper column: Oliver et al. 2018, CIFAR-10 with 4,000 labels "
                 "(docs/REFERENCE.md); temporal_ensembling and pseudo_label_accumulated are "
                 "not in that table.",
    ),
    "oliver_table1_svhn": Table(
        title="Oliver et al. 2018 Table 1, SVHN 1,000 labels: test error (%)",
        methods=_TABLE1_ROWS,
        sweep_field="split.mismatch_ratio",
        sweep_values=(0.0,),
        configs={"embedded": "default", "full": "oliver_svhn_1000"},
        # embedded twin: sklearn's 8x8 digits, all ten seen, 10 labels per digit
        overrides={"embedded": {"data.source": "digits", "model": "cnn_tiny",
                                "split.seen_classes": tuple(range(10)),
                                "split.mismatch_ratio": 0.0, "split.unlabeled_size": 1000,
                                "split.num_validation": 200, "data.crop_pad": 1}},
        paper={"supervised": 12.83, "pi_model": 7.19, "mean_teacher": 5.65, "vat": 5.63,
               "vat_entmin": 5.35, "pseudo_label": 7.62},
        reported="Paper column: Oliver et al. 2018 Table 1, SVHN with 1,000 labels.",
    ),
    "oliver_mismatch": Table(
        title="Class mismatch (Oliver et al. 2018, Fig. 2): seen-class test error (%) "
              "vs mismatch ratio",
        methods=ALL_SSL + ("supervised+ns3l", "vat+ns3l"),
        sweep_field="split.mismatch_ratio",
        sweep_values=(0.0, 0.25, 0.5, 0.75, 1.0),
        configs={"embedded": "default", "full": "oliver_cifar10_mismatch"},
        reported="Paper (CIFAR-10, 400 labels per animal class): the Pi-model beats "
                 "supervised at delta = 0 and loses its advantage as delta grows to "
                 "0.75-1.0.",
    ),
}


# ------------------------------------------------------------------ ProSelfLC (label noise)
_NOISE_COLUMNS = tuple(c for c in NOISE if c != "clean")
_NOISE = {label: {"noise.kind": kind, "noise.rate": rate}
          for label, (kind, rate) in NOISE.items()}
_TARGET_ROWS = {row: (run_name(row), {}) for row in TARGET_ROWS}


def _table5_rows_and_paper():
    """Table 5: each modifier's hyperparameter sweep (CIFAR-100, ResNet-44)."""
    cols = _NOISE_COLUMNS + ("clean",)
    values = {
        "cce": (66.6, 63.4, 59.5, 58.0, 50.1, 37.9, 69.0),
        # LS: the extracted text keeps only the symmetric and clean columns of
        # eps 0.125 / 0.25; eps 0.5's asymmetric cells are Table 4's LS row
        "ls_0.125": (None, None, None, 61.7, 52.5, 39.1, 69.9),
        "ls_0.25": (None, None, None, 62.8, 55.9, 40.9, 69.6),
        "ls_0.5": (67.9, 66.4, 65.0, 63.8, 57.2, 46.5, 68.4),
        "cp_0.125": (65.7, 64.2, 60.3, 59.8, 52.3, 39.6, 69.5),
        "cp_0.25": (66.8, 65.1, 61.6, 61.0, 53.3, 40.9, 69.3),
        "cp_0.5": (67.7, 66.0, 64.4, 64.0, 56.8, 44.1, 68.7),
        "boot_soft_0.125": (65.8, 64.1, 60.7, 59.7, 51.2, 40.6, 68.9),
        "boot_soft_0.25": (66.2, 64.1, 60.3, 61.1, 54.4, 43.3, 69.1),
        "boot_soft_0.5": (66.9, 65.3, 61.0, 63.2, 59.0, 44.8, 69.1),
        "proselflc_B8": (67.8, 67.4, 67.9, 64.7, 57.7, 47.7, 70.1),
        "proselflc_B10": (68.5, 68.5, 66.8, 63.9, 59.0, 47.5, 70.3),
        "proselflc_B12": (68.6, 67.9, 67.4, 64.0, 59.3, 47.5, 69.8),
        "proselflc_B14": (68.7, 68.0, 67.8, 64.8, 59.0, 47.4, 69.6),
        "proselflc_B16": (68.4, 67.2, 67.3, 63.7, 59.0, 32.3, 69.9),
    }
    rows = {}
    for name in values:
        if name == "cce":
            rows[name] = ("supervised", {})
        elif name.startswith("proselflc_B"):
            rows[name] = ("supervised+proselflc", {"target.exp_base": float(name[11:])})
        else:
            kind, eps = name.rsplit("_", 1)
            rows[name] = (f"supervised+{kind}", {"target.eps": float(eps)})
    paper = {name: {c: v for c, v in zip(cols, vals, strict=True) if v is not None}
             for name, vals in values.items()}
    return rows, paper


_T5_ROWS, _T5_PAPER = _table5_rows_and_paper()
# what the label-noise tables share: noise settings as columns, final accuracy reported
_NOISE_TABLE = dict(sweep_field="noise", sweep_overrides=_NOISE,
                    configs={"embedded": "label_noise", "full": "proselflc_cifar100"},
                    metric="final_test_accuracy", report="accuracy")

TABLES["proselflc_table4"] = Table(
    title="ProSelfLC Table 4, CIFAR-100 with label noise, ResNet-44: clean test accuracy (%)",
    methods=tuple(_TARGET_ROWS),
    rows=_TARGET_ROWS,
    sweep_values=_NOISE_COLUMNS,
    **_NOISE_TABLE,
    paper=PAPER_TABLE4,
    dynamics_at="asym0.4",
    reported="Paper values in parentheses: Wang et al. CVPR 2021 Table 4 (final accuracy; "
             "Boot-hard as reported by Wang et al. 2019). Embedded scale: MNIST-5k, TinyCNN, "
             "asymmetric noise on the digit pairs of sslj.data.noise.DIGIT_PAIRS.",
)
TABLES["proselflc_table5"] = Table(
    title="ProSelfLC Table 5, hyperparameters (eps of LS / CP / Boot-soft, B of ProSelfLC): "
          "clean test accuracy (%)",
    methods=tuple(_T5_ROWS),
    rows=_T5_ROWS,
    sweep_values=_NOISE_COLUMNS + ("clean",),
    **_NOISE_TABLE,
    paper=_T5_PAPER,
    reported="Paper values in parentheses: Wang et al. CVPR 2021 Table 5.",
)


# ------------------------------------------------------------------ SPL (class mismatch)
# Embedded twin of every SPL table: the README's main job config (MNIST-5k, digits 0-5
# seen, 10 labels per digit, 1,500 unlabeled images), whose SPL settings it documents.
_SPL_REPORTED = ("Paper values in parentheses: He et al. AAAI 2022 (SPL), seen-class test "
                 "accuracy. Embedded scale: MNIST-5k (experiments/configs/default.py). "
                 "Base rows select on the whole validation set, +SPL rows on V2 (V1 "
                 "learns the masks).")
for _data, _cfg in (("cifar10", "spl_cifar10"), ("cifar100", "spl_cifar100"),
                    ("tinyimagenet", "spl_tinyimagenet")):
    TABLES[f"spl_table1_{_data}"] = Table(
        title=f"SPL Table 1, {_data}: seen-class test accuracy (%) at mismatch 0.3 / 0.6",
        methods=SPL_ROWS,
        sweep_field="split.mismatch_ratio",
        sweep_values=(0.3, 0.6),
        configs={"embedded": "default", "full": _cfg},
        paper={row: dict(zip((0.3, 0.6), vals, strict=True))
               for row, vals in PAPER_TABLE1[_data].items()},
        report="accuracy",
        reported=_SPL_REPORTED,
        # DS3L's official WNet takes 6 inputs: the paper runs it on CIFAR-10 only
        skip=(frozenset() if _data == "cifar10" else frozenset(
            (r, v) for r in ("ds3l", "ds3l+spl") for v in (0.3, 0.6))),
    )

# The safe-SSL bases with SPL and the fine-tune-on-V1 control beside each +spl row, the
# embedded twin of Table 1's safe-SSL rows (issue 17), and their unseen-share figure.
_SAFE_ROWS = ("pseudo_label",) + tuple(
    r for b in SAFE_SSL for r in (b, f"{b}+spl", f"{b}+finetune"))
TABLES["spl_safe_ssl"] = Table(
    title="SPL Table 1's safe-SSL rows with +SPL and +finetune: seen-class test accuracy "
          "(%) at mismatch 0.3 / 0.6",
    methods=_SAFE_ROWS,
    sweep_field="split.mismatch_ratio",
    sweep_values=(0.3, 0.6),
    configs={"embedded": "default", "full": "spl_cifar10"},
    paper={row: dict(zip((0.3, 0.6), vals, strict=True))
           for row, vals in PAPER_TABLE1["cifar10"].items() if row in _SAFE_ROWS},
    report="accuracy",
    reported=_SPL_REPORTED + " +finetune fine-tunes the base model on V1's labels without "
             "masks: the share of a +SPL gain that V1's labels alone give.",
    unseen_share=True,
)

_T2_RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_T2_PAPER = {  # the paper's base is Curriculum Labeling (CL)
    "curriculum_labeling": (63.6, 63.2, 62.4, 61.5, 61.5, 59.3, 58.9, 57.9),
    "curriculum_labeling+finetune": (62.1, 62.0, 61.1, 61.0, 59.2, 57.6, 56.8, 56.4),
    "curriculum_labeling+spl": (65.9, 65.1, 65.0, 65.5, 63.6, 62.5, 60.9, 60.7),
    "curriculum_labeling+spl_soft": (66.9, 67.3, 66.3, 66.7, 65.8, 63.8, 63.6, 63.5),
}
TABLES["spl_table2"] = Table(
    title="SPL Table 2, CIFAR-100: CL vs fine-tuning on V1 vs hard vs soft mask, "
          "accuracy (%) over mismatch ratios",
    methods=tuple(_T2_PAPER),
    sweep_field="split.mismatch_ratio",
    sweep_values=_T2_RATIOS,
    configs={"embedded": "default", "full": "spl_cifar100"},
    paper={row: dict(zip(_T2_RATIOS, vals, strict=True)) for row, vals in _T2_PAPER.items()},
    report="accuracy",
    reported=_SPL_REPORTED + " The base is Curriculum Labeling (sslj.procedures.curriculum).",
)

_T3_ROWS = {
    "pretraining": ("vat", {}),
    "w/o pre-training": ("vat+spl", {"spl.pretrain": False}),
    "w/o identification": ("vat+spl", {"spl.identify": "none"}),
    "w/o identification (random)": ("vat+spl", {"spl.identify": "random"}),
    "w/o bi-level": ("vat+spl", {"spl.inner_steps": 0, "spl.outer_steps": 0}),
    "w/o inner": ("vat+spl", {"spl.inner_steps": 0}),
    "w/o outer": ("vat+spl", {"spl.outer_steps": 0}),
    "SPL": ("vat+spl", {}),
}
_T3_COLUMNS = ("100x6", "200x6", "400x6")
_T3_PAPER = {
    "pretraining": (59.7, 71.2, 76.9), "w/o pre-training": (32.5, 33.2, 33.8),
    "w/o identification": (59.9, 71.2, 77.0), "w/o bi-level": (59.6, 71.1, 77.2),
    "w/o inner": (59.4, 70.4, 76.3), "w/o outer": (65.9, 75.5, 79.8),
    "SPL": (66.1, 75.7, 80.1),
}
TABLES["spl_table3"] = Table(
    title="SPL Table 3, ablations on CIFAR-10 (mismatch 0.3, VAT pre-training): "
          "seen-class accuracy (%) by labels per class",
    methods=tuple(_T3_ROWS),
    rows=_T3_ROWS,
    sweep_field="split.labels_per_class",
    sweep_values=_T3_COLUMNS,
    sweep_overrides={c: {"split.labels_per_class": int(c.split("x")[0]),
                         "split.mismatch_ratio": 0.3} for c in _T3_COLUMNS},
    # MNIST-5k has 400 images per digit in its pool: 5 / 10 / 20 labels per digit
    scale_sweep_overrides={"embedded": {c: {"split.labels_per_class": n,
                                            "split.mismatch_ratio": 0.3}
                                        for c, n in zip(_T3_COLUMNS, (5, 10, 20), strict=True)}},
    configs={"embedded": "default", "full": "spl_cifar10"},
    paper={row: dict(zip(_T3_COLUMNS, vals, strict=True)) for row, vals in _T3_PAPER.items()},
    report="accuracy",
    reported=_SPL_REPORTED + " Columns: labels per seen class x 6 classes (embedded: 5, 10, "
             "20 per digit). w/o identification: every parameter starts safe (the random "
             "row: a random subset of the same size); w/o bi-level: identify and prune "
             "only; w/o inner / outer: no mask / weight steps.",
)

_FIG2_BASES = ("supervised", "pi_model", "pseudo_label", "vat")
TABLES["spl_fig2"] = Table(
    title="SPL Fig. 2(a, c), CIFAR-10: seen-class accuracy (%) vs mismatch ratio",
    methods=_FIG2_BASES + tuple(f"{b}+spl" for b in _FIG2_BASES[1:]),
    sweep_field="split.mismatch_ratio",
    sweep_values=(0.0, 0.2, 0.4, 0.6),
    # the full-scale config's DS3L split, as Table 1's: at delta = 0 a seen class gives
    # 400 labels + at most 5,000 / 6 validation + 20,000 / 6 unlabeled images < its 5,000
    configs={"embedded": "default", "full": "spl_cifar10"},
    report="accuracy",
    reported="He et al. Fig. 2: SSL methods fall below supervised from delta = 0.4 on, "
             "+SPL stays above it (3.6 points at delta = 0.6).",
)
# p from 0.1 to 1.0 (every parameter safe: no pruning) and Eq. 3's own p
# (spl.safe_ratio = 0), the point whose superiority the figure claims
_FIG3_COLUMNS = {f"p={p}": {"spl.safe_ratio": p} for p in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)}
_FIG3_COLUMNS["Eq. 3"] = {"spl.safe_ratio": 0.0}
TABLES["spl_fig3"] = Table(
    title="SPL Fig. 3, CIFAR-100 (mismatch 0.3, Pi-model): accuracy (%) vs the ratio of "
          "safe parameters p",
    methods=("pi_model", "pi_model+spl"),
    sweep_field="spl.safe_ratio",
    sweep_values=tuple(_FIG3_COLUMNS),
    sweep_overrides=_FIG3_COLUMNS,
    configs={"embedded": "default", "full": "spl_cifar100"},
    overrides={"embedded": {"split.mismatch_ratio": 0.3}},
    layer_ratios_at="p=0.3",
    report="accuracy",
    reported="He et al. Fig. 3 (accuracy vs p) and Fig. 4 (per-layer ratios at p = 0.3, "
             "in <table>_<scale>_layer_ratios.png). The Eq. 3 column uses "
             "p = 1 - delta (1 - tau) (results.json: spl.safe_ratio); p = 1.0 keeps every "
             "parameter. The pi_model row ignores p.",
)


# ------------------------------------------------------------------ the main job
TABLES["main_job"] = Table(
    title="The main job (README, experiments/configs/default.py): MNIST-5k, digits 0-5 "
          "seen, mismatch 0.6, seen-class test accuracy (%)",
    methods=("supervised", "pi_model", "pi_model+finetune", "pi_model+spl"),
    sweep_field="split.mismatch_ratio",
    sweep_values=(0.6,),
    configs={"embedded": "default"},
    report="accuracy",
    reported="Base rows select on the whole validation set; +finetune (the weights "
             "fine-tuned on V1, the control for the labels SPL's masks see) and +spl "
             "select on V2 and start from the pi_model row's run, their pretraining.",
)


# ------------------------------------------------------------------ FixMatch / MixMatch
_LABEL_COLUMNS = {n: {"split.labels_per_class": n // 10,
                      "split.unlabeled_size": 50_000 - n - 5000} for n in FM_LABELS}
TABLES["fixmatch_cifar10"] = Table(
    title="FixMatch and MixMatch, CIFAR-10 by number of labels: test error (%), median of "
          "the EMA model's last 20 evaluations",
    methods=("supervised", "fixmatch", "mixmatch"),
    sweep_field="labels",
    sweep_values=FM_LABELS,
    configs={"embedded": "default", "full": "fixmatch_cifar10"},
    overrides={"embedded": {"split.mismatch_ratio": 0.0}},
    sweep_overrides=_LABEL_COLUMNS,
    # MNIST-5k twins: 4 / 10 / 50 labels per seen digit stand for 4 / 25 / 400 per class
    scale_sweep_overrides={"embedded": {40: {"split.labels_per_class": 4},
                                        250: {"split.labels_per_class": 10},
                                        4000: {"split.labels_per_class": 50}}},
    metric="median_ema_test_accuracy",
    paper=FM_PAPER_ERROR,
    reported="Paper values in parentheses: FixMatch (RandAugment) and MixMatch CIFAR-10 "
             "errors (experiments/configs/fixmatch_cifar10.py). Columns are label counts; "
             "embedded scale: MNIST-5k, digits 0-5, no mismatch, 4 / 10 / 50 labels per digit.",
)
TABLES["ssl_mismatch"] = Table(
    title="FixMatch and MixMatch against supervised and VAT, with and without class "
          "mismatch (the main job's protocol): seen-class test accuracy (%)",
    methods=("supervised", "vat", "fixmatch", "mixmatch"),
    sweep_field="split.mismatch_ratio",
    sweep_values=(0.0, 0.6),
    configs={"embedded": "default"},
    report="accuracy",
    reported="MNIST-5k, digits 0-5 seen, 10 labels per digit, 1,500 unlabeled images of "
             "which a fraction (the column) from digits 6-9; test accuracy at the best "
             "validation step; results.json also has the EMA median.",
)


def _report_table(task: str, title: str, rows: dict, paper: dict) -> Table:
    """One of the SSL report's tables: its columns are (data set, labels) settings."""
    columns = {f"{d}-{n}": column_fields(task, d, n) for d, ns in REPORT_DATASETS.items()
               for n in ns}
    return Table(
        title=title, methods=tuple(rows), rows=rows, sweep_field="setting",
        sweep_values=tuple(columns), configs={"embedded": "default", "full": "ssl_report"},
        sweep_overrides=columns,
        # MNIST-5k twins of the CIFAR-10 columns (10 / 50 labels per seen digit, no
        # mismatch); the CIFAR-100 columns have none
        scale_sweep_overrides={"embedded": {
            "cifar10-250": {"split.labels_per_class": 10, "split.mismatch_ratio": 0.0},
            "cifar10-4000": {"split.labels_per_class": 50, "split.mismatch_ratio": 0.0}}},
        overrides={"full": TASK_FIELDS[task]},
        paper=paper,
        reported="Paper values in parentheses: the SSL report "
                 "(experiments/configs/ssl_report.py), test error at the end of training; "
                 "sslj reports the test error at the best validation step.",
    )


def _paper_by_column(values) -> dict:
    cols = [f"{d}-{n}" for d, ns in REPORT_DATASETS.items() for n in ns]
    return dict(zip(cols, values, strict=True))


_TAUS = (0.95, 0.75, 0.6)
TABLES["ssl_report_table1"] = _report_table(
    "pseudo_label_accumulated",
    "The SSL report's Table 1, accumulated pseudo-labelling by threshold: test error (%)",
    {f"tau={t}": ("pseudo_label_accumulated", {"pseudo_label_accumulated.threshold": t,
                                               "pseudo_label_accumulated.align": False})
     for t in _TAUS},
    {f"tau={t}": _paper_by_column(REPORT_PAPER[("pseudo_label_accumulated", t)])
     for t in _TAUS})
TABLES["ssl_report_table2"] = _report_table(
    "vat", "The SSL report's Table 2, VAT: test error (%)",
    {"vat": ("vat", {})}, {"vat": _paper_by_column(REPORT_PAPER[("vat", None)])})
TABLES["ssl_report_table3"] = _report_table(
    "fixmatch_attention",
    "The SSL report's Table 3, attention-KL FixMatch by threshold: test error (%)",
    {f"tau={t}": ("fixmatch_attention", {"fixmatch.threshold": t,
                                         "model_kwargs.attention": True})
     for t in _TAUS},
    {f"tau={t}": _paper_by_column(REPORT_PAPER[("fixmatch_attention", t)]) for t in _TAUS})


# ------------------------------------------------------------------ NS3L
# embedded twins: MNIST-5k (digits 0-5, no mismatch: the default's 6-class threshold) for
# CIFAR-10 / F-MNIST, sklearn's 8x8 digits (all ten seen, oliver_table1_svhn's twin) for
# SVHN; the digits twin's threshold is the paper's 10-class 0.04
_DIGITS = {"data.source": "digits", "model": "cnn_tiny", "split.seen_classes": tuple(range(10)),
           "split.mismatch_ratio": 0.0, "split.unlabeled_size": 1000,
           "split.num_validation": 200, "data.crop_pad": 1, "ns3l.threshold": 0.04}
_NS3L_COLUMNS = {s: ns3l_configs.column_fields(s) for s in ns3l_configs.SETTINGS}
TABLES["ns3l_table1"] = Table(
    title="NS3L Table 1: supervised, Pseudo-Label, VAT, VAT + EntMin, NS3L and VAT + NS3L: "
          "test error (%)",
    methods=ns3l_configs.TABLE1_ROWS,
    sweep_field="setting",
    sweep_values=ns3l_configs.TABLE1_SETTINGS,
    configs={"embedded": "default", "full": "ns3l"},
    sweep_overrides={s: _NS3L_COLUMNS[s] for s in ns3l_configs.TABLE1_SETTINGS},
    scale_sweep_overrides={"embedded": {"cifar10-4000": {"split.mismatch_ratio": 0.0},
                                        "svhn-1000": _DIGITS}},
    paper=ns3l_configs.PAPER_TABLE1,
    reported="Paper values in parentheses: the NS3L paper's Table 1 "
             "(experiments/configs/ns3l.py). Embedded twins: cifar10-4000 = MNIST-5k, "
             "digits 0-5, 10 labels per digit, no mismatch (T = 0.4 / 6); svhn-1000 = "
             "sklearn digits, ten classes, 10 labels per digit (T = 0.04). NS3L rows at the "
             "paper's lr 6e-4 (Adam), the others at the embedded default's.",
)
TABLES["ns3l_mixmatch"] = Table(
    title="NS3L Tables 2-4: MixMatch and MixMatch + NS3L: test error (%), median of the EMA "
          "model's last 20 evaluations",
    methods=("mixmatch", "mixmatch+ns3l"),
    sweep_field="setting",
    sweep_values=ns3l_configs.MIXMATCH_SETTINGS,
    configs={"full": "ns3l"},
    sweep_overrides={s: _NS3L_COLUMNS[s] for s in ns3l_configs.MIXMATCH_SETTINGS},
    metric="median_ema_test_accuracy",
    paper=ns3l_configs.PAPER_MIXMATCH,
    reported="Paper values in parentheses: the NS3L paper's Tables 2-4. STL-10 uses the "
             "labeled train split's other images as unlabeled data (no `unlabelled` split "
             "in sslj's TFDS source; experiments/configs/ns3l.py).",
)
_TABLE5_FIELDS = {"fmnist-2000": _NS3L_COLUMNS["fmnist-2000"]}
TABLES["ns3l_table5"] = Table(
    title="NS3L Table 5: negative-selection strategies, NS3L alone: test error (%)",
    methods=tuple(ns3l_configs.TABLE5_ROWS),
    rows={label: ("supervised", {}) if spec is None else
          ("supervised+ns3l", {"ns3l.strategy": spec[0],
                               **({"ns3l.threshold": spec[1]} if spec[1] else {})})
          for label, spec in ns3l_configs.TABLE5_ROWS.items()},
    sweep_field="setting",
    sweep_values=("fmnist-2000",),
    configs={"embedded": "default", "full": "ns3l"},
    sweep_overrides=_TABLE5_FIELDS,
    # digits twin: every row at one lr (the embedded default's 3e-3), lambda_1 = 1
    scale_sweep_overrides={"embedded": {"fmnist-2000": {**_DIGITS, "optimizer.lr": 3e-3}}},
    paper=ns3l_configs.PAPER_TABLE5,
    reported="Paper values in parentheses: the NS3L paper's Table 5 (F-MNIST, 2,000 labels, "
             "small CNN, 50 epochs, error at the end of training). Embedded twin: sklearn "
             "digits, ten classes, 10 labels per digit, cnn_tiny, every row at Adam 3e-3; "
             "oracle rows use the unlabeled data's true labels (results.json: "
             "ns3l.uses_true_unlabeled_labels).",
)


# ICN (experiments/configs/icn.py): rows CNN (the same rounds without pseudo-negatives),
# CNN w/ LS (softmax only), ICN-noise, ICN
_ICN_ROWS = {"CNN": ("supervised+icn_base", {}), "CNN w/ LS": ("supervised+ls+icn_base", {}),
             "ICN-noise": ("supervised+icn_noise", {}), "ICN": ("supervised+icn", {})}
_ICN_FORMULATIONS = {"softmax": {"icn.formulation": "softmax"},
                     "one-vs-all": {"icn.formulation": "ova"}}
_ICN_PAPER_NAMES = {"CNN": "supervised+icn_base", "CNN w/ LS": "supervised+ls+icn_base",
                    "ICN-noise": "supervised+icn_noise", "ICN": "supervised+icn"}


def _icn_paper(by_column: dict) -> dict:
    """{column: {run name: x}} -> {row label: {column: x}}."""
    return {label: {col: vals[name] for col, vals in by_column.items() if name in vals}
            for label, name in _ICN_PAPER_NAMES.items()}


TABLES["icn_table1"] = Table(
    title="ICN Table 1: MNIST, CNN vs ICN-noise vs ICN: test error (%)",
    methods=tuple(_ICN_ROWS), rows=_ICN_ROWS,
    sweep_field="formulation", sweep_values=tuple(_ICN_FORMULATIONS),
    sweep_overrides=_ICN_FORMULATIONS,
    configs={"full": "icn:mnist"},
    skip=frozenset({("CNN w/ LS", "one-vs-all")}),
    paper=_icn_paper({"softmax": icn_configs.PAPER_TABLE1["softmax"],
                      "one-vs-all": icn_configs.PAPER_TABLE1["ova"]}),
    fgsm_pair=("CNN", "ICN"),
    reported="Paper values in parentheses: the ICN paper's Table 1 (MNIST, 55,000 training "
             "images, the four-layer 5x5 net; experiments/configs/icn.py).",
)
_ICN_TABLE2_ROWS = {f"{sampler} option {i}": ("supervised+icn", {"icn.sampler": sampler,
                                                                 "icn.stop_rule": stop})
                    for i, stop in enumerate(("positive", "confidence", "steps"), 1)
                    for sampler in ("sgd", "langevin")}
TABLES["icn_table2"] = Table(
    title="ICN Table 2: sampling strategies of the synthesis step: test error (%)",
    methods=tuple(_ICN_TABLE2_ROWS), rows=_ICN_TABLE2_ROWS,
    sweep_field="formulation", sweep_values=tuple(_ICN_FORMULATIONS),
    sweep_overrides=_ICN_FORMULATIONS,
    configs={"full": "icn:mnist"},
    paper={f"{sampler} option {i}": {
        "one-vs-all": icn_configs.PAPER_TABLE2[(sampler, stop)][0],
        "softmax": icn_configs.PAPER_TABLE2[(sampler, stop)][1]}
        for i, stop in enumerate(("positive", "confidence", "steps"), 1)
        for sampler in ("sgd", "langevin")},
    reported="Paper values in parentheses: the ICN paper's Table 2 (MNIST). Option 1: stop "
             "once positive; 2: at confidence icn.confidence; 3: after icn.max_steps steps.",
)
TABLES["icn_table3"] = Table(
    title="ICN Table 3: CIFAR-10, ResNet-32, softmax: test error (%)",
    methods=tuple(_ICN_ROWS), rows=_ICN_ROWS,
    sweep_field="setting", sweep_values=("cifar10", "cifar10-aug"),
    sweep_overrides={s: icn_configs.column_fields(s, "mnist")
                     for s in ("cifar10", "cifar10-aug")},
    configs={"full": "icn:mnist"},
    paper=_icn_paper({s: icn_configs.PAPER_TABLE3[s]["softmax"]
                      for s in ("cifar10", "cifar10-aug")}),
    reported="Paper values in parentheses: the ICN paper's Table 3 (softmax column; its "
             "one-vs-all column is in experiments/configs/icn.py: add "
             "--set icn.formulation=ova).",
)
TABLES["icn_table4"] = Table(
    title="ICN Table 4: SVHN, ResNet-32, softmax: test error (%)",
    methods=tuple(_ICN_ROWS), rows=_ICN_ROWS,
    sweep_field="setting", sweep_values=("svhn",),
    sweep_overrides={"svhn": icn_configs.column_fields("svhn", "mnist")},
    configs={"full": "icn:mnist"},
    paper={label: icn_configs.PAPER_TABLE4[name] for label, name in _ICN_PAPER_NAMES.items()},
    reported="Paper values beside: the ICN paper's Table 4 (its training set adds SVHN's "
             "extra split, which sslj's TFDS source does not load).",
)
_ICN_FIG3_ROWS = {k: v for k, v in _ICN_ROWS.items() if k != "CNN w/ LS"}
TABLES["icn_fig3"] = Table(
    title="ICN Fig. 3: MNIST test error vs training-set size, softmax (%)",
    methods=tuple(_ICN_FIG3_ROWS), rows=_ICN_FIG3_ROWS,
    sweep_field="training images",
    sweep_values=("500", "2000", "10000", "55000"),
    sweep_overrides={"500": icn_configs.column_fields("mnist-500", "mnist"),
                     "2000": icn_configs.column_fields("mnist-2000", "mnist"),
                     "10000": icn_configs.column_fields("mnist-10000", "mnist"),
                     "55000": {}},
    scale_sweep_overrides={"embedded": {
        "500": {}, "2000": icn_configs.column_fields("mnist5k-2000", "mnist5k-500")}},
    configs={"embedded": "icn:mnist5k-500", "full": "icn:mnist"},
    fgsm_pair=("CNN", "ICN"),
    reported="The paper plots Fig. 3 without a table: ICN's gain is largest at 500 images. "
             "Embedded twin: MNIST-5k, 50 / 200 training images per digit, the ICN net at "
             "quarter width, T = 10 rounds of l = 10 pseudo-negatives per class.",
)
