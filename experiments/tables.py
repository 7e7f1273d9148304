"""Paper tables as data: which configs, methods and settings make each row."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Table:
    title: str
    methods: tuple[str, ...]
    sweep_field: str  # the x axis: one run per value
    sweep_values: tuple
    configs: dict  # scale -> config module path (under experiments/configs)
    overrides: dict = dataclasses.field(default_factory=dict)  # scale -> {field: value}
    metric: str = "test_accuracy_at_best_val"
    reported: str = ""
    paper: dict = dataclasses.field(default_factory=dict)  # method -> paper's error (%)


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
        reported="Paper column: Oliver et al. 2018, CIFAR-10 with 4,000 labels (REFERENCE.md); "
                 "temporal_ensembling and pseudo_label_accumulated are not in that table.",
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
        methods=ALL_SSL,
        sweep_field="split.mismatch_ratio",
        sweep_values=(0.0, 0.25, 0.5, 0.75, 1.0),
        configs={"embedded": "default", "full": "oliver_cifar10_mismatch"},
        reported="Paper (CIFAR-10, 400 labels per animal class): the Pi-model beats "
                 "supervised at delta = 0 and loses its advantage as delta grows to "
                 "0.75-1.0.",
    ),
}
