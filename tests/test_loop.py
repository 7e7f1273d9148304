"""The standard procedure and the loop end to end: outputs, exact resume, non-finite
stop, safe checkpoints."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslj import procedures
from sslj.methods import METHODS, Term, register
from sslj.methods.supervised import Supervised
from sslj.procedures import standard
from sslj.train import loop
from sslj.train.checkpoint import Checkpointer
from sslj.train.metrics import read_jsonl
from sslj.train.state import create_train_state
from tests.conftest import tiny_config


def final_state(config, workdir):
    exp = standard.prepare(config)
    like = create_train_state(exp.model, exp.optimizer, jax.random.PRNGKey(0), (28, 28, 1))
    like = jax.device_put(like, jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec()))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, meta = ckpt.restore(like)
    ckpt.close()
    return state, meta


@pytest.mark.slow
def test_embedded_default_writes_every_output(tmp_path):
    from experiments import common
    from experiments.configs.default import get_config

    c = get_config()  # the README's main job, shortened
    c.num_steps, c.eval_every, c.log_every, c.checkpoint_every = 4, 2, 2, 2
    c.ramp.steps, c.optimizer.decay_steps, c.progress_bar = 2, 3, False
    c.spl.rounds, c.spl.inner_steps, c.spl.outer_steps = 1, 2, 2
    results = common.run_config(c, str(tmp_path))
    assert [r["method"] for r in results] == ["supervised", "pi_model", "pi_model+spl"]
    # Pi + SPL starts from the pi_model run: no pretraining of its own
    spl = tmp_path / "pi_model+spl"
    assert not (spl / "pretrain").exists()
    assert results[2]["spl"]["pretrain"] == {k: results[1][k] for k in results[2]["spl"][
        "pretrain"]}
    for name in ("results.json", "metrics.jsonl", "spl_layer_ratios.png", "spl_rounds.png"):
        assert (spl / name).is_file(), f"pi_model+spl/{name} missing"
    assert [e["step"] for e in results[2]["history"]] == [4, 6]
    for method in ("supervised", "pi_model"):
        d = tmp_path / method
        for name in ("config.json", "splits.npz", "splits.json", "metrics.jsonl",
                     "results.json"):
            assert (d / name).is_file(), f"{method}/{name} missing"
        assert os.listdir(d / "tensorboard"), "no TensorBoard events"
        assert Checkpointer(str(d / "checkpoints")).latest_step() == 4
        r = json.loads((d / "results.json").read_text())
        for key in ("test_accuracy_at_best_val", "ema_test_accuracy", "median_test_accuracy",
                    "unseen_auroc_at_best_val"):
            assert 0.0 <= r[key] <= 1.0
        lines = read_jsonl(str(d / "metrics.jsonl"))
        assert [ln["step"] for ln in lines if "losses/total" in ln] == [2, 4]
        assert any("eval/test_accuracy" in ln for ln in lines)
        assert json.loads((d / "splits.json").read_text())["labeled"] == 60
    table = (tmp_path / "results.md").read_text()
    assert "| supervised |" in table and "| pi_model |" in table
    assert "| pi_model+spl |" in table


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pi_model"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, method):
    c = tiny_config(method=method, num_steps=6, checkpoint_every=3, eval_every=2, log_every=1)
    full = procedures.run(c, str(tmp_path / "full"))
    assert procedures.run(c, str(tmp_path / "cut"), stop_at=4) == {"stopped_at": 4}
    assert Checkpointer(str(tmp_path / "cut" / "checkpoints")).latest_step() == 4
    resumed = procedures.run(c, str(tmp_path / "cut"))
    s_full, m_full = final_state(c, str(tmp_path / "full"))
    s_cut, m_cut = final_state(c, str(tmp_path / "cut"))
    assert int(s_full.step) == int(s_cut.step) == 6
    chex.assert_trees_all_close(s_full.params, s_cut.params, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(s_full.opt_state, s_cut.opt_state, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(s_full.batch_stats, s_cut.batch_stats, rtol=1e-6, atol=1e-7)
    assert m_full["evals"] == m_cut["evals"]
    for k in ("test_accuracy_at_best_val", "best_step", "ema_test_accuracy"):
        assert full[k] == resumed[k]
    # the log reads as one run: each step once, with the same losses
    a = [ln for ln in read_jsonl(str(tmp_path / "full" / "metrics.jsonl")) if "losses/total" in ln]
    b = [ln for ln in read_jsonl(str(tmp_path / "cut" / "metrics.jsonl")) if "losses/total" in ln]
    assert [ln["step"] for ln in b] == list(range(1, 7))
    np.testing.assert_allclose([ln["losses/total"] for ln in a], [ln["losses/total"] for ln in b],
                               rtol=1e-5)


class _NanFromStep3(Supervised):
    name = "test_nan_from_step3"

    def outputs(self, ctx, batch, rng):
        return {**super().outputs(ctx, batch, rng), "step": ctx.step}

    def terms(self):
        def xe(o, b):
            from sslj.methods.base import supervised_xe
            # ctx.step counts completed steps, so this is the third step (loop step 3)
            return jnp.where(o["step"] >= 2, jnp.nan, supervised_xe(o, b))
        return (Term("xe", xe),)


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    register(_NanFromStep3)
    try:
        c = tiny_config(method="test_nan_from_step3", num_steps=10, log_every=5,
                        checkpoint_every=2, eval_every=10)
        with pytest.raises(loop.NonFiniteLossError, match="at step 3") as e:
            procedures.run(c, str(tmp_path))
        assert e.value.step == 3
        ckpt = Checkpointer(str(tmp_path / "checkpoints"))
        assert ckpt.latest_step() == 2  # the save at step 4 never happened
        like = final_state(tiny_config(), str(tmp_path))[0]
        chex.assert_tree_all_finite(like.params)
    finally:
        METHODS.pop(_NanFromStep3.name)


@pytest.mark.slow
def test_partial_checkpoint_write_does_not_break_resume(tmp_path):
    c = tiny_config(num_steps=6, checkpoint_every=3)
    procedures.run(c, str(tmp_path), stop_at=3)
    # a crash in the middle of writing step 6 leaves orbax's temporary directory behind
    junk = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-1234567"
    (junk / "state").mkdir(parents=True)
    (junk / "state" / "partial").write_text("truncated")
    assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 3
    results = procedures.run(c, str(tmp_path))
    assert results["steps"] == 6


def test_run_without_validation_set_reports_the_final_model(tmp_path):
    """split.num_validation = 0 (ProSelfLC's retraining on every image): no selection,
    every "at best val" field None, the final evaluation reported."""
    c = tiny_config(**{"split.num_validation": 0})
    r = procedures.run(c, str(tmp_path))
    assert r["selection"] == "final (no validation set)"
    assert r["test_accuracy_at_best_val"] is None and r["best_step"] is None
    assert r["final_test_accuracy"] == r["history"][-1]["test_accuracy"]
    assert all(e["val_accuracy"] is None for e in r["history"])
    assert json.loads((tmp_path / "splits.json").read_text())["val_v1"] == 0


def test_label_noise_final_mode_trains_on_every_pool_image():
    from experiments.configs import label_noise, proselflc_cifar100
    from sslj.config import validate

    c = label_noise.get_config("proselflc,asym0.4,final")
    assert (c.split.labels_per_class, c.split.num_validation) == (400, 0)
    assert c.target.kind == "proselflc" and c.noise.rate == 0.4
    validate(c, device_count=8)
    full = proselflc_cifar100.get_config("cce,sym0.6,final")
    assert (full.split.labels_per_class, full.split.num_validation) == (500, 0)
    assert (full.data.pad_mode, full.optimizer.decay_params) == ("zeros", "all")


def test_metric_window_packs_metrics_bit_for_bit():
    """The loop's metric window: each step's scalars come back unchanged (float32 bits),
    named, in step order, and the window empties on fetch."""
    from sslj.train.metrics import MetricWindow

    window = MetricWindow()
    steps = []
    for s in range(1, 4):
        m = {"b/loss": jnp.float32(1.0 / (3 * s)), "a/nan": jnp.float32(np.nan if s == 2 else 0.0),
             "c/count": jnp.int32(7 * s)}
        window.add(s, m)
        steps.append(jax.device_get(m))
    got = window.fetch()
    assert len(window) == 0 and [s for s, _ in got] == [1, 2, 3]
    for (_, host), ref in zip(got, steps, strict=True):
        assert sorted(host) == sorted(ref)
        for k in ref:
            np.testing.assert_array_equal(host[k], np.float32(ref[k]))
    with pytest.raises(loop.NonFiniteLossError, match="a/nan = nan at step 2"):
        loop.check_finite(got)


def test_data_staged_on_device_trains_bit_for_bit_like_the_host_pipeline(tmp_path, devices):
    """`data.on_device` changes where batches are gathered, nothing else: a Pi-model run
    on one device (where "auto" stages MNIST-5k) ends with the same results and metrics
    as the host pipeline, resumed half-way or not."""
    outputs = {}
    for mode in ("yes", "no"):
        config = tiny_config(method="pi_model", num_steps=8, eval_every=4, checkpoint_every=4)
        config.data.on_device = mode
        workdir = str(tmp_path / mode)
        standard.run(config, workdir, stop_at=4 if mode == "yes" else None,
                     devices=devices[:1])
        result = standard.run(config, workdir, devices=devices[:1])
        result.pop("wall_time_s")
        lines = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        outputs[mode] = (result, lines)
    assert outputs["yes"] == outputs["no"]
