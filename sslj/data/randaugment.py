"""FixMatch's strong augmentation: RandAugment with random magnitude, then Cutout, on device.

`strong` runs inside the jitted train step on float NHWC batches in [-1, 1] (the format of
`sslj.data.augment.to_float`). Every example draws its own `num_ops` ops (uniformly, with
replacement, from `OPS`) and, per op, a magnitude uniformly from `RANGES` (FixMatch, Sohn et
al. 2020, Table 12), applies them in sequence, then Cutout. Each op reproduces Pillow's
(`ImageOps`, `ImageEnhance`, `Image.transform`) on the 0..255 scale, including Pillow's
quantization to uint8 after every op, so the ops compose as they do on PIL images: blends
truncate (`Image.blend`), the SMOOTH filter rounds, lookup tables and nearest-neighbour
warps give integers.

Every op is written as one recipe, `out = warp(blend(degenerate, lut[x], factor), affine)`:
a per-channel 256-entry lookup table (autocontrast, equalize, posterize, solarize), a
blend with a degenerate image (brightness, color, contrast, sharpness) or an affine map
(rotate, shear, translate); the other parts of an op's recipe are the identity. The op's
branch of `jax.lax.switch` only builds the recipe; under `vmap` the switch becomes a
select over all 14 branches, so every example pays for every op's recipe (the costly ones:
equalize's histogram, a scatter-add of H*W*C counts; sharpness's 3x3 filter; the luma of
color and contrast), but the per-pixel work of applying it (one table lookup, one blend,
one nearest-neighbour gather) is done once per op application.

Written by hand, not taken from dm-pix (0.4.5), because its semantics differ from Pillow's:
brightness (`adjust_brightness` adds, PIL multiplies), color (`adjust_saturation` works in
HSV, PIL blends with its integer luma L = (19595 R + 38470 G + 7471 B + 2^15) >> 16),
contrast (`adjust_contrast` blends each channel with its own mean, PIL with the rounded
mean of L), the affine warps (`affine_transform(order=0)` rounds index coordinates
half-to-even through `map_coordinates` over all three axes; PIL floors pixel-centre
coordinates in 16.16 fixed point, which the gather here reproduces bit for bit), and
autocontrast, equalize, posterize and sharpness, which dm-pix lacks. Solarize uses
`dm_pix.solarize` (on the lookup table).

Geometric ops fill uncovered pixels with grey 128, our choice (`fillcolor=(128, 128, 128)`;
Pillow's default is black), and sample nearest-neighbour (PIL's default resample). On one
channel (MNIST) Color is the identity: a grayscale image is its own L. Cutout fills a
square of side `round(cutout_fraction * min(H, W))` pixels (16 px on 32x32 and 14 px on
28x28 at the default 0.5) centred at a uniformly random pixel and clipped at the borders,
with mid grey 0.0 in [-1, 1] (127.5 on the 0..255 scale, which no op can produce, so the
patch is recognizable).

`jax.jit(strong)` with num_ops=2 and Cutout, median of 10 calls, measured on a 2-core CPU
loaded by another training job (load average 3 to 7): 448x32x32x3 in 40 ms, 224x28x28x1 in
11 ms; without the two XLA:CPU workarounds noted in `_run` and `strong`, 158 ms and 18 ms.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from sslj.data.augment import to_float

OPS = ("autocontrast", "brightness", "color", "contrast", "equalize", "identity", "posterize",
       "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y")

# FixMatch Table 12. Enhance factors (0 = degenerate image, 1 = original); posterize: bits
# kept (integer); rotate: degrees; shear: x shift per row; solarize: threshold as a
# fraction of 256; translate: fraction of the image size. Ops absent take no magnitude.
RANGES = {
    "brightness": (0.05, 0.95),
    "color": (0.05, 0.95),
    "contrast": (0.05, 0.95),
    "posterize": (4, 8),
    "rotate": (-30.0, 30.0),
    "sharpness": (0.05, 0.95),
    "shear_x": (-0.3, 0.3),
    "shear_y": (-0.3, 0.3),
    "solarize": (0.0, 1.0),
    "translate_x": (-0.3, 0.3),
    "translate_y": (-0.3, 0.3),
}
INTEGER_MAGNITUDES = ("posterize",)  # drawn uniformly from the integers low..high
FILL = 128.0  # geometric ops' fill on the 0..255 scale
CUTOUT_GREY = 0.0  # in [-1, 1]


class _Recipe(NamedTuple):
    """One op as `warp(blend(degenerate, lut[x], factor), affine)` on an (H, W, C) image."""
    lut: jax.Array  # (256, C) float, per-channel lookup table
    degenerate: jax.Array  # (H, W, C) float
    factor: jax.Array  # scalar
    affine: jax.Array  # (6,) PIL AFFINE data: output pixel centre -> input point


_IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _recipe(image, *, lut=None, degenerate=None, factor=1.0, affine=_IDENTITY_AFFINE):
    c = image.shape[-1]
    if lut is None:
        lut = jnp.broadcast_to(jnp.arange(256, dtype=jnp.float32)[:, None], (256, c))
    if degenerate is None:  # factor 1: the blend returns lut[x] exactly
        degenerate = jnp.zeros_like(image)
    return _Recipe(lut.astype(jnp.float32), degenerate, jnp.asarray(factor, jnp.float32),
                   jnp.asarray(affine, jnp.float32))


def _luma(image):
    """PIL's `convert("L")`: (19595 R + 38470 G + 7471 B + 2^15) >> 16; L itself for C=1."""
    if image.shape[-1] == 1:
        return image[..., 0]
    v = image.astype(jnp.int32)
    return ((v[..., 0] * 19595 + v[..., 1] * 38470 + v[..., 2] * 7471 + 32768) >> 16
            ).astype(image.dtype)


def _identity(image, magnitude):
    del magnitude
    return _recipe(image)


def _autocontrast(image, magnitude):
    """ImageOps.autocontrast(cutoff=0): each channel's [min, max] onto [0, 255]."""
    del magnitude
    v = image.reshape(-1, image.shape[-1]).astype(jnp.int32)
    lo, hi = v.min(axis=0), v.max(axis=0)
    i = jnp.arange(256, dtype=jnp.int32)[:, None]
    stretched = jnp.clip((i - lo) * 255 // jnp.maximum(hi - lo, 1), 0, 255)
    row, levels = _autocontrast_rounded_down()
    down = jnp.any(jnp.asarray(levels)[jnp.asarray(row)[lo, hi]] == i[..., None], axis=-1)
    return _recipe(image, lut=jnp.where(hi > lo, stretched - down, i))


@functools.cache
def _autocontrast_rounded_down() -> tuple[np.ndarray, np.ndarray]:
    """The levels that PIL's autocontrast maps one lower than the exact floor, per (lo, hi).

    PIL's table is int(level * scale + offset) in double precision, scale = 255 / (hi - lo),
    offset = -lo * scale; where the exact value (level - lo) * 255 / (hi - lo) is an integer
    the double can land just below it (often at level = hi: 254, not 255). Elsewhere the
    exact value is at least 1 / 255 from an integer and PIL's table is the exact floor.

    Returns `(row, levels)`: the levels of the pair (lo, hi) are `levels[row[lo, hi]]`,
    padded with -1 (row 0: none).
    """
    level = np.arange(256)
    row = np.zeros((256, 256), np.int32)
    levels = [np.zeros(0, np.int32)]
    for lo in range(255):
        hi = np.arange(lo + 1, 256)[:, None]
        scale = 255.0 / (hi - lo)
        pil = np.floor(level * scale + -lo * scale)
        exact = (level - lo) * 255 // (hi - lo)
        down = (pil < exact) & (level >= lo) & (level <= hi)
        assert np.all(pil >= exact - 1), "PIL's table is off by more than one"
        for pair in np.flatnonzero(down.any(axis=1)):
            row[lo, lo + 1 + pair] = len(levels)
            levels.append(np.flatnonzero(down[pair]))
    width = max(len(x) for x in levels)
    padded = np.full((len(levels), width), -1, np.int32)
    for r, x in enumerate(levels):
        padded[r, : len(x)] = x
    return row.astype(np.int16), padded.astype(np.int16)


def _equalize(image, magnitude):
    """ImageOps.equalize, per channel."""
    del magnitude
    n_pixels = image.shape[0] * image.shape[1]
    c = image.shape[-1]
    v = image.reshape(-1, c).astype(jnp.int32)
    hist = jnp.zeros(256 * c, jnp.int32).at[(v * c + jnp.arange(c)).reshape(-1)].add(1)
    hist = hist.reshape(256, c)
    below = jnp.cumsum(hist, axis=0) - hist  # pixels darker than each level
    top_count = jnp.take_along_axis(hist, v.max(axis=0)[None], axis=0)[0]
    step = (n_pixels - top_count) // 255  # the last non-empty bin is left out
    i = jnp.arange(256, dtype=jnp.int32)[:, None]
    equalized = jnp.minimum((step // 2 + below) // jnp.maximum(step, 1), 255)
    return _recipe(image, lut=jnp.where(step > 0, equalized, i))


def _posterize(image, bits):
    """ImageOps.posterize: keep the top `bits` bits."""
    shift = 8 - jnp.round(bits).astype(jnp.int32)
    mask = jnp.left_shift(0xFF, shift) & 0xFF
    lut = jnp.arange(256, dtype=jnp.int32)[:, None] & mask
    return _recipe(image, lut=jnp.broadcast_to(lut, (256, image.shape[-1])))


def _solarize(image, threshold):
    """ImageOps.solarize(threshold * 256): levels >= the threshold are inverted."""
    levels = jnp.arange(256, dtype=jnp.float32)[:, None] / 255.0
    lut = jnp.round(255.0 * pix.solarize(levels, threshold * 256.0 / 255.0))
    return _recipe(image, lut=jnp.broadcast_to(lut, (256, image.shape[-1])))


def _brightness(image, factor):
    """ImageEnhance.Brightness: blend with black."""
    return _recipe(image, degenerate=jnp.zeros_like(image), factor=factor)


def _color(image, factor):
    """ImageEnhance.Color: blend with L; the identity for one channel (L is the image)."""
    return _recipe(image, degenerate=jnp.broadcast_to(_luma(image)[..., None], image.shape),
                   factor=factor)


def _contrast(image, factor):
    """ImageEnhance.Contrast: blend with the mean of L, rounded half up."""
    luma = _luma(image).astype(jnp.int32)
    mean = (2 * luma.sum() + luma.size) // (2 * luma.size)
    return _recipe(image, degenerate=jnp.full_like(image, mean), factor=factor)


def _sharpness(image, factor):
    """ImageEnhance.Sharpness: blend with ImageFilter.SMOOTH, whose border pixels are kept."""
    h, w, _ = image.shape
    rows = image[:, :-2] + image[:, 1:-1] + image[:, 2:]  # separable 3x3 box sum
    total = rows[:-2] + rows[1:-1] + rows[2:] + 4.0 * image[1:-1, 1:-1]  # centre weight 5
    smooth = jnp.pad(jnp.floor(total / 13.0 + 0.5), ((1, 1), (1, 1), (0, 0)))  # never a tie
    y, x = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
    border = (y == 0) | (y == h - 1) | (x == 0) | (x == w - 1)
    return _recipe(image, degenerate=jnp.where(border, image, smooth), factor=factor)


def _rotate(image, degrees):
    """Image.rotate(degrees): counter-clockwise about the image centre."""
    h, w, _ = image.shape
    theta = -jnp.deg2rad(degrees)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    cx, cy = w / 2.0, h / 2.0
    affine = jnp.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy])
    return _recipe(image, affine=affine)


def _shear_x(image, v):
    return _recipe(image, affine=jnp.stack([1.0, v, 0.0, 0.0, 1.0, 0.0]))


def _shear_y(image, v):
    return _recipe(image, affine=jnp.stack([1.0, 0.0, 0.0, v, 1.0, 0.0]))


def _translate_x(image, fraction):
    return _recipe(image, affine=jnp.stack([1.0, 0.0, fraction * image.shape[1], 0.0, 1.0, 0.0]))


def _translate_y(image, fraction):
    return _recipe(image, affine=jnp.stack([1.0, 0.0, 0.0, 0.0, 1.0, fraction * image.shape[0]]))


_RECIPES = {"autocontrast": _autocontrast, "brightness": _brightness, "color": _color,
            "contrast": _contrast, "equalize": _equalize, "identity": _identity,
            "posterize": _posterize, "rotate": _rotate, "sharpness": _sharpness,
            "shear_x": _shear_x, "shear_y": _shear_y, "solarize": _solarize,
            "translate_x": _translate_x, "translate_y": _translate_y}
assert tuple(_RECIPES) == OPS


def _warp(image, affine):
    """PIL's nearest-neighbour `Image.transform(AFFINE, fillcolor=FILL)`.

    Output pixel (x, y) takes input pixel floor(a0 (x + .5) + a1 (y + .5) + a2), likewise for
    y. PIL uses its scaling path (double precision) when a1 = a3 = 0 and 16.16 fixed point
    otherwise; both are reproduced, so identical coordinates round identically.
    """
    h, w, c = image.shape
    a0, a1, a2, a3, a4, a5 = affine
    x = jnp.arange(w, dtype=jnp.int32)[None, :]
    y = jnp.arange(h, dtype=jnp.int32)[:, None]

    def fixed(v):
        return jnp.floor(v * 65536.0 + 0.5).astype(jnp.int32)

    x_fixed = (fixed(a2 + 0.5 * a0 + 0.5 * a1) + x * fixed(a0) + y * fixed(a1)) >> 16
    y_fixed = (fixed(a5 + 0.5 * a3 + 0.5 * a4) + x * fixed(a3) + y * fixed(a4)) >> 16
    x_scaled = jnp.floor(a2 + 0.5 * a0 + x * a0).astype(jnp.int32)
    y_scaled = jnp.floor(a5 + 0.5 * a4 + y * a4).astype(jnp.int32)
    scaling = (a1 == 0) & (a3 == 0)
    x_in = jnp.where(scaling, x_scaled, x_fixed)
    y_in = jnp.where(scaling, y_scaled, y_fixed)
    inside = (x_in >= 0) & (x_in < w) & (y_in >= 0) & (y_in < h)
    index = jnp.clip(y_in, 0, h - 1) * w + jnp.clip(x_in, 0, w - 1)
    pixels = image.reshape(h * w, c)[index.reshape(-1)].reshape(h, w, c)
    return jnp.where(inside[..., None], pixels, FILL)


def _run(recipe: _Recipe, image):
    h, w, c = image.shape
    # A product with the identity materializes the table: XLA:CPU would otherwise fuse the
    # switch's select (and the tables it picks from) into the lookup and rebuild them for
    # every pixel, 2x slower per op on CPU. Exact: integers below 2^8.
    lut = jnp.dot(recipe.lut, jnp.eye(c, dtype=recipe.lut.dtype), precision="highest")
    looked_up = lut.reshape(-1)[(image.astype(jnp.int32) * c + jnp.arange(c)).reshape(-1)]
    d = recipe.degenerate
    # Image.blend: float arithmetic, truncated to uint8 (clipped when extrapolating).
    blended = jnp.clip(jnp.floor(d + recipe.factor * (looked_up.reshape(h, w, c) - d)), 0, 255)
    return _warp(blended, recipe.affine)


def _check_channels(c):
    if c not in (1, 3):
        raise ValueError(f"RandAugment takes grayscale or RGB images, not {c} channels")


def apply_op(name: str, image: jax.Array, magnitude=0.0) -> jax.Array:
    """Pillow's op `name` at `magnitude` on one (H, W, C) image of integer levels 0..255.

    Returns float32 integer levels, as Pillow's uint8 result.
    """
    _check_channels(image.shape[-1])
    image = jnp.clip(jnp.round(jnp.asarray(image, jnp.float32)), 0, 255)
    return _run(_RECIPES[name](image, jnp.asarray(magnitude, jnp.float32)), image)


def _apply_index(index, image, magnitude):
    """`apply_op(OPS[index], ...)` for a traced index: the switch builds only the recipe."""
    recipe = jax.lax.switch(index, [_RECIPES[name] for name in OPS], image, magnitude)
    return _run(recipe, image)


def _apply_step(levels, op):
    index, magnitude = op
    return _apply_index(index, levels, magnitude), None


def _draw_magnitude(index, u):
    low = jnp.array([RANGES.get(name, (0, 0))[0] for name in OPS], jnp.float32)[index]
    high = jnp.array([RANGES.get(name, (0, 0))[1] for name in OPS], jnp.float32)[index]
    integer = jnp.array([name in INTEGER_MAGNITUDES for name in OPS])[index]
    return jnp.where(integer, jnp.floor(low + u * (high - low + 1)), low + u * (high - low))


def strong(images: jax.Array, rng: jax.Array, *, num_ops: int = 2, cutout: bool = True,
           cutout_fraction: float = 0.5) -> jax.Array:
    """RandAugment (random magnitude) + Cutout on float NHWC images in [-1, 1] (or uint8
    images, which are mapped there first by `to_float`).

    Args:
      images: float32 (N, H, W, C), C = 1 or 3, values k * 2 / 255 - 1 for levels k; or
        uint8 levels k.
      rng: one key; example i uses `jax.random.split(rng, N)[i]`.
      num_ops: ops per example, drawn with replacement.
      cutout: whether to add the grey (0.0) square.
      cutout_fraction: the square's side as a fraction of min(H, W).

    Returns:
      float32 images of the same shape in [-1, 1].
    """
    if images.dtype == jnp.uint8:
        images = to_float(images)
    n, h, w, c = images.shape
    _check_channels(c)
    side = round(cutout_fraction * min(h, w))

    def one(image, key):
        op_key, magnitude_key, cutout_key = jax.random.split(key, 3)
        indices = jax.random.randint(op_key, (num_ops,), 0, len(OPS))
        magnitudes = _draw_magnitude(indices, jax.random.uniform(magnitude_key, (num_ops,)))
        levels = jnp.clip(jnp.round((image + 1.0) * 127.5), 0, 255)
        # A loop, not an unrolled sequence: one compiled op, and its input is materialized
        # (XLA:CPU would otherwise fuse one op's gather into each reader in the next op).
        levels, _ = jax.lax.scan(_apply_step, levels, (indices, magnitudes))
        # to_float's scale; the clip takes 255 from 1 + 1 ulp to 1.
        out = jnp.clip(levels * (2.0 / 255.0) - 1.0, -1.0, 1.0)
        if cutout and side > 0:
            cy, cx = jax.random.randint(cutout_key, (2,), 0, jnp.array([h, w]))
            top, left = cy - side // 2, cx - side // 2  # may start or end outside: clipped
            rows = (jnp.arange(h) >= top) & (jnp.arange(h) < top + side)
            cols = (jnp.arange(w) >= left) & (jnp.arange(w) < left + side)
            out = jnp.where((rows[:, None] & cols[None, :])[..., None], CUTOUT_GREY, out)
        return out

    return jax.vmap(one)(images.astype(jnp.float32), jax.random.split(rng, n))
