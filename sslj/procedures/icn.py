"""The ICN procedure (Algorithm 1, reclassification by synthesis), over the one train step.

    run(config, workdir, stop_at=None) -> results

Round 0 trains the initial classifier C^0 on S (the real training set). Each round
t = 1..T then
  1. synthesis (`icn.negatives = "synthesized"`): l = `icn.per_class` pseudo-negatives
     per class, drawn from the reference noise N(0, 0.3^2) and moved up their class
     logit by the compiled sampler of `sslj.icn.sampler` under the current classifier
     C^{t-1}; `"noise"` (the paper's ICN-noise) adds the reference noise itself;
     `"none"` adds nothing (the CNN baseline with the same rounds, schedule and model
     selection: `supervised+icn_base`);
  2. S_pn^t = S_pn^{t-1} U new (`sslj.icn.pool`);
  3. reclassification: `icn.epochs_per_round` epochs over S (ceil(epochs n / batch)
     steps; the paper's "5 epochs on S_e^t", counted over the real images), each step a
     batch of real images and a batch of pseudo-negatives from the whole pool, with the
     loss of `sslj.icn.method` (softmax Eq. 9 or one-vs-all Eq. 5, `icn.formulation`);
     the optimizer state and the step count carry over between rounds (one SGD run,
     lr x `icn.lr_decay_factor` from round `icn.lr_decay_round` on: the paper's /10 at
     t = 25);
  4. validation and test accuracy (Algorithm 1, step 5): with `icn.patience` > 0 the
     rounds stop once that many rounds in a row bring no better validation accuracy;
     otherwise all T run. The reported test accuracy is the one at the best validation
     round (the final round's too).
`num_steps` is not read: the run trains (rounds run + 1) x steps-per-round steps, which
results.json reports as `steps`.

After the last round: FGSM (`sslj.icn.fgsm`, eps `icn.fgsm_eps` on the [0, 1] scale)
on the test images the final model classifies correctly, the fraction it then
misclassifies in results.json and the adversarials in `fgsm_adversarials.npz` (so
`cross_fgsm` can feed one run's adversarials to another's model: the paper's baseline
vs ICN comparison). Writes config.json, splits, metrics.jsonl (`icn/*` per round),
checkpoints/ (one per round) with pool/round_<t>.npz beside them (an interrupted run
resumes at its last finished round with the same pool), results.json (the loop's keys
plus an `icn` block: per-round synthesis statistics, pool size and memory, synthesis /
reclassification time, sampler steps per second) and icn_pseudo_negatives.png (Fig. 2).
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from sslj import config as config_lib
from sslj.common import sharding
from sslj.data import pipeline
from sslj.data import splits as splits_lib
from sslj.icn import fgsm as fgsm_lib
from sslj.icn.method import ICNReclassification
from sslj.icn.plots import plot_pool
from sslj.icn.pool import PseudoNegativePool
from sslj.icn.sampler import SamplerSpec, make_synthesizer, reference_noise
from sslj.models import get_model
from sslj.train import loop
from sslj.train.checkpoint import Checkpointer
from sslj.train.evaluate import EvalSet, evaluate, make_predict
from sslj.train.metrics import MetricWriter
from sslj.train.optim import make_optimizer
from sslj.train.step import make_train_step

_SYNTHESIS_STREAM = 0x1C0  # fold_in constant of the synthesis keys


def applies(config) -> bool:
    """This procedure runs the config when ICN is on (`icn.enabled`, or a run name with
    `+icn`, `+icn_noise` or `+icn_base`)."""
    return bool(config.get("icn", {}).get("enabled", False))


def steps_per_round(config, num_labeled: int) -> int:
    return math.ceil(int(config.icn.epochs_per_round) * num_labeled / int(config.batch_size))


def training_config(config, num_labeled: int):
    """The config the steps run under: `num_steps` = (T + 1) rounds of steps and the
    optimizer's staircase at round `icn.lr_decay_round` (when 0 < it <= T)."""
    out = copy.deepcopy(config)
    spr = steps_per_round(config, num_labeled)
    decay = int(config.icn.lr_decay_round)
    with out.unlocked():
        out.num_steps = (int(config.icn.rounds) + 1) * spr
        if 0 < decay <= int(config.icn.rounds):
            out.optimizer.schedule = "staircase"
            out.optimizer.decay_steps = (decay * spr,)
            out.optimizer.decay_factor = float(config.icn.lr_decay_factor)
    return out


def build(config, workdir: str | None, devices=None) -> loop.Experiment:
    """The experiment: the config validated, the reclassification method, the model (K
    stacked binary nets for `ova`) and the optimizer over all rounds."""
    mesh_size = len(devices) if devices is not None else jax.device_count()
    config_lib.validate(config, device_count=mesh_size)
    icn = config.icn
    neg_bs = int(icn.negative_batch_size) or int(config.batch_size)
    if neg_bs % mesh_size:
        raise config_lib.ConfigError("icn.negative_batch_size", f"{neg_bs} is not divisible "
                                     f"by the {mesh_size} devices", f"multiples of {mesh_size}")
    exp = loop.build(config, ICNReclassification(config), workdir, devices,
                     name=config_lib.run_name(config))
    cfg = training_config(config, len(exp.splits.labeled))
    model = exp.model
    if icn.formulation == "ova":
        model = get_model(config.model, len(exp.splits.seen_classes), one_vs_all=True,
                          dtype=jnp.dtype(config.get("compute_dtype", "float32")),
                          **dict(config.get("model_kwargs", {})))
        model = loop.fit_bn_momentum(model, config)
    return dataclasses.replace(exp, config=cfg, model=model,
                               optimizer=make_optimizer(cfg.optimizer, int(cfg.num_steps)))


def run(config, workdir: str, *, pretrained_dir: str | None = None,
        stop_at: int | None = None, devices=None) -> dict:
    """Runs the rounds (resuming after the last finished one); returns the results (also
    in results.json), or `{"stopped_at": step}` when `stop_at` pre-empted it."""
    if pretrained_dir is not None:
        raise ValueError("the ICN procedure trains C^0 itself; pretrained_dir is for SPL")
    t_start = time.time()
    exp = build(config, workdir, devices)
    cfg, icn, mesh, ds, sp = exp.config, exp.config.icn, exp.mesh, exp.dataset, exp.splits
    seen = sp.seen_classes
    num_classes = len(seen)
    train_labels = splits_lib.relabel(ds.train_labels, seen)
    eval_bs = int(cfg.eval_batch_size)
    predict = make_predict(exp.model, mesh)
    val_set = (EvalSet(ds.train_images[sp.validation], train_labels[sp.validation], eval_bs,
                       mesh) if len(sp.validation) else None)
    test_labels = splits_lib.relabel(ds.test_labels, seen)
    test_set = EvalSet(ds.test_images, test_labels, eval_bs, mesh)
    n = len(sp.labeled)
    spr = steps_per_round(cfg, n)
    rounds = int(icn.rounds)
    neg_bs = int(icn.negative_batch_size) or int(cfg.batch_size)
    image_shape = ds.image_shape
    spec = SamplerSpec.from_config(icn)
    synthesize = make_synthesizer(exp.model, spec, image_shape)
    per_call = int(icn.synthesis_batch_size) or num_classes * int(icn.per_class)
    train_step = make_train_step(exp.model, exp.method, exp.optimizer, cfg, mesh)

    state = sharding.replicate(mesh, loop.init_state(exp))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                        int(cfg.get("keep_checkpoints", 2)))
    pool_dir = os.path.join(workdir, "pool")
    pool = PseudoNegativePool(image_shape, int(icn.pool_cap))
    meta = {"best": None, "evals": [], "rounds": [], "train_time_s": 0.0,
            "stopped_early": False}
    done = -1
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        done = int(ckpt.restored_step)
        pool = PseudoNegativePool.load(os.path.join(pool_dir, f"round_{done}.npz"),
                                       int(icn.pool_cap))
    prior_time = float(meta.get("train_time_s", 0.0))
    writer = MetricWriter(workdir, resume_step=int(jax.device_get(state.step))
                          if done >= 0 else None,
                          tensorboard=bool(cfg.get("tensorboard", True)))
    labeled = {"image": ds.train_images[sp.labeled], "label": exp.labeled_labels()}

    def variables(s):
        v = {"params": s.params}
        if s.batch_stats:
            v["batch_stats"] = s.batch_stats
        return v

    def synthesis(r: int) -> dict:
        """Round r's new pseudo-negatives into the pool; their statistics."""
        if icn.negatives == "none":
            return {}
        classes = np.repeat(np.arange(num_classes, dtype=np.int32), int(icn.per_class))
        key = jax.random.fold_in(jax.random.PRNGKey(int(cfg.seed)), _SYNTHESIS_STREAM + r)
        t0 = time.time()
        images, steps, reached, logits = [], [], [], []
        for i, start in enumerate(range(0, len(classes), per_call)):
            chunk = jnp.asarray(classes[start:start + per_call])
            k = jax.random.fold_in(key, i)
            if icn.negatives == "noise":
                images.append(np.asarray(reference_noise(k, len(chunk), image_shape,
                                                         spec.noise_std)))
                continue
            x, st = jax.device_get(synthesize(variables(state), chunk, k))
            images.append(x)
            steps.append(st["steps"])
            reached.append(st["reached"])
            logits.append(st["logit"])
        seconds = time.time() - t0
        pool.add(np.concatenate(images), classes, r)
        out = {"synthesis_s": seconds, "pool_size": len(pool)}
        if steps:
            steps_all = np.concatenate(steps)
            out.update(steps_mean=float(np.mean(steps_all)), steps_max=int(np.max(steps_all)),
                       reached=float(np.mean(np.concatenate(reached))),
                       final_logit_mean=float(np.mean(np.concatenate(logits))),
                       sample_steps_per_s=float(np.sum(steps_all) / max(seconds, 1e-9)))
        return out

    def reclassify(r: int):
        nonlocal state
        start = int(jax.device_get(state.step))
        weight = (len(pool) / n if icn.negative_weighting == "sum" else 1.0)
        lab = pipeline.numpy_stream(labeled, int(cfg.batch_size), int(cfg.seed) * 2, start,
                                    mesh)
        if len(pool) == 0 and state.batch_stats:  # no zero images in BatchNorm statistics
            batches = pipeline.prefetch_to_mesh(lab, mesh)
        else:
            neg = pool.stream(neg_bs, int(cfg.seed) * 1000 + r, weight, mesh=mesh)
            batches = pipeline.prefetch_to_mesh(
                ({**a, **b} for a, b in zip(lab, neg, strict=False)), mesh)
        history = []
        t0 = time.time()
        for step in range(start + 1, start + spr + 1):
            state, metrics = train_step(state, next(batches))
            history.append((step, metrics))
        host = jax.device_get(history)
        seconds = time.time() - t0
        loop.check_finite(host)
        for i in range(0, len(host), int(cfg.log_every)):
            window = host[i:i + int(cfg.log_every)]
            writer.write(window[-1][0], {k: float(np.mean([m[k] for _, m in window]))
                                         for k in window[-1][1]})
        return {"reclassification_s": seconds, "pn_weight": weight,
                "loss_mean": float(np.mean([m["losses/total"] for _, m in host]))}

    def run_eval(r: int, extra: dict) -> dict:
        val = (evaluate(predict, state.params, state.batch_stats, state.masks, val_set)
               if val_set is not None else {"accuracy": None})
        test = evaluate(predict, state.params, state.batch_stats, state.masks, test_set)
        ema = evaluate(predict, state.ema_params, state.batch_stats, state.masks, test_set)
        step = int(jax.device_get(state.step))
        record = {"step": step, "round": r, "val_accuracy": val["accuracy"],
                  "test_accuracy": test["accuracy"], "test_auroc": test["auroc"],
                  "ema_test_accuracy": ema["accuracy"]}
        meta["evals"].append(record)
        meta["rounds"].append({"round": r, **extra})
        if val_set is not None and (meta["best"] is None
                                    or record["val_accuracy"] > meta["best"]["val_accuracy"]):
            meta["best"] = record
        writer.write(step, {f"icn/{k}": v for k, v in {**record, **extra}.items()
                            if k != "step" and v is not None})
        return record

    from tqdm.auto import tqdm

    bar = tqdm(total=rounds + 1, initial=done + 1, desc=config_lib.run_name(config),
               unit="round", disable=not bool(cfg.get("progress_bar", True))
               or jax.process_index() != 0, dynamic_ncols=True)
    stopped = None
    try:
        for r in range(done + 1, rounds + 1):
            if meta["stopped_early"]:
                break
            extra = synthesis(r) if r > 0 else {}
            extra.update(reclassify(r))
            rec = run_eval(r, extra)
            bar.update(1)
            bar.set_postfix(val=rec["val_accuracy"], test=rec["test_accuracy"], refresh=False)
            if val_set is not None and converged(meta["best"]["round"], r, int(icn.patience)):
                meta["stopped_early"] = True
            if jax.process_index() == 0:
                pool.save(os.path.join(pool_dir, f"round_{r}.npz"))
            snapshot = copy.deepcopy(meta)
            snapshot["train_time_s"] = prior_time + time.time() - t_start
            ckpt.save(r, state, snapshot)
            ckpt.wait()
            _prune_pools(pool_dir, ckpt)
            step = int(jax.device_get(state.step))
            if stop_at is not None and step >= stop_at and r < rounds \
                    and not meta["stopped_early"]:
                stopped = step
                break
    finally:
        bar.close()
        ckpt.close()
        writer.close()
    if stopped is not None:
        return {"stopped_at": stopped}

    results = loop.summarize(exp, meta, prior_time + time.time() - t_start)
    results["steps"] = int(jax.device_get(state.step))
    results["icn"] = icn_summary(cfg, meta, pool, spr)
    eps_unit = float(icn.fgsm_eps)
    if eps_unit > 0:
        attack = fgsm_lib.make_fgsm(exp.model)
        adv, labels, idx, fooled = fgsm_lib.fgsm_set(
            attack, variables(state), ds.test_images, test_labels.astype(np.int32),
            fgsm_lib.input_eps(eps_unit))
        results["fgsm"] = {"eps": eps_unit, "eps_input_scale": fgsm_lib.input_eps(eps_unit),
                           "model": "final", "correct_test_images": int(len(idx)),
                           "fooled_fraction": fooled, "fooled": int(round(fooled * len(idx)))}
        if jax.process_index() == 0:
            np.savez_compressed(os.path.join(workdir, "fgsm_adversarials.npz"),
                                images=adv.astype(np.float32), labels=labels, indices=idx)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        if len(pool):
            real = [ds.train_images[sp.labeled][exp.labeled_labels() == k][0]
                    for k in range(num_classes) if np.any(exp.labeled_labels() == k)]
            plot_pool(pool, os.path.join(workdir, "icn_pseudo_negatives.png"),
                      per_round=min(num_classes, 10),
                      real=np.asarray(real, np.float32) * (2.0 / 255.0) - 1.0,
                      title=f"{results['method']}: synthesized pseudo-negatives per round")
    return results


def converged(best_round: int, round_: int, patience: int) -> bool:
    """Algorithm 1, step 5: stop once `patience` rounds in a row brought no better
    validation accuracy than round `best_round`'s (patience 0: never, run all T)."""
    return patience > 0 and round_ - best_round >= patience


def icn_summary(cfg, meta: dict, pool, spr: int) -> dict:
    icn = cfg.icn
    rounds = meta["rounds"]
    synth = sum(r.get("synthesis_s", 0.0) for r in rounds)
    recl = sum(r.get("reclassification_s", 0.0) for r in rounds)
    moved = [r for r in rounds if "steps_mean" in r]
    return {
        "negatives": icn.negatives, "formulation": icn.formulation, "alpha": float(icn.alpha),
        "sampler": icn.sampler, "stop_rule": icn.stop_rule, "step_size": float(icn.step_size),
        "max_steps": int(icn.max_steps), "per_class": int(icn.per_class),
        "negative_weighting": icn.negative_weighting,
        "rounds_planned": int(icn.rounds), "rounds_run": len(rounds) - 1,
        "stopped_early": bool(meta.get("stopped_early", False)),
        "best_round": meta["best"]["round"] if meta["best"] else None,
        "steps_per_round": spr,
        "pool_size": len(pool), "pool_bytes": int(pool.nbytes),
        "synthesis_s": synth, "reclassification_s": recl,
        "synthesis_share": synth / max(synth + recl, 1e-9),
        "sampler_sample_steps_per_s": (float(np.mean([r["sample_steps_per_s"] for r in moved]))
                                       if moved else None),
        "per_round": rounds,
    }


def _prune_pools(pool_dir: str, ckpt: Checkpointer) -> None:
    """Drops the pool files of rounds whose checkpoint orbax has already removed."""
    if jax.process_index() != 0:
        return
    kept = set(ckpt.manager.all_steps())
    for path in glob.glob(os.path.join(pool_dir, "round_*.npz")):
        r = int(os.path.basename(path)[len("round_"):-len(".npz")])
        if r not in kept:
            os.remove(path)


def _load_final(config, run_dir: str):
    """(experiment, final TrainState) of a finished ICN run in `run_dir`."""
    exp = build(config, None)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"))
    try:
        template = sharding.replicate(exp.mesh, loop.init_state(exp))
        state, _ = ckpt.restore(template, step=ckpt.latest_step())
    finally:
        ckpt.close()
    return exp, state


def cross_fgsm(config_a, dir_a: str, config_b, dir_b: str) -> dict:
    """The paper's two-way FGSM comparison between two finished runs (a: the baseline,
    b: ICN): of a's adversarials that fool a, the fraction that also fool b, and the
    reverse (Sec. 4.1: 5,111 adversarials fool the CNN, 3,134 of them fool ICN)."""
    out = {}
    models = {}
    for name, cfg, d in (("a", config_a, dir_a), ("b", config_b, dir_b)):
        exp, state = _load_final(cfg, d)
        v = {"params": state.params}
        if state.batch_stats:
            v["batch_stats"] = state.batch_stats
        models[name] = (fgsm_lib.make_classify(exp.model), v)
    for src, dst in (("a", "b"), ("b", "a")):
        d = dir_a if src == "a" else dir_b
        with np.load(os.path.join(d, "fgsm_adversarials.npz")) as f:
            adv, labels = f["images"], f["labels"]
        classify, v = models[src]
        preds = np.concatenate([np.asarray(jax.device_get(classify(v, adv[i:i + 500])))
                                for i in range(0, len(labels), 500)])
        fooling = preds != labels
        out[f"{src}_adversarials"] = int(len(labels))
        out[f"{src}_fooled_{src}"] = int(np.sum(fooling))
        other, ov = models[dst]
        out[f"{src}_fooled_{src}_and_{dst}"] = int(round(
            fgsm_lib.fooled_fraction(other, ov, adv[fooling], labels[fooling])
            * int(np.sum(fooling))))
    return out
