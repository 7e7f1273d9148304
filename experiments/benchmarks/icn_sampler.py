"""The ICN net's convolutions, the compiled sampler and the reclassification step, with
`conv_impl` "xla" (nn.Conv) against "patches" (im2col + one matmul, the patches from
`lax.conv_general_dilated_patches`) and "slices" (the same, the patches from strided
slices), timed side by side.

    python experiments/benchmarks/icn_sampler.py [--widths full,quarter] [--samples 200]
        [--steps 10] [--rounds 5] [--impls xla,patches,slices] [--out DIR]

Per (width, conv_impl), all compiled first, then timed in interleaved rounds (median):
  * sampler: one call of the jitted chain of `sslj.icn.sampler` (Adam, stop rule 3,
    `--steps` steps) over `--samples` samples: sample-steps per second; sampler_unroll5
    the same with 5 steps per while-loop iteration (`icn.unroll`);
  * grad_input: one forward + backward-to-input over the samples (what a sampler step
    costs);
  * reclassify: one ICN train step (64 real + 64 pseudo-negative images, softmax Eq. 9,
    SGD momentum) through `sslj.train.step.make_train_step`.
Prints the table with the xla / patches ratio and the machine's 1-minute load average,
and writes icn_sampler.{md,json} to `--out` (default: a fresh folder under /tmp, so the
tracked results in experiments/benchmarks/results/icn/ change only when asked).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from experiments import common  # noqa: E402,F401  (sets XLA flags before JAX starts)
from experiments.benchmarks.step_throughput import write_report  # noqa: E402

WIDTHS = {"full": (64, 128, 256, 512), "quarter": (16, 32, 64, 128)}


def build(width: str, impl: str, samples: int, steps: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.configs.icn import get_config
    from sslj.config import for_method
    from sslj.icn.method import ICNReclassification
    from sslj.icn.sampler import SamplerSpec, make_synthesizer
    from sslj.models import get_model
    from sslj.train.optim import make_optimizer
    from sslj.train.state import create_train_state
    from sslj.train.step import make_train_step

    model = get_model("icn_mnist", 10, widths=WIDTHS[width], conv_impl=impl)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    classes = jnp.arange(samples, dtype=jnp.int32) % 10
    spec = SamplerSpec(kind="adam", stop="steps", max_steps=steps)
    synth = make_synthesizer(model, spec, (28, 28, 1))
    synth5 = make_synthesizer(model, SamplerSpec(kind="adam", stop="steps", max_steps=steps,
                                                 unroll=5), (28, 28, 1))
    x = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (samples, 28, 28, 1))
    grad_input = jax.jit(jax.grad(lambda x: jnp.sum(jnp.take_along_axis(
        model.apply(variables, x), classes[:, None], 1))))

    cfg = for_method(get_config("mnist5k-500"), "supervised+icn")
    cfg.num_steps = 1000
    opt = make_optimizer(cfg.optimizer, 1000)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    step = make_train_step(model, ICNReclassification(cfg), opt, cfg, mesh)
    state = create_train_state(model, opt, jax.random.PRNGKey(0), (28, 28, 1))
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8),
             "label": rng.integers(0, 10, 64).astype(np.int32),
             "neg_image": rng.normal(0, 0.3, (64, 28, 28, 1)).astype(np.float32),
             "neg_class": rng.integers(0, 10, 64).astype(np.int32),
             "neg_weight": np.ones(64, np.float32)}
    return {"sampler": lambda: synth(variables, classes, jax.random.PRNGKey(2)),
            "sampler_unroll5": lambda: synth5(variables, classes, jax.random.PRNGKey(2)),
            "grad_input": lambda: grad_input(x)}, (step, state, batch)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="full,quarter")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--impls", default="xla,patches,slices",
                        help="conv_impl values to compare (sslj.models.CONV_IMPLS)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import jax
    import numpy as np

    out = args.out or tempfile.mkdtemp(prefix="icn_sampler_")
    cases = {}
    for width in args.widths.split(","):
        for impl in args.impls.split(","):
            print(f"compiling {width} / {impl} ...", flush=True)
            thunks, (step, state, batch) = build(width, impl, args.samples, args.steps)
            t0 = time.perf_counter()
            for name, fn in thunks.items():
                jax.block_until_ready(fn())
                cases[(width, impl, name)] = [fn, []]
            state, _ = step(state, batch)
            jax.block_until_ready(state)
            holder = {"state": state}

            def reclassify(holder=holder, step=step, batch=batch):
                holder["state"], m = step(holder["state"], batch)
                return m

            cases[(width, impl, "reclassify")] = [reclassify, []]
            print(f"  compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        for case in cases.values():
            fn, times = case
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
    load = os.getloadavg()[0]
    rows = []
    for (width, impl, name), (_, times) in cases.items():
        sec = float(np.median(times))
        ref = float(np.median(cases[(width, "xla", name)][1])) if (
            width, "xla", name) in cases else float("nan")
        row = {"width": width, "conv_impl": impl, "what": name, "s": sec,
               "xla_over_this": ref / sec, "load_avg_1min": load}
        if name.startswith("sampler"):
            row["sample_steps_per_s"] = args.samples * args.steps / sec
        rows.append(row)
    lines = [f"ICN net: conv_impl {args.impls} ({jax.devices()[0].platform}, "
             f"{args.samples} samples x {args.steps} sampler steps, reclassify = one step of "
             f"64 + 64 images; median of {args.rounds} interleaved rounds; 1-minute load "
             f"average after the rounds {load:.2f})", "",
             "| width | conv | what | ms | sample-steps/s | xla time / this |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        sps = f"{r['sample_steps_per_s']:.0f}" if "sample_steps_per_s" in r else ""
        lines.append(f"| {r['width']} | {r['conv_impl']} | {r['what']} | {1000 * r['s']:.1f} "
                     f"| {sps} | {r['xla_over_this']:.2f} |")
    write_report(out, "icn_sampler", rows, "\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
