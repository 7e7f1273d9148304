"""What the train core asks of a method: the contract between `sslj.train` and the
methods above it.

The train core runs any object that has these attributes; `sslj.methods.Method` is the
base class that implements them (with the target modifiers and add-on terms), and the
method registry lives in `sslj.methods`, above this layer, so the core never imports a
method. `StepContext` is what the step hands a method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax

Outputs = Mapping[str, jax.Array]
Batch = Mapping[str, jax.Array]


class StepContext(NamedTuple):
    """What a method may use inside the step."""

    forward: Callable[..., jax.Array]  # forward(images, *, rng, clean: bool) -> logits
    augment: Callable[[jax.Array, jax.Array], jax.Array]  # (images, rng) -> images
    step: jax.Array
    state: Any  # the TrainState before this step (read only)


class LossTerm(Protocol):
    """One weighted term: the step adds `weight * ramp(step) * value(...)`."""

    name: str
    weight: float

    def ramp(self, step: jax.Array) -> jax.Array: ...

    def value(self, outputs: Outputs, batch: Batch, step: jax.Array) -> jax.Array: ...


class TrainMethod(Protocol):
    """The hooks the step (`make_step_fn`) and the loop (`train_and_evaluate`) call."""

    name: str
    uses_unlabeled: bool  # the loop feeds unlabeled batches only then
    uses_labeled_index: bool  # the labeled batch carries `labeled_index`
    refresh_set: str  # what `refresh` predicts: "unlabeled" | "validation" | "none"
    model_options: dict  # keyword arguments of get_model (domain_head)
    has_pre_step: bool  # the step calls `pre_step` before the loss

    def set_data_sizes(self, *, labeled: int, unlabeled: int, validation: int) -> None: ...

    def pre_step(self, ctx: StepContext, batch: Batch, rng: jax.Array): ...

    def outputs(self, ctx: StepContext, batch: Batch, rng: jax.Array) -> dict: ...

    def loss_terms(self) -> tuple[LossTerm, ...]: ...

    def addon_outputs(self, ctx: StepContext, outputs: Outputs, batch: Batch,
                      rng: jax.Array) -> dict: ...

    def addon_monitors(self, outputs: Outputs, batch: Batch) -> dict: ...

    def unlabeled_features(self, labeled_images, labeled_labels, unlabeled_images,
                           num_classes: int) -> dict: ...

    def results_info(self) -> dict: ...

    def init_extra(self, num_unlabeled: int, variables) -> dict: ...

    def update_extra(self, state, new_state, outputs: Outputs, batch: Batch): ...

    def monitors(self, outputs: Outputs, batch: Batch) -> dict: ...

    def target_modifier(self): ...

    def target_monitors(self, outputs: Outputs, batch: Batch, step) -> dict: ...

    def refresh_due(self, step: int) -> bool: ...

    def refresh(self, extra, logits_unlabeled, step: int, true_labels=None): ...
