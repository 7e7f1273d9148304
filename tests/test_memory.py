"""The up-front memory check: a lower bound that never refuses a run that fits."""

import jax
import numpy as np
import pytest

from sslj.common import sharding
from sslj.config import for_method
from sslj.procedures import standard
from sslj.train import loop, memory
from sslj.train.step import make_train_step
from tests.conftest import tiny_config


def test_activation_bytes_of_a_dense_stack_is_the_sum_of_its_outputs():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            h = nn.Dense(7)(x.reshape((x.shape[0], -1)))
            return nn.Dense(3)(nn.relu(h))

    got = memory.activation_bytes_per_example(Net(), (2, 5))
    assert got == 4 * (7 + 3 + 3)  # two Dense outputs and the model's own output


@pytest.mark.parametrize("method,model", [("supervised", "wrn28_2"), ("pi_model", "wrn28_2"),
                                          ("supervised", "cnn_tiny")])
def test_bound_is_below_what_the_compiled_step_needs(method, model, devices):
    """XLA's own figure for the compiled step (temporaries + outputs, one device) is
    above the bound for the same batch: the check cannot refuse a step that fits."""
    c = for_method(tiny_config(model=model, batch_size=64, unlabeled_batch_size=64), method)
    exp = standard.prepare(c, devices=devices[:1])
    state = sharding.replicate(exp.mesh, loop.init_state(exp, jax.random.PRNGKey(0)))
    batch = next(loop.train_streams(exp).iterate(exp.mesh))
    step = make_train_step(exp.model, exp.method, exp.optimizer, c, exp.mesh, donate=False)
    analysis = step.lower(state, batch).compile().memory_analysis()
    compiled = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
    examples = 64 + (64 if exp.method.uses_unlabeled else 0)
    bound = memory.check_batch_fits(exp.model, exp.dataset.image_shape,
                                    {"batch_size": examples}, available=(None, "test"))
    assert bound < compiled, (bound, compiled)
    assert bound > 0.2 * compiled  # and not a vacuous one (measured 1.7-4.3x below)


def test_a_batch_over_the_memory_is_refused_with_the_fields_named():
    from sslj.models import get_model

    model = get_model("cnn_tiny", 6)
    per = memory.activation_bytes_per_example(model, (28, 28, 1))
    with pytest.raises(memory.MemoryEstimateError) as e:
        memory.check_batch_fits(model, (28, 28, 1),
                                {"batch_size": 1000, "unlabeled_batch_size": 24},
                                available=(per * 500, "available host memory"))
    msg = str(e.value)
    assert "batch_size=1000 + unlabeled_batch_size=24" in msg
    assert "lower batch_size or unlabeled_batch_size" in msg and "\n" not in msg
    assert memory.check_batch_fits(model, (28, 28, 1), {"batch_size": 1000},
                                   available=(per * 500, "x")) == per * 500
    np.testing.assert_array_less(0, per)


def test_run_with_a_batch_over_the_memory_is_one_line_and_writes_nothing(tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tmp_path / "run"
    out = subprocess.run([sys.executable, os.path.join(root, "experiments", "run.py"),
                          "--workdir", str(work), "--config.compare=supervised",
                          "--config.batch_size=10000000", "--config.num_steps=10"],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: batch_size=10000000 needs at least") and \
        "lower batch_size" in last, last
    assert not work.exists() or not any(work.iterdir())


def test_compiled_check_uses_xlas_figure_and_the_first_call_reuses_its_compilation():
    import jax.numpy as jnp

    traced = []

    @jax.jit
    def f(x):
        traced.append(1)
        return jnp.tanh(x @ x.T).sum(axis=0)  # a 512 x 512 float32 temporary: 1 MiB

    x = jnp.ones((512, 8))
    need = memory.check_compiled(f, (x,), {"batch_size": 512},
                                 available=(2**40, "available host memory"))
    assert 2**20 <= need < 4 * 2**20, need
    assert memory.check_compiled(f, (x,), {"batch_size": 512}, devices=8,
                                 available=(2**40, "x")) == 8 * need
    with pytest.raises(memory.MemoryEstimateError) as e:
        memory.check_compiled(f, (x,), {"batch_size": 512, "unlabeled_batch_size": 0},
                              available=(need - 1, "available host memory"))
    msg = str(e.value)
    assert msg.startswith("batch_size=512 + unlabeled_batch_size=0 needs 1.0 MiB per step "
                          "(XLA's compiled step), more than the 1.0 MiB of available host "
                          "memory: lower batch_size or unlabeled_batch_size"), msg
    n = len(traced)
    f(x).block_until_ready()
    assert len(traced) == n  # the call reuses the checked compilation: no new trace


def test_batch_that_passes_the_bound_but_not_the_compiled_step_is_refused_up_front(
        tmp_path, monkeypatch):
    """The lower bound lets it through; XLA's figure for the compiled step refuses it
    before the first step, in one line, and the fresh workdir is left as it was."""
    from experiments import common

    c = tiny_config(compare="supervised")
    exp = standard.prepare(for_method(c, "supervised"), devices=jax.devices()[:1])
    bound = memory.check_batch_fits(exp.model, exp.dataset.image_shape,
                                    {"batch_size": 16}, available=(None, "test"))
    monkeypatch.setattr(memory, "available_bytes",
                        lambda: (int(1.2 * bound), "available host memory"))
    work = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        common.run_config(c, str(work))
    msg = str(e.value.code)
    assert msg.startswith("error: batch_size=16 needs ") and \
        "(XLA's compiled step), more than the" in msg and msg.endswith("lower batch_size")
    assert not work.exists()
