"""Where the entry points keep JAX's persistent compilation cache (experiments/common.py)."""

import os

from experiments import common


def test_cache_folder_defaults_to_the_user_cache_keyed_by_the_machine(tmp_path):
    tag = common.machine_tag()
    assert len(tag) == 12 and tag == common.machine_tag()
    home = {"HOME": str(tmp_path)}
    assert common.compilation_cache_dir(home) == os.path.join(
        str(tmp_path), ".cache", "sslj", "jax", tag)
    xdg = {"XDG_CACHE_HOME": "/x"}
    assert common.compilation_cache_dir(xdg) == os.path.join("/x", "sslj", "jax", tag)
    assert common.compilation_cache_dir({"SSLJ_COMPILATION_CACHE": "/c"}) == f"/c/{tag}"


def test_cache_switched_off_or_set_by_the_user_is_left_alone():
    for off in ("0", "off", "OFF", "none", "no", "false"):
        assert common.compilation_cache_dir({"SSLJ_COMPILATION_CACHE": off}) is None
    # JAX's own variable wins, unchanged, over sslj's
    env = {"JAX_COMPILATION_CACHE_DIR": "/mine", "SSLJ_COMPILATION_CACHE": "/c"}
    assert common.compilation_cache_dir(env) == "/mine"
    assert common.compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": ""}) is None


def test_the_test_suite_keeps_its_own_cache():
    # conftest.py sets JAX_COMPILATION_CACHE_DIR before experiments.common runs; the entry
    # points' default must not have replaced it with the user's folder
    assert "sslj-test-jax-cache-" in os.environ["JAX_COMPILATION_CACHE_DIR"]
