"""Mean Teacher (Tarvainen & Valpola 2017) with the Oliver et al. 2018 defaults.

The teacher is an exponential moving average of the student's weights (and of its
BatchNorm running statistics), kept in `TrainState.extra["teacher"]` and updated after
every optimizer step: teacher <- a * teacher + (1 - a) * student, a = 0.95 (Oliver).
Loss = xe(labeled) + w(t) * mean((softmax(student(x')) - softmax(teacher(x'')))^2) over
the unlabeled images, w = 8 ramped like the other consistency terms; x' and x'' are
independent augmentations. The student's pass over concat(labeled, unlabeled) is the
clean pass; the teacher's pass normalises with batch statistics, never writes them,
runs on the same masks and carries no gradient. Like Oliver et al.'s code it takes the
whole batch, concat(labeled, unlabeled), by default (`mean_teacher.target_pass =
"batch"`; "unlabeled": the unlabeled images alone).

This teacher is separate from `TrainState.ema_params` (the evaluation EMA, decay
`ema_decay`): Oliver's teacher decay 0.95 is a training choice, not an evaluation one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sslj.common.checks import check_choice, check_number
from sslj.losses import softmax_mse
from sslj.methods.base import TARGET_PASSES, Method, Term, clean_pass, supervised_xe, target_pass


def ema_update(teacher, student, decay: float):
    """teacher <- decay * teacher + (1 - decay) * student, leaf by leaf."""
    return optax.incremental_update(student, teacher, 1.0 - decay)


class MeanTeacher(Method):
    name = "mean_teacher"

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "mean_teacher.weight", low=0.0)
        check_number(config, "mean_teacher.ema_decay", low=0.0, high=1.0)
        check_choice(config, "mean_teacher.target_pass", TARGET_PASSES)

    def init_extra(self, num_unlabeled, variables):
        return {"teacher": jax.tree.map(jnp.copy, dict(variables))}

    def outputs(self, ctx, batch, rng):
        r_aug1, r_fwd1, r_aug2, r_fwd2 = jax.random.split(rng, 4)
        logits, logits_u, _ = clean_pass(ctx, batch, r_aug1, r_fwd1)
        teacher = ctx.state.extra["teacher"]
        teacher_forward = ctx.forward.with_params(teacher["params"], teacher["batch_stats"])
        logits_teacher = target_pass(ctx, batch, r_aug2, r_fwd2, forward=teacher_forward,
                                     over=self.config.mean_teacher.target_pass)
        return {"logits": logits, "logits_u": logits_u,
                "logits_u_teacher": jax.lax.stop_gradient(logits_teacher)}

    def terms(self):
        return (
            Term("xe", supervised_xe),
            Term("mt", lambda o, b: softmax_mse(o["logits_u"], o["logits_u_teacher"]),
                 weight=float(self.config.mean_teacher.weight), ramp=self.consistency_ramp()),
        )

    def update_extra(self, state, new_state, outputs, batch):
        decay = float(self.config.mean_teacher.ema_decay)
        student = {"params": new_state.params, "batch_stats": new_state.batch_stats}
        return {**state.extra, "teacher": ema_update(state.extra["teacher"], student, decay)}
