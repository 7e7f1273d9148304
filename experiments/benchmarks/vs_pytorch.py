"""sslj's train steps against the same steps in PyTorch eager, side by side on the CPU.

    pip install -e ".[bench]"      # PyTorch (a CPU-only wheel is enough); sslj never needs it
    python experiments/benchmarks/vs_pytorch.py [--models wrn28_2,cnn_small]
        [--methods supervised,pi_model,...] [--batch 64] [--rounds 5]
        [--steps 5] [--out DIR]
    python experiments/benchmarks/vs_pytorch.py --quick     # cnn_small; supervised, pi_model

What is measured: for each (model, method), one whole training step of sslj (the jitted
`sslj.train.step` step that `step_throughput.build_step` builds from the default config)
and the same step written in PyTorch eager in this file: the same network (same layer
shapes, parameter count and initial weights, copied from sslj's), the same augmentation
(uint8 -> [-1, 1], the flip on 3-channel images, the reflect-padded random translation by
`data.crop_pad`, Gaussian noise `data.noise_std`, all inside the step as sslj does them),
the same passes and losses, the same optimizer (Adam, or ICN's SGD; weight decay as
`config.optimizer` says), the evaluation EMA of the weights, the Mean Teacher's EMA
teacher, and the scalar metrics sslj's step returns (loss terms, L2 norms of gradients,
weights and updates).
Methods: `supervised` (cross-entropy on B labeled images); `pi_model` (clean pass over
labeled + unlabeled, a second stochastic pass with frozen BatchNorm statistics as the
target, no gradient through it, softmax MSE); `mean_teacher` (the teacher's pass instead
of the second one, EMA of the teacher's weights and statistics after the optimizer
step); `temporal_ensembling` (the clean pass only; softmax MSE against each unlabeled
example's bias-corrected ensemble prediction, zero for an example without one, and the
ensemble and count updated at the batch's indices after the step); `pseudo_label` (the
clean pass only; cross-entropy of the unlabeled images whose detached max softmax
exceeds the threshold against their argmax, over the batch or over the confident ones as
`pseudo_label.normalize` says); `spl_inner` (SPL's inner step of `pi_model+spl`: the V1
batch of `spl.inner_batch_size` through the net with hard-masked conv kernels, top-k of
the scores forward and straight-through backward, batch statistics written,
cross-entropy, Adam on the scores only, the new masks' density and swaps; PyTorch takes
the top-k with `torch.topk`, sslj with a stable argsort); `spl_outer` (its outer step:
the Pi-model's two passes on the masked weights, cross-entropy and consistency weighted
as SPL's "official" normalisation, and the harmful weights restored after the Adam step,
`gate_updates`); both start from sslj's magnitude identification at the main job's safe
ratio (`step_throughput.build_spl_step`); `supervised+ns3l` (NS3L alone: one clean pass
over labeled + unlabeled, cross-entropy and NS3L's threshold term on the unlabeled
logits, `ns3l_loss`); `vat_fd` (VAT with Oliver's finite-difference probe: clean pass,
reference pass over the unlabeled images, one power iteration as a forward and a
backward to the input at xi d, the adversarial pass, KL); `fixmatch` (B labeled and
mu B = 7 B unlabeled images: one pass over labeled weak + unlabeled weak + unlabeled
strong, pseudo-labels from the detached weak view at confidence >= tau, the masked
cross-entropy of the strong view averaged over all mu B; the strong view is an
independent weak view, then RandAugment's two random ops at random magnitudes and
Cutout, done as a PyTorch pipeline does it: per image on Pillow, on the host, inside
the step (`strong`), with sslj's op list, ranges and grey fill); `icn_reclassify` (ICN's
reclassification step on its MNIST net, `icn_mnist`: B real + B pseudo-negative images
in one pass, (1 - alpha) cross-entropy + alpha mean softplus of each negative's class
logit, SGD momentum 0.9); `icn_sampler` (one call of its synthesis: B samples of
N(0, 0.3^2) moved by Adam ascent on their class logits for `--sampler-steps` steps,
`TorchICNSampler`). The ICN steps run on `icn_mnist` only and the others never on it
(`applies`). Labeled batch B plus B unlabeled images for the SSL methods, float32,
MNIST-shaped (28x28x1) images for cnn_small and icn_mnist, CIFAR-shaped (32x32x3) for
wrn28_2. The PyTorch models run in channels_last
memory format with `torch.set_num_threads(os.cpu_count())`; JAX runs with the XLA flags
that `experiments/common.py` sets (imported first).

How: a numeric check first (always on, cheap): per model, sslj's initial weights are
copied into the PyTorch net and the logits of both on one random batch must agree, in
inference mode (running statistics) and in training mode (batch statistics), to
|diff| <= 1e-4 max|logit| + 1e-5, and so must the BatchNorm running means after one
training pass; the maximal differences are printed. Then every sslj step is compiled
and every PyTorch step warmed up; then R rounds, each timing every (model, method) for S
steps in sslj and in PyTorch in turn (the order of the two flips every round). Reported
per (model, method): the median ms per step of each, their ratio sslj / PyTorch (below
1: sslj is faster), and the load columns. Results go to `vs_pytorch.md` and
`vs_pytorch.json` in a fresh `runs/benchmarks/<UTC time>/` folder, or in `--out`.

Reading the load columns. `foreign cores`: the CPU time that processes other than this
one (and its children) used while a step was being timed, divided by the wall time:
0.5 means another job kept half a core busy. It is /proc/stat's busy jiffies of the
whole machine less this process's own CPU time (10 ms ticks, so a short slice reads
within about +-0.02 s / its length; values below 0 are shown as 0). A round whose
foreign load is above `--foreign-limit` (0.15 cores) is flagged and repeated, at most
`--max-retries` times in all (default: the number of rounds); if the clean rounds are
still too few, the least loaded flagged rounds fill in and the row's `noisy rounds`
column counts them. Numbers from such rows are not comparable to an idle machine's.
`own cores`: this process's CPU seconds per wall second while that framework's steps
ran: near the core count when the step keeps every core busy, below it when it runs
serial stretches or, under foreign load, waits for a core. Both frameworks share this
one process; each one's threads sit idle while the other one's steps run.
`load avg`: the 1-minute load average at the end of the rounds used (the median); it
counts this benchmark's own threads too, so on an otherwise idle machine it sits near
the number of cores the steps keep busy, and only the foreign column isolates others.

What differs from sslj's step, by construction: sslj multiplies every weight by its
(all-ones) SPL mask before each pass and gates the update with it; the PyTorch step has
no masks. The random numbers come from each framework's own generator (VAT's random
direction from `torch.randn`, not per-example folded keys). PyTorch's BatchNorm keeps an
unbiased running variance where Flax keeps the biased one (same cost). The strided 3x3
convolutions use XLA's SAME padding (0 above/left, 1 below/right), so the PyTorch net
pads explicitly there, as the weights would otherwise see other pixels. The learning
rate and the consistency ramp are computed on the host (Python floats) in PyTorch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from experiments import common  # noqa: E402,F401  (XLA flags before JAX starts)
from experiments.benchmarks.step_throughput import (  # noqa: E402
    ICN_STEPS,
    SHAPES,
    SPL_STEPS,
    VARIANTS,
    build_icn_step,
    build_spl_step,
    build_step,
)

try:  # optional: `pip install -e ".[bench]"`
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # main() says how to install it and exits 2
    torch = F = nn = None

INSTALL = 'pip install -e ".[bench]"'
MODELS = ("wrn28_2", "cnn_small", "icn_mnist")
METHODS = ("supervised", "pi_model", "mean_teacher", "temporal_ensembling",
           "pseudo_label", "vat_fd", "mixmatch", "fixmatch", "supervised+ns3l", "spl_inner",
           "spl_outer", "icn_reclassify", "icn_sampler")
ICN_MODEL = "icn_mnist"  # ICN's steps run on its own net, and that net only on them


def applies(model_name: str, method_name: str) -> bool:
    return (model_name == ICN_MODEL) == (method_name in ICN_STEPS)
QUICK = {"models": "cnn_small", "methods": "supervised,pi_model", "rounds": 2, "steps": 3}
NUM_CLASSES = 10
WRN28_2_PARAMS = 1_467_610  # sslj/models/wrn.py's docstring, for 10 classes
FIXMATCH_MU = 7  # build_step's default: the paper's unlabeled ratio


# ----------------------------------------------------------------------------- config

def method_config(model_name: str, method_name: str, batch: int):
    """The config `step_throughput.build_step` trains (kept in step with it)."""
    from experiments.configs.default import get_config
    from sslj import config as config_lib

    base, fields = VARIANTS.get(method_name, (method_name, {}))
    if method_name in SPL_STEPS:
        base = "pi_model+spl"
    if method_name in ICN_STEPS:  # as step_throughput.build_icn_step
        from experiments.configs.icn import get_config as icn_config

        cfg = config_lib.for_method(icn_config("mnist"), "supervised+icn")
        cfg.batch_size = cfg.unlabeled_batch_size = batch
        checks = {"optimizer.name": cfg.optimizer.name == "sgd",
                  "optimizer.schedule": cfg.optimizer.schedule == "constant",
                  "icn.formulation": cfg.icn.formulation == "softmax",
                  "data": not (cfg.data.flip or cfg.data.crop_pad or cfg.data.noise_std)}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise SystemExit(f"error: the PyTorch step does not implement {method_name}'s "
                             f"settings {bad}")
        return cfg
    cfg = config_lib.set_fields(config_lib.for_method(get_config(), base), fields)
    cfg.model, cfg.batch_size, cfg.unlabeled_batch_size = model_name, batch, batch
    cfg.split.seen_classes = tuple(range(NUM_CLASSES))
    cfg.data.flip = SHAPES[model_name][-1] == 3
    if base == "fixmatch":  # as build_step: mu x batch unlabeled images, no noise
        cfg.unlabeled_batch_size = FIXMATCH_MU * batch
        cfg.data.noise_std = 0.0
    # what the PyTorch step below implements; anything else would time another step
    checks = {"optimizer.name": cfg.optimizer.name == "adam",
              "bn_update": cfg.bn_update == "clean", "target.kind": cfg.target.kind == "cce",
              "entmin.weight": float(cfg.entmin.weight) == 0.0,
              "compute_dtype": cfg.compute_dtype == "float32",
              "model_kwargs": not dict(cfg.model_kwargs),
              "pi_model.stop_gradient_target": bool(cfg.pi_model.stop_gradient_target),
              "optimizer.schedule": cfg.optimizer.schedule in ("staircase", "constant"),
              "ramp.kind": cfg.ramp.kind in ("oliver_exp", "constant", "linear"),
              "ns3l.strategy": not cfg.ns3l.enabled or cfg.ns3l.strategy == "threshold"}
    if base == "vat":
        checks["vat.probe"] = cfg.vat.probe == "finite_difference"
    if method_name in SPL_STEPS:
        spl = cfg.spl
        checks.update({"spl.mask": spl.mask == "hard", "spl.rank_by": spl.rank_by == "score",
                       "spl.inner_optimizer": spl.inner_optimizer == "adam",
                       "spl.outer_loss": spl.outer_loss == "consistency",
                       "spl.consistency_normalization":
                           spl.consistency_normalization == "official",
                       "spl.outer_optimizer": spl.outer_optimizer == "continue",
                       "spl.mask_classifier": not spl.mask_classifier,
                       "spl.rules": [tuple(r) for r in spl.rules] == [(r"(^|/)kernel$", True)],
                       "pi_model.target_pass": cfg.pi_model.target_pass == "batch"})
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise SystemExit(f"error: the PyTorch step does not implement {method_name}'s "
                         f"settings {bad}")
    return cfg


def host_ramp(kind: str, steps: int, t: int) -> float:
    """`sslj.train.schedules.ramp` as a Python float."""
    if kind == "constant" or steps <= 0:
        return 1.0
    x = min(max(t / steps, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - x) ** 2) if kind == "oliver_exp" else x


def host_lr(opt_cfg, t: int) -> float:
    """`sslj.train.schedules.learning_rate` (staircase / constant) as a Python float."""
    lr = float(opt_cfg.lr)
    if opt_cfg.schedule == "staircase":
        bounds = opt_cfg.decay_steps
        for b in (bounds,) if isinstance(bounds, int) else bounds:
            if t >= int(b):
                lr *= float(opt_cfg.decay_factor)
    return lr


# ----------------------------------------------------------------------------- models

if torch is not None:
    class BN(nn.BatchNorm2d):
        """Flax's `nn.BatchNorm` (epsilon 1e-3, Flax momentum m = running-average decay,
        PyTorch momentum 1 - m). Writes its running statistics only while its net's
        `flags["update_stats"]` is True (sslj's clean pass); otherwise a training-mode
        pass normalises with the batch statistics and writes nothing (the perturbed,
        teacher and VAT passes)."""

        def __init__(self, channels: int, flax_momentum: float, flags: dict, path):
            super().__init__(channels, eps=1e-3, momentum=1.0 - flax_momentum)
            self.flags, self.flax_path = flags, path

        def forward(self, x):
            write = not self.training or self.flags["update_stats"]
            return F.batch_norm(x, self.running_mean if write else None,
                                self.running_var if write else None, self.weight, self.bias,
                                self.training, self.momentum, self.eps)

    class SameConv(nn.Conv2d):
        """Conv (bias-free unless asked) with XLA's SAME padding: (k - 1) / 2 on each
        side at stride 1; at stride s, total max((ceil(n / s) - 1) s + k - n, 0), the
        smaller half first (0 above/left and 1 below/right for 3x3 / 2 on an even
        size)."""

        def __init__(self, cin: int, cout: int, k: int, stride: int, path,
                     bias: bool = False):
            super().__init__(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0,
                             bias=bias)
            self.flax_path = path

        def forward(self, x):
            if self.stride[0] > 1:
                pads = []
                for n in (x.shape[3], x.shape[2]):  # F.pad: last dim first
                    total = max((-(-n // self.stride[0]) - 1) * self.stride[0]
                                + self.kernel_size[0] - n, 0)
                    pads += [total // 2, total - total // 2]
                if any(pads):
                    x = F.pad(x, pads)
            return super().forward(x)

    def _linear(cin: int, cout: int, path):
        layer = nn.Linear(cin, cout)
        layer.flax_path = path
        return layer

    class Net(nn.Module):
        """Base: `flags` shared by the BatchNorm layers; `update_stats(False)` freezes them."""

        def __init__(self, slope: float):
            super().__init__()
            self.flags, self.slope = {"update_stats": True}, slope

        def act(self, x):
            return F.leaky_relu(x, self.slope, inplace=True)  # only ever on a fresh tensor

    class Unit(nn.Module):
        """`sslj.models.wrn.ResidualUnit`: pre-activation, strided 1x1 shortcut conv when
        the width changes; `activate_before_residual`: the shortcut is the activation."""

        def __init__(self, net, cin, cout, stride, abr, path):
            super().__init__()
            self.slope, self.abr = net.slope, abr
            self.bn0 = BN(cin, 0.999, net.flags, (path, "BatchNorm_0"))
            self.conv0 = SameConv(cin, cout, 3, stride, (path, "Conv_0"))
            self.bn1 = BN(cout, 0.999, net.flags, (path, "BatchNorm_1"))
            self.conv1 = SameConv(cout, cout, 3, 1, (path, "Conv_1"))
            self.conv1x1 = (SameConv(cin, cout, 1, stride, (path, "conv1x1"))
                            if cin != cout else None)

        def act(self, x):
            return F.leaky_relu(x, self.slope, inplace=True)

        def forward(self, x):
            if self.abr:
                x = self.act(self.bn0(x))
                shortcut = x
            else:
                shortcut = x
                x = self.act(self.bn0(x))
            y = self.conv1(self.act(self.bn1(self.conv0(x))))
            if self.conv1x1 is not None:
                shortcut = self.conv1x1(shortcut)
            return y + shortcut

    class WRN(Net):
        """`sslj.models.wrn.WideResNet` (depth 28, widen factor 2 by default)."""

        def __init__(self, num_classes: int, depth: int = 28, widen: int = 2,
                     slope: float = 0.1):
            super().__init__(slope)
            self.init_conv = SameConv(3, 16, 3, 1, ("init_conv",))
            units, cin, k = [], 16, 0
            for stage, stride in enumerate((1, 2, 2)):
                width = 16 * widen * 2 ** stage
                for i in range((depth - 4) // 6):
                    units.append(Unit(self, cin, width, stride if i == 0 else 1,
                                      stage == 0 and i == 0, f"ResidualUnit_{k}"))
                    cin, k = width, k + 1
            self.units = nn.Sequential(*units)
            self.final_bn = BN(cin, 0.999, self.flags, ("final_bn",))
            self.classifier = _linear(cin, num_classes, ("classifier",))

        def forward(self, x):
            x = self.act(self.final_bn(self.units(self.init_conv(x))))
            return self.classifier(x.mean((2, 3)))

    class SmallCNN(Net):
        """`sslj.models.convnet.SmallCNN` (widths (32, 64): cnn_small; dropout 0)."""

        def __init__(self, num_classes: int, widths=(32, 64), in_channels: int = 1,
                     bn_momentum: float = 0.99, slope: float = 0.1):
            super().__init__(slope)
            layers, cin = [], in_channels
            for width in widths:
                for _ in range(2):
                    i = len(layers)
                    layers.append(nn.ModuleList([
                        SameConv(cin, width, 3, 1, (f"Conv_{i}",)),
                        BN(width, bn_momentum, self.flags, (f"BatchNorm_{i}",))]))
                    cin = width
            self.layers = nn.ModuleList(layers)
            self.classifier = _linear(cin, num_classes, ("classifier",))

        def forward(self, x):
            for i, (conv, bn) in enumerate(self.layers):
                x = self.act(bn(conv(x)))
                if i % 2 == 1 and min(x.shape[2:]) >= 4:
                    x = F.max_pool2d(x, 2, 2)
            return self.classifier(x.mean((2, 3)))

    class ICNNet(Net):
        """`sslj.models.convnet.ICNMnistNet`: four 5x5 stride-2 convs with biases (SAME
        padding: 28 -> 14 -> 7 -> 4 -> 2), leaky ReLU 0.2, no BatchNorm, the 2x2x512 map
        flattened in Flax's (H, W, C) order into the classifier."""

        def __init__(self, num_classes: int, widths=(64, 128, 256, 512), slope: float = 0.2):
            super().__init__(slope)
            convs, cin = [], SHAPES[ICN_MODEL][-1]
            for i, width in enumerate(widths):
                convs.append(SameConv(cin, width, 5, 2, (f"Conv_{i}",), bias=True))
                cin = width
            self.convs = nn.ModuleList(convs)
            self.classifier = _linear(cin * 4, num_classes, ("classifier",))

        def forward(self, x):
            for conv in self.convs:
                x = self.act(conv(x))
            return self.classifier(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))


def torch_net(model_name: str, params, batch_stats):
    """The PyTorch twin of sslj's `model_name`, channels_last, holding sslj's weights
    (numpy trees `params`, `batch_stats`: HWIO kernels -> OIHW, Dense (in, out) -> (out,
    in), BatchNorm scale/bias/mean/var -> weight/bias/running_mean/running_var)."""
    import numpy as np

    if model_name == "wrn28_2":
        net = WRN(NUM_CLASSES)
    elif model_name == "cnn_small":
        net = SmallCNN(NUM_CLASSES, in_channels=SHAPES[model_name][-1])
    elif model_name == ICN_MODEL:
        net = ICNNet(NUM_CLASSES)
    else:
        raise SystemExit(f"error: no PyTorch twin of {model_name!r}; allowed: {MODELS}")
    net = net.to(memory_format=torch.channels_last)

    def get(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    def put(dst, src):
        src = torch.from_numpy(np.array(src, dtype=np.float32))  # a writable copy
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"shape {tuple(src.shape)} into {tuple(dst.shape)}")
        dst.copy_(src)

    loaded = 0
    with torch.no_grad():
        for mod in net.modules():
            path = getattr(mod, "flax_path", None)
            if path is None:
                continue
            p = get(params, path)
            if isinstance(mod, BN):
                s = get(batch_stats, path)
                put(mod.weight, p["scale"])
                put(mod.bias, p["bias"])
                put(mod.running_mean, s["mean"])
                put(mod.running_var, s["var"])
            elif isinstance(mod, nn.Conv2d):
                put(mod.weight, np.transpose(p["kernel"], (3, 2, 0, 1)))
                if mod.bias is not None:
                    put(mod.bias, p["bias"])
            else:
                put(mod.weight, np.transpose(p["kernel"]))
                put(mod.bias, p["bias"])
            loaded += sum(np.size(v) for v in p.values())
    count = sum(t.numel() for t in net.parameters())
    if loaded != count:
        raise AssertionError(f"{model_name}: {loaded} sslj weights loaded into {count}")
    return net


def set_update_stats(net, on: bool) -> None:
    net.flags["update_stats"] = on


# ----------------------------------------------------------------------------- the step

def to_float(x):
    """uint8 [0, 255] -> float32 [-1, 1] (`sslj.data.augment.to_float`)."""
    return x.float() * (2.0 / 255.0) - 1.0


def _reflect(idx, n: int):
    idx = idx.abs()
    return torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)


def weak(x, *, flip: bool, crop_pad: int, noise_std: float):
    """`sslj.data.augment.weak` on float NHWC images; returns NCHW in channels_last
    memory (a view of the NHWC result). Per example: flip with probability 1/2, a random
    crop of the reflect-padded image (as one gather, the padding folded into its
    indices), then Gaussian noise."""
    n, h, w, _ = x.shape
    if flip:
        x = torch.where((torch.rand(n) < 0.5)[:, None, None, None], x.flip(2), x)
    if crop_pad > 0:
        oy = torch.randint(0, 2 * crop_pad + 1, (n, 1))
        ox = torch.randint(0, 2 * crop_pad + 1, (n, 1))
        rows = _reflect(oy + torch.arange(h) - crop_pad, h)
        cols = _reflect(ox + torch.arange(w) - crop_pad, w)
        x = x[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if noise_std > 0:
        x = x + noise_std * torch.randn_like(x)
    return x.permute(0, 3, 1, 2)


def _pil_ops():
    """`sslj.data.randaugment.OPS` as Pillow calls (what the official FixMatch-pytorch's
    RandAugment runs on PIL images), geometric ops filled with grey 128 as sslj's."""
    from PIL import Image, ImageEnhance, ImageOps

    def affine(data):
        return lambda im, v: im.transform(im.size, Image.AFFINE, data(im, v),
                                          fillcolor=(128,) * len(im.getbands()))

    return {
        "autocontrast": lambda im, v: ImageOps.autocontrast(im),
        "brightness": lambda im, v: ImageEnhance.Brightness(im).enhance(v),
        "color": lambda im, v: ImageEnhance.Color(im).enhance(v),
        "contrast": lambda im, v: ImageEnhance.Contrast(im).enhance(v),
        "equalize": lambda im, v: ImageOps.equalize(im),
        "identity": lambda im, v: im,
        "posterize": lambda im, v: ImageOps.posterize(im, int(v)),
        "rotate": lambda im, v: im.rotate(v, fillcolor=(128,) * len(im.getbands())),
        "sharpness": lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
        "shear_x": affine(lambda im, v: (1, v, 0, 0, 1, 0)),
        "shear_y": affine(lambda im, v: (1, 0, 0, v, 1, 0)),
        "solarize": lambda im, v: ImageOps.solarize(im, int(256 * v)),
        "translate_x": affine(lambda im, v: (1, 0, v * im.size[0], 0, 1, 0)),
        "translate_y": affine(lambda im, v: (1, 0, 0, 0, 1, v * im.size[1])),
    }


def strong(x, rng, *, num_ops: int, cutout: bool, fraction: float):
    """FixMatch's strong augmentation as a PyTorch pipeline runs it: per image on Pillow,
    `num_ops` ops drawn with replacement from `randaugment.OPS` at magnitudes uniform in
    `randaugment.RANGES` (posterize's integer), then a grey Cutout square of side
    round(fraction min(H, W)) at a random centre. `x`: NCHW float in [-1, 1] (`weak`'s
    output); returns the same layout. The same ops and ranges as sslj's on-device
    `randaugment.strong`, so both do the same work; the random draws differ."""
    from PIL import Image

    from sslj.data import randaugment as ra

    ops = _pil_ops()
    levels = ((x.permute(0, 2, 3, 1) + 1.0) * 127.5).round().clamp(0, 255)
    levels = levels.to(torch.uint8).numpy()
    n, h, w, c = levels.shape
    side = round(fraction * min(h, w))
    out = np.empty_like(levels)
    for i in range(n):
        im = Image.fromarray(levels[i, :, :, 0] if c == 1 else levels[i])
        for _ in range(num_ops):
            name = ra.OPS[rng.integers(len(ra.OPS))]
            low, high = ra.RANGES.get(name, (0, 0))
            v = (rng.integers(low, high + 1) if name in ra.INTEGER_MAGNITUDES
                 else rng.uniform(low, high))
            im = ops[name](im, v)
        out[i] = np.asarray(im).reshape(h, w, c)
    y = to_float(torch.from_numpy(out))
    if cutout and side > 0:
        cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
        rows = torch.arange(h)[None, :] - torch.from_numpy(cy - side // 2)[:, None]
        cols = torch.arange(w)[None, :] - torch.from_numpy(cx - side // 2)[:, None]
        inside = (((rows >= 0) & (rows < side))[:, :, None]
                  & ((cols >= 0) & (cols < side))[:, None, :])
        y = torch.where(inside[..., None], 0.0, y)
    return y.permute(0, 3, 1, 2)


def softmax_mse(logits, target_logits):
    return (F.softmax(logits, -1) - F.softmax(target_logits, -1)).square().mean()


def kl(p_logits, q_logits):
    """Per-example KL(p || q) from logits (`sslj.losses.kl_divergence`)."""
    logp, logq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    return (logp.exp() * (logp - logq)).sum(-1)


def vat_normalize(d):
    """Per example: d / (max|d| + 1e-12), then / sqrt(sum d^2 + 1e-6) (`vat.normalize`)."""
    d = d / (1e-12 + d.abs().amax((1, 2, 3), keepdim=True))
    return d / (1e-6 + d.square().sum((1, 2, 3), keepdim=True)).sqrt()


def ns3l_loss(logits_u, threshold: float):
    """NS3L's term (`sslj.methods.ns3l.loss`, threshold strategy) and the mean number of
    negatives: per example logsumexp(z) - logsumexp(z over the non-negatives), the
    negatives the classes whose detached probability is below `threshold`; a row whose
    classes are all negatives keeps them all (loss 0)."""
    with torch.no_grad():
        negatives = F.softmax(logits_u.detach(), -1) < threshold
        drop = negatives & ~negatives.all(-1, keepdim=True)
    kept = logits_u.masked_fill(drop, float("-inf"))
    loss = (torch.logsumexp(logits_u, -1) - torch.logsumexp(kept, -1)).mean()
    return loss, negatives.float().sum(-1).mean()


def _l2(tensors):
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def top_k_mask(score, k: int):
    """1 on the k largest entries of `score`, 0 elsewhere (`sslj.spl.masks.hard_mask`)."""
    flat = score.detach().reshape(-1)
    if k >= flat.numel():
        return torch.ones_like(score)
    out = torch.zeros_like(flat)
    if k > 0:
        out.scatter_(0, torch.topk(flat, k, sorted=False).indices, 1.0)
    return out.view_as(score)


def _kernel_to_torch(a):
    """An sslj conv kernel leaf (HWIO) as a PyTorch conv weight (OIHW)."""
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(a, np.float32),
                                                              (3, 2, 0, 1))))


def masked_convs(net, masks):
    """[(module, its mask leaf as an OIHW tensor)] of the conv layers sslj masks (every
    kernel but the classifier's: `spl.rules` and `spl.mask_classifier` defaults)."""
    out = []
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            leaf = masks
            for key in mod.flax_path:
                leaf = leaf[key]
            if getattr(leaf["kernel"], "ndim", 0) > 0:
                out.append((mod, leaf["kernel"]))
    return out


if torch is not None:
    class FixedMask(nn.Module):
        """Parametrization w -> w * m: SPL's outer passes run on the masked weights."""

        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w):
            return w * self.mask

    class ScoreMask(nn.Module):
        """Parametrization w -> w * hard(s): the top-k of the scores in the forward
        pass, straight-through (gradient as is) to the scores in the backward pass."""

        def __init__(self, score, k: int):
            super().__init__()
            self.score, self.k = score, k

        def forward(self, w):
            s = self.score
            return w.detach() * (top_k_mask(s, self.k) + s - s.detach())


class TorchSPLInner:
    """SPL's inner step (`sslj.spl.bilevel.make_inner_step_fn`) in PyTorch eager: the
    V1 batch (no augmentation) through the net with hard-masked conv weights, batch
    statistics written (`spl.inner_bn_update`), cross-entropy, gradients to the scores
    only (straight-through), Adam on the scores, the new masks and their density,
    swaps and accuracy."""

    def __init__(self, model_name, cfg, params, batch_stats, host, masks, scores):
        self.net = torch_net(model_name, params, batch_stats).train()
        self.net.requires_grad_(False)
        self.images = torch.from_numpy(host["image"])
        self.labels = torch.from_numpy(host["label"]).long()
        self.scores, self.counts, self.current = [], [], []
        from torch.nn.utils import parametrize

        for mod, mask in masked_convs(self.net, masks):
            leaf = scores
            for key in mod.flax_path:
                leaf = leaf[key]
            score = nn.Parameter(_kernel_to_torch(leaf["kernel"]))
            k = int(round(float(mask.sum())))
            parametrize.register_parametrization(mod, "weight", ScoreMask(score, k))
            self.scores.append(score)
            self.counts.append(k)
            self.current.append(top_k_mask(score, k))
        self.params = [p for name, p in self.net.named_parameters()  # the net's weights
                       if not name.endswith(".score")]
        lr = float(cfg.spl.inner_lr)
        try:
            self.opt, self.adam = torch.optim.Adam(self.scores, lr=lr, fused=True), "fused Adam"
        except (RuntimeError, TypeError, ValueError):
            self.opt, self.adam = torch.optim.Adam(self.scores, lr=lr, foreach=True), "foreach Adam"

    def __call__(self):
        x = to_float(self.images).permute(0, 3, 1, 2)  # NCHW view, channels_last memory
        logits = self.net(x)
        loss = F.cross_entropy(logits, self.labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [s.grad for s in self.scores]
        self.opt.step()
        with torch.no_grad():
            new = [top_k_mask(s, k) for s, k in zip(self.scores, self.counts, strict=True)]
            safe = sum(m.sum() for m in new)
            size = sum(m.numel() for m in new)
            swaps = sum(((a != 0) != (b != 0)).sum()
                        for a, b in zip(new, self.current, strict=True))
            metrics = {"spl/inner_loss": loss.detach(),
                       "spl/inner_accuracy": (logits.argmax(-1) == self.labels).float().mean(),
                       "spl/density": safe / size, "spl/swaps": swaps,
                       "spl/l2_score_grads": _l2(grads)}
        self.current = new
        return metrics


class TorchICNSampler:
    """`sslj.icn.sampler` with `build_icn_step`'s settings: B samples from N(0, 0.3^2),
    Adam ascent (beta1 0.5, beta2 0.999, eps 1e-8, bias-corrected) on each sample's class
    logit for `max_steps` steps, clipped to [-1, 1], then the final logits. sslj's while
    loop evaluates one more gradient than it moves (its stop check sees the logit of the
    step's gradient pass, and the last pass only finds that the steps are done): the
    PyTorch loop does not, so it computes `max_steps` gradients against sslj's
    `max_steps` + 1."""

    def __init__(self, model_name, cfg, params, host, max_steps: int):
        self.net = torch_net(model_name, params, {}).eval()
        self.net.requires_grad_(False)
        self.params = list(self.net.parameters())
        self.classes = torch.from_numpy(host["neg_class"]).long()
        icn = cfg.icn
        self.lr, self.b1, self.std = float(icn.step_size), float(icn.adam_b1), float(icn.noise_std)
        self.clip, self.max_steps = bool(icn.clip), max_steps
        self.adam = "hand-written Adam (sampler)"

    def __call__(self, x0=None):
        """One call; `x0` (NHWC) replaces the noise draw (for checking against sslj)."""
        n = self.classes.shape[0]
        x = (self.std * torch.randn(n, *SHAPES[ICN_MODEL]) if x0 is None else x0)
        x = x.permute(0, 3, 1, 2)
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        b1, b2 = self.b1, 0.999
        for k in range(1, self.max_steps + 1):
            x.requires_grad_(True)
            z = self.net(x).gather(1, self.classes[:, None]).sum()
            (g,) = torch.autograd.grad(z, x)
            with torch.no_grad():
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = (m / (1 - b1 ** k)) / ((v / (1 - b2 ** k)).sqrt() + 1e-8)
                x = x.detach() + self.lr * step
                if self.clip:
                    x.clamp_(-1.0, 1.0)
        with torch.no_grad():
            z = self.net(x).gather(1, self.classes[:, None])[:, 0]
        return {"logit": z.mean(), "samples": x}


class TorchStep:
    """One (model, method) train step in PyTorch eager, mirroring `sslj.train.step`."""

    def __init__(self, model_name, method_name, cfg, params, batch_stats, host, masks=None):
        self.method = VARIANTS.get(method_name, (method_name, {}))[0]
        self.cfg, self.t = cfg, 0
        self.net = torch_net(model_name, params, batch_stats).train()
        self.params = list(self.net.parameters())
        self.aug = dict(flip=bool(cfg.data.flip), crop_pad=int(cfg.data.crop_pad),
                        noise_std=float(cfg.data.noise_std))
        self.images = torch.from_numpy(host["image"])  # uint8 NHWC, as sslj's batch
        self.labels = torch.from_numpy(host["label"]).long()
        self.unlabeled = (torch.from_numpy(host["unlabeled_image"])
                          if "unlabeled_image" in host else None)
        if "neg_image" in host:  # ICN's pseudo-negatives: float NHWC, not augmented
            self.negatives = torch.from_numpy(host["neg_image"]).permute(0, 3, 1, 2)
            self.neg_class = torch.from_numpy(host["neg_class"]).long()
            self.neg_weight = torch.from_numpy(host["neg_weight"])
        opt = cfg.optimizer
        wd = float(opt.weight_decay)
        decay_all = opt.get("decay_params", "kernels") == "all"
        kernels = [m.weight for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        decayed = self.params if decay_all else kernels
        rest = [p for p in self.params if not any(p is q for q in decayed)]
        groups = [{"params": decayed, "weight_decay": wd},
                  {"params": rest, "weight_decay": 0.0}]
        cls = torch.optim.AdamW if opt.decoupled_weight_decay and wd > 0 else torch.optim.Adam
        kwargs = dict(lr=host_lr(opt, 0), betas=(float(opt.b1), float(opt.b2)),
                      eps=float(opt.eps))
        if opt.name == "sgd":  # optax.trace(momentum) then -lr: torch's SGD, dampening 0
            cls, kwargs = torch.optim.SGD, dict(lr=host_lr(opt, 0),
                                                momentum=float(opt.momentum))
        try:
            self.opt, self.adam = cls(groups, fused=True, **kwargs), f"fused {cls.__name__}"
        except (RuntimeError, TypeError, ValueError):
            self.opt, self.adam = (cls(groups, foreach=True, **kwargs),
                                   f"foreach {cls.__name__}")
        with torch.no_grad():
            self.ema = [p.detach().clone() for p in self.params]
        self.rng = np.random.default_rng(0)  # FixMatch's strong augmentation (on the host)
        self.gates = []  # (index in self.params, mask): SPL's gated updates
        if self.method == "spl_outer":  # masked passes; harmful weights never updated
            from torch.nn.utils import parametrize

            index = {id(p): i for i, p in enumerate(self.params)}
            for mod, mask in masked_convs(self.net, masks):
                m = _kernel_to_torch(mask)
                self.gates.append((index[id(mod.weight)], m))
                parametrize.register_parametrization(mod, "weight", FixedMask(m))
        if self.method == "temporal_ensembling":  # init_extra: 4 B examples' ensembles
            self.unlabeled_index = torch.from_numpy(host["unlabeled_index"]).long()
            self.ensemble = torch.zeros(4 * self.images.shape[0], NUM_CLASSES)
            self.count = torch.zeros(4 * self.images.shape[0], dtype=torch.int32)
        if self.method == "mean_teacher":  # starts as a copy of the student (init_extra)
            self.teacher = torch_net(model_name, params, batch_stats).train()
            self.teacher.requires_grad_(False)
            set_update_stats(self.teacher, False)
            self.teacher_params = list(self.teacher.parameters())
            self.teacher_buffers = [b for n, b in self.teacher.named_buffers()
                                    if n.endswith(("running_mean", "running_var"))]
            self.student_buffers = [b for n, b in self.net.named_buffers()
                                    if n.endswith(("running_mean", "running_var"))]

    def _second_pass(self, net, xl, xu, over: str):
        """The Pi target / teacher pass (`methods.base.target_pass`), no gradient, frozen
        statistics."""
        x = xu if over == "unlabeled" else torch.cat([xl, xu])
        frozen = net.flags["update_stats"]
        set_update_stats(net, False)
        with torch.no_grad():
            out = net(weak(x, **self.aug))
        set_update_stats(net, frozen)
        return out if over == "unlabeled" else out[xl.shape[0]:]

    def _mixmatch(self, xl, values, weights, extra, ramp):
        """`sslj.methods.mixmatch.MixMatch`: one weak view of the labeled images, K of the
        unlabeled ones; the label guess from a training-mode pass over the K views that
        writes no statistics, averaged and sharpened; MixUp of everything with a shuffled
        copy at lambda' = max(lambda, 1 - lambda) per example; one pass over the mixed
        images (writing the statistics); soft cross-entropy on the first B, the L2 term on
        the rest."""
        c, net = self.cfg.mixmatch, self.net
        k, b = int(c.k), xl.shape[0]
        xu = to_float(self.unlabeled)
        x_l = weak(xl, **self.aug)
        views = torch.cat([weak(xu, **self.aug) for _ in range(k)])
        set_update_stats(net, False)
        with torch.no_grad():
            p = F.softmax(net(views), -1).reshape(k, xu.shape[0], -1).mean(0)
            q = F.softmax(torch.log(p.clamp_min(1e-30)) / float(c.temperature), -1)
        set_update_stats(net, True)
        targets = torch.cat([F.one_hot(self.labels, NUM_CLASSES).float(), q.repeat(k, 1)])
        x = torch.cat([x_l, views])
        n = x.shape[0]
        perm = torch.randperm(n)
        if c.mix == "example":
            lam = torch.distributions.Beta(float(c.alpha), float(c.alpha)).sample((n,))
        else:
            lam = torch.distributions.Beta(float(c.alpha), float(c.alpha)).sample().expand(n)
        lam = torch.maximum(lam, 1.0 - lam)
        x_mixed = lam[:, None, None, None] * x + (1.0 - lam[:, None, None, None]) * x[perm]
        t_mixed = lam[:, None] * targets + (1.0 - lam[:, None]) * targets[perm]
        out = net(x_mixed)
        values["xe"] = -(t_mixed[:b] * F.log_softmax(out[:b], -1)).sum(-1).mean()
        values["mixmatch"] = (F.softmax(out[b:], -1) - t_mixed[b:]).square().mean()
        weights["mixmatch"] = float(c.weight) * ramp
        extra["mixmatch_guess_max"] = q.max(-1).values.mean()
        extra["mixmatch_lambda"] = lam.mean()
        return out[:b], out[b:]

    def _vat_perturbation(self, xu):
        """Oliver's finite-difference power iteration on the incoming weights: reference
        pass, then per iteration a forward at x + xi d and a backward to the input only."""
        v = self.cfg.vat
        if v.divergence == "perturbed_clean":
            div = lambda clean, perturbed: kl(perturbed, clean)
        else:
            div = lambda clean, perturbed: kl(clean, perturbed)
        with torch.no_grad():
            reference = self.net(xu)
        d = vat_normalize(torch.randn_like(xu))
        for _ in range(int(v.power_iterations)):
            r = (float(v.xi) * d).requires_grad_(True)
            (g,) = torch.autograd.grad(div(reference, self.net(xu + r)).sum(), r)
            d = vat_normalize(g)
        return (float(v.eps) * d).detach(), div

    def __call__(self):
        cfg, t, net = self.cfg, self.t, self.net
        xl = to_float(self.images)
        n = xl.shape[0]
        ramp = host_ramp(cfg.ramp.kind, int(cfg.ramp.steps), t)
        values, weights, extra = {}, {"xe": 1.0}, {}
        if self.method == "supervised":
            logits = net(weak(xl, **self.aug))
        elif self.method == "icn_reclassify":  # `sslj.icn.method.ICNReclassification`
            alpha = float(cfg.icn.alpha)
            out = net(torch.cat([weak(xl, **self.aug), self.negatives]))
            logits = out[:n]
            z = out[n:].gather(1, self.neg_class[:, None])[:, 0]
            values["icn"] = (self.neg_weight * F.softplus(z)).mean()
            weights["xe"], weights["icn"] = 1.0 - alpha, alpha
        elif self.method == "fixmatch":  # `sslj.methods.fixmatch.FixMatch`
            c = cfg.fixmatch
            xu = to_float(self.unlabeled)
            m = xu.shape[0]
            x_s = strong(weak(xu, **self.aug), self.rng,
                         num_ops=int(c.num_ops), cutout=bool(c.cutout),
                         fraction=float(c.cutout_fraction))
            out = net(torch.cat([weak(xl, **self.aug), weak(xu, **self.aug), x_s]))
            logits, logits_u, logits_s = out[:n], out[n:n + m], out[n + m:]
            with torch.no_grad():
                confidence, label = F.softmax(logits_u.detach(), -1).max(-1)
                mask = (confidence >= float(c.threshold)).float()
            values["fixmatch"] = (F.cross_entropy(logits_s, label, reduction="none")
                                  * mask).mean()
            weights["fixmatch"] = float(c.weight)
            extra["fixmatch_mask_rate"] = mask.mean()
        elif self.method == "mixmatch":
            logits, logits_u = self._mixmatch(xl, values, weights, extra, ramp)
        elif self.method == "supervised+ns3l":  # NS3L alone: one clean pass over both
            xu = to_float(self.unlabeled)
            out = net(weak(torch.cat([xl, xu]), **self.aug))
            logits, logits_u = out[:n], out[n:]
        else:
            xu = to_float(self.unlabeled)
            x = weak(torch.cat([xl, xu]), **self.aug)
            out = net(x)  # the clean pass: writes the running statistics
            logits, logits_u = out[:n], out[n:]
            if self.method == "pi_model":
                target = self._second_pass(net, xl, xu, cfg.pi_model.target_pass)
                values["pi"] = softmax_mse(logits_u, target)
                weights["pi"] = float(cfg.pi_model.weight) * ramp
            elif self.method == "spl_outer":  # SPLConsistency, "official" normalisation
                target = self._second_pass(net, xl, xu, cfg.pi_model.target_pass)
                values["consistency"] = softmax_mse(logits_u, target)
                b_l, b_u = n, xu.shape[0]
                weights["xe"] = b_l / (b_l + b_u)
                weights["consistency"] = float(cfg.spl.consistency_weight) * b_u / (b_l + b_u)
            elif self.method == "mean_teacher":
                target = self._second_pass(self.teacher, xl, xu,
                                           cfg.mean_teacher.target_pass)
                values["mt"] = softmax_mse(logits_u, target)
                weights["mt"] = float(cfg.mean_teacher.weight) * ramp
            elif self.method == "vat":
                xu_aug = x[n:].detach()
                set_update_stats(net, False)  # every VAT pass: batch statistics, no writes
                r_adv, div = self._vat_perturbation(xu_aug)
                logits_adv = net(xu_aug + r_adv)
                set_update_stats(net, True)
                values["vat"] = div(logits_u.detach(), logits_adv).mean()
                weights["vat"] = float(cfg.vat.weight) * ramp
            elif self.method == "temporal_ensembling":
                te = cfg.temporal_ensembling
                ids = self.unlabeled_index
                count = self.count[ids]
                has_target = count > 0
                correction = (1.0 - float(te.alpha) ** count.float()).clamp_min(1e-12)
                target = torch.where(has_target[:, None],
                                     self.ensemble[ids] / correction[:, None], 0.0)
                p_u = F.softmax(logits_u, -1)
                sq = (p_u - target).square().mean(-1)
                values["te"] = torch.where(has_target, sq, 0.0).mean()
                weights["te"] = float(te.weight) * ramp
                extra["te_has_target"] = has_target.float().mean()
            elif self.method == "pseudo_label":
                pl = cfg.pseudo_label
                with torch.no_grad():
                    confidence, label = F.softmax(logits_u.detach(), -1).max(-1)
                    confident = confidence > float(pl.threshold)
                per_example = F.cross_entropy(logits_u, label, reduction="none")
                if pl.normalize == "batch":
                    values["pl"] = torch.where(confident, per_example, 0.0).mean()
                else:  # "confident": the mean over the confident ones, 0 when none is
                    values["pl"] = (torch.where(confident, per_example, 0.0).sum()
                                    / confident.sum().clamp_min(1))
                weights["pl"] = float(pl.weight) * ramp
                extra["mask"] = confident.float().mean()
            else:
                raise SystemExit(f"error: no PyTorch step for {self.method!r}")
        if cfg.ns3l.enabled:  # the add-on term on the clean pass's unlabeled logits
            values["ns3l"], extra["ns3l_negatives"] = ns3l_loss(logits_u,
                                                                float(cfg.ns3l.threshold))
            weights["ns3l"] = float(cfg.ns3l.weight) * (ramp if cfg.ns3l.ramp else 1.0)
        if "xe" not in values:  # MixMatch's is on its mixed targets
            values["xe"] = F.cross_entropy(logits, self.labels)
        total = sum(weights[k] * v for k, v in values.items())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        lr = host_lr(cfg.optimizer, t)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            grads = [p.grad for p in self.params]
            old = torch._foreach_mul(self.params, 1.0)
            self.opt.step()
            for i, m in self.gates:  # `sslj.train.masking.gate_updates`
                self.params[i].copy_(torch.where(m != 0, self.params[i], old[i]))
            metrics = {"losses/total": total.detach(), "monitors/l2_grads": _l2(grads),
                       "monitors/l2_params": _l2(self.params),
                       "monitors/l2_updates": _l2(torch._foreach_sub(self.params, old)),
                       **{f"losses/{k}": v.detach() for k, v in values.items()},
                       **{f"monitors/{k}": v for k, v in extra.items()}}
            torch._foreach_lerp_(self.ema, self.params, 1.0 - float(cfg.ema_decay))
            if self.method == "temporal_ensembling":  # `update_extra`, after the step
                alpha, ids = float(cfg.temporal_ensembling.alpha), self.unlabeled_index
                self.ensemble[ids] = alpha * self.ensemble[ids] + (1.0 - alpha) * p_u.detach()
                self.count[ids] += 1
            if self.method == "mean_teacher":
                a = 1.0 - float(cfg.mean_teacher.ema_decay)
                torch._foreach_lerp_(self.teacher_params, self.params, a)
                torch._foreach_lerp_(self.teacher_buffers, self.student_buffers, a)
        self.t += 1
        return metrics


# ----------------------------------------------------------------------------- parity

def parity_check(model_name: str, model, params, batch_stats, batch: int) -> dict:
    """sslj's and the PyTorch net's logits on one random batch, in inference and in
    training mode, and the running means after that training pass; AssertionError when
    a difference exceeds 1e-4 max|value| + 1e-5."""
    import jax
    import numpy as np

    x = np.random.default_rng(2).uniform(-1.0, 1.0, (batch, *SHAPES[model_name]))
    x = x.astype(np.float32)
    variables = {"params": params, "batch_stats": batch_stats}
    eval_j = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    train_j, upd = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                    mutable=["batch_stats"]))(variables, x)
    net = torch_net(model_name, params, batch_stats)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels_last NCHW view
    with torch.no_grad():
        eval_t = net.eval()(xt).numpy()
        train_t = net.train()(xt).numpy()  # writes the running statistics, as Flax did
    means_t = np.concatenate([m.running_mean.numpy() for m in net.modules()
                              if isinstance(m, BN)] or [np.zeros(0, np.float32)])
    means_j = [np.zeros(0, np.float32)]  # none: a net without BatchNorm (ICN's)
    for m in net.modules():
        if isinstance(m, BN):
            node = upd["batch_stats"]
            for key in m.flax_path:
                node = node[key]
            means_j.append(np.asarray(node["mean"]))
    means_j = np.concatenate(means_j)
    out = {}
    for name, a, b in (("eval_logits", eval_j, eval_t), ("train_logits", np.asarray(train_j),
                                                          train_t),
                       ("running_mean", means_j, means_t)):
        if a.size == 0:
            continue
        diff = float(np.max(np.abs(a - b)))
        tol = 1e-4 * float(np.max(np.abs(a))) + 1e-5
        out[name] = {"max_abs_diff": diff, "tolerance": tol, "max_abs": float(np.max(np.abs(a)))}
        print(f"parity {model_name} {name}: max |sslj - torch| = {diff:.3g} "
              f"(tolerance {tol:.3g}, max |value| {out[name]['max_abs']:.3g})",
              file=sys.stderr, flush=True)
        if not diff <= tol:
            raise AssertionError(f"{model_name}: {name} differ by {diff:.3g} > {tol:.3g}: "
                                 "the PyTorch net is not sslj's network")
    return out


# ----------------------------------------------------------------------------- load

class LoadMeter:
    """CPU seconds used by other processes: /proc/stat's busy time of the machine less
    this process's own (and its waited-for children's) CPU time (`os.times`)."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ok = os.path.exists("/proc/stat")

    def read(self):
        own = os.times()
        own = own.user + own.system + own.children_user + own.children_system
        busy = None
        if self.ok:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            # busy = all - idle - iowait; guest time is already inside user / nice
            busy = (sum(v[:8]) - v[3] - v[4]) / self.hz
        return time.perf_counter(), busy, own

    @staticmethod
    def foreign_cores(a, b):
        """Foreign CPU seconds per wall second between readings `a` and `b` (None off
        Linux), and the wall seconds."""
        wall = b[0] - a[0]
        if a[1] is None or wall <= 0:
            return None, wall
        return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / wall), wall

    @staticmethod
    def own_cores(a, b):
        """This process's CPU seconds per wall second between readings `a` and `b`."""
        wall = b[0] - a[0]
        return (b[2] - a[2]) / wall if wall > 0 else None


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help=f"comma list of {MODELS} "
                        f"(default: all; --quick: {QUICK['models']})")
    parser.add_argument("--methods", default=None, help=f"comma list of {METHODS} "
                        f"(default: all; --quick: {QUICK['methods']})")
    parser.add_argument("--batch", type=int, default=64,
                        help="labeled batch (= unlabeled batch of the SSL methods)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps timed per case per round (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed PyTorch steps per case")
    parser.add_argument("--sampler-steps", type=int, default=10,
                        help="icn_sampler: Adam steps per call (stop rule 3)")
    parser.add_argument("--foreign-limit", type=float, default=0.15,
                        help="a round with more foreign cores is flagged and repeated")
    parser.add_argument("--max-retries", type=int, default=None,
                        help="flagged rounds repeated at most this often (default: --rounds)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['models']}; {QUICK['methods']}; {QUICK['rounds']} "
                        f"rounds of {QUICK['steps']} steps unless given")
    parser.add_argument("--out", default=None, help="folder for vs_pytorch.{md,json} "
                        "(default: a fresh runs/benchmarks/<UTC time> folder)")
    args = parser.parse_args(argv)
    if torch is None:
        print(f"vs_pytorch needs PyTorch, which sslj does not install: {INSTALL}",
              file=sys.stderr)
        raise SystemExit(2)
    defaults = QUICK if args.quick else {"models": ",".join(MODELS),
                                         "methods": ",".join(METHODS), "rounds": 5, "steps": 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    models, methods = args.models.split(","), args.methods.split(",")
    for name, given, allowed in (("model", models, MODELS), ("method", methods, METHODS)):
        bad = [g for g in given if g not in allowed]
        if bad:
            parser.error(f"unknown {name} {bad}; allowed: {list(allowed)}")
    if args.rounds < 1 or args.steps < 1 or args.sampler_steps < 1:
        parser.error("--rounds, --steps and --sampler-steps must be at least 1")
    pairs = [(m, k) for m in models for k in methods if applies(m, k)]
    if not pairs:
        parser.error(f"no method given runs on {models}: {list(ICN_STEPS)} run on "
                     f"{ICN_MODEL} only, the others on {[m for m in MODELS if m != ICN_MODEL]}")
    max_retries = args.rounds if args.max_retries is None else args.max_retries

    import jax
    import numpy as np

    from sslj.models import get_model

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"PyTorch {torch.__version__}: torch.set_num_threads({threads}) (os.cpu_count()); "
          f"JAX {jax.__version__} on {jax.devices()[0].platform}, XLA_FLAGS="
          f"{os.environ.get('XLA_FLAGS', '')!r}", file=sys.stderr, flush=True)

    parity, cases, adam = {}, {}, set()
    for model_name in models:
        first = True
        for method_name in methods:
            if not applies(model_name, method_name):
                continue
            print(f"building {model_name} {method_name}: sslj (compiling) ...",
                  file=sys.stderr, flush=True)
            if method_name in ICN_STEPS:
                step, state, batch, images = build_icn_step(
                    method_name, args.batch, sampler_steps=args.sampler_steps)
            elif method_name in SPL_STEPS:
                step, state, batch, images = build_spl_step(model_name, method_name,
                                                            args.batch)
            else:
                step, state, batch, images = build_step(model_name, method_name, args.batch)
            if first:  # every case starts from the same sslj init (PRNGKey(0))
                params = jax.device_get(state.params)
                stats = jax.device_get(state.batch_stats)
                n_sslj = sum(np.size(x) for x in jax.tree.leaves(params))
                if model_name == "wrn28_2" and n_sslj != WRN28_2_PARAMS:
                    raise AssertionError(f"sslj's wrn28_2 has {n_sslj} parameters, "
                                         f"not {WRN28_2_PARAMS}")
                parity[model_name] = parity_check(
                    model_name, get_model(model_name, NUM_CLASSES), params, stats,
                    min(args.batch, 32))
                parity[model_name]["parameters"] = n_sslj
                first = False
            host = {k: np.array(v) for k, v in batch.items()}  # writable copies
            state, _ = step(state, batch)  # compile
            jax.block_until_ready(state)
            print(f"building {model_name} {method_name}: PyTorch (warm-up) ...",
                  file=sys.stderr, flush=True)
            cfg = method_config(model_name, method_name, args.batch)
            if method_name == "icn_sampler":
                tstep = TorchICNSampler(model_name, cfg, params, host, args.sampler_steps)
            elif method_name == "spl_inner":
                tstep = TorchSPLInner(model_name, cfg, params, stats, host,
                                      jax.device_get(state.masks),
                                      jax.device_get(state.mask_scores))
            else:
                tstep = TorchStep(model_name, method_name, cfg, params, stats, host,
                                  masks=jax.device_get(state.masks))
            n_torch = sum(p.numel() for p in tstep.params)
            if n_torch != n_sslj:
                raise AssertionError(f"{model_name}: PyTorch {n_torch} parameters, "
                                     f"sslj {n_sslj}")
            adam.add(tstep.adam)
            for _ in range(args.warmup):
                tstep()
            cases[(model_name, method_name)] = {"sslj": [step, state, batch], "torch": tstep,
                                                "images": images}

    meter = LoadMeter()
    rounds = []
    attempts = 0
    while (sum(not r["flagged"] for r in rounds) < args.rounds
           and attempts < args.rounds + max_retries):
        attempts += 1
        order = ("sslj", "torch") if attempts % 2 else ("torch", "sslj")
        rec = {"attempt": attempts, "order": list(order), "times": {}, "foreign": {},
               "own": {}}
        start = meter.read()
        for (model_name, method_name), case in cases.items():
            for fw in order:
                a = meter.read()
                t0 = time.perf_counter()
                if fw == "sslj":
                    step, state, batch = case["sslj"]
                    for _ in range(args.steps):
                        state, _ = step(state, batch)
                    jax.block_until_ready(state)
                    case["sslj"][1] = state
                else:
                    for _ in range(args.steps):
                        case["torch"]()
                sec = (time.perf_counter() - t0) / args.steps
                key = f"{model_name}/{method_name}/{fw}"
                rec["times"][key] = sec
                b = meter.read()
                rec["foreign"][key] = meter.foreign_cores(a, b)[0]
                rec["own"][key] = meter.own_cores(a, b)
            k = f"{model_name}/{method_name}"
            fo = [rec["foreign"][f"{k}/{fw}"] for fw in order]
            print(f"attempt {attempts}: {model_name} {method_name}: sslj "
                  f"{1000 * rec['times'][k + '/sslj']:.1f} ms, PyTorch "
                  f"{1000 * rec['times'][k + '/torch']:.1f} ms, foreign cores "
                  + " / ".join("n/a" if f is None else f"{f:.2f}" for f in fo),
                  file=sys.stderr, flush=True)
        rec["foreign_cores"], rec["wall_s"] = meter.foreign_cores(start, meter.read())
        rec["load_avg_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        rec["flagged"] = rec["foreign_cores"] is not None and (
            rec["foreign_cores"] > args.foreign_limit)
        rounds.append(rec)
        fc = "n/a" if rec["foreign_cores"] is None else f"{rec['foreign_cores']:.2f}"
        print(f"attempt {attempts} done: {rec['wall_s']:.1f} s, foreign cores {fc}"
              + (f" > {args.foreign_limit}: flagged, repeating" if rec["flagged"] else ""),
              file=sys.stderr, flush=True)

    clean = [r for r in rounds if not r["flagged"]]
    noisy = sorted((r for r in rounds if r["flagged"]), key=lambda r: r["foreign_cores"])
    used = clean + noisy[:max(0, args.rounds - len(clean))]
    for r in rounds:
        r["used"] = any(r is u for u in used)
    rows = []
    for model_name, method_name in cases:
        k = f"{model_name}/{method_name}"
        s = statistics.median(r["times"][f"{k}/sslj"] for r in used)
        t = statistics.median(r["times"][f"{k}/torch"] for r in used)
        fo = [r["foreign"][f"{k}/{fw}"] for r in used for fw in ("sslj", "torch")]
        fo = [f for f in fo if f is not None]
        la = [r["load_avg_1min"] for r in used if r["load_avg_1min"] is not None]
        own = {fw: statistics.median(r["own"][f"{k}/{fw}"] for r in used)
               for fw in ("sslj", "torch")}
        rows.append({"model": model_name, "method": method_name, "batch": args.batch,
                     "images": cases[(model_name, method_name)]["images"],
                     "sslj_ms": 1000 * s, "torch_ms": 1000 * t, "ratio_sslj_to_torch": s / t,
                     "foreign_cores_median": statistics.median(fo) if fo else None,
                     "foreign_cores_max": max(fo) if fo else None,
                     "load_avg_1min": statistics.median(la) if la else None,
                     "sslj_own_cores": own["sslj"], "torch_own_cores": own["torch"],
                     "noisy_rounds": sum(r["flagged"] for r in used)})
    meta = {"jax": jax.__version__, "torch": torch.__version__, "torch_threads": threads,
            "torch_adam": sorted(adam), "onednn": bool(torch.backends.mkldnn.is_available()),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "batch": args.batch,
            "rounds": args.rounds, "steps": args.steps, "attempts": attempts,
            "foreign_limit": args.foreign_limit, "cpu_count": threads,
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    text = report(meta, rows, rounds, parity)
    write(args.out, {"meta": meta, "rows": rows, "rounds": rounds, "parity": parity}, text)


def _f(x, spec):
    return "n/a" if x is None else format(x, spec)


def report(meta, rows, rounds, parity) -> str:
    used = sum(r["used"] for r in rounds)
    lines = [f"sslj (JAX {meta['jax']}, XLA_FLAGS={meta['xla_flags']!r}) against PyTorch "
             f"{meta['torch']} eager (channels_last, {meta['torch_threads']} threads, "
             f"{', '.join(meta['torch_adam'])}), CPU x{meta['cpu_count']}, float32, "
             f"labeled batch {meta['batch']} (+ {meta['batch']} unlabeled for the SSL "
             f"methods); median ms per step over {used} interleaved rounds of "
             f"{meta['steps']} steps ({meta['attempts']} run, foreign-load limit "
             f"{meta['foreign_limit']} cores); {meta['utc']}",
             "", "| model | method | sslj ms | PyTorch ms | sslj / PyTorch | own cores "
             "sslj / PyTorch | foreign cores (median / max) | load avg 1 min | noisy rounds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['sslj_ms']:.1f} | "
                     f"{r['torch_ms']:.1f} | {r['ratio_sslj_to_torch']:.2f} | "
                     f"{_f(r['sslj_own_cores'], '.2f')} / {_f(r['torch_own_cores'], '.2f')} | "
                     f"{_f(r['foreign_cores_median'], '.2f')} / "
                     f"{_f(r['foreign_cores_max'], '.2f')} | "
                     f"{_f(r['load_avg_1min'], '.2f')} | {r['noisy_rounds']} |")
    lines += ["", "Rounds:", "", "| run | order | wall s | foreign cores | load avg 1 min | "
              "flagged | used |", "|---|---|---|---|---|---|---|"]
    for r in rounds:
        lines.append(f"| {r['attempt']} | {' then '.join(r['order'])} | {r['wall_s']:.1f} | "
                     f"{_f(r['foreign_cores'], '.2f')} | {_f(r['load_avg_1min'], '.2f')} | "
                     f"{'yes' if r['flagged'] else 'no'} | {'yes' if r['used'] else 'no'} |")
    lines += ["", "Parity (sslj's initial weights in the PyTorch net, one random batch; "
              "max |sslj - PyTorch|):", ""]
    for model_name, p in parity.items():
        lines.append(f"- {model_name} ({p['parameters']:,} parameters in both): " + ", ".join(
            f"{k} {v['max_abs_diff']:.2g} (max |value| {v['max_abs']:.3g})"
            for k, v in p.items() if isinstance(v, dict)))
    return "\n".join(lines)


def write(out: str | None, data: dict, text: str) -> None:
    """Prints `text`; writes vs_pytorch.md and vs_pytorch.json into `out`, by default a
    fresh runs/benchmarks/<UTC time> folder (never a tracked file unless named)."""
    print(text)
    if out is None:
        base = os.path.join("runs", "benchmarks", time.strftime("%Y%m%dT%H%M%SZ",
                                                                  time.gmtime()))
        out, i = base, 1
        while os.path.exists(out):
            out, i = f"{base}-{i}", i + 1
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vs_pytorch.json"), "w") as f:
        json.dump(data, f, indent=2)
    with open(os.path.join(out, "vs_pytorch.md"), "w") as f:
        f.write(text + "\n")
    print(f"report written to {out}/vs_pytorch.md", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
