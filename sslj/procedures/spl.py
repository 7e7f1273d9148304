"""The SPL procedure (Algorithm 1): pretrain -> identify -> rounds x (inner, outer) ->
model selection on V2 -> test.

    run(config, workdir, pretrained_dir=None, stop_at=None) -> results

1. Pretrain: the base method (`config.method`, SPL off) trained by its own procedure
   (the standard one, or Curriculum Labeling's rounds, whose best-validation round's
   model is the one SPL starts from) into `<workdir>/pretrain`, or reused from
   `pretrained_dir` (a finished run of the same base config: `run_config` and
   `reproduce.py` pass the base row's run, so "base" and "base+SPL" share one
   pretraining). `spl.pretrain = False` starts from the initialisation (ablation).
2. Identify: p = 1 - delta (1 - tau) (Eq. 3) with tau = |labeled| / |unlabeled| and
   delta from the split (`spl.delta_source = "split"`), given (`spl.delta`) or estimated
   from the pretrained model (`masks.estimate_mismatch`); `spl.safe_ratio > 0` sets p
   directly. The round(p k) largest magnitudes over the masked leaves are safe.
3. Rounds: `spl.inner_steps` inner steps on V1 batches (masks learn, weights frozen),
   then `spl.outer_steps` outer steps on labeled + unlabeled batches (weights learn,
   masks frozen, harmful weights untouched). `spl.finetune_v1` replaces this by the
   baseline that fine-tunes the weights on V1 (`inner_steps` steps per round, no masks).
4. After identification and after every round: accuracy on V2 (model selection), on V1
   and on the test set. The reported test accuracy is the one at the best V2 accuracy.

sslj follows Algorithm 1, not what the official code's `main()` (Zhanlo/SPL, SPL.py)
actually trains. That code builds both optimizers at the start of every iteration with
`filter(requires_grad)` / `v.requires_grad`, while the other half is frozen: at
iteration 0 the weights are frozen (`freeze_weights: True`), so both optimizers hold
only the masks and the outer phase moves no weight; at every later iteration the
previous outer phase left the masks frozen, so both optimizers hold only the weights
and the inner phase moves no mask. Its masks therefore learn in the first iteration
only and its weights only after it. Here every round moves the masks in its inner
steps and the safe weights in its outer steps.

Outer steps: `spl.outer_optimizer` "continue" (default) goes on with the pretraining's
optimizer state and schedule; "fresh" starts a new state at identification with the
constant `spl.outer_lr`. `spl.reset_ema` (default True) restarts the evaluation EMA
from the weights at identification, so the EMA column averages the masked network's
own trajectory rather than mixing in the unmasked pretraining's weights.

BatchNorm statistics (`spl.recalibrate_bn`, default True): before identification's and
every round's evaluation the running statistics are recomputed for the current masked
network ("precise BN": the mean of each full batch's statistics over the labeled and
unlabeled training images, `sslj.train.evaluate.precise_batch_stats`). Why: a phase of
40 steps moves a running average of momentum 0.99 only 1 - 0.99^40 = 33 % of the way,
while identification and every inner step change the network; on the main job the
running statistics then described another network and a round's evaluation could fall
to 34 % test accuracy (32 % on V1) while the inner steps' training-mode cross-entropy
on V1 was 0.07 (seed 0, AVX2). The official code runs 30 epochs per phase, over which
its averages converge. The statistics are not weights: training passes use batch
statistics throughout. The EMA column is evaluated under statistics recomputed for the
EMA weights (with the live network's, the +finetune control's EMA read 63-89 % where its
weights read 96-98 %: main job, seeds 0-2).

Writes to the workdir: config.json, splits, metrics.jsonl (`spl/*` per round),
checkpoints/ (one per round: an interrupted procedure resumes at the last finished
round; `stop_at` pre-empts the pretraining at that step, or the rounds at the first
round boundary at or past that train step), results.json (the loop's keys plus an
`spl` block: p, delta, tau, per-layer ratios at identification and at the end, density
and swaps per round, the pretraining results), spl_layer_ratios.png (Fig. 4) and
spl_rounds.png.

The rounds are the procedure's unit: it logs, evaluates and checkpoints once per round
(keeping `keep_checkpoints` of them) and shows a progress bar over rounds
(`progress_bar`); `log_every`, `eval_every` and `checkpoint_every` apply to the
pretraining only. Ctrl-C / SIGTERM end the rounds at the next round boundary with a
checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from sslj import config as config_lib
from sslj.common import sharding
from sslj.data import pipeline
from sslj.data import splits as splits_lib
from sslj.methods.base import without_addons
from sslj.methods.supervised import Supervised
from sslj.procedures import registry, standard
from sslj.spl import bilevel
from sslj.spl import masks as masks_lib
from sslj.spl.plots import plot_layer_ratios, plot_rounds
from sslj.train.checkpoint import Checkpointer
from sslj.train.evaluate import (
    EvalSet,
    evaluate,
    make_batch_statistics,
    make_predict,
    max_log_softmax,
    precise_batch_stats,
)
from sslj.train.interrupt import RunInterrupted, StopRequests
from sslj.train.loop import check_finite, init_state, summarize, train_streams
from sslj.train.metrics import MetricWriter
from sslj.train.optim import make_optimizer
from sslj.train.step import make_train_step


@dataclasses.dataclass
class SPLParts:
    """What the procedure compiles: the inner and outer steps (each jitted once)."""

    inner_step: object
    outer_step: object
    identification: masks_lib.Identification
    spec: object


def load_pretrained(exp, pretrained_dir: str):
    """The final TrainState of a finished base run in `pretrained_dir`."""
    ckpt = Checkpointer(os.path.join(pretrained_dir, "checkpoints"))
    try:
        latest = ckpt.latest_step()
        if latest != int(exp.config.num_steps):
            raise FileNotFoundError(
                f"pretraining in {pretrained_dir} has no checkpoint at its last step "
                f"{int(exp.config.num_steps)} (newest: {latest}); rerun it to finish")
        template = sharding.replicate(exp.mesh, init_state(exp))
        state, _ = ckpt.restore(template, step=latest)
    finally:
        ckpt.close()
    return state


def safe_ratio_for(config, splits, delta_estimate=None) -> tuple[float, float, float]:
    """(p, delta, tau) for this run (Eq. 3, or `spl.safe_ratio` when it is > 0)."""
    tau = len(splits.labeled) / max(len(splits.unlabeled), 1)
    source = config.spl.delta_source
    delta = {"split": float(config.split.mismatch_ratio), "given": float(config.spl.delta),
             "estimate": delta_estimate}[source]
    p = float(config.spl.safe_ratio) or masks_lib.safe_ratio(delta, tau)
    return p, delta, tau


def applies(config) -> bool:
    """This procedure runs the config when SPL is on (`spl.enabled`, or a `+spl`,
    `+spl_soft` or `+finetune` run name)."""
    return bool(config.get("spl", {}).get("enabled", False))


def run(config, workdir: str, *, pretrained_dir: str | None = None,
        stop_at: int | None = None, devices=None) -> dict:
    """Runs the whole procedure; returns the results (also written to results.json), or
    `{"stopped_at": step}` when `stop_at` pre-empted it."""
    return run_with_parts(config, workdir, pretrained_dir=pretrained_dir, stop_at=stop_at,
                          devices=devices)[0]


def run_with_parts(config, workdir: str, *, pretrained_dir: str | None = None,
                   stop_at: int | None = None, devices=None):
    """`run`, also returning the compiled `SPLParts` (tests count their traces)."""
    t_start = time.time()
    cfg = config
    spl = cfg.spl
    base_cfg = config_lib.without_spl(cfg)
    pretrain_results = None
    if spl.pretrain:
        if pretrained_dir is None:
            pretrained_dir = os.path.join(workdir, "pretrain")
        path = os.path.join(pretrained_dir, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                pretrain_results = json.load(f)
        else:
            # through the registry: a base with a procedure of its own (Curriculum
            # Labeling's rounds) pretrains with it
            pretrain_results = registry.run(base_cfg, pretrained_dir, stop_at=stop_at,
                                            devices=devices)
            if "stopped_at" in pretrain_results:
                return pretrain_results, None
    exp = standard.prepare(cfg, workdir, devices)
    mesh, ds, sp = exp.mesh, exp.dataset, exp.splits
    seen = sp.seen_classes
    train_labels = splits_lib.relabel(ds.train_labels, seen)
    eval_bs = int(cfg.eval_batch_size)
    predict = make_predict(exp.model, mesh)
    sets = {
        "val": EvalSet(ds.train_images[sp.val_v2], train_labels[sp.val_v2], eval_bs, mesh),
        "v1": EvalSet(ds.train_images[sp.val_v1], train_labels[sp.val_v1], eval_bs, mesh),
        "test": EvalSet(ds.test_images, splits_lib.relabel(ds.test_labels, seen), eval_bs,
                        mesh),
    }
    state = (load_pretrained(exp, registry.final_model_dir(base_cfg, pretrained_dir))
             if spl.pretrain
             else sharding.replicate(mesh, init_state(exp)))

    # ------------------------------------------------------------ identification
    delta_estimate = None
    if spl.delta_source == "estimate":
        unl = EvalSet(ds.train_images[sp.unlabeled], train_labels[sp.unlabeled], eval_bs, mesh)
        scores_u = max_log_softmax(unl.logits(predict, state.params, state.batch_stats,
                                              state.masks))
        scores_v1 = max_log_softmax(sets["v1"].logits(predict, state.params,
                                                      state.batch_stats, state.masks))
        delta_estimate = masks_lib.estimate_mismatch(scores_u, scores_v1,
                                                      float(spl.estimate_quantile))
    p, delta, tau = safe_ratio_for(cfg, sp, delta_estimate)
    spec = masks_lib.masked_leaves(state.params, masks_lib.rules_from_config(spl))
    finetune = bool(spl.finetune_v1)
    ident = masks_lib.identify(state.params, spec, 1.0 if finetune else p,
                               "none" if finetune else spl.identify, int(cfg.seed))
    kind = spl.mask
    inner_opt = bilevel.inner_optimizer(spl)
    scores = masks_lib.init_scores(state.params, ident, kind)
    if finetune:  # no masks at all: the state keeps its all-ones scalar masks
        masks = state.masks
    else:
        masks = masks_lib.masks_from_scores(scores, ident.counts, kind, spl.rank_by)
    outer_cfg, outer_opt = outer_training(cfg, exp.optimizer)
    state = state.replace(masks=masks, mask_scores=scores, mask_opt_state=inner_opt.init(scores))
    if outer_opt is not exp.optimizer:
        state = state.replace(opt_state=outer_opt.init(state.params))
    if spl.reset_ema:  # the EMA averages the masked network from identification on
        state = state.replace(ema_params=jax.tree.map(jnp.copy, state.params))
    state = sharding.replicate(mesh, state)
    layer_ratios_init = masks_lib.layer_ratios(state.masks, spec)

    # ------------------------------------------------------------ steps and streams
    # the fine-tune control is plain cross-entropy on V1 (no add-on terms, no unlabeled data)
    outer_method = (Supervised(without_addons(outer_cfg)) if finetune
                    else bilevel.outer_method(outer_cfg, exp.method))
    parts = SPLParts(
        inner_step=bilevel.make_inner_step(exp.model, ident.counts, kind, inner_opt, mesh,
                                           bn_update=bool(spl.inner_bn_update),
                                           rank_by=spl.rank_by),
        outer_step=make_train_step(exp.model, outer_method, outer_opt, outer_cfg, mesh),
        identification=ident, spec=spec)
    rounds, t_in, t_out = int(spl.rounds), int(spl.inner_steps), int(spl.outer_steps)
    if finetune:  # fine-tune on V1 for as many steps as the masks learn on it
        t_in, t_out = 0, int(spl.inner_steps)
    v1 = {"image": ds.train_images[sp.val_v1], "label": train_labels[sp.val_v1]}
    recalibrate = None
    if spl.recalibrate_bn and state.batch_stats:
        stats_fn = make_batch_statistics(exp.model, mesh)
        bn_set = bn_statistics_set(ds, sp, cfg, mesh)

        def recalibrate(s):
            return s.replace(batch_stats=precise_batch_stats(
                stats_fn, s.params, s.masks, s.batch_stats, bn_set))

        def ema_batch_stats(s):  # the EMA weights are another network: their own stats
            return precise_batch_stats(stats_fn, s.ema_params, s.masks, s.batch_stats, bn_set)

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), int(cfg.get("keep_checkpoints", 2)))
    meta = {"evals": [], "train_time_s": 0.0}
    done = 0
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        done = int(ckpt.restored_step)
    prior_time = float(meta.get("train_time_s", 0.0))
    # on resume, metric lines an interrupted round wrote after the checkpoint are dropped
    writer = MetricWriter(workdir, resume_step=int(jax.device_get(state.step)) if done else None,
                          tensorboard=bool(cfg.get("tensorboard", True)))

    def run_eval(r: int, extra: dict) -> dict:
        res = {name: evaluate(predict, state.params, state.batch_stats, state.masks, s)
               for name, s in sets.items()}
        ema_stats = ema_batch_stats(state) if recalibrate else state.batch_stats
        ema = evaluate(predict, state.ema_params, ema_stats, state.masks, sets["test"])
        record = {"round": r, "step": int(jax.device_get(state.step)),
                  "val_accuracy": res["val"]["accuracy"],
                  "v1_accuracy": res["v1"]["accuracy"],
                  "test_accuracy": res["test"]["accuracy"], "test_auroc": res["test"]["auroc"],
                  "ema_test_accuracy": ema["accuracy"], **extra}
        meta["evals"].append(record)
        writer.write(record["step"], {f"spl/{k}": v for k, v in record.items()
                                      if k != "step"})
        return record

    stopped = None
    stop = StopRequests()  # Ctrl-C / SIGTERM: finish the round, save, stop
    from tqdm.auto import tqdm

    bar = tqdm(total=rounds, initial=done, desc=f"{exp.name} rounds", unit="round",
               disable=not bool(cfg.get("progress_bar", True)) or jax.process_index() != 0,
               dynamic_ncols=True)
    try:
        stop.__enter__()
        if done == 0:
            if recalibrate:
                state = recalibrate(state)
            run_eval(0, {"density": _density(state.masks, ident.counts), "swaps": 0})
        # one stream per phase for the whole procedure: the inner steps read V1 from
        # position done * T_in on, the outer steps the training data from the step count
        inner_bs = int(spl.inner_batch_size)
        inner_batches = v1_stream(v1, inner_bs, cfg, mesh, done * t_in) if t_in else None
        start = int(jax.device_get(state.step))
        if finetune:
            outer_batches = v1_stream(v1, inner_bs, cfg, mesh, start)
        elif t_out:  # the loop's streams, with unlabeled data if the outer method uses it
            outer_batches = train_streams(dataclasses.replace(exp, method=outer_method)).iterate(
                mesh, start_step=start)
        for r in range(done + 1, rounds + 1):
            round_metrics = {}
            before = jax.tree.map(jnp.copy, state.masks)  # the steps donate the state
            if t_in:
                history = []
                for t in range(t_in):
                    index = jnp.asarray((r - 1) * t_in + t, jnp.int32)
                    state, m = parts.inner_step(state, next(inner_batches), index)
                    history.append(((r - 1) * t_in + t, m))
                host = jax.device_get(history)
                check_finite(host)
                losses = [m["spl/inner_loss"] for _, m in host]
                round_metrics.update(inner_loss_first=float(losses[0]),
                                     inner_loss_last=float(losses[-1]),
                                     inner_loss_mean=float(np.mean(losses)),
                                     swaps_per_step=float(np.mean(
                                         [m["spl/swaps"] for _, m in host])))
            round_swaps = int(jax.device_get(_swaps(state.masks, before, ident.counts)))
            if t_out:
                history = []
                for _ in range(t_out):
                    state, m = parts.outer_step(state, next(outer_batches))
                    history.append((start + 1, m))
                    start += 1
                host = jax.device_get(history)
                check_finite(host)
                round_metrics.update(outer_loss_mean=float(np.mean(
                    [m["losses/total"] for _, m in host])))
            if recalibrate:
                state = recalibrate(state)
            run_eval(r, {"density": _density(state.masks, ident.counts),
                         "swaps": round_swaps, **round_metrics})
            snapshot = copy.deepcopy(meta)
            snapshot["train_time_s"] = prior_time + time.time() - t_start
            ckpt.save(r, state, snapshot)
            writer.flush()
            bar.update(1)
            if stop.poll(r, every=1) and r < rounds:
                raise RunInterrupted(stop.signum, start, workdir)
            if stop_at is not None and start >= stop_at and r < rounds:
                stopped = start
                break
    finally:
        stop.__exit__()
        bar.close()
        ckpt.close()
        writer.close()
    if stopped is not None:
        return {"stopped_at": stopped}, parts

    evals = meta["evals"]
    best = best_round(evals)
    spl_meta = {"best": best, "evals": evals}
    results = summarize(exp, spl_meta, prior_time + time.time() - t_start)
    results["steps"] = int(cfg.num_steps) * bool(spl.pretrain) + rounds * t_out
    results["selection"] = "V2"
    results["spl"] = {
        "safe_ratio": ident.ratio if not finetune else 1.0,
        "safe_ratio_eq3": p, "delta": delta, "delta_source": spl.delta_source, "tau": tau,
        "kept": ident.kept, "masked": ident.total, "threshold": ident.threshold,
        "mask": kind, "identify": spl.identify, "finetune_v1": finetune,
        "rounds": rounds, "inner_steps": t_in, "outer_steps": t_out,
        "best_round": best["round"],
        "layer_ratios_identified": layer_ratios_init,
        "layer_ratios_final": masks_lib.layer_ratios(state.masks, spec),
        "pretrain": _brief(pretrain_results),
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        if not finetune:
            plot_layer_ratios(results, os.path.join(workdir, "spl_layer_ratios.png"))
        plot_rounds(results, os.path.join(workdir, "spl_rounds.png"))
    return results, parts


def bn_statistics_set(ds, sp, cfg, mesh) -> EvalSet:
    """The images BatchNorm statistics are recomputed on: the labeled and unlabeled
    training images (no augmentation), shuffled by the seed, in full batches of
    batch_size + unlabeled_batch_size (the clean pass's batch), the remainder dropped."""
    images = ds.train_images[np.concatenate([sp.labeled, sp.unlabeled])]
    images = images[np.random.default_rng([int(cfg.seed), 0xB4]).permutation(len(images))]
    size = int(cfg.batch_size) + int(cfg.unlabeled_batch_size)
    devices = mesh.size
    if len(images) < size:  # fewer images than one batch: one batch of all (whole devices)
        size = len(images) // devices * devices
    n = len(images) // size * size
    return EvalSet(images[:n], np.zeros(n, np.int32), size, mesh)


def outer_training(cfg, pretrain_optimizer):
    """(config, optimizer) of the outer steps. `spl.outer_optimizer = "continue"`: the
    pretraining's optimizer, its state (Adam moments, momentum) and its schedule from
    the step the pretraining ended at (so a decayed learning rate stays decayed);
    "fresh": the same kind of optimizer with a new state, set at identification, and
    the constant learning rate `spl.outer_lr` (the official code builds a new optimizer
    for every round, at lr_w = 0.1 with a step decay). The fine-tune-on-V1 baseline
    takes `spl.finetune_lr` instead when it is > 0 (fresh, constant), so the control's
    learning rate can be tuned apart from SPL's."""
    lr = float(cfg.spl.outer_lr) if cfg.spl.outer_optimizer == "fresh" else 0.0
    if cfg.spl.finetune_v1 and float(cfg.spl.finetune_lr) > 0:
        lr = float(cfg.spl.finetune_lr)
    if lr == 0.0:
        return cfg, pretrain_optimizer
    out = copy.deepcopy(cfg)
    with out.unlocked():
        out.optimizer.lr = lr
        out.optimizer.schedule = "constant"
    return out, make_optimizer(out.optimizer, int(out.num_steps))


def best_round(evals: list[dict]) -> dict:
    """Model selection: the evaluation with the highest V2 accuracy, the earliest round
    on ties (identification is round 0)."""
    return max(evals, key=lambda e: (e["val_accuracy"], -e["round"]))


def v1_stream(v1, batch_size, cfg, mesh, start):
    return pipeline.TrainStreams(v1, None, batch_size, batch_size,
                                 int(cfg.seed) + 7919).iterate(mesh, start_step=start)


def _density(masks, counts) -> float:
    stats = masks_lib.mask_stats(masks, masks, counts)
    return float(jax.device_get(stats["density"]))


def _swaps(new, old, counts):
    return masks_lib.mask_stats(new, old, counts)["swaps"]


def _brief(results):
    if results is None:
        return None
    keys = ("method", "test_accuracy_at_best_val", "best_val_accuracy", "final_test_accuracy",
            "ema_test_accuracy", "steps")
    return {k: results.get(k) for k in keys}
