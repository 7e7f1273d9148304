"""DS3L, safe deep semi-supervised learning (Guo et al., ICML 2020), following the
official code (`guolz-ml/DS3L`, `train.py`; facts in docs/SAFE_SSL_BASELINES.md, section 2).

A weighting network WNet (an MLP C -> `ds3l.hidden` (100) -> 1, ReLU, sigmoid) gives
every unlabeled example a weight w_j from its softmax prediction; the unlabeled loss is
the Pi-model consistency c_j = mean_k (softmax(f(x_j)') - softmax(f(x_j)))^2 between two
stochastic passes (the first pass detached, the gradient through the second, as the
code's `meta_net(x)` against `out.detach()`), weighted:

    L(theta, WNet) = s * CE_labeled + coef(t) * sum_j w_j c_j / sum_j w_j

(unnormalised when sum_j w_j = 0), coef(t) = `ds3l.weight` (10) x exp(-5 (1 - t/T)^2)
over the whole run (the code's warm-up equals its iterations).

Per step (`pre_step`, one jitted function with the train step):
  1. the meta step: theta' = theta - meta_lr grad_theta L(theta, WNet) (plain SGD,
     `ds3l.meta_lr` 1e-3), differentiable in WNet; here w = WNet(softmax(f(x))) is not
     detached, as the code's `out` (so grad_theta also flows through w);
  2. the outer loss CE(f_theta'(x_l), y_l) on the same labeled images under a new
     augmentation, differentiated through theta' to WNet (second order), and one Adam
     step on WNet (`ds3l.wnet_lr` 6e-5, the code's last tuned value);
  3. then the real step (`outputs` / `terms`): L(theta, WNet') with the new WNet's
     weights held constant, the model's own optimizer.
The meta passes run in training mode with batch statistics and write no running
statistics (the code's meta copy discards its own). The real step's first pass writes
them; the code's second pass writes them too (PyTorch train mode), sslj's does not, as
the Pi-model's target pass.

The quirk (`ds3l.supervised_mean`): the code averages the labeled cross-entropy over
the whole batch (`F.cross_entropy(..., ignore_index=-1).mean()` over labeled + unlabeled
rows), i.e. s = B_l / (B_l + B_u) = 0.5 times the labeled mean. "batch" (default, as
the code) keeps it (as the `xe` term's weight); "labeled" gives s = 1.

Monitors: the weights' mean and spread over the unlabeled batch (`ds3l_w_mean`,
`ds3l_w_std`), with true labels their mean on seen and unseen examples
(`ds3l_w_seen`, `ds3l_w_unseen`) and `unseen_share` (the share of the weight mass on
unseen classes), the outer loss (`ds3l_meta_loss`) and the norm of the step's WNet
update (`ds3l_wnet_update`): whether the weights move at all, which the code's issue
#2 doubts. Under SPL (`ds3l+spl`) WNet stays as pretrained with the default
consistency outer loss; with `spl.outer_loss = "base"` the outer steps are DS3L's own,
meta step included.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sslj.common.checks import check_choice, check_number
from sslj.data.augment import to_float
from sslj.methods.base import Method, Term, supervised_xe, unseen_share
from sslj.train.schedules import ramp as ramp_fn

SUPERVISED_MEANS = ("batch", "labeled")
_WNET_SEED = 0xD53  # fold_in constant of WNet's initialisation key


class WeightNet(nn.Module):
    """WNet: softmax prediction (C) -> hidden (ReLU) -> one sigmoid weight."""

    hidden: int = 100

    @nn.compact
    def __call__(self, probs):
        h = nn.relu(nn.Dense(self.hidden, name="fc1")(probs))
        return jax.nn.sigmoid(nn.Dense(1, name="fc2")(h))[..., 0]


def _at_least_f32(x: jax.Array) -> jax.Array:
    """float32, or wider (float64 stays: the tests' finite differences)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _xe(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy, `sslj.losses.cross_entropy` kept at float64 when the
    logits are (the meta-gradient's finite-difference test)."""
    logp = jax.nn.log_softmax(_at_least_f32(logits))
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), -1))


def weighted_consistency(w: jax.Array, c: jax.Array) -> jax.Array:
    """sum w c / sum w, or sum w c when sum w = 0 (the code's guard)."""
    sw = jnp.sum(w)
    swc = jnp.sum(w * c)
    return jnp.where(sw > 0, swc / jnp.where(sw > 0, sw, 1.0), swc)


def objective(first: jax.Array, second: jax.Array, labels: jax.Array, num_labeled: int,
              w: jax.Array, coef, sup_scale: float) -> jax.Array:
    """L = s CE(first[:n], labels) + coef sum_j w_j c_j / sum_j w_j over the unlabeled
    rows j, c_j = mean_k (softmax(second_j) - sg(softmax(first_j)))^2."""
    ce = _xe(first[:num_labeled], labels)
    p1 = jax.lax.stop_gradient(jax.nn.softmax(_at_least_f32(first[num_labeled:])))
    p2 = jax.nn.softmax(_at_least_f32(second[num_labeled:]))
    c = jnp.mean(jnp.square(p2 - p1), axis=-1)
    return sup_scale * ce + coef * weighted_consistency(w, c)


def meta_loss(wparams, theta, *, first_fn, second_fn, outer_fn, wnet_fn, labels,
              num_labeled: int, meta_lr: float, coef, sup_scale: float) -> jax.Array:
    """The outer loss CE(f_theta'(x_l), y_l) with theta' = theta - meta_lr grad_theta
    L(theta, WNet): `first_fn(theta)` / `second_fn(theta)` the two passes' logits over
    concat(labeled, unlabeled), `outer_fn(theta)` the labeled logits of the outer pass,
    `wnet_fn(wparams, probs)` the weights; differentiable in `wparams` (second order)."""
    def inner(t):
        first = first_fn(t)
        probs_u = jax.nn.softmax(_at_least_f32(first[num_labeled:]))
        return objective(first, second_fn(t), labels, num_labeled, wnet_fn(wparams, probs_u),
                         coef, sup_scale)

    grads = jax.grad(inner)(theta)
    theta2 = jax.tree.map(lambda p, g: p - meta_lr * g, theta, grads)
    return _xe(outer_fn(theta2), labels)


class DS3L(Method):
    name = "ds3l"
    has_pre_step = True

    def __init__(self, config):
        super().__init__(config)
        self.wnet = WeightNet(int(config.ds3l.hidden))
        self.wnet_opt = optax.adam(float(config.ds3l.wnet_lr))
        self.num_steps = int(config.num_steps)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        check_number(config, "ds3l.weight", low=0.0)
        check_number(config, "ds3l.meta_lr", low=0.0)
        check_number(config, "ds3l.wnet_lr", low=0.0)
        check_number(config, "ds3l.hidden", low=1, integer=True)
        check_number(config, "ds3l.ramp_fraction", low=0.0, high=1.0)
        check_choice(config, "ds3l.supervised_mean", SUPERVISED_MEANS)

    def sup_scale(self) -> float:
        if self.config.ds3l.supervised_mean == "labeled":
            return 1.0
        b_l, b_u = int(self.config.batch_size), int(self.config.unlabeled_batch_size)
        return b_l / (b_l + b_u)

    def coef_ramp(self):
        return ramp_fn("oliver_exp",
                       int(round(float(self.config.ds3l.ramp_fraction) * self.num_steps)))

    def init_extra(self, num_unlabeled, variables):
        c = len(self.config.split.seen_classes)
        key = jax.random.fold_in(jax.random.PRNGKey(int(self.config.seed)), _WNET_SEED)
        wparams = self.wnet.init(key, jnp.zeros((1, c), jnp.float32))["params"]
        return {"ds3l_wnet": wparams, "ds3l_wnet_opt": self.wnet_opt.init(wparams),
                "ds3l_meta_loss": jnp.zeros((), jnp.float32),
                "ds3l_wnet_update": jnp.zeros((), jnp.float32)}

    def _weights(self, wparams, probs):
        return self.wnet.apply({"params": wparams}, probs)

    def pre_step(self, ctx, batch, rng):
        """The meta step: one Adam step on WNet along the gradient of the outer loss."""
        state = ctx.state
        extra = state.extra
        xl, xu = to_float(batch["image"]), to_float(batch["unlabeled_image"])
        labels = batch["label"]
        n = xl.shape[0]
        x = jnp.concatenate([xl, xu])
        r = jax.random.split(rng, 6)
        x1, x2, xo = ctx.augment(x, r[0]), ctx.augment(x, r[1]), ctx.augment(xl, r[2])

        def pass_fn(images, key):
            return lambda t: ctx.forward.with_params(t, state.batch_stats)(
                images, rng=key, clean=False)

        coef = float(self.config.ds3l.weight) * self.coef_ramp()(state.step)
        loss, grads = jax.value_and_grad(meta_loss)(
            extra["ds3l_wnet"], jax.lax.stop_gradient(state.params),
            first_fn=pass_fn(x1, r[3]), second_fn=pass_fn(x2, r[4]), outer_fn=pass_fn(xo, r[5]),
            wnet_fn=self._weights, labels=labels, num_labeled=n,
            meta_lr=float(self.config.ds3l.meta_lr), coef=coef, sup_scale=self.sup_scale())
        updates, opt_state = self.wnet_opt.update(grads, extra["ds3l_wnet_opt"],
                                                  extra["ds3l_wnet"])
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(u)) for u in jax.tree.leaves(updates)))
        return {**extra, "ds3l_wnet": optax.apply_updates(extra["ds3l_wnet"], updates),
                "ds3l_wnet_opt": opt_state, "ds3l_meta_loss": loss.astype(jnp.float32),
                "ds3l_wnet_update": norm.astype(jnp.float32)}

    def outputs(self, ctx, batch, rng):
        r = jax.random.split(rng, 4)
        xl, xu = to_float(batch["image"]), to_float(batch["unlabeled_image"])
        n = xl.shape[0]
        x = jnp.concatenate([xl, xu])
        first = ctx.forward(ctx.augment(x, r[0]), rng=r[1], clean=True)
        second = ctx.forward(ctx.augment(x, r[2]), rng=r[3], clean=False)
        probs_u = jax.nn.softmax(jax.lax.stop_gradient(first[n:]).astype(jnp.float32))
        w = jax.lax.stop_gradient(self._weights(ctx.state.extra["ds3l_wnet"], probs_u))
        return {"logits": first[:n], "logits_u": first[n:], "logits_u_second": second[n:],
                "ds3l_w": w, "ds3l_meta_loss": ctx.state.extra["ds3l_meta_loss"],
                "ds3l_wnet_update": ctx.state.extra["ds3l_wnet_update"]}

    def consistency(self, outputs, batch):
        del batch
        p1 = jax.lax.stop_gradient(jax.nn.softmax(outputs["logits_u"].astype(jnp.float32)))
        p2 = jax.nn.softmax(outputs["logits_u_second"].astype(jnp.float32))
        return weighted_consistency(outputs["ds3l_w"], jnp.mean(jnp.square(p2 - p1), -1))

    def terms(self):
        return (Term("xe", supervised_xe, weight=self.sup_scale()),
                Term("ds3l", self.consistency, weight=float(self.config.ds3l.weight),
                     ramp=self.coef_ramp()))

    def monitors(self, outputs, batch):
        w = outputs["ds3l_w"]
        out = {"ds3l_w_mean": jnp.mean(w), "ds3l_w_std": jnp.std(w),
               "ds3l_meta_loss": outputs["ds3l_meta_loss"],
               "ds3l_wnet_update": outputs["ds3l_wnet_update"], **unseen_share(w, batch)}
        if "unlabeled_label" in batch:
            unseen = (batch["unlabeled_label"] < 0).astype(jnp.float32)
            out["ds3l_w_unseen"] = jnp.sum(w * unseen) / jnp.maximum(jnp.sum(unseen), 1.0)
            out["ds3l_w_seen"] = (jnp.sum(w * (1 - unseen))
                                  / jnp.maximum(jnp.sum(1 - unseen), 1.0))
        return out
