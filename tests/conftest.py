"""Eight fake CPU devices for the whole suite, set before JAX starts."""

import os
import sys

os.environ["XLA_FLAGS"] = " ".join(filter(None, [
    os.environ.get("XLA_FLAGS", ""),
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_experimental_ynn_fusion_type=",
]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
    assert jax.device_count() == 8, "conftest must set 8 fake CPU devices before JAX starts"
    return jax.devices()


def tiny_config(**overrides):
    """The embedded default shrunk to a few fast steps (cnn_tiny, tiny eval)."""
    from experiments.configs.default import get_config
    from sslj.config import set_fields

    c = get_config()
    c.model = "cnn_tiny"
    c.num_steps = 6
    c.log_every = 2
    c.eval_every = 3
    c.checkpoint_every = 3
    c.batch_size = 16
    c.unlabeled_batch_size = 16
    c.eval_batch_size = 200
    c.ramp.steps = 4
    c.optimizer.decay_steps = 5
    c.progress_bar = False
    c.compare = ""
    return set_fields(c, overrides)


def short_run_config(run: str, steps: int = 300):
    """A small training run of `run` (a run name) that learns: TinyCNN, `steps` steps of
    32 labeled + 32 unlabeled images, Adam 3e-3 for every method (no per-method
    learning rates: at this length Oliver's 3e-4 does not train), the consistency ramp
    over 40 % and the learning-rate drop at 80 % of the steps, 4 evaluations."""
    from sslj.config import for_method

    c = tiny_config()
    c.method_overrides = type(c)()
    c = for_method(c, run)
    c.num_steps = steps
    c.batch_size = c.unlabeled_batch_size = 32
    c.eval_every = steps // 4
    c.log_every = 50
    c.checkpoint_every = steps
    c.ramp.steps = int(0.4 * steps)
    c.optimizer.decay_steps = int(0.8 * steps)
    c.tensorboard = False
    return c
