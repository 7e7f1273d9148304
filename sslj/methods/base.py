"""The method / term interface every method implements.

A method is a set of weighted loss terms over one shared forward pass:
  * `outputs(ctx, batch, rng)` runs the model (through `ctx.forward`, which applies the
    masks and the BatchNorm-update policy) on augmented views and returns named arrays
    (`logits` for the labeled examples, `logits_u`, ... for unlabeled ones);
  * `terms()` lists `Term`s, each a scalar function of (outputs, batch) with a weight
    and a ramp; the train step sums `weight * ramp(step) * value`.
Add-on terms (EntMin, NS3L, ...) are `Term`s over the same outputs; target modifiers
(LS, ProSelfLC, ...) wrap the supervised term's function.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from sslj.losses import cross_entropy
from sslj.train.schedules import ramp

Outputs = Mapping[str, jax.Array]
Batch = Mapping[str, jax.Array]


def _one(step):
    return jnp.ones((), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Term:
    """A named loss term: `weight * ramp(step) * fn(outputs, batch)`."""

    name: str
    fn: Callable[[Outputs, Batch], jax.Array]
    weight: float = 1.0
    ramp: Callable[[jax.Array], jax.Array] = _one


class StepContext(NamedTuple):
    """What a method may use inside the step."""

    forward: Callable[..., jax.Array]  # forward(images, *, rng, clean: bool) -> logits
    augment: Callable[[jax.Array, jax.Array], jax.Array]  # (images, rng) -> images
    step: jax.Array
    state: Any  # the TrainState before this step (read only)


def supervised_xe(outputs: Outputs, batch: Batch) -> jax.Array:
    """Cross-entropy of the labeled logits against the labels (`losses/xe`)."""
    return cross_entropy(outputs["logits"], batch["label"])


class Method(abc.ABC):
    """Base class; subclasses set `name` and register with `sslj.methods.register`."""

    name: ClassVar[str]
    uses_unlabeled: ClassVar[bool] = True

    def __init__(self, config):
        self.config = config

    @classmethod  # noqa: B027 - an optional hook: no checks by default
    def validate(cls, config) -> None:
        """Method-specific config checks (raise sslj.config.ConfigError)."""

    @abc.abstractmethod
    def outputs(self, ctx: StepContext, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
        ...

    @abc.abstractmethod
    def terms(self) -> tuple[Term, ...]:
        ...

    def init_extra(self, num_unlabeled: int) -> dict:
        """Method state kept in `TrainState.extra` (empty for stateless methods)."""
        del num_unlabeled
        return {}

    def consistency_ramp(self):
        return ramp(self.config.ramp.kind, int(self.config.ramp.steps))
