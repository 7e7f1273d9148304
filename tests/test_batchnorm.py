"""`sslj.models.batchnorm`: the matrix-product BatchNorm against `flax.linen.BatchNorm`.

Compared in float64 (both sum the same numbers in another order; float64's rounding is
~1e-16 relative, so 1e-10 leaves margin for every machine and instruction set), and in
float32 with a tolerance from the reduction length: a sum of M terms in float32 is off
by at most ~M eps relative (eps = 2^-24), far less in practice; `M_EPS` bounds it.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslj.models import get_model, validate_config
from sslj.models.batchnorm import BatchNorm, batch_norm, resolve_stats

SHAPE = (6, 5, 4, 3)  # M = 120 rows of 3 channels


def _variables(dtype):
    return {"params": {"scale": jnp.asarray([0.5, 1.5, -2.0], dtype),
                       "bias": jnp.asarray([0.1, -0.3, 1.0], dtype)},
            "batch_stats": {"mean": jnp.asarray([0.2, -0.1, 0.0], dtype),
                            "var": jnp.asarray([1.5, 0.7, 2.0], dtype)}}


def _layers(dtype):
    kw = {"momentum": 0.9, "epsilon": 1e-3, "param_dtype": dtype}
    return nn.BatchNorm(**kw), BatchNorm(**kw)


def _loss(layer, variables, w, train: bool):
    def loss(params, x):
        out = layer.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                          use_running_average=not train, mutable=["batch_stats"])
        y, updates = out
        return jnp.sum(jnp.tanh(y) * w), (y, updates["batch_stats"])
    return loss


def _inputs(dtype):
    key = jax.random.split(jax.random.PRNGKey(0), 3)
    x = (jax.random.normal(key[0], SHAPE, dtype) * jnp.asarray([3.0, 0.5, 1.0], dtype)
         + jnp.asarray([1.0, -2.0, 0.0], dtype))
    return x, jax.random.normal(key[1], SHAPE, dtype), jax.random.normal(key[2], SHAPE, dtype)


def _compare(dtype, atol):
    variables = _variables(dtype)
    x, w, d = _inputs(dtype)
    results = []
    for layer in _layers(dtype):
        for train in (True, False):
            loss = _loss(layer, variables, w, train)
            (value, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1),
                                                            has_aux=True)(variables["params"], x)
            # second derivative: forward over reverse, as VAT's exact probe takes it
            _, hvp = jax.jvp(lambda xx, loss=loss: jax.grad(loss, argnums=1, has_aux=True)(
                variables["params"], xx)[0], (x,), (d,))
            results.append((value, y, stats, grads, hvp))
    for ref, mine in zip(results[:2], results[2:], strict=True):
        chex.assert_trees_all_close(mine, ref, atol=atol, rtol=atol)


def test_matches_flax_batchnorm_float64():
    """Outputs, running statistics, gradients (scale, bias, input) and Hessian-vector
    products, training and inference mode, as nn.BatchNorm's to float64 rounding."""
    with jax.enable_x64(True):
        _compare(jnp.float64, 1e-10)


def test_matches_flax_batchnorm_float32():
    m = np.prod(SHAPE[:-1])
    _compare(jnp.float32, 4 * m * 2.0**-24)  # sums of M terms; 4: sum, square, product


def test_gradient_against_finite_differences():
    """The custom derivative is the derivative (not only nn.BatchNorm's): central
    differences in float64 along a random direction."""
    with jax.enable_x64(True):
        variables = _variables(jnp.float64)
        x, w, d = _inputs(jnp.float64)
        loss = _loss(BatchNorm(momentum=0.9, epsilon=1e-3, param_dtype=jnp.float64),
                     variables, w, True)
        f = lambda xx: loss(variables["params"], xx)[0]  # noqa: E731
        g = jax.grad(f)(x)
        h = 1e-6
        fd = (f(x + h * d) - f(x - h * d)) / (2 * h)
        np.testing.assert_allclose(float(jnp.sum(g * d)), float(fd), rtol=1e-7)


def test_bfloat16_compute_keeps_float32_statistics():
    """As nn.BatchNorm: statistics and normalisation in float32, output in bfloat16."""
    x = _inputs(jnp.float32)[0].astype(jnp.bfloat16)
    outs = []
    for layer in (nn.BatchNorm(momentum=0.9, epsilon=1e-3, dtype=jnp.bfloat16),
                  BatchNorm(momentum=0.9, epsilon=1e-3, dtype=jnp.bfloat16)):
        variables = layer.init(jax.random.PRNGKey(0), x, use_running_average=False)
        y, upd = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        outs.append((y, upd))
    (y_ref, upd_ref), (y, upd) = outs
    assert y.dtype == jnp.bfloat16 and upd["batch_stats"]["mean"].dtype == jnp.float32
    chex.assert_trees_all_close(upd, upd_ref, atol=1e-5, rtol=1e-5)
    # the float32 results agree to ~1e-6; bfloat16's rounding of them may differ by 1 ulp
    chex.assert_trees_all_close(y.astype(jnp.float32), y_ref.astype(jnp.float32),
                                atol=2.0**-7 * 4, rtol=2.0**-7)


@pytest.mark.parametrize("name", ["wrn28_2", "resnet32", "cnn_small"])
def test_models_keep_variable_names(name):
    """`bn_stats` changes no parameter or statistic name, shape or initial value, so a
    checkpoint written with either loads into the other."""
    shape = (2, 32, 32, 3) if name != "cnn_small" else (2, 28, 28, 1)
    x = jnp.zeros(shape)
    trees = [get_model(name, 10, bn_stats=s).init(jax.random.PRNGKey(0), x, train=False)
             for s in ("reduce", "matmul")]
    chex.assert_trees_all_equal(trees[0], trees[1])
    paths = ["/".join(str(k.key) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(trees[0])[0]]
    assert any(p.endswith("BatchNorm_0/scale") for p in paths)
    assert any(p.endswith("BatchNorm_0/var") for p in paths)


def test_model_outputs_agree():
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 28, 28, 1))
    model_r, model_m = (get_model("cnn_small", 10, bn_stats=s) for s in ("reduce", "matmul"))
    variables = model_r.init(jax.random.PRNGKey(0), x, train=False)
    out_r, upd_r = model_r.apply(variables, x, train=True, mutable=["batch_stats"])
    out_m, upd_m = model_m.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close((out_m, upd_m), (out_r, upd_r), atol=1e-5, rtol=1e-5)


def test_auto_and_choices():
    assert resolve_stats("auto") == ("matmul" if jax.default_backend() == "cpu" else "reduce")
    assert isinstance(batch_norm("reduce"), nn.BatchNorm)
    assert isinstance(batch_norm("matmul"), BatchNorm)
    with pytest.raises(ValueError, match="bn_stats='fast'; allowed"):
        resolve_stats("fast")


def test_config_validates_bn_stats():
    import ml_collections

    from sslj.common.checks import ConfigError

    cfg = ml_collections.ConfigDict({"model": "wrn28_2", "model_kwargs": {"bn_stats": "x"}})
    with pytest.raises(ConfigError, match="bn_stats"):
        validate_config(cfg)
    cfg.model_kwargs.bn_stats = "reduce"
    validate_config(cfg)
