"""The Curriculum Labeling procedure (Cascante-Bonilla et al., AAAI 2021), following the
official code's `train_cl` (`uvavision/Curriculum-Labeling`, `wrapper.py`; facts in
docs/SAFE_SSL_BASELINES.md, section 4).

    run(config, workdir) -> results          # config.method = "curriculum_labeling"

Rounds k = 0..K with K = 100 / `curriculum_labeling.percent_step` (5 at the code's 20):
  * round 0 trains on the labeled images only;
  * round k >= 1 scores the *whole* unlabeled set with round k-1's model (inference
    mode; re-scored every round, not cumulative), keeps the images whose max
    probability is >= the (100 - 20 k)-th percentile of those scores (round 5 keeps
    every image, unseen classes included, as the code) with the hard label argmax p,
    and trains on labeled + kept as one set;
  * every round starts from the *same* initialisation (the run's seed: round k's initial
    parameters equal round 0's) with a new optimizer and schedule (the code's
    `create_network` and new optimizer per round), `num_steps` steps
    (`sslj.methods.curriculum_labeling` gives the loss: class-weighted CE with mixup);
  * the reported model is the round with the best validation accuracy (the code's
    `evaluate_all_iterations`); its test accuracy at its best validation evaluation is
    the run's `test_accuracy_at_best_val`.
Where sslj differs, on purpose: round k is scored by round k-1's *final* model, where
the code loads its best-validation checkpoint; the loop keeps the newest checkpoints,
and the reported number is still the one at the best validation evaluation. Each round
is a standard run in `<workdir>/round_<k>` (resumable on its own); the selection is in
its `selection.npz`; results.json has a `curriculum` block with, per round, the number
kept, the threshold, the kept images' pseudo-label accuracy and the fraction of them
from unseen classes (`unseen_fraction`, where the split knows the true classes), and
`curriculum_unseen.png` plots that fraction per round.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np

from sslj import config as config_lib
from sslj.data import splits as splits_lib
from sslj.methods.curriculum_labeling import CurriculumLabeling, class_weights
from sslj.procedures import standard
from sslj.procedures.spl import load_pretrained
from sslj.train import loop
from sslj.train.evaluate import EvalSet, make_predict


def applies(config) -> bool:
    """This procedure runs `method = "curriculum_labeling"` (without SPL: `+spl` runs the
    SPL procedure, which pretrains with this one)."""
    return config.method == "curriculum_labeling"


def num_rounds(config) -> int:
    """K: the rounds after round 0 (20 k >= 100 ends them at the code's step 20)."""
    step = int(config.curriculum_labeling.percent_step)
    return -(-100 // step)


def round_dir(workdir: str, k: int) -> str:
    return os.path.join(workdir, f"round_{k}")


def select(max_prob: np.ndarray, k: int, percent_step: int) -> tuple[np.ndarray, float]:
    """(mask of kept images, threshold): max p >= np.percentile(max p, 100 - step k)."""
    q = max(0.0, 100.0 - percent_step * k)
    thr = float(np.percentile(max_prob, q))
    return max_prob >= thr, thr


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def round_experiment(exp: loop.Experiment, kept_rows: np.ndarray,
                     pseudo: np.ndarray) -> loop.Experiment:
    """The round's experiment: the labeled set extended by the kept unlabeled images
    (train-pool rows `kept_rows`) with their pseudo-labels (seen-class positions), and a
    method with the class weights of the combined set."""
    ds, sp = exp.dataset, exp.splits
    seen = np.asarray(sp.seen_classes)
    labels = ds.train_labels.copy()
    labels[kept_rows] = seen[pseudo]
    dataset = dataclasses.replace(ds, train_labels=labels)
    splits = dataclasses.replace(sp, labeled=np.concatenate([sp.labeled, kept_rows]))
    combined = splits_lib.relabel(labels[splits.labeled], sp.seen_classes)
    method = CurriculumLabeling(exp.config, class_weights(combined, len(seen)))
    method.set_data_sizes(labeled=len(splits.labeled), unlabeled=0,
                          validation=len(splits.validation))
    return dataclasses.replace(exp, dataset=dataset, splits=splits, method=method)


def run(config, workdir: str, *, pretrained_dir: str | None = None,
        stop_at: int | None = None, devices=None) -> dict:
    """Runs (or resumes) the rounds; returns the results (also in results.json), or
    `{"stopped_at": step}` when `stop_at` (a step of the current round) pre-empted it."""
    if pretrained_dir is not None:
        raise ValueError("Curriculum Labeling trains its rounds itself; pretrained_dir is "
                         "for SPL")
    t_start = time.time()
    cfg = config.curriculum_labeling
    step_pct = int(cfg.percent_step)
    rounds: list[dict] = []
    results_by_round: list[dict] = []
    previous = None  # (experiment, dir) of the last finished round
    for k in range(num_rounds(config) + 1):
        rdir = round_dir(workdir, k)
        exp = standard.prepare(config, rdir, devices)
        sp, ds = exp.splits, exp.dataset
        true_u = splits_lib.relabel(ds.train_labels, sp.seen_classes)[sp.unlabeled]
        info = {"round": k, "kept": 0}
        if k == 0:
            exp_k = round_experiment(exp, np.zeros(0, np.int64), np.zeros(0, np.int64))
        else:
            prev_exp, prev_dir = previous
            state = load_pretrained(prev_exp, prev_dir)
            unl = EvalSet(ds.train_images[sp.unlabeled], true_u, int(config.eval_batch_size),
                          exp.mesh)
            probs = _softmax(unl.logits(make_predict(exp.model, exp.mesh), state.params,
                                        state.batch_stats, state.masks))
            keep, thr = select(probs.max(-1), k, step_pct)
            pseudo = probs.argmax(-1)[keep]
            exp_k = round_experiment(exp, sp.unlabeled[keep], pseudo)
            info.update(kept=int(keep.sum()), threshold=thr,
                        percentile=max(0.0, 100.0 - step_pct * k))
            if len(true_u):  # the split's true classes (-1: unseen), for the monitors
                t = true_u[keep]
                info["unseen_fraction"] = float(np.mean(t < 0)) if len(t) else 0.0
                seen_kept = t >= 0
                info["pseudo_label_accuracy"] = (float(np.mean(pseudo[seen_kept]
                                                               == t[seen_kept]))
                                                 if seen_kept.any() else None)
            if jax.process_index() == 0:
                os.makedirs(rdir, exist_ok=True)
                np.savez(os.path.join(rdir, "selection.npz"), rows=sp.unlabeled[keep],
                         pseudo_label=pseudo, threshold=thr)
        res = loop.train_and_evaluate(exp_k, rdir, stop_at=stop_at)
        if "stopped_at" in res:
            return res
        info.update(best_val_accuracy=res["best_val_accuracy"],
                    test_accuracy_at_best_val=res["test_accuracy_at_best_val"])
        rounds.append(info)
        results_by_round.append(res)
        previous = (exp_k, rdir)
    best = best_round(rounds)
    results = dict(results_by_round[best])
    results["method"] = config_lib.run_name(config)
    results["steps"] = sum(int(r["steps"]) for r in results_by_round)
    results["wall_time_s"] = time.time() - t_start
    results["curriculum"] = {"rounds": rounds, "best_round": best,
                             "percent_step": step_pct, "mixup": bool(cfg.mixup),
                             "class_weighted": bool(cfg.class_weighted)}
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        plot_rounds(rounds, os.path.join(workdir, "curriculum_unseen.png"),
                    results["method"])
    return results


def best_round(rounds: list[dict]) -> int:
    """The round with the best validation accuracy (the last one without validation);
    the first of equals."""
    vals = [r.get("best_val_accuracy") for r in rounds]
    if any(v is None for v in vals):
        return len(rounds) - 1
    return int(np.argmax(vals))


def final_model_dir(config, workdir: str) -> str:
    """The best-validation round's directory (SPL starts from that model)."""
    with open(os.path.join(workdir, "results.json")) as f:
        return round_dir(workdir, int(json.load(f)["curriculum"]["best_round"]))


def plot_rounds(rounds: list[dict], path: str, title: str) -> None:
    """Kept images per round and the fraction of them from unseen classes."""
    rows = [r for r in rounds if "unseen_fraction" in r]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["round"] for r in rows], [r["unseen_fraction"] for r in rows], "o-",
            label="unseen-class share of the kept images")
    ax.set_xlabel("round")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("unseen share")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
