"""Supervised baseline: cross-entropy on the labeled batch only.

With an add-on term over unlabeled predictions (NS3L alone, `supervised+ns3l`, or
EntMin alone, `entmin.weight > 0`) it runs the clean pass over augment(concat(labeled,
unlabeled)) as every Oliver-et-al. method does (one batch for BatchNorm), and the add-on
reads its unlabeled part; otherwise it never touches the unlabeled set.
"""

from __future__ import annotations

import jax

from sslj.data.augment import to_float
from sslj.methods import ns3l
from sslj.methods.base import Method, Term, clean_pass, entmin_weight, supervised_xe


def addons_use_unlabeled(config) -> bool:
    return ns3l.enabled(config) or entmin_weight(config) > 0


class Supervised(Method):
    name = "supervised"

    def __init__(self, config):
        super().__init__(config)
        self.uses_unlabeled = addons_use_unlabeled(config)

    def outputs(self, ctx, batch, rng):
        aug_rng, fwd_rng = jax.random.split(rng)
        if self.uses_unlabeled:
            logits, logits_u, _ = clean_pass(ctx, batch, aug_rng, fwd_rng)
            return {"logits": logits, "logits_u": logits_u}
        x = ctx.augment(to_float(batch["image"]), aug_rng)
        return {"logits": ctx.forward(x, rng=fwd_rng, clean=True)}

    def terms(self):
        return (Term("xe", supervised_xe),)
