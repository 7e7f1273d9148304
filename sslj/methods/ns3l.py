"""NS3L (Chen et al., "Negative sampling in semi-supervised learning"): an add-on loss
term that any method takes, like EntMin.

    L_NS3L = 1/|B| sum_{i in B} -log(1 - sum_{j in N_i} p_ij)

over the method's unlabeled predictions p (`sslj.losses.negative_sampling`: computed in
log space, exact, no clamp), averaged over the WHOLE batch as the paper's Algorithm 1
returns (1/B) sum: an example without negatives counts with loss 0. The total loss
gains `ns3l.weight` x L_NS3L (lambda_1), constant unless `ns3l.ramp` (then ramped like
the method's consistency term). The paper gives lambda_1 without a schedule; Oliver et
al.'s framework, which its Sec. 4.1 follows, ramps its SSL terms over the warm-up, which
is what `ns3l.ramp = True` reproduces.

Which predictions (`Method.ns3l_source`): by default the method's `logits_u`, the
unlabeled part of its clean pass (VAT, Pi, Mean Teacher, Pseudo-Label, ...; FixMatch's
weak view); `supervised` with NS3L ("NS3L alone") runs its clean pass over
concat(labeled, unlabeled) as every Oliver-et-al. method does, so NS3L costs one more
clean pass over the unlabeled batch. MixMatch (the paper's Sec. 4.2.2): every example
of X' and U' (the mixed pass), negatives chosen from MixMatch's generated labels (the
mixed one-hot labels and sharpened guesses), not from the model's predictions.

Negative selection (`ns3l.strategy`), inside the jitted step; N_i as a boolean mask:
  * `threshold` (Sec. 4.1.2, Algorithm 1): the classes whose detached reference
    probability is below `ns3l.threshold` (T = 0.04 for 10 classes, 0.004 for 100: the
    paper scales T with 1 / classes; MixMatch + NS3L: 0.05). A boolean mask carries no
    gradient, and the reference (the model's own probabilities) is taken under
    stop_gradient anyway.
  * `uniform-k`: k distinct classes drawn uniformly over all classes (may hit the true
    class, which is the point of the ablation);
  * `oracle-k`: k distinct classes drawn uniformly over the WRONG classes: uses the true
    labels of the unlabeled data (Table 5's oracle; results.json says
    `uses_true_unlabeled_labels: true`); an unseen-class example (class mismatch) has no
    right class among the seen ones, so every class is a candidate;
  * nearest neighbours over the labeled set, in raw pixel space (the images as the
    model sees them before augmentation, [-1, 1] floats, squared Euclidean distance): the
    paper's reason these methods are "limited by long preprocessing times and the high
    dimensionality of the data" is a search in the input space. Computed once before
    training by a jitted, chunked pass (`neighbour_classes`), whose time results.json
    reports (`ns3l.preprocessing_s`):
      - `nn-exclude`: every class but that of the nearest labeled neighbour;
      - `nn-exclude4`: every class but the 4 nearest classes, a class's distance being
        that of its nearest labeled example (the paper's "Exclude 4 nearest classes
        with NN");
      - `nn-exclude4-examples`: every class but those of the 4 nearest labeled examples
        (1 to 4 distinct classes);
      - `nn-furthest-class`: the class whose nearest labeled example is furthest (the
        paper's "Furthest class with NN", Table 5's row);
      - `nn-furthest`: the class of the furthest labeled example (the other reading);
    `-k` (`nn-exclude-1`, `nn-exclude4-1`, `nn-exclude4-examples-1`) draws k of the
    remaining classes uniformly (the paper's Table 5 rows are "- 1": one negative per
    example).

Monitors (`monitors/ns3l_*`): the mean number of negatives per example; where the
unlabeled batch's true labels are known (every offline and TFDS source keeps them, for
monitors only), the fraction of chosen negatives that are the true class
(`ns3l_wrong_rate`, over seen-class examples: an unseen-class example's negatives cannot
be wrong) and, under class mismatch, the mean number of negatives of seen- and
unseen-class examples separately.
"""

from __future__ import annotations

import dataclasses
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from sslj.common.checks import ConfigError, check_bool, check_number, get_field
from sslj.data.augment import to_float
from sslj.losses import negative_sampling

STRATEGIES = ("threshold", "uniform-<k>", "oracle-<k>", "nn-exclude[-<k>]",
              "nn-exclude4[-<k>]", "nn-exclude4-examples[-<k>]", "nn-furthest",
              "nn-furthest-class")
# per unlabeled example (`neighbour_classes`): the classes of the 4 nearest examples
# (nearest first), the furthest example's class, the furthest class, the 4 nearest classes
NN_FIELDS = 10
_PATTERN = re.compile(r"^(threshold|uniform-\d+|oracle-\d+|"
                      r"nn-exclude(4|4-examples)?(-\d+)?|nn-furthest|nn-furthest-class)$")


@dataclasses.dataclass(frozen=True)
class Strategy:
    kind: str  # threshold | uniform | oracle | nn-exclude[4[-examples]] | nn-furthest[-class]
    k: int = 0  # negatives drawn per example (0: all candidates)

    @property
    def uses_true_labels(self) -> bool:
        return self.kind == "oracle"

    @property
    def uses_neighbours(self) -> bool:
        return self.kind.startswith("nn-")


def parse_strategy(name: str) -> Strategy:
    """`"uniform-3"` -> Strategy("uniform", 3); raises ValueError on an unknown name."""
    if not isinstance(name, str) or not _PATTERN.match(name):
        raise ValueError(f"unknown NS3L strategy {name!r}; allowed: {STRATEGIES}")
    if name in ("threshold", "nn-furthest", "nn-furthest-class"):
        return Strategy(name)
    m = re.match(r"^(nn-exclude4-examples|nn-exclude4|nn-exclude|uniform|oracle)(?:-(\d+))?$",
                 name)
    return Strategy(m.group(1), int(m.group(2) or 0))


def enabled(config) -> bool:
    return bool(config.get("ns3l", {}).get("enabled", False))


def validate_config(config, num_classes: int | None) -> None:
    """The `ns3l` section (checked whether or not it is enabled)."""
    check_bool(config, "ns3l.enabled")
    check_number(config, "ns3l.weight", low=0.0)
    check_number(config, "ns3l.threshold", low=0.0, high=1.0, low_open=True)
    check_bool(config, "ns3l.ramp")
    try:
        strategy = parse_strategy(get_field(config, "ns3l.strategy"))
    except ValueError:
        raise ConfigError("ns3l.strategy", f"{config.ns3l.strategy!r} is not a strategy",
                          STRATEGIES) from None
    if strategy.kind in ("uniform", "oracle") and strategy.k < 1:
        raise ConfigError("ns3l.strategy", "draws no negative", "k >= 1")
    if num_classes is not None and strategy.k >= num_classes:
        raise ConfigError("ns3l.strategy", f"draws {strategy.k} negatives from "
                          f"{num_classes} classes (every class would be a negative)",
                          f"k in [1, {num_classes - 1}]")


def _draw(rng: jax.Array, candidates: jax.Array, k: int) -> jax.Array:
    """Per row, k of the candidate classes uniformly without replacement (all of them
    when fewer): the k candidates with the largest uniform keys, by `top_k` (exactly k
    even when two keys tie)."""
    u = jnp.where(candidates, jax.random.uniform(rng, candidates.shape), -1.0)
    _, idx = jax.lax.top_k(u, k)
    chosen = jnp.any(idx[:, :, None] == jnp.arange(candidates.shape[-1])[None, None], axis=1)
    return candidates & chosen


def select_negatives(strategy: Strategy, reference: jax.Array, rng: jax.Array, *,
                     threshold: float, true_label: jax.Array | None = None,
                     neighbours: jax.Array | None = None) -> jax.Array:
    """The negatives mask (N, C) of `strategy`.

    `reference` (N, C): the probabilities the threshold reads (detached here);
    `true_label` (N,): class or -1 (unseen), oracle only; `neighbours` (N, NN_FIELDS)
    int: `neighbour_classes`' rows, nn-* only.
    """
    n, c = reference.shape
    if strategy.kind == "threshold":
        return jax.lax.stop_gradient(reference).astype(jnp.float32) < threshold
    classes = jnp.arange(c)
    if strategy.kind == "uniform":
        return _draw(rng, jnp.ones((n, c), jnp.bool_), strategy.k)
    if strategy.kind == "oracle":
        if true_label is None:
            raise ValueError("oracle negatives need the unlabeled batch's true labels")
        return _draw(rng, classes[None, :] != true_label[:, None], strategy.k)
    if neighbours is None:
        raise ValueError(f"{strategy.kind} needs the nearest-neighbour classes")
    if strategy.kind == "nn-furthest":
        return classes[None, :] == neighbours[:, 4:5]
    if strategy.kind == "nn-furthest-class":
        return classes[None, :] == neighbours[:, 5:6]
    near = {"nn-exclude": neighbours[:, :1], "nn-exclude4-examples": neighbours[:, :4],
            "nn-exclude4": neighbours[:, 6:10]}[strategy.kind]
    candidates = ~jnp.any(classes[None, :, None] == near[:, None, :], axis=-1)
    return _draw(rng, candidates, strategy.k) if strategy.k else candidates


def neighbour_classes(labeled_images: np.ndarray, labels: np.ndarray,
                      unlabeled_images: np.ndarray, num_classes: int,
                      chunk: int = 512) -> tuple[np.ndarray, float]:
    """Per unlabeled image, int32 (N_u, 10): the classes of its 4 nearest labeled images
    (nearest first), the class of its furthest labeled image, the class whose
    nearest member is furthest, and the 4 classes whose nearest members are nearest
    (classes without a labeled image last); squared Euclidean distances between the raw
    images as [-1, 1] floats. One jitted pass per chunk of unlabeled images (the last
    chunk padded); the per-class minimum is a segment-min over the labeled images, so
    memory stays O(chunk x labeled). Returns (table, seconds spent, compile included)."""
    t0 = time.perf_counter()
    lab = jnp.asarray(to_float(labeled_images).reshape(len(labeled_images), -1), jnp.float32)
    lab_labels = jnp.asarray(labels, jnp.int32)
    lab_sq = jnp.sum(jnp.square(lab), axis=1)
    k4 = min(4, lab.shape[0])
    c4 = min(4, num_classes)

    @jax.jit
    def table(u):
        u = to_float(u).reshape(u.shape[0], -1).astype(jnp.float32)
        d = jnp.sum(jnp.square(u), 1)[:, None] - 2.0 * u @ lab.T + lab_sq[None, :]
        order = jnp.argsort(d, axis=1)
        near4 = lab_labels[order[:, :k4]]
        near4 = jnp.pad(near4, ((0, 0), (0, 4 - k4)), mode="edge")
        furthest = lab_labels[order[:, -1]]
        per_class = jax.ops.segment_min(d.T, lab_labels, num_segments=num_classes).T
        present = jnp.isfinite(per_class)  # an empty segment's minimum is +inf
        far_class = jnp.argmax(jnp.where(present, per_class, -jnp.inf), 1)
        near_classes = jnp.argsort(jnp.where(present, per_class, jnp.inf), axis=1)[:, :c4]
        near_classes = jnp.pad(near_classes, ((0, 0), (0, 4 - c4)), mode="edge")
        return jnp.concatenate([near4, furthest[:, None], far_class[:, None], near_classes],
                               axis=1).astype(jnp.int32)

    n = len(unlabeled_images)
    out = []
    for start in range(0, n, chunk):
        part = np.asarray(unlabeled_images[start:start + chunk])
        pad = chunk - len(part) if n > chunk else 0
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
        out.append(np.asarray(table(jnp.asarray(part)))[:len(part) - pad])
    result = np.concatenate(out) if out else np.zeros((0, NN_FIELDS), np.int32)
    return result, time.perf_counter() - t0


def loss(outputs, batch) -> jax.Array:
    """The NS3L term: the mean over the source's examples of the per-example loss."""
    del batch
    return jnp.mean(negative_sampling(outputs["ns3l_logits"], outputs["ns3l_negatives"]))


def monitors(outputs, batch) -> dict:
    """Mean negatives per example; with true labels, the wrong-negative rate (seen-class
    examples) and, when the batch has unseen-class examples, negatives per seen / unseen
    example."""
    del batch
    neg = outputs["ns3l_negatives"].astype(jnp.float32)
    count = jnp.sum(neg, axis=-1)
    out = {"ns3l_negatives": jnp.mean(count)}
    true = outputs.get("ns3l_true_label")
    if true is None:
        return out
    seen = (true >= 0).astype(jnp.float32)
    hit = jnp.sum(neg * jax.nn.one_hot(jnp.maximum(true, 0), neg.shape[-1]), -1) * seen
    out["ns3l_wrong_rate"] = jnp.sum(hit) / jnp.maximum(jnp.sum(count * seen), 1.0)
    out["ns3l_negatives_seen"] = jnp.sum(count * seen) / jnp.maximum(jnp.sum(seen), 1.0)
    out["ns3l_negatives_unseen"] = (jnp.sum(count * (1 - seen))
                                    / jnp.maximum(jnp.sum(1 - seen), 1.0))
    return out
