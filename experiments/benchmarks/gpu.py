"""Train-step throughput on a CUDA GPU: it/s and the share of the card's peak FLOP/s.

    python experiments/benchmarks/gpu.py [--methods supervised,pi_model,vat,fixmatch]
        [--dtypes float32,bfloat16] [--rounds 3] [--steps 20] [--out DIR]

WRN-28-2 (CIFAR-shaped 32x32x3 uint8 batches of random pixels, 10 classes) at the
papers' batch sizes: `supervised` 64 labeled; `pi_model` and `vat` Oliver et al.'s 100
per step, 50 labeled + 50 unlabeled; `fixmatch` 64 labeled + mu 64 unlabeled (mu = 7, so
448 images in each of the weak and the strong view). Every step is the library's own
jitted train step (`step_throughput.build_step`: augmentation, every pass, Adam, EMA,
metrics) in the compute dtype named (`compute_dtype`: parameters stay float32). Each
case is compiled, run twice untimed, then timed for S steps in each of R interleaved
rounds (median reported). FLOPs per step are XLA's own count of the compiled step
(`cost_analysis()["flops"]`); the share of peak divides FLOP/s by the card's dense
tensor-core peak for the dtype (float32 convolutions and matmuls run as TF32 under JAX's
default precision on Ampere and later, so TF32's peak is the float32 reference), from
`PEAK_TFLOPS` by device kind (a card not listed gets no share; `--peak-tflops` sets it).
Goal of issue 22: FixMatch (mu = 7, batch 64) above 100 it/s on an H100.

One device (the first): the figures are per card. Refuses to run off a GPU (the CPU's
numbers are `vs_pytorch.py`'s and `step_throughput.py`'s) unless `--allow-cpu`, which
the test suite uses with `--model cnn_tiny --steps 1` to check that the script runs.
Output: a table on stdout and `gpu.{md,json}` in a fresh `runs/benchmarks/<time>/`
folder or `--out`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from experiments import common  # noqa: E402,F401  (XLA flags before JAX starts)
from experiments.benchmarks.step_throughput import build_step, write_report  # noqa: E402

# dense tensor-core TFLOP/s (no sparsity) by substring of jax's device_kind: TF32 (the
# float32 reference) and bfloat16; vendor data sheets (SXM parts where both exist)
PEAK_TFLOPS = {
    "H200": {"float32": 494.7, "bfloat16": 989.4},
    "H100": {"float32": 494.7, "bfloat16": 989.4},
    "A100": {"float32": 156.0, "bfloat16": 312.0},
    "L40S": {"float32": 183.0, "bfloat16": 362.0},
    "A10G": {"float32": 35.0, "bfloat16": 70.0},
    "L4": {"float32": 60.0, "bfloat16": 121.0},
    "V100": {"float32": 15.7, "bfloat16": None},  # no TF32 / bf16 tensor cores
    "T4": {"float32": 8.1, "bfloat16": None},
}

# method -> (labeled batch, unlabeled batch): the papers' sizes (module docstring)
BATCHES = {"supervised": (64, None), "pi_model": (50, 50), "mean_teacher": (50, 50),
           "vat": (50, 50), "vat_fd": (50, 50), "fixmatch": (64, 7 * 64)}


def peak_tflops(kind: str, dtype: str) -> float | None:
    for name, peaks in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return peaks.get(dtype)
    return None


def compile_step(fn, *args):
    """(`fn` (jitted) compiled for `args`, XLA's FLOP count of one call or None when the
    backend gives none)."""
    compiled = fn.lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return compiled, (float(flops) if flops else None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wrn28_2")
    parser.add_argument("--methods", default="supervised,pi_model,vat,fixmatch",
                        help=f"comma list of {sorted(BATCHES)}")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps timed per round")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the card's peak for every dtype (default: PEAK_TFLOPS)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run off a GPU too (a check that the script works)")
    parser.add_argument("--out", default=None, help="folder for gpu.{md,json} (default: a "
                        "fresh runs/benchmarks/<time> folder)")
    args = parser.parse_args(argv)
    methods, dtypes = args.methods.split(","), args.dtypes.split(",")
    bad = [m for m in methods if m not in BATCHES]
    if bad:
        parser.error(f"--methods: unknown {bad}; allowed: {sorted(BATCHES)}")
    bad = [d for d in dtypes if d not in ("float32", "bfloat16")]
    if bad:
        parser.error(f"--dtypes: unknown {bad}; allowed: float32, bfloat16")
    import jax
    import numpy as np

    device = jax.devices()[0]
    if device.platform != "gpu" and not args.allow_cpu:
        sys.exit(f"error: no GPU here (JAX's default backend is {device.platform}); this "
                 "benchmark is for a CUDA machine (--allow-cpu runs it anyway)")
    kind = getattr(device, "device_kind", device.platform)
    cases = {}
    for dtype in dtypes:
        for method in methods:
            labeled, unlabeled = BATCHES[method]
            print(f"compiling {method} {dtype} ...", file=sys.stderr, flush=True)
            step, state, batch, images = build_step(args.model, method, labeled,
                                                    dtype=dtype, unlabeled_batch=unlabeled,
                                                    devices=[device])
            step, flops = compile_step(step, state, batch)
            for _ in range(2):
                state, _ = step(state, batch)
            jax.block_until_ready(state)
            cases[(method, dtype)] = {"step": step, "state": state, "batch": batch,
                                      "images": images, "flops": flops, "times": []}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for case in cases.values():
            state = case["state"]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                state, _ = case["step"](state, case["batch"])
            jax.block_until_ready(state)
            case["times"].append((time.perf_counter() - t0) / args.steps)
            case["state"] = state
    rows = []
    for (method, dtype), case in cases.items():
        sec = float(np.median(case["times"]))
        peak = args.peak_tflops or peak_tflops(kind, dtype)
        tflops = case["flops"] / sec / 1e12 if case["flops"] else None
        rows.append({"model": args.model, "method": method, "dtype": dtype,
                     "batch": BATCHES[method], "images": case["images"], "s_per_step": sec,
                     "it_per_s": 1.0 / sec, "images_per_s": case["images"] / sec,
                     "gflop_per_step": case["flops"] / 1e9 if case["flops"] else None,
                     "tflop_per_s": tflops, "peak_tflops": peak,
                     "share_of_peak": tflops / peak if tflops and peak else None,
                     "device_kind": kind,
                     "jax": jax.__version__})
    lines = [f"{args.model} train steps on one {kind} (jax {jax.__version__}), median of "
             f"{args.rounds} rounds x {args.steps} steps",
             "", "| method | dtype | labeled + unlabeled | it/s | images/s | GFLOP/step | "
             "TFLOP/s | share of peak |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lab, unl = r["batch"]
        share = f"{100 * r['share_of_peak']:.1f} %" if r["share_of_peak"] else "n/a"
        gflop = f"{r['gflop_per_step']:.0f}" if r["gflop_per_step"] else "n/a"
        tfl = f"{r['tflop_per_s']:.1f}" if r["tflop_per_s"] else "n/a"
        lines.append(f"| {r['method']} | {r['dtype']} | {lab} + {unl or 0} | "
                     f"{r['it_per_s']:.1f} | {r['images_per_s']:.0f} | {gflop} | {tfl} | "
                     f"{share} |")
    write_report(args.out, "gpu", rows, "\n".join(lines))


if __name__ == "__main__":
    main()
