"""The paper's Fig. 2: a grid of synthesized pseudo-negatives, one row per round."""

from __future__ import annotations

import numpy as np


def plot_pool(pool, path: str, per_round: int = 10, real=None, title: str = "") -> None:
    """One row per round (the first `per_round` samples of each, classes in order; the
    top row real training images when given), grayscale in the [-1, 1] input range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    if real is not None:
        rows.append(("real", np.asarray(real, np.float32)[:per_round]))
    for r in np.unique(pool.rounds):
        sel = np.nonzero(pool.rounds == r)[0]
        order = sel[np.argsort(pool.classes[sel], kind="stable")]
        # one sample of each class first, then the rest
        firsts = [order[pool.classes[order] == k][:1] for k in np.unique(pool.classes[order])]
        pick = np.concatenate(firsts + [order])[:per_round] if firsts else order[:per_round]
        rows.append((f"t={int(r)}", pool.images[pick]))
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), per_round, figsize=(per_round * 0.8,
                                                             len(rows) * 0.85 + 0.4),
                             squeeze=False)
    for i, (label, imgs) in enumerate(rows):
        for j in range(per_round):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                img = (np.clip(imgs[j], -1, 1) + 1) / 2
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray",
                          vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
