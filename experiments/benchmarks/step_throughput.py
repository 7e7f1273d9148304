"""Train-step throughput: images/s of each method's step, as a ratio to supervised.

    python experiments/benchmarks/step_throughput.py [--models wrn28_2,cnn_small]
        [--methods supervised,pi_model] [--batch 64] [--rounds 5] [--steps 10]

Every (model, method) step is compiled first, then timed in interleaved rounds (each
round times every step once, in turn), so all ratios come from the same minutes of a
shared, noisy machine. Reported: median seconds per step, images/s (labeled + unlabeled
images entering the step), and time / supervised time for the same model. A ratio near
the method's forward/backward count means no overhead beyond the extra passes (Pi: two
passes over the unlabeled half plus the labeled pass: ~3x FLOPs of supervised at equal
labeled batch, docs/REFERENCE.md).

FixMatch's unlabeled batch is mu x the labeled one (`--mu`, the paper's 7), MixMatch's
equals it (K = 2 views). `fb` is each step's forward/backward count in units of the
supervised step (one forward + backward of B images; a forward alone counted as 1/3):
FixMatch 1 + 2 mu (one pass over labeled + weak + strong), MixMatch K/3 (the label
guess, forward only) + (K + 1) (the mixed pass), NS3L alone (`supervised+ns3l`) 2 (one
clean pass over labeled + unlabeled; NS3L adds no pass to a method that has one, so
`vat+ns3l` should cost VAT's step). A method may be any run name (`vat+ns3l`). With
FixMatch, the strong augmentation of its mu B unlabeled images
(`sslj.data.randaugment.strong`, jitted alone) is timed in the same rounds and reported
as a share of the FixMatch step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from experiments import common  # noqa: E402,F401  (XLA flags before JAX starts)

# benchmark names for method variants: name -> (method, {dotted config field: value})
VARIANTS = {"vat_fd": ("vat", {"vat.probe": "finite_difference"}),
            "vat_fd_fori": ("vat", {"vat.probe": "finite_difference", "vat.unroll": False}),
            "vat_fd_k0": ("vat", {"vat.probe": "finite_difference", "vat.power_iterations": 0})}

SHAPES = {"wrn28_2": (32, 32, 3), "resnet32": (32, 32, 3), "resnet44": (32, 32, 3),
          "cnn_small": (28, 28, 1), "cnn_tiny": (28, 28, 1), "icn_mnist": (28, 28, 1)}


def fb_count(method: str, mu: int, k: int = 2) -> float:
    """Forward/backward count of a step in units of the supervised step (see above)."""
    base = VARIANTS.get(method, (method, {}))[0]
    base, *addons = base.split("+")
    if base == "supervised":  # with NS3L: one clean pass over labeled + unlabeled
        return 2.0 if "ns3l" in addons else 1.0
    if base.startswith("fixmatch"):
        return 1.0 + 2.0 * mu
    if base == "mixmatch":
        return k / 3.0 + (k + 1.0)
    return float("nan")


def build_augment(model_name, batch, mu):
    """The strong augmentation alone, jitted, on the FixMatch step's mu B unlabeled images."""
    import jax
    import numpy as np

    from sslj.data import randaugment
    from sslj.data.augment import to_float

    x = to_float(np.random.default_rng(1).integers(
        0, 256, (mu * batch, *SHAPES[model_name]), np.uint8))
    fn = jax.jit(lambda x, key: randaugment.strong(x, key))
    return fn, x


def build_step(model_name, method_name, batch, mu: int = 7, *, dtype: str = "float32",
               unlabeled_batch: int | None = None, devices=None):
    """(jitted step, state, sharded batch, images per step) of `method_name` on
    `model_name` with random data: `batch` labeled images, `unlabeled_batch` unlabeled
    (default: `batch`, FixMatch `mu` x `batch`), compute dtype `dtype`, on `devices`
    (default: all)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.configs.default import get_config
    from sslj import config as config_lib
    from sslj.common import sharding
    from sslj.methods import get_method
    from sslj.models import get_model
    from sslj.train.optim import make_optimizer
    from sslj.train.state import create_train_state
    from sslj.train.step import make_train_step

    base_method, fields = VARIANTS.get(method_name, (method_name, {}))
    cfg = config_lib.set_fields(config_lib.for_method(get_config(), base_method), fields)
    cfg.model, cfg.batch_size, cfg.unlabeled_batch_size = model_name, batch, batch
    cfg.compute_dtype = dtype
    if base_method.startswith("fixmatch"):
        cfg.unlabeled_batch_size = mu * batch
        cfg.data.noise_std = 0.0
    if unlabeled_batch is not None:
        cfg.unlabeled_batch_size = unlabeled_batch
    cfg.split.seen_classes = tuple(range(10))  # a 10-class head
    cfg.data.flip = SHAPES[model_name][-1] == 3
    mesh = sharding.make_mesh(devices)
    model = get_model(model_name, 10, dtype=jnp.dtype(dtype))
    method = get_method(cfg)
    opt = make_optimizer(cfg.optimizer, int(cfg.num_steps))
    state = create_train_state(model, opt, jax.random.PRNGKey(0), SHAPES[model_name])
    state = state.replace(extra=method.init_extra(
        4 * batch, {"params": state.params, "batch_stats": state.batch_stats}))
    state = sharding.replicate(mesh, state)
    rng = np.random.default_rng(0)
    host = {"image": rng.integers(0, 256, (batch, *SHAPES[model_name]), np.uint8),
            "label": rng.integers(0, 10, batch).astype(np.int32)}
    images = batch
    if method.uses_unlabeled:
        n_u = int(cfg.unlabeled_batch_size)
        host["unlabeled_image"] = rng.integers(0, 256, (n_u, *SHAPES[model_name]), np.uint8)
        host["unlabeled_index"] = np.arange(n_u, dtype=np.int32)
        images += n_u
    step = make_train_step(model, method, opt, cfg, mesh)
    return step, state, sharding.shard_batch(mesh, host), images


SPL_STEPS = ("spl_inner", "spl_outer")


def build_spl_step(model_name, which, batch, *, devices=None):
    """(step, state, sharded batch, images per step) of SPL's inner step (`spl_inner`:
    the hard masks' scores learnt by cross-entropy on a V1 batch of
    `spl.inner_batch_size`) or outer step (`spl_outer`: `SPLConsistency` with the masks
    frozen and harmful weights gated) of `pi_model+spl`, as `sslj.procedures.spl` builds
    them: magnitude identification at the main job's safe ratio (delta 0.6, tau 60 /
    1,500), scores |theta| / threshold. `step(state, batch)`: the inner step's counter
    argument is fixed at 0 (it only keys dropout)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.configs.default import get_config
    from sslj import config as config_lib
    from sslj.common import sharding
    from sslj.methods import get_method
    from sslj.models import get_model
    from sslj.procedures.spl import outer_training
    from sslj.spl import bilevel
    from sslj.spl import masks as masks_lib
    from sslj.train.optim import make_optimizer
    from sslj.train.state import create_train_state
    from sslj.train.step import make_train_step

    if which not in SPL_STEPS:
        raise ValueError(f"{which!r}: allowed {SPL_STEPS}")
    cfg = config_lib.for_method(get_config(), "pi_model+spl")
    cfg.model, cfg.batch_size, cfg.unlabeled_batch_size = model_name, batch, batch
    cfg.split.seen_classes = tuple(range(10))
    cfg.data.flip = SHAPES[model_name][-1] == 3
    spl = cfg.spl
    mesh = sharding.make_mesh(devices)
    model = get_model(model_name, 10)
    opt = make_optimizer(cfg.optimizer, int(cfg.num_steps))
    state = create_train_state(model, opt, jax.random.PRNGKey(0), SHAPES[model_name])
    spec = masks_lib.masked_leaves(state.params, masks_lib.rules_from_config(spl))
    ident = masks_lib.identify(state.params, spec, masks_lib.safe_ratio(0.6, 60 / 1500),
                               "magnitude")
    inner_opt = bilevel.inner_optimizer(spl)
    scores = masks_lib.init_scores(state.params, ident, spl.mask)
    masks = masks_lib.masks_from_scores(scores, ident.counts, spl.mask, spl.rank_by)
    state = state.replace(masks=masks, mask_scores=scores,
                          mask_opt_state=inner_opt.init(scores))
    rng = np.random.default_rng(0)
    if which == "spl_inner":
        n = int(spl.inner_batch_size)
        host = {"image": rng.integers(0, 256, (n, *SHAPES[model_name]), np.uint8),
                "label": rng.integers(0, 10, n).astype(np.int32)}
        inner = bilevel.make_inner_step(model, ident.counts, spl.mask, inner_opt, mesh,
                                        bn_update=bool(spl.inner_bn_update),
                                        rank_by=spl.rank_by)
        index = jnp.zeros((), jnp.int32)

        def step(state, batch):
            return inner(state, batch, index)

        return step, sharding.replicate(mesh, state), sharding.shard_batch(mesh, host), n
    outer_cfg, outer_opt = outer_training(cfg, opt)
    method = bilevel.outer_method(outer_cfg, get_method(cfg))
    host = {"image": rng.integers(0, 256, (batch, *SHAPES[model_name]), np.uint8),
            "label": rng.integers(0, 10, batch).astype(np.int32),
            "unlabeled_image": rng.integers(0, 256, (batch, *SHAPES[model_name]), np.uint8),
            "unlabeled_index": np.arange(batch, dtype=np.int32)}
    step = make_train_step(model, method, outer_opt, outer_cfg, mesh)
    return step, sharding.replicate(mesh, state), sharding.shard_batch(mesh, host), 2 * batch


ICN_STEPS = ("icn_reclassify", "icn_sampler")


def build_icn_step(which, batch, *, sampler_steps: int = 10, devices=None):
    """(step, state, sharded batch, images per step) of ICN on the paper's MNIST net
    (`icn_mnist`, widths 64-512, the default patches convolution; the full-MNIST config
    `experiments/configs/icn.py:mnist`, SGD momentum 0.9): `icn_reclassify`, one
    reclassification step over `batch` real and `batch` pseudo-negative images (softmax
    Eq. 9, alpha 0.5, weights 1); `icn_sampler`, one call of the synthesis (`batch`
    samples from N(0, 0.3^2), Adam ascent on their class logits, stop rule 3 after
    `sampler_steps` steps, clipped to [-1, 1]). `step(state, batch)` returns the state
    unchanged but for the sampler's images in `state.extra`, so that waiting for the
    state waits for them."""
    import jax
    import numpy as np

    from experiments.configs.icn import get_config
    from sslj.common import sharding
    from sslj.config import for_method
    from sslj.icn.method import ICNReclassification
    from sslj.icn.sampler import SamplerSpec, make_synthesizer
    from sslj.models import get_model
    from sslj.train.optim import make_optimizer
    from sslj.train.state import create_train_state
    from sslj.train.step import make_train_step

    if which not in ICN_STEPS:
        raise ValueError(f"{which!r}: allowed {ICN_STEPS}")
    cfg = for_method(get_config("mnist"), "supervised+icn")
    cfg.batch_size = cfg.unlabeled_batch_size = batch
    mesh = sharding.make_mesh(devices)
    model = get_model("icn_mnist", 10)
    opt = make_optimizer(cfg.optimizer, int(cfg.num_steps))
    state = sharding.replicate(mesh, create_train_state(model, opt, jax.random.PRNGKey(0),
                                                        SHAPES["icn_mnist"]))
    rng = np.random.default_rng(0)
    host = {"image": rng.integers(0, 256, (batch, *SHAPES["icn_mnist"]), np.uint8),
            "label": rng.integers(0, 10, batch).astype(np.int32),
            "neg_image": rng.normal(0.0, 0.3, (batch, *SHAPES["icn_mnist"])).astype(
                np.float32),
            "neg_class": (np.arange(batch) % 10).astype(np.int32),
            "neg_weight": np.ones(batch, np.float32)}
    if which == "icn_reclassify":
        step = make_train_step(model, ICNReclassification(cfg), opt, cfg, mesh)
        return step, state, sharding.shard_batch(mesh, host), 2 * batch
    icn = cfg.icn
    spec = SamplerSpec(kind="adam", stop="steps", step_size=float(icn.step_size),
                       max_steps=sampler_steps, adam_b1=float(icn.adam_b1),
                       noise_std=float(icn.noise_std), clip=bool(icn.clip))
    synth = make_synthesizer(model, spec, SHAPES["icn_mnist"])
    key = jax.random.PRNGKey(2)

    @jax.jit
    def step(state, batch):
        images, _ = synth({"params": state.params}, batch["neg_class"], key)
        return state.replace(extra={"samples": images}), None

    state = state.replace(extra=sharding.replicate(  # the structure the step returns
        mesh, {"samples": np.zeros((batch, *SHAPES["icn_mnist"]), np.float32)}))
    data = sharding.replicate(mesh, {"neg_class": host["neg_class"]})
    return step, state, data, batch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="wrn28_2,cnn_small")
    parser.add_argument("--methods", default="supervised,pi_model")
    parser.add_argument("--batch", type=int, default=64, help="labeled (= unlabeled) batch")
    parser.add_argument("--mu", type=int, default=7, help="FixMatch's unlabeled ratio")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round")
    parser.add_argument("--out", default=None, help="folder for the .md / .json report "
                        "(default: a fresh runs/benchmarks/<time> folder; the tracked "
                        "results/ only when named)")
    args = parser.parse_args(argv)
    import jax
    import numpy as np

    methods = args.methods.split(",")
    if methods[0] != "supervised":
        methods = ["supervised"] + [m for m in methods if m != "supervised"]
    cases = {}
    for model in args.models.split(","):
        for method in methods:
            print(f"compiling {model} {method} ...", file=sys.stderr, flush=True)
            step, state, batch, images = build_step(model, method, args.batch, args.mu)
            state, _ = step(state, batch)  # compile
            jax.block_until_ready(state)
            cases[(model, method)] = [step, state, batch, images, []]
        if any(m.startswith("fixmatch") for m in methods):
            fn, x = build_augment(model, args.batch, args.mu)
            jax.block_until_ready(fn(x, jax.random.PRNGKey(0)))  # compile
            cases[(model, "strong_augment")] = [fn, None, x, args.mu * args.batch, []]
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for (_, method), case in cases.items():
            step, state, batch, _, times = case
            t0 = time.perf_counter()
            if method == "strong_augment":
                for i in range(args.steps):
                    out = step(batch, jax.random.PRNGKey(r * args.steps + i))
                jax.block_until_ready(out)
            else:
                for _ in range(args.steps):
                    state, metrics = step(state, batch)
                jax.block_until_ready(state)
                case[1] = state
            times.append((time.perf_counter() - t0) / args.steps)
    load = os.getloadavg()[0]  # 1-minute load average after the rounds (2 = both cores busy)
    rows = []
    for (model, method), (_, _, _, images, times) in cases.items():
        sec = float(np.median(times))
        sup = float(np.median(cases[(model, "supervised")][4]))
        row = {"model": model, "method": method, "batch": args.batch, "images": images,
               "s_per_step": sec, "images_per_s": images / sec, "ratio_to_supervised":
               sec / sup, "fb_count": fb_count(method, args.mu),
               "device": str(jax.devices()[0].platform), "devices": jax.device_count(),
               "load_avg_1min": load}
        if method == "strong_augment":
            fm = [m for m in methods if m.startswith("fixmatch")][0]
            row["share_of_fixmatch_step"] = sec / float(np.median(cases[(model, fm)][4]))
        rows.append(row)
    lines = [f"Train-step throughput ({rows[0]['device']} x{rows[0]['devices']}, labeled batch "
             f"{args.batch}, FixMatch mu {args.mu}, median of {args.rounds} interleaved rounds; "
             f"1-minute load average after the rounds {load:.2f})",
             "", "| model | method | ms/step | images/s | time / supervised | fb count |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        fb = "" if r["fb_count"] != r["fb_count"] else f"{r['fb_count']:.2f}"
        if r["method"] == "strong_augment":
            fb = f"{100 * r['share_of_fixmatch_step']:.1f} % of the FixMatch step"
        lines.append(f"| {r['model']} | {r['method']} | {1000 * r['s_per_step']:.1f} | "
                     f"{r['images_per_s']:.0f} | {r['ratio_to_supervised']:.2f} | {fb} |")
    write_report(args.out, "step_throughput", rows, "\n".join(lines))


def write_report(out: str | None, name: str, rows: list[dict], text: str) -> None:
    """Prints `text` and writes <out>/<name>.md and the rows as <out>/<name>.json; `out`
    None: a fresh `runs/benchmarks/<date-time>` folder, so a run never overwrites the
    tracked results unless told to."""
    print(text)
    if out is None:
        out = os.path.join("runs", "benchmarks", time.strftime("%Y%m%d-%H%M%S"))
    print(f"report written to {out}/{name}.md", file=sys.stderr, flush=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
