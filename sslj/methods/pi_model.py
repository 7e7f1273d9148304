"""Pi-model (Laine & Aila 2017) with the Oliver et al. 2018 defaults.

Two stochastic passes (independent augmentation, noise and dropout) over the unlabeled
images; loss = xe(labeled) + w(t) * mean((softmax(f(x)) - softmax(f'(x)))^2), with
w = 20 ramped by exp(-5 (1 - t/T)^2). Pass 1 runs on concat(labeled, unlabeled) so
BatchNorm sees one batch, and is the "clean" pass that may write the running statistics;
pass 2 never writes them and runs, by default, on concat(labeled, unlabeled) too, as
Oliver et al.'s code (`pi_model.target_pass = "batch"`; "unlabeled": on the unlabeled
images alone, whose BatchNorm batch statistics then differ from pass 1's wherever the
two sets differ, as under class mismatch). The second pass is the target and carries no
gradient (`pi_model.stop_gradient_target`, default True, as in the common
implementations); set False to back-propagate through both passes.
"""

from __future__ import annotations

import jax

from sslj.common.checks import check_choice
from sslj.losses import softmax_mse
from sslj.methods.base import TARGET_PASSES, Method, Term, clean_pass, supervised_xe, target_pass


class PiModel(Method):
    name = "pi_model"

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_choice(config, "pi_model.target_pass", TARGET_PASSES)

    def outputs(self, ctx, batch, rng):
        r_aug1, r_fwd1, r_aug2, r_fwd2 = jax.random.split(rng, 4)
        logits, logits_u, _ = clean_pass(ctx, batch, r_aug1, r_fwd1)
        logits2 = target_pass(ctx, batch, r_aug2, r_fwd2,
                              over=self.config.pi_model.target_pass)
        if self.config.pi_model.stop_gradient_target:
            logits2 = jax.lax.stop_gradient(logits2)
        return {"logits": logits, "logits_u": logits_u, "logits_u_target": logits2}

    def terms(self):
        return (
            Term("xe", supervised_xe),
            Term("pi", lambda o, b: softmax_mse(o["logits_u"], o["logits_u_target"]),
                 weight=float(self.config.pi_model.weight), ramp=self.consistency_ramp()),
        )
