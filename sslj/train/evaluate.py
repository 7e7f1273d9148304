"""Padded, masked evaluation: accuracy on seen classes and unseen-vs-seen AUROC.

The unseen-vs-seen score is the max-softmax confidence, computed as the maximum
log-softmax in float64 (`max_log_softmax`): the same ranking as max p, but float32
max-softmax rounds to exactly 1.0 once the top logit leads by ~17, so confident
examples tie and the AUROC falls towards 0.5 (0.500 in float32 against 0.773 in float64
on such logits, tests/test_data_pipeline.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslj.common import sharding
from sslj.data import pipeline
from sslj.data.augment import to_float
from sslj.train.masking import apply_masks


def make_predict(model, mesh):
    """Jitted `(params, batch_stats, masks, images) -> logits` in inference mode."""

    def predict(params, batch_stats, masks, images):
        variables = {"params": apply_masks(params, masks)}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        return model.apply(variables, to_float(images), train=False)

    # the logits stay sharded like the batch (the host gathers them): a replicated output
    # would all-gather on the devices, a collective in every one of the evaluation's
    # in-flight executions (see `precise_batch_stats` for what that did on a small CPU)
    repl, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(predict, in_shardings=(repl, repl, repl, batch), out_shardings=batch)


class EvalSet:
    """A fixed evaluation set, padded into batches and placed on the mesh once.

    Evaluation sets never change during a run, so their sharded batches are built a
    single time (through the tf.data eval pipeline) and reused at every evaluation.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, mesh):
        self.labels = np.asarray(labels)
        self.batches = list(pipeline.eval_batches(images, labels, batch_size, mesh))
        # which rows are real, on the host (fetched once; a collective on several hosts)
        self.row_masks = [np.asarray(m, bool)
                          for m in sharding.fetch([b["mask"] for b in self.batches])]

    def logits(self, predict, params, batch_stats, masks) -> np.ndarray:
        """Logits of every example (padding dropped), in order."""
        outs = [predict(params, batch_stats, masks, b["image"]) for b in self.batches]
        logits = np.concatenate(sharding.fetch(outs))
        return logits[np.concatenate(self.row_masks)]


def make_batch_statistics(model, mesh):
    """Jitted `(params, masks, batch_stats, images) -> statistics`: the BatchNorm mean and
    variance of one training-mode pass over `images` (the running-average form of the
    model's `batch_stats`, with the momentum taken out).

    Flax writes m * old + (1 - m) * batch; two passes, from all-zero and from all-one
    statistics, give n0 = (1 - m) batch and n1 = m + (1 - m) batch, so batch =
    n0 / (1 - n1 + n0) whatever each layer's momentum m is. Dropout is off (a fixed key
    is passed only for models that ask for one)."""

    def stats(params, masks, batch_stats, images):
        x = to_float(images)
        variables = {"params": apply_masks(params, masks)}

        def from_fill(value):
            start = jax.tree.map(lambda a: jnp.full_like(a, value), batch_stats)
            _, updates = model.apply({**variables, "batch_stats": start}, x, train=True,
                                     rngs={"dropout": jax.random.PRNGKey(0)},
                                     mutable=["batch_stats"])
            return updates["batch_stats"]

        n0, n1 = from_fill(0.0), from_fill(1.0)
        return jax.tree.map(lambda a, b: a / (1.0 - b + a), n0, n1)

    repl = sharding.replicated(mesh)
    return jax.jit(stats, in_shardings=(repl, repl, repl, sharding.batch_sharding(mesh)),
                   out_shardings=repl)


def precise_batch_stats(stats_fn, params, masks, batch_stats, eval_set: EvalSet):
    """Running statistics recomputed for the current network: the mean over the full
    batches of `eval_set` of each batch's BatchNorm mean and variance ("precise BN").
    Used where weights or masks changed faster than a running average follows (SPL's
    short phases); the set must have no padded rows."""
    if any(not np.all(m) for m in eval_set.row_masks):
        raise ValueError("precise_batch_stats needs full batches (no padding)")
    # One batch at a time: each call all-reduces the batch moments over the devices, and
    # with several such executions in flight on a few CPU cores (8 fake devices on 2, as
    # in the tests) the collectives' rendezvous starved and XLA aborted the process
    # ("AwaitAndLogIfStuck" in InProcessCommunicator::AllReduce, jax 0.10.2).
    per_batch = [jax.block_until_ready(stats_fn(params, masks, batch_stats, b["image"]))
                 for b in eval_set.batches]
    return jax.tree.map(lambda *xs: sum(xs) / len(xs), *per_batch)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def max_log_softmax(logits: np.ndarray) -> np.ndarray:
    """max_c log softmax(logits)_c per row, in float64 and accurate to the last bit for
    any margin: -log1p(sum over the other classes of exp(z_c - z_max))."""
    z = np.asarray(logits, np.float64)
    top = np.argmax(z, axis=-1)
    rest = np.exp(z - np.take_along_axis(z, top[:, None], -1))
    np.put_along_axis(rest, top[:, None], 0.0, -1)
    return -np.log1p(rest.sum(-1))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy over examples of seen classes (label >= 0)."""
    seen = labels >= 0
    if not seen.any():
        return float("nan")
    return float(np.mean(np.argmax(logits[seen], -1) == labels[seen]))


def auroc(scores_positive: np.ndarray, scores_negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U)."""
    pos, neg = np.asarray(scores_positive, np.float64), np.asarray(scores_negative, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def seen_unseen_auroc(logits: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of the max-softmax score (as `max_log_softmax`) for telling seen
    (label >= 0) from unseen (-1)."""
    score = max_log_softmax(logits)
    return auroc(score[labels >= 0], score[labels < 0])


def evaluate(predict, params, batch_stats, masks, eval_set: EvalSet) -> dict:
    logits = eval_set.logits(predict, params, batch_stats, masks)
    return {"accuracy": accuracy(logits, eval_set.labels),
            "auroc": seen_unseen_auroc(logits, eval_set.labels)}
