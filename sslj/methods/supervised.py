"""Supervised baseline: cross-entropy on the labeled batch only."""

from __future__ import annotations

import jax

from sslj.data.augment import to_float
from sslj.methods.base import Method, Term, supervised_xe


class Supervised(Method):
    name = "supervised"
    uses_unlabeled = False

    def outputs(self, ctx, batch, rng):
        aug_rng, fwd_rng = jax.random.split(rng)
        x = ctx.augment(to_float(batch["image"]), aug_rng)
        return {"logits": ctx.forward(x, rng=fwd_rng, clean=True)}

    def terms(self):
        return (Term("xe", supervised_xe),)

