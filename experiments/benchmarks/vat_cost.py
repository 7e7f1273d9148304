"""Where a VAT step's time goes: the step against its own passes, timed side by side.

    python experiments/benchmarks/vat_cost.py [--models cnn_small,wrn28_2] [--batch 64]
        [--rounds 5] [--steps 5] [--flops]

A forward/backward count predicts a VAT step (K = 1) at ~13 forwards of one batch of B
images against supervised's ~3. This script measures each piece in the same interleaved
rounds, in units of one measured training-mode forward over B images (`fwd`):

  passes (jitted alone, B images unless marked 2B, training-mode BatchNorm):
    fwd             forward
    fwd_2B          forward over 2B images (the clean pass's size)
    grad_params     forward + backward to the weights (the supervised step's work)
    grad_params_2B  the same over 2B images
    grad_input      forward + backward to the input only (the probe's work)
    hvp_input       forward-over-reverse of grad_input at r = 0 (the exact HVP probe's work)
  whole train steps (optimizer, EMA, metrics included):
    supervised, vat_fd (finite-difference probe, K = 1, the loop traced straight: the
    default `vat.unroll`), vat_fd_fori (the same in `lax.fori_loop`), vat_fd_k0 (K = 0:
    no reference pass and no probe, r_adv = eps * normalise(d0)), vat (exact HVP probe).

vat_fd - vat_fd_k0 is what the power iteration costs; set against fwd + grad_input (the
reference pass and the probe) it says whether the probe costs more than its passes.
vat_fd_k0 set against grad_params_2B + grad_params says the same of the rest of the step.

`--flops` times nothing: it prints XLA's FLOP count of each compiled pass and step
(`cost_analysis()`), in the same unit (fwd's FLOPs), so the forward/backward counts of
experiments/benchmarks/README.md can be checked against the compiler's own arithmetic:
hvp_input against grad_input is what the exact probe adds, in FLOPs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from experiments.benchmarks.step_throughput import SHAPES, build_step, write_report  # noqa: E402,E501

STEPS = ("supervised", "vat_fd", "vat_fd_fori", "vat_fd_k0", "vat")
PASSES = ("fwd", "fwd_2B", "grad_params", "grad_params_2B", "grad_input", "hvp_input")


def build_passes(model_name, batch):
    """Jitted single passes over the network with random weights: name -> (jitted
    function, its arguments)."""
    import jax
    import jax.numpy as jnp
    import optax

    from sslj.losses import kl_divergence
    from sslj.models import get_model

    model = get_model(model_name, 10)
    shape = SHAPES[model_name]
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)), train=False)
    params, stats = variables["params"], variables["batch_stats"]
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    x = {n: jax.random.uniform(keys[0], (n, *shape), minval=-1.0, maxval=1.0)
         for n in (batch, 2 * batch)}
    labels = {n: jax.random.randint(keys[1], (n,), 0, 10) for n in (batch, 2 * batch)}
    reference = jax.random.normal(keys[2], (batch, 10))

    def logits(p, images):
        out, _ = model.apply({"params": p, "batch_stats": stats}, images, train=True,
                             mutable=["batch_stats"])
        return out

    def xe(p, images, y):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits(p, images), y))

    fwd = jax.jit(logits)
    grad_params = jax.jit(jax.grad(xe))
    # the finite-difference probe's work: grad over r of sum_i KL(p(x_i + r_i) || ref_i)
    grad_input = jax.jit(jax.grad(
        lambda r, p, images: jnp.sum(kl_divergence(logits(p, images + r), reference))))
    # the exact probe's work: the jvp of that gradient at r = 0 along a direction d
    hvp_input = jax.jit(lambda r, d, p, images: jax.jvp(
        lambda rr: grad_input(rr, p, images), (r,), (d,))[1])
    r0 = jnp.full_like(x[batch], 1e-6)
    b, b2 = batch, 2 * batch
    return {"fwd": (fwd, (params, x[b])),
            "fwd_2B": (fwd, (params, x[b2])),
            "grad_params": (grad_params, (params, x[b], labels[b])),
            "grad_params_2B": (grad_params, (params, x[b2], labels[b2])),
            "grad_input": (grad_input, (r0, params, x[b])),
            "hvp_input": (hvp_input, (jnp.zeros_like(x[b]), x[b] / 10.0, params, x[b]))}


def xla_flops(fn, args) -> float:
    """XLA's FLOP count of `fn(*args)` as compiled for this backend."""
    from experiments.benchmarks.gpu import compile_step

    _, flops = compile_step(fn, *args)
    if flops is None:
        raise SystemExit("vat_cost.py --flops: XLA gives no FLOP count on this backend")
    return flops


def flops_report(models, batch) -> tuple[list[dict], str]:
    """XLA's FLOP count of every pass and step, in units of fwd's (nothing is timed)."""
    import jax

    rows = []
    for model in models:
        for name, (fn, args) in build_passes(model, batch).items():
            rows.append({"model": model, "what": name, "batch": batch, "kind": "pass",
                         "flops": xla_flops(fn, args)})
        for name in STEPS:  # on one device: a sharded step's count is one shard's
            step, state, data, _ = build_step(model, name, batch, devices=jax.devices()[:1])
            rows.append({"model": model, "what": name, "batch": batch, "kind": "step",
                         "flops": xla_flops(step, (state, data))})
    unit = {r["model"]: r["flops"] for r in rows if r["what"] == "fwd"}
    for r in rows:
        r["forwards"] = r["flops"] / unit[r["model"]]
    by = {(r["model"], r["what"]): r["forwards"] for r in rows}
    lines = [f"VAT FLOP count ({jax.devices()[0].platform}, B = {batch}; XLA's "
             "cost_analysis of each compiled pass and step; unit: fwd's FLOPs)", "",
             "| model | what | GFLOP | forwards |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['what']} | {r['flops'] / 1e9:.3f} | {r['forwards']:.2f} |"
              for r in rows]
    lines.append("")
    for model in models:
        g = lambda k, model=model: by[(model, k)]  # noqa: E731
        lines.append(
            f"{model}: hvp_input / grad_input = {g('hvp_input') / g('grad_input'):.2f}; "
            f"vat_fd / supervised = {g('vat_fd') / g('supervised'):.2f}, "
            f"vat / supervised = {g('vat') / g('supervised'):.2f} (in FLOPs).")
    return rows, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cnn_small,wrn28_2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="calls timed per round")
    parser.add_argument("--flops", action="store_true", help="print XLA's FLOP counts "
                        "of the passes and steps instead of timing them")
    parser.add_argument("--out", default=None, help="folder for the .md / .json report "
                        "(default: a fresh runs/benchmarks/<time> folder; the tracked "
                        "results/ only when named)")
    args = parser.parse_args(argv)
    import jax
    import numpy as np

    if args.flops:
        rows, text = flops_report(args.models.split(","), args.batch)
        write_report(args.out, "vat_flops", rows, text)
        return
    cases = {}
    for model in args.models.split(","):
        for name, (fn, fn_args) in build_passes(model, args.batch).items():
            def thunk(fn=fn, fn_args=fn_args):
                return fn(*fn_args)

            jax.block_until_ready(thunk())  # compile
            cases[(model, name)] = [thunk, []]
        for name in STEPS:
            step, state, batch, _ = build_step(model, name, args.batch)
            state, _ = step(state, batch)  # compile
            jax.block_until_ready(state)
            holder = {"state": state}

            def run_step(step=step, batch=batch, holder=holder):
                holder["state"], _ = step(holder["state"], batch)
                return holder["state"]

            cases[(model, name)] = [run_step, []]
    for _ in range(args.rounds):
        for thunk, times in cases.values():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                out = thunk()
            jax.block_until_ready(out)
            times.append((time.perf_counter() - t0) / args.steps)
    rows = []
    for (model, name), (_, times) in cases.items():
        sec = float(np.median(times))
        unit = float(np.median(cases[(model, "fwd")][1]))
        rows.append({"model": model, "what": name, "batch": args.batch, "ms": 1000 * sec,
                     "forwards": sec / unit, "kind": "pass" if name in PASSES else "step"})
    by = {(r["model"], r["what"]): r["forwards"] for r in rows}
    lines = [f"VAT cost decomposition ({jax.devices()[0].platform}, B = {args.batch}, median "
             f"of {args.rounds} interleaved rounds; unit: one training-mode forward over B)",
             "", "| model | what | ms | forwards |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['what']} | {r['ms']:.1f} | {r['forwards']:.2f} |"
              for r in rows]
    lines.append("")
    for model in args.models.split(","):
        g = lambda k, model=model: by[(model, k)]  # noqa: E731
        lines += [
            f"{model}: power iteration (vat_fd - vat_fd_k0) = "
            f"{g('vat_fd') - g('vat_fd_k0'):.2f} against its passes fwd + grad_input = "
            f"{1 + g('grad_input'):.2f} (in lax.fori_loop: "
            f"{g('vat_fd_fori') - g('vat_fd_k0'):.2f});",
            f"  rest of the VAT step (vat_fd_k0) = {g('vat_fd_k0'):.2f} against "
            f"grad_params_2B + grad_params = {g('grad_params_2B') + g('grad_params'):.2f};",
            f"  supervised step = {g('supervised'):.2f} against grad_params = "
            f"{g('grad_params'):.2f}; vat_fd / supervised = "
            f"{g('vat_fd') / g('supervised'):.2f}, vat / supervised = "
            f"{g('vat') / g('supervised'):.2f}."]
    write_report(args.out, "vat_cost", rows, "\n".join(lines))


if __name__ == "__main__":
    main()
