"""Where XLA:CPU's 3x3 convolutions lose to PyTorch: each direction timed on its own.

    python experiments/benchmarks/conv_grad.py [--batch 128] [--rounds 7] [--out DIR]

At WRN-28-2's three stage shapes (32x32x32, 16x16x64, 8x8x128; 3x3, stride 1, SAME,
NHWC / HWIO, float32), times the forward convolution, the gradient to the input and the
gradient to the kernel (the filter gradient) as XLA compiles them for `jax.grad`, and the
same three in PyTorch (`torch.nn.functional.conv2d`, `torch.nn.grad.conv2d_input`,
`torch.nn.grad.conv2d_weight`, channels_last; the `bench` extra) when it is installed,
and both frameworks' forward + both gradients as a training step runs them (`jax.vjp`;
autograd's `backward`): `conv2d_input` alone is not autograd's path and can be slower.
It also times ways of writing the filter gradient that XLA might run faster:
  * `rows3`: x's three vertical shifts stacked on channels (3 C_in) and g's three
    horizontal shifts (3 C_out), one (3 C_in x M) @ (M x 3 C_out) matmul;
  * `im2col`: the nine-shift patches (M x 9 C_in), one matmul with g;
  * `nine`: nine (C_in x M) @ (M x C_out) matmuls, one per kernel tap;
  * `split2`: XLA's filter gradient over two halves of the batch, summed.
Every variant is checked against a float64 NumPy filter gradient first. Variants run in
interleaved rounds (median of rounds 2..n, 5 calls each); the machine's 1-minute load
average is recorded per shape. Never a timed test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from experiments import common  # noqa: E402,F401  (XLA flags before JAX starts)

SHAPES = ((32, 32), (16, 64), (8, 128))  # WRN-28-2's stages: (height = width, channels)
DN = ("NHWC", "HWIO", "NHWC")


def conv3x3(x, w):
    """The 3x3 stride-1 SAME convolution, NHWC / HWIO, as XLA runs it."""
    from jax import lax
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)


def filter_grad_variants() -> dict:
    """name -> f(x, w, g) = d sum(conv(x, w) * g) / dw, shape (3, 3, C_in, C_out)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    contract0 = (((0,), (0,)), ((), ()))

    def xla(x, w, g):
        return jax.vjp(lambda w: conv3x3(x, w), w)[1](g)[0]

    def rows3(x, w, g):
        _, h, wd, c = x.shape
        co = g.shape[-1]
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        a = jnp.concatenate([xp[:, i:i + h] for i in range(3)], -1)  # (kh, ci) on channels
        gp = jnp.pad(g, ((0, 0), (0, 0), (2, 2), (0, 0)))
        b = jnp.concatenate([gp[:, :, 2 - j:4 - j + wd] for j in range(3)], -1)  # (kw, co)
        d = lax.dot_general(a.reshape(-1, 3 * c), b.reshape(-1, 3 * co), contract0)
        return d.reshape(3, c, 3, co).transpose(0, 2, 1, 3)

    def im2col(x, w, g):
        _, h, wd, c = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        p = jnp.concatenate([xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3)], -1)
        d = lax.dot_general(p.reshape(-1, 9 * c), g.reshape(-1, g.shape[-1]), contract0)
        return d.reshape(3, 3, c, g.shape[-1])

    def nine(x, w, g):
        _, h, wd, c = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        g2 = g.reshape(-1, g.shape[-1])
        return jnp.stack([jnp.stack([
            lax.dot_general(xp[:, i:i + h, j:j + wd].reshape(-1, c), g2, contract0)
            for j in range(3)]) for i in range(3)])

    def split2(x, w, g):
        half = x.shape[0] // 2
        return xla(x[:half], w, g[:half]) + xla(x[half:], w, g[half:])

    return {"xla": xla, "rows3": rows3, "im2col": im2col, "nine": nine, "split2": split2}


def filter_grad_float64(x, g):
    """The filter gradient in float64 NumPy: sum over (n, h, w) of the padded input's
    (i, j)-shift times g."""
    import numpy as np

    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    h, wd = x.shape[1:3]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.stack([np.stack([np.einsum("nhwc,nhwd->cd", xp[:, i:i + h, j:j + wd], g)
                               for j in range(3)]) for i in range(3)])


def _torch_cases(x, w, g):
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(os.cpu_count() or 1)
    cl = torch.channels_last
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=cl)
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    gt = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous(memory_format=cl)
    grad = torch.nn.grad
    xr, wr = xt.clone().requires_grad_(), wt.clone().requires_grad_()

    def both():  # autograd: forward, then both gradients in one backward call
        torch.nn.functional.conv2d(xr, wr, padding=1).backward(gt)
        xr.grad = wr.grad = None

    return {"torch forward": lambda: torch.nn.functional.conv2d(xt, wt, padding=1),
            "torch input grad": lambda: grad.conv2d_input(xt.shape, wt, gt, padding=1),
            "torch filter grad": lambda: grad.conv2d_weight(xt, wt.shape, gt, padding=1),
            "torch forward + both grads": both}


def measure(hw: int, c: int, batch: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, hw, hw, c)).astype(np.float32)
    w = (rng.normal(size=(3, 3, c, c)) / np.sqrt(9 * c)).astype(np.float32)
    g = rng.normal(size=(batch, hw, hw, c)).astype(np.float32)
    xj, wj, gj = map(jnp.asarray, (x, w, g))
    exact = filter_grad_float64(x, g)
    scale = float(np.max(np.abs(exact)))
    cases, errors = {}, {}
    fwd = jax.jit(conv3x3)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv3x3(x, w), x)[1](g)[0])
    both = jax.jit(lambda x, w, g: jax.vjp(conv3x3, x, w)[1](g))
    cases["xla forward"] = lambda: jax.block_until_ready(fwd(xj, wj))
    cases["xla forward + both grads"] = lambda: jax.block_until_ready(both(xj, wj, gj))
    cases["xla input grad"] = lambda: jax.block_until_ready(dx(xj, wj, gj))
    for name, f in filter_grad_variants().items():
        fj = jax.jit(f)
        errors[name] = float(np.max(np.abs(np.asarray(fj(xj, wj, gj)) - exact))) / scale
        if errors[name] > 1e-5:  # float32 sums of M = batch * hw * hw products: ~1e-6
            raise SystemExit(f"{name}: filter gradient off by {errors[name]:.1e} (relative)")
        label = "xla filter grad" if name == "xla" else f"filter grad: {name}"
        cases[label] = lambda fj=fj: jax.block_until_ready(fj(xj, wj, gj))
    cases.update(_torch_cases(x, w, g))
    for f in cases.values():  # compile and warm up
        f()
    times = {k: [] for k in cases}
    for _ in range(rounds):
        for k, f in cases.items():
            t = time.perf_counter()
            for _ in range(5):
                f()
            times[k].append((time.perf_counter() - t) / 5 * 1e3)
    ms = {k: float(np.median(v[1:] if len(v) > 1 else v)) for k, v in times.items()}
    return {"shape": f"{hw}x{hw}x{c}", "batch": batch, "ms": ms, "rel_err": errors,
            "rounds_ms": times, "load_avg_1min": os.getloadavg()[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shapes", default=",".join(f"{h}x{c}" for h, c in SHAPES),
                        help="comma-separated <size>x<channels>, e.g. 32x32,16x64")
    parser.add_argument("--out", default=None, help="folder for the .md / .json report "
                        "(default: a new runs/benchmarks/<date-time>)")
    args = parser.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        if any(len(s) != 2 for s in shapes):
            raise ValueError
    except ValueError:
        raise SystemExit(f"error: --shapes {args.shapes!r}: expected <size>x<channels>,... "
                         "e.g. 32x32,16x64") from None
    from experiments.benchmarks.step_throughput import write_report

    rows = []
    for hw, c in shapes:
        rows.append(measure(hw, c, args.batch, args.rounds))
        print(f"{rows[-1]['shape']}: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                   rows[-1]["ms"].items()),
              file=sys.stderr, flush=True)
    names = list(rows[0]["ms"])
    lines = [f"3x3 stride-1 convolutions, batch {args.batch}, float32, ms per call (median "
             f"of rounds 2-{args.rounds}, interleaved); filter-gradient variants checked "
             "against float64 first (max relative error in results json).", "",
             "| what | " + " | ".join(r["shape"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    lines += [f"| {n} | " + " | ".join(f"{r['ms'][n]:.1f}" for r in rows) + " |"
              for n in names]
    if "torch forward" in names:
        lines += ["", "XLA / PyTorch: " + "; ".join(
            f"{r['shape']}: forward {r['ms']['xla forward'] / r['ms']['torch forward']:.2f}, "
            f"input grad {r['ms']['xla input grad'] / r['ms']['torch input grad']:.2f}, "
            f"filter grad {r['ms']['xla filter grad'] / r['ms']['torch filter grad']:.2f}, "
            "forward + both grads "
            f"{r['ms']['xla forward + both grads'] / r['ms']['torch forward + both grads']:.2f}"
            for r in rows)]
    lines += ["", "1-minute load average after each shape: " +
              ", ".join(f"{r['load_avg_1min']:.2f}" for r in rows) +
              " (the measuring process itself counts)."]
    write_report(args.out, "conv_grad", rows, "\n".join(lines))


if __name__ == "__main__":
    main()
