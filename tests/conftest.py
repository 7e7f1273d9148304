"""Eight fake CPU devices for the whole suite, set before JAX starts; one compilation
cache shared by the test processes of a run."""

import os
import shutil
import sys
import tempfile
import uuid

os.environ["XLA_FLAGS"] = " ".join(filter(None, [
    os.environ.get("XLA_FLAGS", ""),
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_experimental_ynn_fusion_type=",
]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Many tests compile the same step (same model, method and shapes); JAX's persistent
# cache lets the second compilation load the first's executable. Its key holds the HLO,
# the compile options (devices included), the jax version and XLA_FLAGS, so runs at
# another instruction set (`--xla_cpu_max_isa`) compile their own. One directory per test
# run (named by the controlling process, whose environment the xdist workers inherit),
# removed when the run ends; a cache the user configured is left alone.
if "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ["SSLJ_TEST_RUN_ID"] = uuid.uuid4().hex
_CACHE_DIR = os.path.join(tempfile.gettempdir(),
                          f"sslj-test-jax-cache-{os.environ['SSLJ_TEST_RUN_ID']}")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import pytest  # noqa: E402


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without -n)
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def shared_once(tmp_path_factory, name: str, compute):
    """`compute()`'s JSON result, computed by one test process of the run and read by the
    others (xdist gives every worker its own module fixtures, so a baseline run that two
    workers need would otherwise train twice). `compute` gets a fresh workdir."""
    import json

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the run's directory, shared by its workers
    path = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not path.is_file():
            workdir = root / f"{name}.run"
            workdir.mkdir()
            path.write_text(json.dumps(compute(str(workdir))))
        return json.loads(path.read_text())


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
