"""The benchmark scripts run (their timings are never tested: README, Benchmarks)."""

import json

import pytest

from experiments.benchmarks import gpu


def test_gpu_benchmark_runs_and_reports(tmp_path, capsys):
    gpu.main(["--allow-cpu", "--model", "cnn_tiny", "--methods", "supervised,pi_model",
              "--dtypes", "float32", "--rounds", "1", "--steps", "1", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "gpu.json").read_text())
    assert [(r["method"], r["dtype"]) for r in rows] == [("supervised", "float32"),
                                                         ("pi_model", "float32")]
    for r in rows:
        assert r["it_per_s"] > 0 and r["gflop_per_step"] > 0
        assert r["share_of_peak"] is None  # no peak known for a CPU
    assert rows[1]["images"] == 100  # Oliver's 50 + 50
    assert "| supervised | float32 | 64 + 0 |" in capsys.readouterr().out


def test_gpu_benchmark_refuses_a_cpu_and_bad_arguments():
    with pytest.raises(SystemExit, match="no GPU here"):
        gpu.main(["--methods", "supervised"])
    with pytest.raises(SystemExit):
        gpu.main(["--methods", "fixmatch,bogus", "--allow-cpu"])
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert gpu.peak_tflops("NVIDIA H200", "float32") == 494.7
    assert gpu.peak_tflops("cpu", "float32") is None


@pytest.mark.slow
def test_compile_time_benchmark_measures_cold_and_cached(tmp_path):
    from experiments.benchmarks import compile_time

    compile_time.main(["--models", "cnn_tiny", "--methods", "supervised", "--batch", "8",
                       "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "compile_time.json").read_text())
    assert row["cache_entries"] >= 1  # the cold process stored its step
    # JAX's own cache events, not a timing: the cold process compiled (a miss, no hit),
    # the warm one loaded the stored executable
    assert row["cache_hits"][0] == 0 and row["cache_misses"][0] >= 1
    assert row["cache_hits"][1] >= 1
    assert row["compile_cold_s"] > 0 and row["compile_warm_s"] > 0
    assert "| cnn_tiny | supervised |" in (tmp_path / "compile_time.md").read_text()
    with pytest.raises(SystemExit, match="--models"):
        compile_time.main(["--models", "bogus"])


def test_conv_grad_filter_gradient_variants_match_float64():
    """Every way conv_grad.py writes the 3x3 filter gradient equals the float64 sum over
    (n, h, w) of the padded input's shifts times g, and XLA's own (jax.grad) does too."""
    import jax
    import numpy as np

    from experiments.benchmarks import conv_grad

    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 5, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    g = rng.normal(size=(4, 5, 5, 2)).astype(np.float32)
    exact = conv_grad.filter_grad_float64(x, g)
    assert exact.shape == (3, 3, 3, 2)
    # the float64 reference is the gradient of sum(conv * g) itself (an independent route)
    with jax.enable_x64(True):
        auto = jax.grad(lambda w: (conv_grad.conv3x3(x.astype(np.float64), w) * g).sum())(
            w.astype(np.float64))
    np.testing.assert_allclose(exact, np.asarray(auto), rtol=1e-12, atol=1e-12)
    # each entry is a float32 sum of n = 4 * 5 * 5 products: whatever the summation order,
    # its error is at most n * u * sum |x g| (u = 2^-24, float32's unit roundoff; the
    # products themselves are exact in float32 to within one u more)
    n = 4 * 5 * 5
    bound = (n + 1) * 2.0 ** -24 * conv_grad.filter_grad_float64(np.abs(x), np.abs(g))
    for name, f in conv_grad.filter_grad_variants().items():
        err = np.abs(np.asarray(jax.jit(f)(x, w, g), np.float64) - exact)
        assert np.all(err <= bound), (name, float((err / bound).max()))


@pytest.mark.slow
def test_conv_grad_benchmark_runs_and_reports(tmp_path):
    from experiments.benchmarks import conv_grad

    conv_grad.main(["--shapes", "4x2", "--batch", "2", "--rounds", "1", "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "conv_grad.json").read_text())
    assert row["shape"] == "4x4x2" and {"xla forward", "xla filter grad",
                                        "filter grad: rows3"} <= set(row["ms"])
    assert max(row["rel_err"].values()) < 1e-5
    with pytest.raises(SystemExit, match="--shapes"):
        conv_grad.main(["--shapes", "32"])


@pytest.mark.slow
def test_input_share_benchmark_runs_and_reports(tmp_path):
    from experiments.benchmarks import input_share

    input_share.main(["--cases", "digits:cnn_tiny:supervised", "--rounds", "2", "--steps", "2",
                      "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "input_share.json").read_text())
    assert row["case"] == "digits:cnn_tiny:supervised"
    assert set(row["ms"]) == set(input_share.MODES) and min(row["ms"].values()) > 0
    assert all(len(v) == 2 for v in row["rounds_ms"].values())
    with pytest.raises(SystemExit, match="source:model:method"):
        input_share.main(["--cases", "digits:cnn_tiny"])


@pytest.mark.slow
def test_icn_benchmark_steps_run():
    """The ICN cases of vs_pytorch.py / compile_time.py: one reclassification step and
    one sampler call on the paper's net (step_throughput.build_icn_step)."""
    import jax
    import numpy as np

    from experiments.benchmarks import step_throughput as st

    step, state, batch, images = st.build_icn_step("icn_reclassify", 8)  # 8 test devices
    state, metrics = step(state, batch)
    assert images == 16 and np.isfinite(float(metrics["losses/icn"]))
    step, state, batch, images = st.build_icn_step("icn_sampler", 8, sampler_steps=2)
    before = jax.device_get(state.extra["samples"])
    state, _ = step(state, batch)
    samples = jax.device_get(state.extra["samples"])
    assert samples.shape == before.shape == (8, 28, 28, 1) and np.abs(samples).max() <= 1.0
    assert not np.array_equal(samples, before)
    with pytest.raises(ValueError, match="allowed"):
        st.build_icn_step("icn_bogus", 8)


@pytest.mark.slow
def test_vat_flop_count_reports_every_pass_and_step(tmp_path):
    """`vat_cost.py --flops` (XLA's own FLOP count, nothing timed): the exact probe's
    forward-over-reverse pass is about twice the finite-difference probe's (each linear op
    gets one tangent op of its own size), and the K = 0 step is its two weight-gradient
    passes (clean 2B + adversarial B) plus the optimizer's few FLOPs."""
    from experiments.benchmarks import vat_cost

    vat_cost.main(["--flops", "--models", "cnn_tiny", "--batch", "8", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "vat_flops.json").read_text())
    by = {r["what"]: r["forwards"] for r in rows}
    assert set(by) == set(vat_cost.PASSES) | set(vat_cost.STEPS)
    assert by["fwd"] == 1.0 and by["fwd_2B"] == pytest.approx(2.0, rel=0.05)
    assert 1.8 < by["hvp_input"] / by["grad_input"] < 2.2
    assert by["vat_fd_k0"] == pytest.approx(by["grad_params_2B"] + by["grad_params"],
                                            rel=0.05)
    assert by["vat"] > by["vat_fd"] > by["vat_fd_k0"] > by["supervised"]
