"""SPL's parameter masks (He et al. 2022, "Not All Parameters Should be Treated Equally").

Masks are data: a pytree with exactly the params' structure. A masked leaf holds a
full-shaped float32 array (1 = safe, 0 = harmful; continuous under the soft mask); an
unmasked leaf holds a scalar 1.0 (never None), so `apply_masks` is one multiply per leaf
and every train step runs on `apply_masks(params, masks)` whether or not SPL is on
(`sslj.train.masking`, the part of masking the train core knows). The
relaxed mask scores (`TrainState.mask_scores`) have the same structure.

  * which leaves are masked: an ordered rule list of (regex on the param path, masked),
    first match wins (`masked_leaves`); default: conv and dense kernels, with the
    classifier layer behind its own switch (unmasked in the official code);
  * how many are safe: p = 1 - delta (1 - tau) (Eq. 3, `safe_ratio`), delta the
    mismatch ratio (given, or estimated by `estimate_mismatch`), tau = m / n;
  * which ones: the round(p k) largest magnitudes over all masked leaves together
    (`identify`), a global threshold that fixes each layer's own ratio p^l (Fig. 4);
  * hard mask (Eq. 9): the top-k^l scores of each leaf -> {0, 1}, straight-through in
    the backward pass (`hard_mask`, a `jax.custom_vjp`); soft mask (Eq. 10):
    ReLU(scores) with a straight-through backward below zero (`soft_mask`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

MASK_KINDS = ("hard", "soft")
IDENTIFY = ("magnitude", "random", "none")
# The classifier's kernel: masked only when `spl.mask_classifier` is set.
CLASSIFIER_RULE = r"(^|/)classifier/kernel$"
DEFAULT_RULES = ((r"(^|/)kernel$", True),)  # every conv and dense kernel; biases, BN: no


def path_name(path) -> str:
    """A param's path as 'Conv_0/kernel' (the string the rules match)."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def rules_from_config(spl_config) -> tuple[tuple[str, bool], ...]:
    """The classifier switch first, then `spl.rules` (pairs of (regex, masked))."""
    rules = tuple((str(p), bool(m)) for p, m in spl_config.rules)
    return ((CLASSIFIER_RULE, bool(spl_config.mask_classifier)),) + rules


def masked_leaves(params, rules: Sequence[tuple[str, bool]] = DEFAULT_RULES):
    """A pytree of Python bools: True where the first rule that matches says masked."""
    compiled = [(re.compile(p), m) for p, m in rules]

    def decide(path, leaf):
        name = path_name(path)
        for pattern, masked in compiled:
            if pattern.search(name):
                return bool(masked) and np.ndim(leaf) > 0
        return False

    return jax.tree_util.tree_map_with_path(decide, params)


def safe_ratio(delta: float, tau: float) -> float:
    """Eq. 3: p = 1 - delta (1 - tau), delta the class-mismatch ratio of the unlabeled
    set and tau = m / n the labeled-to-unlabeled size ratio."""
    if not (0.0 <= delta <= 1.0 and tau >= 0.0):
        raise ValueError(f"need delta in [0, 1] and tau >= 0, got {delta}, {tau}")
    return 1.0 - delta * (1.0 - min(tau, 1.0))


def estimate_mismatch(scores_unlabeled: np.ndarray, scores_seen: np.ndarray,
                      quantile: float = 0.5) -> float:
    """Estimates delta when it is not known: a mixture-proportion estimate from the
    pretrained model's max-softmax scores (any increasing function of them: the
    procedure passes `sslj.train.evaluate.max_log_softmax`, which does not saturate).

    The unlabeled scores are a mixture (1 - delta) F_seen + delta F_unseen. Let t be the
    `quantile` (alpha) of held-out seen-class scores (V1, never trained on), so
    F_seen(t) = alpha. Then F_U(t) = (1 - delta) alpha + delta F_unseen(t), and with
    unseen-class examples scoring below t (F_unseen(t) = 1):
        delta_hat = (F_U(t) - alpha) / (1 - alpha), clipped to [0, 1].
    Where some unseen examples score above t this under-estimates delta (a lower bound,
    so p errs on the safe side of keeping parameters). alpha = 0.5 trades that bias
    against the variance of F_U(t) / (1 - alpha).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    t = np.quantile(np.asarray(scores_seen, np.float64), quantile)
    below = float(np.mean(np.asarray(scores_unlabeled, np.float64) < t))
    return float(np.clip((below - quantile) / (1.0 - quantile), 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class Identification:
    """The outcome of identification: masks, per-leaf safe counts, the ratio, the
    magnitude threshold (the smallest kept |theta|; None unless by magnitude)."""

    masks: object  # pytree: {0, 1} arrays on masked leaves, scalar 1.0 elsewhere
    counts: object  # pytree: int (safe entries) on masked leaves, None elsewhere
    ratio: float  # the requested p
    kept: int  # round(p k)
    total: int  # k, the number of masked entries
    threshold: float | None


def identify(params, spec, ratio: float, how: str = "magnitude", seed: int = 0) -> Identification:
    """Keeps exactly round(ratio * k) of the k masked entries (Eq. 1).

    `magnitude`: the largest |theta| over all masked leaves together (one global
    threshold; ties broken by position in the flattened params, so the result is
    deterministic); `random`: a uniformly random subset of the same size (the ablation
    "without identification" in its random form); `none`: every entry safe (p = 1).
    Computed once, on the host, in float64.
    """
    if how not in IDENTIFY:
        raise ValueError(f"identify: unknown {how!r}, allowed {IDENTIFY}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    leaves, treedef = jax.tree.flatten(params)
    flags = treedef.flatten_up_to(spec)
    masked = [np.asarray(jax.device_get(x), np.float64).ravel()
              for x, f in zip(leaves, flags, strict=True) if f]
    sizes = [a.size for a in masked]
    total = int(sum(sizes))
    ratio = 1.0 if how == "none" else float(ratio)
    kept = int(round(ratio * total))
    magnitude = np.abs(np.concatenate(masked)) if masked else np.zeros(0)
    if how == "magnitude":
        order = np.argsort(-magnitude, kind="stable")
    else:
        order = np.random.default_rng(seed).permutation(total)
    keep = np.zeros(total, bool)
    keep[order[:kept]] = True
    threshold = (float(magnitude[order[kept - 1]])
                 if how == "magnitude" and kept > 0 else None)
    out_masks, out_counts, offset, i = [], [], 0, 0
    for leaf, f in zip(leaves, flags, strict=True):
        if not f:
            out_masks.append(jnp.ones((), jnp.float32))
            out_counts.append(None)
            continue
        part = keep[offset:offset + sizes[i]]
        offset += sizes[i]
        i += 1
        out_masks.append(jnp.asarray(part.reshape(np.shape(leaf)), jnp.float32))
        out_counts.append(int(part.sum()))
    return Identification(jax.tree.unflatten(treedef, out_masks),
                          jax.tree.unflatten(treedef, out_counts), ratio, kept, total,
                          threshold)


def layer_ratios(masks, spec) -> dict[str, float]:
    """{param path: fraction of its entries that are safe (mask != 0)} over masked leaves
    (the paper's p^l, Fig. 4), in the params' order."""
    out = {}
    flat_masks = jax.tree_util.tree_flatten_with_path(masks)[0]
    flat_spec = jax.tree.leaves(spec)
    for (path, m), f in zip(flat_masks, flat_spec, strict=True):
        if f:
            out[path_name(path)] = float(np.mean(np.asarray(jax.device_get(m)) != 0))
    return out


# --------------------------------------------------------------------- relaxed masks
@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def hard_mask(scores: jax.Array, k: int) -> jax.Array:
    """Eq. 9: 1 on the k largest scores of the leaf, 0 elsewhere; exactly k ones, ties
    to the lower flat index. Backward: straight-through (the upstream gradient as is)."""
    return _top_k_mask(scores, k)


def _top_k_mask(scores, k):
    """The first k entries in the order of a stable `jnp.argsort(-flat)` (descending,
    ties to the lower flat index; -0 ties with 0 and NaN comes last, as `lax.sort` has
    them), found by a radix select instead of a sort: the k-th largest value is built
    bit by bit from 32 counts over the leaf (`_sort_keys` maps float32 to unsigned keys
    in the same order), then every larger entry and, of the equal ones, those below an
    index bound found the same way (no cumulative sum: its scan lowering compiles
    slowly on the CPU) are kept. The same mask bit for bit (tests/test_spl.py compares it with the
    argsort on ties, signed zeros, NaN and inf); 23x faster on WRN-28-2's kernels
    (24 leaves, 1.0 M entries: 310 -> 13 ms on the 2-core CPU), where XLA:CPU's sort
    runs on one core. float64 scores keep the argsort (their keys would need 64 bits)."""
    flat = scores.reshape(-1)
    if k >= flat.size:
        return jnp.ones_like(scores)
    if k <= 0:
        return jnp.zeros_like(scores)
    if flat.dtype == jnp.float64:
        order = jnp.argsort(-flat, stable=True)
        return jnp.zeros_like(flat).at[order[:k]].set(1.0).reshape(scores.shape)
    key = _sort_keys(flat)

    def settle_bit(i, threshold):  # the largest t with #(key >= t) >= k, from the top bit
        candidate = threshold | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
        return jnp.where(jnp.sum(key >= candidate) >= k, candidate, threshold)

    kth = jax.lax.fori_loop(0, 32, settle_bit, jnp.uint32(0))
    above, equal = key > kth, key == kth
    room = k - jnp.sum(above)  # how many of the entries equal to the k-th fit
    index = jnp.arange(flat.size, dtype=jnp.int32)
    bits = int(flat.size).bit_length()

    def settle_index(i, bound):  # the largest b with #(equal, index < b) <= room
        candidate = bound | (jnp.int32(1) << (bits - 1 - i))
        return jnp.where(jnp.sum(equal & (index < candidate)) <= room, candidate, bound)

    bound = jax.lax.fori_loop(0, bits, settle_index, jnp.int32(0))
    keep = above | (equal & (index < bound))
    return keep.astype(flat.dtype).reshape(scores.shape)


def _sort_keys(x):
    """uint32 keys whose order is `lax.sort`'s order of float `x` (cast to float32,
    exact for float32 / bfloat16 / float16): -0 canonicalised to 0, NaN the smallest."""
    x = x.astype(jnp.float32)
    x = jnp.where(x == 0, jnp.float32(0), x)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    key = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))
    return jnp.where(jnp.isnan(x), jnp.uint32(0), key)


def _hard_fwd(scores, k):
    return _top_k_mask(scores, k), None


def _hard_bwd(k, residual, g):
    del k, residual
    return (g,)


hard_mask.defvjp(_hard_fwd, _hard_bwd)


@jax.custom_vjp
def soft_mask(scores: jax.Array) -> jax.Array:
    """Eq. 10: ReLU(scores). Backward: d/ds = 1 above zero (ReLU's own derivative) and
    also 1 at and below zero (straight-through), so a harmful parameter (score <= 0)
    still receives the gradient of the loss with respect to switching it on, and
    becomes safe again when that gradient says so. With ReLU's true derivative (0 at
    and below 0) a harmful parameter could never come back."""
    return jax.nn.relu(scores)


def _soft_fwd(scores):
    return jax.nn.relu(scores), None


def _soft_bwd(residual, g):
    del residual
    return (g,)


soft_mask.defvjp(_soft_fwd, _soft_bwd)


def masks_from_scores(scores, counts, kind: str, rank_by: str = "score"):
    """The masks the forward pass uses, from the relaxed scores: per masked leaf
    `hard_mask(score, k^l)` or `soft_mask(score)`; unmasked leaves (count None) stay at
    a constant scalar 1.0 (no gradient).

    `rank_by` (hard mask): "score" keeps the k^l largest scores (Eq. 9); "magnitude"
    the k^l largest |score|, as the official code (`PretrainConv.clamped_masks` =
    mask.abs()), whose gradient then carries the score's sign. The two differ once an
    inner step drives a score below zero: a large negative score is harmful under Eq. 9
    and safe under the official ranking."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind {kind!r}, allowed {MASK_KINDS}")
    if rank_by not in ("score", "magnitude"):
        raise ValueError(f"rank_by {rank_by!r}, allowed ('score', 'magnitude')")

    def one(s, k):
        if k is None:
            return jnp.ones((), jnp.float32)
        if kind == "soft":
            return soft_mask(s)
        return hard_mask(jnp.abs(s) if rank_by == "magnitude" else s, k)

    return jax.tree.map(one, scores, counts, is_leaf=lambda x: x is None)


def init_scores(params, ident: Identification, kind: str):
    """Initial relaxed scores whose mask is the identified one.

    hard: |theta| / threshold on masked leaves (safe >= 1 > harmful), so the scores of
    parameters near the threshold need only small steps to swap, and the scale is the
    same in every layer; soft: the identified {0, 1} mask itself (ReLU of it is the
    mask, and the straight-through backward keeps the zeros alive). Unmasked: 1.0.
    """
    scale = ident.threshold if ident.threshold else 1.0

    def one(p, m, k):
        if k is None:
            return jnp.ones((), jnp.float32)
        if kind == "hard" and ident.threshold:
            return jnp.abs(jnp.asarray(p, jnp.float32)) / scale
        return jnp.array(m, jnp.float32, copy=True)  # own buffer: steps donate the state

    return jax.tree.map(one, params, ident.masks, ident.counts,
                        is_leaf=lambda x: x is None)


def mask_stats(new_masks, old_masks, counts) -> dict[str, jax.Array]:
    """`density`: safe fraction (mask != 0) over all masked entries; `swaps`: entries whose
    safe / harmful state differs between the two masks."""
    safe, size, swaps = 0.0, 0, 0
    for new, old, k in zip(jax.tree.leaves(new_masks), jax.tree.leaves(old_masks),
                           jax.tree.leaves(counts, is_leaf=lambda x: x is None), strict=True):
        if k is None:
            continue
        safe = safe + jnp.sum(new != 0)
        size += new.size
        swaps = swaps + jnp.sum((new != 0) != (old != 0))
    if size == 0:
        return {"density": jnp.ones((), jnp.float32), "swaps": jnp.zeros((), jnp.int32)}
    return {"density": jnp.asarray(safe, jnp.float32) / size,
            "swaps": jnp.asarray(swaps, jnp.int32)}

