"""`train_and_evaluate(exp, workdir)`: the one training loop, and its building blocks.

    exp = build(config, method, workdir)   # data, splits, model, optimizer (no compute)
    train_and_evaluate(exp, workdir, stop_at=None) -> results

The loop trains whatever method object it is given (`sslj.train.interface.TrainMethod`)
and knows no procedure: `sslj.procedures` validates the config, picks the method from
the registry and composes these blocks (`build`, `init_state`, `train_streams`,
`train_and_evaluate`, `check_finite`, `summarize`; evaluation and checkpoints in
`sslj.train.evaluate` / `sslj.train.checkpoint`) into a way of running an experiment.

Writes to the workdir: config.json, splits.npz / splits.json, metrics.jsonl,
tensorboard/, checkpoints/ (orbax, resumed automatically with the data position and
RNG), results.json (with the history of evaluations). With label noise
(`config.noise`) also noise.npz / noise.json and, per evaluation, the learning dynamics
of `sslj.train.dynamics` (`dynamics/*` metrics, dynamics.png).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from sslj.common import sharding
from sslj.common.notice import say
from sslj.data import noise as noise_lib
from sslj.data import pipeline, sources
from sslj.data import splits as splits_lib
from sslj.models import get_model
from sslj.train import memory, selection
from sslj.train.checkpoint import Checkpointer
from sslj.train.dynamics import learning_dynamics, plot_dynamics
from sslj.train.evaluate import EvalSet, evaluate, make_predict
from sslj.train.interface import TrainMethod
from sslj.train.interrupt import RunInterrupted, StopRequests
from sslj.train.metrics import MetricWindow, MetricWriter
from sslj.train.optim import make_optimizer
from sslj.train.state import create_train_state
from sslj.train.step import make_train_step


class NonFiniteLossError(FloatingPointError):
    """A loss or monitor became NaN / inf; `.step` is the first step where it did.
    `last_checkpoint` (set by the loop) is the step of the newest checkpoint, None when
    the run had saved none."""

    def __init__(self, step: int, name: str, value: float):
        self.step, self.name, self.value = step, name, value
        self.last_checkpoint: int | None = None
        super().__init__(step, name, value)

    def __str__(self) -> str:
        where = (f"the last good checkpoint (step {self.last_checkpoint}) is untouched"
                 if self.last_checkpoint is not None else "no checkpoint had been saved yet")
        return f"non-finite {self.name} = {self.value} at step {self.step}; stopping ({where})"


@dataclasses.dataclass
class Experiment:
    """Everything `train_and_evaluate` builds before the first step."""

    config: object
    dataset: sources.Dataset
    splits: splits_lib.Splits
    mesh: object
    model: object
    method: TrainMethod
    optimizer: object
    name: str  # the run name results report (`sslj.config.run_name`)
    noise: noise_lib.NoisyLabels | None = None  # of the labeled set, original class ids

    def labeled_labels(self, clean: bool = False) -> np.ndarray:
        """Labels of the labeled set as training sees them (noisy unless `clean`),
        relabeled to seen-class positions."""
        ids = self.dataset.train_labels[self.splits.labeled]
        if self.noise is not None:
            ids = self.noise.clean if clean else self.noise.labels
        return splits_lib.relabel(ids, self.splits.seen_classes)


def build(config, method: TrainMethod, workdir: str | None = None, devices=None, *,
          name: str | None = None) -> Experiment:
    """Loads data, computes (and saves to `workdir`) splits and label noise, builds the
    model and optimizer around `method`. The config must be valid already
    (`sslj.config.validate`, which the procedures call first); `name` defaults to the
    method's."""
    mesh = sharding.make_mesh(devices)
    dataset = sources.load(config.data.source, config.data.get("data_dir") or None)
    splits = splits_lib.make_splits(dataset, config.split, int(config.seed))
    noise = noise_lib.apply(dataset.train_labels[splits.labeled], config.get("noise"),
                            splits.seen_classes, dataset, int(config.seed))
    model = get_model(config.model, len(splits.seen_classes),
                      dtype=jnp.dtype(config.get("compute_dtype", "float32")),
                      **dict(method.model_options), **dict(config.get("model_kwargs", {})))
    model = fit_bn_momentum(model, config)
    batches = {"batch_size": int(config.batch_size)}
    if method.uses_unlabeled:
        batches["unlabeled_batch_size"] = int(config.unlabeled_batch_size)
    memory.check_batch_fits(model, dataset.image_shape,  # before anything is written
                            {k: v // jax.process_count() for k, v in batches.items()})
    if workdir is not None and jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        splits_lib.save_splits(splits, workdir)
        if noise is not None:
            np.savez(os.path.join(workdir, "noise.npz"), labeled=splits.labeled,
                     labels=noise.labels, clean=noise.clean)
            with open(os.path.join(workdir, "noise.json"), "w") as f:
                json.dump({"kind": config.noise.kind, "rate": float(config.noise.rate),
                           **noise.summary()}, f, indent=2)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    method.set_data_sizes(labeled=len(splits.labeled), unlabeled=len(splits.unlabeled),
                          validation=len(splits.validation))
    return Experiment(config, dataset, splits, mesh, model, method,
                      make_optimizer(config.optimizer, int(config.num_steps)),
                      name or method.name, noise)


_SAID: set = set()


def fit_bn_momentum(model, config):
    """`model` with a BatchNorm momentum that suits a short run.

    BatchNorm's running average (momentum m) spans ~1 / (1 - m) steps; when that is more
    than a tenth of the run, evaluations use statistics of early, untrained networks (the
    main job's supervised row at 100 steps, seed 0: 16.67 %, chance, with the default
    0.99; 70.83 % with 0.9). Unless the config sets `model_kwargs.bn_momentum`, such a
    run gets m = 1 - 10 / num_steps (at least 0.5), one line says so; a momentum the
    config sets is kept and one line names the value that would suit. Runs of 1,000+
    steps at 0.99 (every published table: 1,200-1,500 steps embedded) are unchanged."""
    momentum, num_steps = getattr(model, "bn_momentum", None), int(config.num_steps)
    if (momentum is None or num_steps <= 0 or momentum >= 1.0
            or 1.0 / (1.0 - momentum) <= 0.1 * num_steps * (1 + 1e-9)):
        return model
    suggest = max(0.5, round(1.0 - 10.0 / num_steps, 3))
    is_set = "bn_momentum" in config.get("model_kwargs", {})
    said = (momentum, num_steps, is_set) in _SAID  # once per process (procedures build
    _SAID.add((momentum, num_steps, is_set))       # per round)
    window = f"{1.0 / (1.0 - momentum):.0f}"
    if is_set:
        if not said:
            say(f"BatchNorm momentum {momentum} (set) averages over ~{window} steps, more "
                f"than a tenth of this {num_steps}-step run, so its evaluations use "
                f"unconverged running statistics; {suggest} would suit it")
        return model
    if not said:
        say(f"BatchNorm momentum {suggest} for this {num_steps}-step run (the default "
            f"{momentum} averages over ~{window} steps, more than a tenth of it); "
            f"--config.model_kwargs.bn_momentum sets it")
    return model.clone(bn_momentum=suggest)


def init_state(exp: Experiment, rng=None):
    """The initial TrainState (seeded by `config.seed`), with the method's `extra`."""
    if rng is None:
        rng = jax.random.PRNGKey(int(exp.config.seed))
    state = create_train_state(exp.model, exp.optimizer, rng, exp.dataset.image_shape)
    return state.replace(extra=exp.method.init_extra(
        len(exp.splits.unlabeled), {"params": state.params, "batch_stats": state.batch_stats}))


def train_streams(exp: Experiment) -> pipeline.TrainStreams:
    ds, sp = exp.dataset, exp.splits
    labeled = {"image": ds.train_images[sp.labeled], "label": exp.labeled_labels()}
    if exp.method.uses_labeled_index:
        labeled["index"] = np.arange(len(sp.labeled), dtype=np.int32)
    unlabeled = None
    if exp.method.uses_unlabeled:
        # the true labels (seen classes relabelled, unseen -1) feed monitors only
        # (FixMatch's pseudo-label accuracy); no method trains on them
        unlabeled = {"image": ds.train_images[sp.unlabeled],
                     "index": np.arange(len(sp.unlabeled), dtype=np.int32),
                     "label": splits_lib.relabel(ds.train_labels, sp.seen_classes)[
                         sp.unlabeled].astype(np.int32)}
        features = exp.method.unlabeled_features(labeled["image"], labeled["label"],
                                                 unlabeled["image"], len(sp.seen_classes))
        unlabeled.update(features)
    return pipeline.TrainStreams(labeled, unlabeled, int(exp.config.batch_size),
                                 int(exp.config.unlabeled_batch_size), int(exp.config.seed),
                                 on_device=str(exp.config.data.get("on_device", "auto")))


def check_finite(history: list[tuple[int, dict]]) -> None:
    """Raises `NonFiniteLossError` at the first (step, metrics) with a NaN / inf."""
    for step, metrics in history:
        for name, value in metrics.items():
            if not math.isfinite(float(value)):
                raise NonFiniteLossError(step, name, float(value))


def train_and_evaluate(exp: Experiment, workdir: str, *, stop_at: int | None = None) -> dict:
    """Trains `exp.method`, evaluating every `eval_every` steps; returns the results.

    Resumes from the newest checkpoint in `workdir`. `stop_at` ends this invocation
    after that step with a checkpoint (a pre-emption, e.g. for a time-limited job);
    calling again resumes and finishes the run.
    """
    t_start = time.time()
    cfg, mesh, ds, sp = exp.config, exp.mesh, exp.dataset, exp.splits
    num_steps = int(cfg.num_steps)
    seen = sp.seen_classes
    train_labels = splits_lib.relabel(ds.train_labels, seen)
    test_labels = splits_lib.relabel(ds.test_labels, seen)
    eval_bs = int(cfg.eval_batch_size)
    val_set = None  # split.num_validation = 0: no selection, the final model is reported
    if len(sp.validation):
        val_set = EvalSet(ds.train_images[sp.validation], train_labels[sp.validation], eval_bs,
                          mesh)
    test_set = EvalSet(ds.test_images, test_labels, eval_bs, mesh)
    train_set = None  # the noisy labeled set, for the learning dynamics
    if exp.noise is not None:
        train_set = EvalSet(ds.train_images[sp.labeled], exp.labeled_labels(), eval_bs, mesh)
        clean_labels = exp.labeled_labels(clean=True)
        modifier = exp.method.target_modifier()

    state = sharding.replicate(mesh, init_state(exp))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), int(cfg.get("keep_checkpoints", 2)))
    meta = {"best": None, "evals": [], "train_time_s": 0.0}
    start = 0
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        start = int(jax.device_get(state.step))
        if meta["data_position"]["labeled"] != start * int(cfg.batch_size):
            raise ValueError(f"checkpoint in {workdir} was written with another batch_size; "
                             "resume with the config it was started with")
        say(f"resuming {workdir} from step {start}")
    prior_time = float(meta.get("train_time_s", 0.0))  # spent by earlier invocations
    writer = MetricWriter(workdir, resume_step=start if start else None,
                          tensorboard=bool(cfg.get("tensorboard", True)))

    train_step = make_train_step(exp.model, exp.method, exp.optimizer, cfg, mesh)
    predict = make_predict(exp.model, mesh)
    unlabeled_set = None  # built on the first refresh (methods with a host-side update)
    batches = train_streams(exp).iterate(mesh, start_step=start)
    end = num_steps if stop_at is None else min(stop_at, num_steps)
    first = next(batches) if start < end else None
    if first is not None:  # XLA's figure before the first step (its compilation is reused)
        sizes = {"batch_size": int(cfg.batch_size)}
        if exp.method.uses_unlabeled:
            sizes["unlabeled_batch_size"] = int(cfg.unlabeled_batch_size)
        memory.check_compiled(train_step, (state, first), sizes,
                              devices=len(mesh.local_devices))
        batches = itertools.chain([first], batches)

    def run_eval(step: int) -> dict:
        val = (evaluate(predict, state.params, state.batch_stats, state.masks, val_set)
               if val_set is not None else {"accuracy": None})
        test = evaluate(predict, state.params, state.batch_stats, state.masks, test_set)
        ema_test = evaluate(predict, state.ema_params, state.batch_stats, state.masks, test_set)
        record = {"step": step, "val_accuracy": val["accuracy"],
                  "test_accuracy": test["accuracy"], "test_auroc": test["auroc"],
                  "ema_test_accuracy": ema_test["accuracy"]}
        if train_set is not None:
            logits = train_set.logits(predict, state.params, state.batch_stats, state.masks)
            dyn = learning_dynamics(logits, train_set.labels, clean_labels, modifier, step)
            record.update({f"dynamics/{k}": v for k, v in dyn.items()})
        meta["evals"].append(record)
        if val_set is not None and (meta["best"] is None or
                                    record["val_accuracy"] > meta["best"]["val_accuracy"]):
            meta["best"] = record
        writer.write(step, {f"eval/{k}": v for k, v in record.items()
                            if k != "step" and v is not None})
        return record

    from tqdm.auto import tqdm

    bar = tqdm(total=num_steps, initial=start, desc=exp.name, unit="step",
               disable=not bool(cfg.get("progress_bar", True)) or jax.process_index() != 0,
               mininterval=2.0, dynamic_ncols=True)
    window = MetricWindow()  # this log window's metrics, on the device
    log_every, eval_every = int(cfg.log_every), int(cfg.eval_every)
    ckpt_every = int(cfg.checkpoint_every)
    stop = StopRequests()
    try:
        stop.__enter__()
        for step in range(start + 1, end + 1):
            state, metrics = train_step(state, next(batches))
            window.add(step, metrics)
            bar.update(1)
            if exp.method.refresh_due(step):
                if unlabeled_set is None:
                    rows = (sp.validation if exp.method.refresh_set == "validation"
                            else sp.unlabeled)
                    unlabeled_set = EvalSet(ds.train_images[rows], train_labels[rows],
                                            eval_bs, mesh)
                logits = (None if exp.method.refresh_set == "none" else
                          unlabeled_set.logits(predict, state.params, state.batch_stats,
                                               state.masks))
                extra, stats = exp.method.refresh(jax.device_get(state.extra), logits, step,
                                                  unlabeled_set.labels)
                state = state.replace(extra=sharding.replicate(mesh, extra))
                writer.write(step, {f"refresh/{k}": v for k, v in stats.items()})
            is_eval = step % eval_every == 0 or step == num_steps
            stopping = stop.poll(step)
            is_save = step % ckpt_every == 0 or step == end or stopping
            if step % log_every == 0 or is_eval or is_save:
                host = window.fetch()
                try:
                    check_finite(host)  # before anything is saved
                except NonFiniteLossError as e:
                    e.last_checkpoint = ckpt.latest_step()
                    raise
                mean = {k: float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
                writer.write(step, mean)
                bar.set_postfix(loss=f"{mean['losses/total']:.3f}", refresh=False)
            if is_eval:
                rec = run_eval(step)
                if rec["val_accuracy"] is not None:
                    bar.set_postfix(loss=f"{mean['losses/total']:.3f}",
                                    val=f"{rec['val_accuracy']:.3f}", refresh=False)
            if is_save:
                meta["data_position"] = {"labeled": step * int(cfg.batch_size),
                                         "unlabeled": step * int(cfg.unlabeled_batch_size),
                                         "seed": int(cfg.seed)}
                # a snapshot: the save finishes in the background while meta keeps growing
                snapshot = copy.deepcopy(meta)
                snapshot["train_time_s"] = prior_time + time.time() - t_start
                ckpt.save(step, state, snapshot)
                writer.flush()  # TensorBoard holds no event the checkpoint covers
                if stopping:
                    raise RunInterrupted(stop.signum, step, workdir)
    finally:
        stop.__exit__()
        bar.close()
        ckpt.close()
        writer.close()

    if end < num_steps:
        return {"stopped_at": end}
    results = summarize(exp, meta, prior_time + time.time() - t_start)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        steps_, shares = selection.series(os.path.join(workdir, "metrics.jsonl"))
        if shares:
            selection.plot({results["method"]: (steps_, shares)},
                           os.path.join(workdir, "unseen_share.png"),
                           f"{results['method']}: unseen-class share of the selection")
        if train_set is not None:
            plot_dynamics({results["method"]: meta["evals"]},
                          os.path.join(workdir, "dynamics.png"),
                          title=f"{results['method']}, {cfg.noise.kind} noise "
                                f"r = {cfg.noise.rate}")
    return results


def summarize(exp: Experiment, meta: dict, wall_time_s: float) -> dict:
    """results.json's content from the evaluations in `meta` ({"evals", "best"}).

    With no validation set (`best` None) every "at best val" field is None and
    `selection` says the final model is reported.
    """
    cfg, sp = exp.config, exp.splits
    evals, best = meta["evals"], meta["best"]
    at_best = best or dict.fromkeys(("test_accuracy", "val_accuracy", "step",
                                     "ema_test_accuracy", "test_auroc"))
    last_n = int(cfg.get("median_last_evals", 20))
    target = cfg.get("target", {}).get("kind", "cce")
    return {
        "method": exp.name,
        "target": target,
        "noise": (f"{cfg.noise.kind} {cfg.noise.rate}"
                  if cfg.get("noise", {}).get("kind", "none") != "none" else "none"),
        "split": sp.name,
        "steps": int(cfg.num_steps),
        "selection": "validation" if best is not None else "final (no validation set)",
        "test_accuracy_at_best_val": at_best["test_accuracy"],
        "best_val_accuracy": at_best["val_accuracy"],
        "best_step": at_best["step"],
        "ema_test_accuracy": evals[-1]["ema_test_accuracy"],
        "ema_test_accuracy_at_best_val": at_best["ema_test_accuracy"],
        "median_test_accuracy": float(
            np.median([e["test_accuracy"] for e in evals[-last_n:]])),
        # the MixMatch / FixMatch convention: median over the last N evaluations of the EMA
        "median_ema_test_accuracy": float(
            np.median([e["ema_test_accuracy"] for e in evals[-last_n:]])),
        "median_over_last_evals": min(last_n, len(evals)),
        "final_test_accuracy": evals[-1]["test_accuracy"],
        "unseen_auroc_at_best_val": at_best["test_auroc"],
        "final_unseen_auroc": evals[-1]["test_auroc"],
        "wall_time_s": wall_time_s,
        **exp.method.results_info(),
        "history": evals,
    }
