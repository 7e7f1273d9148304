"""The method / term interface every method implements.

A method is a set of weighted loss terms over one shared forward pass:
  * `outputs(ctx, batch, rng)` runs the model (through `ctx.forward`, which applies the
    masks and the BatchNorm-update policy) on augmented views and returns named arrays
    (`logits` for the labeled examples, `logits_u`, ... for unlabeled ones);
  * `terms()` lists `Term`s, each a scalar function of (outputs, batch) with a weight
    and a ramp; the train step sums `weight * ramp(step) * value`.
Add-on terms (EntMin, NS3L, ...) are `Term`s over the same outputs; target modifiers
(LS, CP, Boot, ProSelfLC; `config.target`) replace the supervised term `xe` of any
method by H(q~, p) with the modified target q~ (`sslj.losses.targets`).
The train core calls a method only through the hooks of
`sslj.train.interface.TrainMethod`, which `Method` implements.

Add-on outputs: `addon_outputs(ctx, outputs, batch, rng)` runs after `outputs` inside
the loss (NS3L's negatives, `sslj.methods.ns3l`), `addon_monitors` beside `monitors`;
`unlabeled_features(...)` gives per-unlabeled-example arrays the data stream carries
(NS3L's nearest-neighbour classes, as `unlabeled_<name>` batch keys) and
`results_info()` what results.json reports about the add-ons.

Optional hooks for stateful methods:
  * `init_extra(num_unlabeled, variables)` / `update_extra(state, new_state, outputs,
    batch)`: method state in `TrainState.extra` (Mean Teacher's teacher, Temporal
    Ensembling's ensemble), updated inside the jitted step after the optimizer update;
  * `monitors(outputs, batch)`: extra scalars logged as `monitors/<name>`;
  * `refresh_due(step)` / `refresh(extra, logits_unlabeled, step, true_labels)` ->
    (extra, stats): a host-side update from a jitted inference pass over the whole
    unlabeled set, run by the loop between steps (the report's accumulated
    pseudo-labels); `refresh_set = "validation"` predicts the validation set instead
    (UASD's threshold), `"none"` predicts nothing (MTC's epoch update);
  * `pre_step(ctx, batch, rng)` (with `has_pre_step`): a new `extra` inside the jitted
    step before the loss (DS3L's meta step on its weighting network);
  * `uses_labeled_index`: the labeled batch carries `labeled_index` (UASD's per-example
    averages of the labeled rows); `set_data_sizes`: the run's set sizes;
  * `model_options`: keyword arguments of `sslj.models.get_model` (MTC's domain head).
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from sslj.common.checks import ConfigError
from sslj.data.augment import to_float
from sslj.losses import TargetModifier, cross_entropy, entropy
from sslj.methods import ns3l
from sslj.train.interface import Batch, Outputs, StepContext
from sslj.train.schedules import ramp


def _one(step):
    return jnp.ones((), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Term:
    """A named loss term: `weight * ramp(step) * fn(outputs, batch)`
    (`fn(outputs, batch, step)` when `uses_step`)."""

    name: str
    fn: Callable[..., jax.Array]
    weight: float = 1.0
    ramp: Callable[[jax.Array], jax.Array] = _one
    uses_step: bool = False

    def value(self, outputs: Outputs, batch: Batch, step) -> jax.Array:
        return self.fn(outputs, batch, step) if self.uses_step else self.fn(outputs, batch)


def supervised_xe(outputs: Outputs, batch: Batch) -> jax.Array:
    """Cross-entropy of the labeled logits against the labels (`losses/xe`)."""
    return cross_entropy(outputs["logits"], batch["label"])


def clean_pass(ctx: StepContext, batch: Batch, aug_rng: jax.Array, fwd_rng: jax.Array):
    """The clean pass over augment(concat(labeled, unlabeled)): one batch for BatchNorm,
    the pass that writes the running statistics (Oliver et al.).

    Returns (labeled logits, unlabeled logits, the augmented unlabeled images).
    """
    xl = to_float(batch["image"])
    x = ctx.augment(jnp.concatenate([xl, to_float(batch["unlabeled_image"])]), aug_rng)
    logits = ctx.forward(x, rng=fwd_rng, clean=True)
    n = xl.shape[0]
    return logits[:n], logits[n:], x[n:]


TARGET_PASSES = ("batch", "unlabeled")


def target_pass(ctx: StepContext, batch: Batch, aug_rng: jax.Array, fwd_rng: jax.Array, *,
                over: str, forward=None):
    """The second (target) pass of the Pi-model or Mean Teacher on a new augmentation: the
    unlabeled logits of a pass over `over` = "batch", concat(labeled, unlabeled), as
    Oliver et al.'s code (its teacher pass takes the whole input, so BatchNorm's batch
    statistics are the clean pass's mix), or "unlabeled", the unlabeled images alone.
    Never writes the running statistics. `forward` defaults to the step's own."""
    forward = forward or ctx.forward
    xu = to_float(batch["unlabeled_image"])
    if over == "unlabeled":
        return forward(ctx.augment(xu, aug_rng), rng=fwd_rng, clean=False)
    if over != "batch":
        raise ValueError(f"unknown target pass {over!r}; allowed: {TARGET_PASSES}")
    xl = to_float(batch["image"])
    x = ctx.augment(jnp.concatenate([xl, xu]), aug_rng)
    return forward(x, rng=fwd_rng, clean=False)[xl.shape[0]:]


def unseen_share(weight: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """{"unseen_share": the share of the selection weight of the unlabeled batch (a 0/1
    mask, or soft weights) that falls on unseen-class examples}, when the batch carries
    the unlabeled true labels (`unlabeled_label`, -1 for an unseen class; monitors only:
    no method trains on them); {} otherwise. 0 when nothing is selected. The quantity
    the safe-SSL methods exist to drive down."""
    if "unlabeled_label" not in batch:
        return {}
    w = weight.astype(jnp.float32)
    unseen = (batch["unlabeled_label"] < 0).astype(jnp.float32)
    return {"unseen_share": jnp.sum(w * unseen) / jnp.maximum(jnp.sum(w), 1e-12)}


def entmin(outputs: Outputs, batch: Batch) -> jax.Array:
    """Entropy minimisation (Grandvalet & Bengio 2005): mean entropy of the predictions on
    the unlabeled batch (`logits_u`, the clean pass), as VAT+EntMin adds it."""
    del batch
    return jnp.mean(entropy(outputs["logits_u"]))


class Method(abc.ABC):
    """Base class; subclasses set `name` and register with `sslj.methods.register`."""

    name: ClassVar[str]
    uses_unlabeled: bool = True  # the loop feeds unlabeled batches only then
    # NS3L's nearest-neighbour strategies index the unlabeled examples of `logits_u`
    ns3l_neighbours_ok: ClassVar[bool] = True
    # the labeled batch carries `labeled_index` (the example's row in the labeled set)
    uses_labeled_index: ClassVar[bool] = False
    # the set `refresh` predicts: "unlabeled" (its logits, true labels), "validation",
    # or "none" (no prediction: logits None, the unlabeled true labels)
    refresh_set: ClassVar[str] = "unlabeled"
    # keyword arguments of `sslj.models.get_model` the method needs (MTC's domain head)
    model_options: ClassVar[dict] = {}
    # `pre_step` runs inside the jitted step before the loss (DS3L's meta step)
    has_pre_step: ClassVar[bool] = False

    def __init__(self, config):
        self.config = config
        self._info: dict = {}
        self.data_sizes: dict[str, int] = {}

    def set_data_sizes(self, *, labeled: int, unlabeled: int, validation: int) -> None:
        """The sizes of the run's sets (the loop calls it when it builds the run), for
        methods whose state is per example (UASD's running averages)."""
        self.data_sizes = {"labeled": labeled, "unlabeled": unlabeled,
                           "validation": validation}

    def pre_step(self, ctx: StepContext, batch: Batch, rng: jax.Array):
        """The next `extra` before the loss is taken (`has_pre_step` methods: DS3L's
        meta step on its weighting network); `ctx.forward` is a pass over the current
        (masked) weights that writes no BatchNorm statistics."""
        del batch, rng
        return ctx.state.extra

    @classmethod
    def validate(cls, config) -> None:
        """Method-specific config checks (raise `sslj.common.checks.ConfigError`)."""
        if ns3l.enabled(config) and not cls.ns3l_neighbours_ok and ns3l.parse_strategy(
                config.ns3l.strategy).uses_neighbours:
            raise ConfigError("ns3l.strategy", f"{config.ns3l.strategy!r}: {cls.name}'s NS3L "
                              "examples are mixed images, not unlabeled examples",
                              "threshold, uniform-<k> or oracle-<k>")

    @abc.abstractmethod
    def outputs(self, ctx: StepContext, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        ...

    @abc.abstractmethod
    def terms(self) -> tuple[Term, ...]:
        ...

    def loss_terms(self) -> tuple[Term, ...]:
        """`terms()` with the supervised term's target modified as `config.target` says,
        plus the add-on terms the config asks for (EntMin, weight `entmin.weight`,
        ramped like the consistency term)."""
        out = tuple(self.terms())
        modifier = self.target_modifier()
        if modifier.kind != "cce":
            def modified_xe(outputs, batch, step):
                return modifier.loss(outputs["logits"], batch["label"], step)
            out = tuple(dataclasses.replace(t, fn=modified_xe, uses_step=True)
                        if t.name == "xe" else t for t in out)
        weight = entmin_weight(self.config)
        if weight > 0:
            out += (Term("entmin", entmin, weight=weight, ramp=self.consistency_ramp()),)
        if ns3l.enabled(self.config):
            ramp = {"ramp": self.consistency_ramp()} if self.config.ns3l.ramp else {}
            out += (Term("ns3l", ns3l.loss, weight=float(self.config.ns3l.weight), **ramp),)
        return out

    def ns3l_source(self, outputs: Outputs, batch: Batch) -> dict[str, jax.Array]:
        """What NS3L works on: `logits` (with gradient), the `reference` probabilities the
        threshold reads, the examples' `true_label` (-1: unseen class; for the oracle and
        the monitors, when the batch has them) and their `neighbours` rows (nn-*). Default:
        the unlabeled part of the clean pass (`logits_u`) and its own probabilities."""
        logits = outputs["logits_u"]
        out = {"logits": logits, "reference": jax.nn.softmax(
            jax.lax.stop_gradient(logits).astype(jnp.float32))}
        if "unlabeled_label" in batch:
            out["true_label"] = batch["unlabeled_label"]
        if "unlabeled_nn" in batch:
            out["neighbours"] = batch["unlabeled_nn"]
        return out

    def addon_outputs(self, ctx: StepContext, outputs: Outputs, batch: Batch,
                      rng: jax.Array) -> Outputs:
        """`outputs` plus what the add-on terms need (NS3L: `ns3l_logits`,
        `ns3l_negatives`, `ns3l_true_label`)."""
        del ctx
        if not ns3l.enabled(self.config):
            return outputs
        src = self.ns3l_source(outputs, batch)
        strategy = ns3l.parse_strategy(self.config.ns3l.strategy)
        negatives = ns3l.select_negatives(
            strategy, src["reference"], rng, threshold=float(self.config.ns3l.threshold),
            true_label=src.get("true_label"), neighbours=src.get("neighbours"))
        extra = {"ns3l_logits": src["logits"], "ns3l_negatives": negatives}
        if "true_label" in src:
            extra["ns3l_true_label"] = src["true_label"]
        return {**outputs, **extra}

    def addon_monitors(self, outputs: Outputs, batch: Batch) -> dict[str, jax.Array]:
        return ns3l.monitors(outputs, batch) if ns3l.enabled(self.config) else {}

    def unlabeled_features(self, labeled_images, labeled_labels, unlabeled_images,
                           num_classes: int) -> dict:
        """Per-unlabeled-example arrays for the data stream (batch keys `unlabeled_<k>`):
        NS3L's nearest-neighbour classes when its strategy needs them (timed, the time
        in `results_info`)."""
        if not ns3l.enabled(self.config):
            return {}
        if not ns3l.parse_strategy(self.config.ns3l.strategy).uses_neighbours:
            return {}
        table, seconds = ns3l.neighbour_classes(labeled_images, labeled_labels,
                                                unlabeled_images, num_classes)
        self._info["ns3l"] = {"preprocessing_s": seconds, "neighbour_space": "raw pixels"}
        return {"nn": table}

    def results_info(self) -> dict:
        """Blocks results.json reports about the add-ons: NS3L's strategy, whether it used
        the unlabeled data's true labels (oracle), its preprocessing time (nn-*, when this
        process computed the table)."""
        if not ns3l.enabled(self.config):
            return {}
        strategy = ns3l.parse_strategy(self.config.ns3l.strategy)
        return {"ns3l": {"strategy": self.config.ns3l.strategy,
                         "uses_true_unlabeled_labels": strategy.uses_true_labels,
                         **self._info.get("ns3l", {})}}

    def init_extra(self, num_unlabeled: int, variables) -> dict:
        """Method state kept in `TrainState.extra` (empty for stateless methods).

        `variables` = {"params", "batch_stats"} of the initial model; whatever is returned
        must own its buffers (the step donates the state).
        """
        del num_unlabeled, variables
        return {}

    def update_extra(self, state, new_state, outputs: Outputs, batch: Batch):
        """The next `extra`, given the state before and after the optimizer update."""
        del new_state, outputs, batch
        return state.extra

    def monitors(self, outputs: Outputs, batch: Batch) -> dict[str, jax.Array]:
        del outputs, batch
        return {}

    def target_modifier(self) -> TargetModifier:
        return TargetModifier.from_config(self.config)

    def target_monitors(self, outputs: Outputs, batch: Batch, step) -> dict[str, jax.Array]:
        """With a target modifier: the batch's mean eps (`target_eps`) and the fraction of
        labeled examples whose modified target has another argmax than the given (noisy)
        label (`target_label_changed`). Not a count of corrections: the batch's clean
        labels are unknown here, so a change away from a correct label counts too; the
        learning dynamics (`sslj.train.dynamics`, `dynamics/noisy_corrected`) count the
        changes that reach the clean label."""
        modifier = self.target_modifier()
        if modifier.kind == "cce":
            return {}
        logits, labels = outputs["logits"], batch["label"]
        q = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
        target = modifier(q, logits, step)
        return {"target_eps": jnp.mean(modifier.epsilon(logits, step)),
                "target_label_changed": jnp.mean(jnp.argmax(target, -1) != labels)}

    def refresh_due(self, step: int) -> bool:
        del step
        return False

    def refresh(self, extra, logits_unlabeled, step: int, true_labels=None):
        raise NotImplementedError(f"{self.name} has no refresh")

    def consistency_ramp(self):
        return ramp(self.config.ramp.kind, int(self.config.ramp.steps))


def without_addons(config):
    """A copy of `config` with the add-on terms off (EntMin weight 0, NS3L disabled): the
    config of a loss that is not the base method's own (SPL's consistency outer steps,
    the fine-tune-on-V1 control)."""
    out = copy.deepcopy(config)
    with out.unlocked():
        if "entmin" in out:
            out.entmin.weight = 0.0
        if "ns3l" in out:
            out.ns3l.enabled = False
    return out


def entmin_weight(config) -> float:
    return float(config.get("entmin", {}).get("weight", 0.0))
