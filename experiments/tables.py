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


TABLES = {
    "oliver_mismatch": Table(
        title="Class mismatch (Oliver et al. 2018, Fig. 2): seen-class test error (%) "
              "vs mismatch ratio",
        methods=("supervised", "pi_model"),
        sweep_field="split.mismatch_ratio",
        sweep_values=(0.0, 0.25, 0.5, 0.75, 1.0),
        configs={"embedded": "default", "full": "oliver_cifar10_mismatch"},
        reported="Paper (CIFAR-10, 400 labels per animal class): the Pi-model beats "
                 "supervised at delta = 0 and loses its advantage as delta grows to "
                 "0.75-1.0.",
    ),
}
