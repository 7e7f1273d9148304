"""Learning dynamics under label noise (ProSelfLC paper, Fig. 3).

At every evaluation the loop predicts the whole (noisy) labeled training set in
inference mode and records, against the clean labels it kept:
  * `clean_subset_accuracy`: argmax p = label on the examples whose label is clean;
  * `noisy_subset_accuracy`: argmax p = *clean* label on the examples whose label was
    flipped (generalisation to them despite their wrong label);
  * `noisy_fitted`: argmax p = the *noisy* label on the flipped examples (memorised
    wrong labels, Fig. 3b);
  * `noisy_corrected`: argmax of the current target q~ (the run's target modifier at
    this step, from these inference-mode predictions) = the clean label on the flipped
    examples (semantic-class corrections, Fig. 3c; always 0 for CCE, LS, CP);
  * `clean_entropy` / `noisy_entropy`: mean prediction entropy per subset (Fig. 3d-e).
The clean test accuracy (Fig. 3f) is the loop's `test_accuracy`. Fractions are of the
subset; `num_noisy` gives its size.
"""

from __future__ import annotations

import numpy as np

PANELS = (
    ("test_accuracy", "clean test accuracy"),
    ("noisy_subset_accuracy", "noisy subset: acc. vs clean labels"),
    ("noisy_fitted", "noisy subset: fitted wrong labels"),
    ("noisy_corrected", "noisy subset: corrected by the target"),
    ("clean_entropy", "clean subset: mean entropy"),
    ("noisy_entropy", "noisy subset: mean entropy"),
)


def _softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def learning_dynamics(logits: np.ndarray, noisy: np.ndarray, clean: np.ndarray,
                      modifier, step: int) -> dict:
    """The metrics of the module docstring for one evaluation (host NumPy)."""
    logits = np.asarray(logits, np.float64)
    p = _softmax(logits)
    pred = p.argmax(-1)
    ent = -np.sum(p * np.log(np.maximum(p, 1e-30)), -1)
    flipped = noisy != clean
    q = np.eye(logits.shape[-1], dtype=np.float32)[noisy]
    target = np.asarray(modifier(q, logits.astype(np.float32), step))
    kept = ~flipped
    return {
        "clean_subset_accuracy": _mean(pred[kept] == clean[kept]),
        "noisy_subset_accuracy": _mean(pred[flipped] == clean[flipped]),
        "noisy_fitted": _mean(pred[flipped] == noisy[flipped]),
        "noisy_corrected": _mean(target[flipped].argmax(-1) == clean[flipped]),
        "clean_entropy": _mean(ent[kept]),
        "noisy_entropy": _mean(ent[flipped]),
        "num_noisy": int(flipped.sum()),
    }


def plot_dynamics(histories: dict[str, list[dict]], path: str, title: str = "") -> None:
    """Fig. 3-style panels, one line per run: `histories` maps a label to the run's
    evaluation records (dicts with `step`, `test_accuracy` and `dynamics/<metric>`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    for ax, (key, name) in zip(axes.ravel(), PANELS, strict=True):
        for label, history in histories.items():
            steps = [r["step"] for r in history]
            values = [r.get(key, r.get(f"dynamics/{key}", float("nan"))) for r in history]
            ax.plot(steps, values, marker=".", label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
