"""Every bad config fails before any compute, naming the field and the allowed values."""

import pytest

from sslj import procedures
from sslj.config import ConfigError, for_method, validate
from sslj.train import loop
from tests.conftest import tiny_config


@pytest.mark.parametrize("overrides,field,allowed", [
    ({"data.source": "imagenet"}, "data.source", "tfds:cifar10"),
    ({"data.source": "tfds:imagenet2012"}, "data.source", "mnist5k"),
    ({"method": "mixmatchh"}, "method", "pi_model"),
    ({"compare": "supervised,fixmatchh"}, "compare", "supervised"),
    ({"model": "resnet1000"}, "model", "wrn28_2"),
    ({"split.mismatch_ratio": 1.5}, "split.mismatch_ratio", "[0.0, 1.0]"),
    ({"split.mismatch_ratio": -0.1}, "split.mismatch_ratio", "[0.0, 1.0]"),
    ({"split.seen_classes": (0, 1, 10)}, "split.seen_classes", "[0, 9]"),
    ({"split.seen_classes": (0, 1, 1)}, "split.seen_classes", "distinct"),
    ({"split.seen_classes": ()}, "split.seen_classes", "[0, 9]"),
    ({"split.protocol": "random"}, "split.protocol", "ds3l"),
    ({"batch_size": 20}, "batch_size", "multiples of 8"),
    ({"unlabeled_batch_size": 12}, "unlabeled_batch_size", "multiples of 8"),
    ({"eval_batch_size": 100}, "eval_batch_size", "multiples of 8"),
    ({"bn_update": "sometimes"}, "bn_update", "clean"),
    ({"optimizer.name": "lamb"}, "optimizer.name", "adam"),
    ({"optimizer.schedule": "cyclic"}, "optimizer.schedule", "staircase"),
    ({"optimizer.lr": 0.0}, "optimizer.lr", "(0.0, inf]"),
    ({"num_steps": 0}, "num_steps", "[1, inf]"),
    ({"ramp.kind": "sigmoid"}, "ramp.kind", "oliver_exp"),
    ({"split.labels_per_class": 0}, "split.labels_per_class", "[1, inf]"),
    ({"split.v1_fraction": 0.0}, "split.v1_fraction", "(0.0, 1.0]"),
    ({"compute_dtype": "float16"}, "compute_dtype", "bfloat16"),
    ({"spl.outer_lr": 0.1}, "spl.outer_lr", "spl.outer_optimizer = 'fresh'"),
    ({"spl.outer_optimizer": "fresh"}, "spl.outer_lr", "(0, inf)"),
    ({"spl.rank_by": "abs"}, "spl.rank_by", "magnitude"),
    ({"spl.consistency_normalization": "mean"}, "spl.consistency_normalization", "official"),
    ({"split.num_validation": 1}, "split.num_validation", ">= 2"),
    ({"split.validation_source": "all"}, "split.validation_source", "seen_of_random"),
    ({"data.pad_mode": "edge"}, "data.pad_mode", "zeros"),
    ({"optimizer.decay_params": "biases"}, "optimizer.decay_params", "all"),
    ({"method": "vat_entmin", "vat.entmin_pass": "both"}, "vat.entmin_pass", "adversarial"),
    ({"method": "pi_model", "pi_model.target_pass": "all"}, "pi_model.target_pass", "batch"),
    ({"method": "pseudo_label", "pseudo_label.normalize": "sum"}, "pseudo_label.normalize",
     "confident"),
])
def test_bad_field_is_named_with_allowed_values(overrides, field, allowed):
    c = tiny_config(**overrides)
    with pytest.raises(ConfigError) as e:
        validate(c, device_count=8)
    assert e.value.field == field
    assert f"config.{field}" in str(e.value)
    if allowed is not None:
        assert allowed in str(e.value)


def test_mismatch_without_unseen_classes_is_rejected():
    c = tiny_config(**{"split.seen_classes": tuple(range(10)), "split.mismatch_ratio": 0.5})
    with pytest.raises(ConfigError, match="split.mismatch_ratio"):
        validate(c, device_count=1)


def test_more_labels_than_exist_fails_before_compute(tmp_path, monkeypatch):
    # mnist5k's training pool has 400 images per digit
    c = tiny_config(**{"split.labels_per_class": 401})
    called = []
    monkeypatch.setattr(loop, "create_train_state", lambda *a, **k: called.append(1))
    with pytest.raises(ConfigError) as e:
        procedures.run(c, str(tmp_path))
    assert e.value.field == "split.labels_per_class" and "at most" in str(e.value)
    assert not called


def test_unknown_override_field_is_rejected():
    c = tiny_config()
    c.method_overrides.pi_model.optimizer.lrr = 1.0
    with pytest.raises(ConfigError, match="method_overrides|optimizer.lrr"):
        validate(c, device_count=1)


def test_for_method_merges_overrides():
    c = tiny_config()
    pi = for_method(c, "pi_model")
    assert pi.method == "pi_model" and pi.optimizer.lr == pytest.approx(3e-4)
    assert for_method(c, "supervised").optimizer.lr == pytest.approx(3e-3)
    assert c.optimizer.lr == pytest.approx(3e-3)  # the original is untouched


def test_default_config_is_valid():
    validate(tiny_config(), device_count=8)


def test_unknown_model_argument_names_the_field_and_the_allowed_ones():
    c = tiny_config()
    c.model_kwargs.bn_momentum = 0.9  # an argument of cnn_tiny: accepted
    validate(c, device_count=1)
    c.model_kwargs.bn_mom = 0.9
    with pytest.raises(ConfigError) as e:
        validate(c, device_count=1)
    assert e.value.field == "model_kwargs.bn_mom" and "bn_momentum" in str(e.value)


def test_reproduce_set_rejects_unknown_fields_and_opens_model_kwargs():
    from experiments.reproduce import _set

    c = tiny_config()
    _set(c, "model_kwargs.bn_momentum", 0.9)
    _set(c, "optimizer.lr", 1)
    assert c.model_kwargs.bn_momentum == 0.9 and c.optimizer.lr == 1.0
    with pytest.raises(SystemExit, match="optimizer.lrr.*did you mean 'lr'"):
        _set(c, "optimizer.lrr", 1.0)
    with pytest.raises(SystemExit, match="'foo'"):
        _set(c, "foo.bar", 1.0)
