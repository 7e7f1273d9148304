import chex
import jax
import jax.numpy as jnp
import pytest

from sslj.models import MODELS, get_model


def n_params(model, shape):
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
    return sum(x.size for x in jax.tree.leaves(v["params"]))


def test_wrn28_2_parameter_count():
    # Oliver et al.'s wide_resnet: 1x1-conv shortcuts where the width changes.
    assert n_params(get_model("wrn28_2", 10), (1, 32, 32, 3)) == 1_467_610


def test_cifar_resnet_parameter_counts():
    # He et al. report 0.46 M and 0.66 M for ResNet-32 / ResNet-44 (option A shortcuts).
    assert n_params(get_model("resnet32", 10), (1, 32, 32, 3)) == 464_154
    assert n_params(get_model("resnet44", 100), (1, 32, 32, 3)) == 664_436


@pytest.mark.parametrize("name,shape", [
    ("wrn28_2", (3, 32, 32, 3)), ("resnet32", (3, 32, 32, 3)), ("resnet44", (3, 32, 32, 3)),
    ("cnn_small", (3, 28, 28, 1)), ("cnn_small", (3, 8, 8, 1)), ("cnn_tiny", (3, 28, 28, 1)),
    ("icn_mnist", (3, 28, 28, 1)), ("wrn28_2", (3, 96, 96, 3)),
])
@pytest.mark.parametrize("num_classes", [6, 100])
def test_output_shapes(name, shape, num_classes):
    model = get_model(name, num_classes)
    x = jnp.zeros(shape)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
    out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    chex.assert_shape(out, (shape[0], num_classes))
    if "batch_stats" in variables:
        out, _ = jax.eval_shape(lambda v: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)}),
            variables)
        chex.assert_shape(out, (shape[0], num_classes))


def test_small_cnn_forward_is_finite_and_uses_batch_stats():
    model = get_model("cnn_small", 6)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 28, 28, 1))
    v = model.init(jax.random.PRNGKey(1), x)
    logits, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
    chex.assert_tree_all_finite(logits)
    # decay 0.99: running mean moves 1 % of the way to the batch mean
    mean0 = jax.tree.leaves(v["batch_stats"])[0]
    mean1 = jax.tree.leaves(upd["batch_stats"])[0]
    assert float(jnp.max(jnp.abs(mean1 - mean0))) > 0


def test_registry_rejects_unknown():
    with pytest.raises(ValueError, match="unknown model"):
        get_model("vgg", 10)
    assert {"wrn28_2", "resnet32", "resnet44", "cnn_small", "icn_mnist"} <= set(MODELS)
