"""SPL's figures: per-layer safe ratios (the paper's Fig. 4) and accuracy per round."""

from __future__ import annotations

import numpy as np


def plot_layer_ratios(results: dict, path: str) -> None:
    """Fig. 4: each masked layer's ratio of safe parameters, at identification and after
    the last round, with the overall ratio p as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = results["spl"]
    names = list(info["layer_ratios_identified"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 1.5), 3.2))
    ax.bar(x - 0.2, [info["layer_ratios_identified"][n] for n in names], 0.4,
           label="identified")
    ax.bar(x + 0.2, [info["layer_ratios_final"][n] for n in names], 0.4,
           label=f"after {info['rounds']} rounds")
    ax.axhline(info["safe_ratio"], color="k", lw=0.8, ls="--",
               label=f"p = {info['safe_ratio']:.3f}")
    ax.set_xticks(x, [n.replace("/kernel", "") for n in names], rotation=60, ha="right",
                  fontsize=7)
    ax.set_ylabel("ratio of safe parameters")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{results['method']}: per-layer safe ratio (Fig. 4)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rounds(results: dict, path: str) -> None:
    """Accuracy on V2 / test and the mask swaps per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = results["history"]
    r = [e["round"] for e in evals]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
    a1.plot(r, [100 * e["val_accuracy"] for e in evals], "o-", label="V2 (selection)")
    a1.plot(r, [100 * e["test_accuracy"] for e in evals], "s-", label="test")
    a1.plot(r, [100 * e["v1_accuracy"] for e in evals], "^-", label="V1 (mask learning)")
    a1.set_xlabel("round")
    from matplotlib.ticker import MaxNLocator

    for a in (a1, a2):  # rounds are whole numbers
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set_ylabel("accuracy (%)")
    a1.legend(fontsize=7)
    a2.bar(r, [e.get("swaps", 0) for e in evals])
    a2.set_xlabel("round")
    a2.set_ylabel("mask swaps in the round")
    fig.suptitle(results["method"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
