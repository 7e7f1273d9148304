"""The unseen-class share of a method's selection over training, and its figure.

Safe-SSL methods (UASD's filter, DS3L's weights, MTC's kept set, Curriculum Labeling's
rounds) and the selecting SSL methods (Pseudo-Label, FixMatch) log
`monitors/unseen_share` where the unlabeled images' true classes are known (embedded
and TFDS splits): the share of the selected (or weighted) unlabeled images of the batch
that come from classes outside the seen ones. This module reads it back from a run's
metrics.jsonl and plots it, one run or several (a table's rows) on one axis.
"""

from __future__ import annotations

import json
import os

KEY = "monitors/unseen_share"


def series(metrics_path: str, key: str = KEY) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in a metrics.jsonl (empty when it was never logged)."""
    steps, values = [], []
    if not os.path.exists(metrics_path):
        return steps, values
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            if key in row:
                steps.append(int(row["step"]))
                values.append(float(row[key]))
    return steps, values


def plot(curves: dict[str, tuple[list[float], list[float]]], path: str, title: str, *,
         xlabel: str = "step") -> bool:
    """One line per name (x, unseen share); False (nothing written) when no curve has a
    point."""
    curves = {k: v for k, v in curves.items() if v[0]}
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, (x, y) in curves.items():
        ax.plot(x, y, "o-" if len(x) < 12 else "-", label=name, lw=1.2, ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("unseen-class share of the selection")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
