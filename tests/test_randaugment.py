"""sslj.data.randaugment: each op against Pillow, and `strong`'s randomness and Cutout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from sslj.data import randaugment
from sslj.data.augment import to_float


def _rgb() -> np.ndarray:
    """32x32x3 with gradients, noise, a flat square and saturated 0 / 255 corners."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:32, :32]
    image = np.stack([x * 8, y * 8, (x + y) * 4], -1) * 0.7 + rng.integers(0, 60, (32, 32, 3))
    image[8:14, 18:26] = (40, 160, 90)
    image[:3, :3], image[-3:, -3:] = 0, 255
    return np.clip(image, 0, 255).astype(np.uint8)


def _dim_rgb() -> np.ndarray:
    """Every channel spans 0..187: PIL's autocontrast maps 187 (and 11, 22, ...) one low."""
    return (_rgb().astype(np.int32) * 187 // 255).astype(np.uint8)


def _digit() -> np.ndarray:
    """28x28x1 MNIST-like: a near-black background, a bright noisy ring (levels 0..230)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:28, :28]
    ring = np.abs(np.hypot(y - 13.5, x - 12) - 7) < 2.5
    image = np.where(ring, 170 + rng.integers(0, 61, (28, 28)), rng.integers(0, 3, (28, 28)))
    return image[..., None].astype(np.uint8)


IMAGES = {"rgb": _rgb(), "dim_rgb": _dim_rgb(), "digit": _digit()}


def _pillow(name: str, image: np.ndarray, v: float) -> np.ndarray:
    """The op as FixMatch's Pillow RandAugment writes it, on a uint8 HWC array."""
    im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    fill = 128 if im.mode == "L" else (128, 128, 128)
    w, h = im.size

    def affine(data):
        return im.transform(im.size, Image.AFFINE, data, fillcolor=fill)

    ops = {
        "autocontrast": lambda: ImageOps.autocontrast(im),
        "brightness": lambda: ImageEnhance.Brightness(im).enhance(v),
        "color": lambda: ImageEnhance.Color(im).enhance(v),
        "contrast": lambda: ImageEnhance.Contrast(im).enhance(v),
        "equalize": lambda: ImageOps.equalize(im),
        "identity": lambda: im,
        "posterize": lambda: ImageOps.posterize(im, int(v)),
        "rotate": lambda: im.rotate(v, fillcolor=fill),
        "sharpness": lambda: ImageEnhance.Sharpness(im).enhance(v),
        "shear_x": lambda: affine((1, v, 0, 0, 1, 0)),
        "shear_y": lambda: affine((1, 0, 0, v, 1, 0)),
        "solarize": lambda: ImageOps.solarize(im, v * 256),
        "translate_x": lambda: affine((1, 0, v * w, 0, 1, 0)),
        "translate_y": lambda: affine((1, 0, 0, 0, 1, v * h)),
    }
    return np.asarray(ops[name]()).reshape(image.shape)


# Both ends of every range and values inside it (odd ones: not on a grid that could hide
# a rounding difference).
MAGNITUDES = {
    "brightness": (0.05, 0.37, 0.95),
    "color": (0.05, 0.61, 0.95),
    "contrast": (0.05, 0.43, 0.95),
    "posterize": (4, 5, 7, 8),
    "rotate": (-30.0, -11.3, 4.7, 30.0),
    "sharpness": (0.05, 0.29, 0.95),
    "shear_x": (-0.3, -0.13, 0.07, 0.3),
    "shear_y": (-0.3, 0.11, 0.3),
    "solarize": (0.0, 0.5, 0.77, 1.0),
    "translate_x": (-0.3, -0.17, 0.21, 0.3),
    "translate_y": (-0.3, 0.09, 0.3),
}
assert set(MAGNITUDES) == set(randaugment.RANGES)
assert all(min(m) == randaugment.RANGES[op][0] and max(m) == randaugment.RANGES[op][1]
           for op, m in MAGNITUDES.items())

# Tolerance against Pillow: none, for every op. Blends compute Image.blend's float32
# d + f * (x - d) and truncate as it does; SMOOTH's sum / 13 never ties; L is PIL's integer
# luma; the warps use PIL's 16.16 fixed point (shear, rotate) or its scaling path
# (translate) with its floor; autocontrast carries a table of the levels where PIL's
# double-precision int(level * scale + offset) lands one below the exact value.
_apply_op = jax.jit(randaugment.apply_op, static_argnums=0)
_apply_index = jax.jit(randaugment._apply_index)


@pytest.mark.parametrize("name", randaugment.OPS)
def test_op_matches_pillow(name):
    for label, image in IMAGES.items():
        for v in MAGNITUDES.get(name, (0.0,)):
            expected = _pillow(name, image, v)
            got = np.asarray(_apply_op(name, image.astype(np.float32), v))
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}({v}) on {label}")


def test_ops_change_the_images():
    """Guards the comparison above against ops that would match by doing nothing."""
    for name in randaugment.OPS:
        for label, image in IMAGES.items():
            v = MAGNITUDES.get(name, (0.0,))[0]
            changed = np.any(_pillow(name, image, v) != image)
            unchanged = name == "identity" or (name, label) in (
                ("autocontrast", "rgb"), ("color", "digit"))  # full range; grayscale L
            assert changed != unchanged, (name, label)


def test_color_is_identity_on_grayscale():
    digit = IMAGES["digit"].astype(np.float32)
    np.testing.assert_array_equal(_apply_op("color", digit, 0.05), digit)


def test_autocontrast_keeps_pillows_double_rounding():
    expected = _pillow("autocontrast", IMAGES["dim_rgb"], 0.0)
    assert expected.max() == 254  # 187 * (255 / 187) lands just below 255 in double
    got = np.asarray(_apply_op("autocontrast", IMAGES["dim_rgb"].astype(np.float32)))
    np.testing.assert_array_equal(got, expected)


def test_traced_op_index_is_apply_op():
    """`strong`'s path (the switch on a traced index) gives `apply_op`'s result."""
    image = IMAGES["rgb"].astype(np.float32)
    for index, name in enumerate(randaugment.OPS):
        v = MAGNITUDES.get(name, (0.0,))[1 if name in MAGNITUDES else 0]
        np.testing.assert_array_equal(np.asarray(_apply_index(index, image, v)),
                                      np.asarray(_apply_op(name, image, v)), err_msg=name)


def test_ops_compose_like_pillow():
    """Quantized after every op, a sequence matches Pillow's sequence of uint8 images."""
    sequence = [("rotate", 17.3), ("equalize", 0.0), ("sharpness", 0.23), ("shear_y", -0.21),
                ("contrast", 0.71), ("posterize", 5)]
    for image in (IMAGES["rgb"], IMAGES["digit"]):
        expected, got = image, image.astype(np.float32)
        for name, v in sequence:
            expected = _pillow(name, expected, v)
            got = _apply_index(randaugment.OPS.index(name), got, v)
        np.testing.assert_array_equal(np.asarray(got), expected)


def test_magnitudes_are_drawn_over_the_ranges():
    u = jnp.linspace(0.0, 1.0, 1001)[:-1]
    for index, name in enumerate(randaugment.OPS):
        m = np.asarray(randaugment._draw_magnitude(jnp.full(u.shape, index), u))
        if name not in randaugment.RANGES:
            continue
        low, high = randaugment.RANGES[name]
        assert low <= m.min() and m.max() <= high, name
        if name in randaugment.INTEGER_MAGNITUDES:
            np.testing.assert_array_equal(np.unique(m), np.arange(low, high + 1))
        else:
            np.testing.assert_allclose([m.min(), m.max()], [low, high], atol=1e-3 * (high - low))


_strong = jax.jit(randaugment.strong, static_argnames=("num_ops", "cutout", "cutout_fraction"))


def _batch(name: str, n: int) -> jax.Array:
    """`n` copies of a test image, in the on-device format."""
    return to_float(jnp.broadcast_to(IMAGES[name], (n, *IMAGES[name].shape)))


@pytest.mark.parametrize("name,side", [("rgb", 16), ("digit", 14)])
def test_strong(name, side):
    images = _batch(name, 24)
    chex.clear_trace_counter()  # counted per function, across the parametrized cases
    strong = jax.jit(chex.assert_max_traces(randaugment.strong, n=1))  # new keys: no retrace
    out = strong(images, jax.random.key(0))
    chex.assert_shape(out, images.shape)
    chex.assert_type(out, jnp.float32)
    chex.assert_trees_all_equal(strong(images, jax.random.key(0)), out)
    other = np.asarray(strong(images, jax.random.key(1)))
    assert np.all(np.any(other != np.asarray(out), axis=(1, 2, 3)))

    out = np.asarray(out)
    assert out.min() >= -1.0 and out.max() <= 1.0
    patch = np.all(out == randaugment.CUTOUT_GREY, axis=-1)
    levels = (out + 1.0) * 127.5  # every other pixel is a uint8 level, as Pillow's
    np.testing.assert_allclose(levels[~patch], np.round(levels[~patch]), atol=1e-4)
    h, w = out.shape[1:3]
    full = 0
    for mask in patch:  # one square of side `side`, cut where it leaves the image
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        np.testing.assert_array_equal(mask, np.outer(mask.any(axis=1), mask.any(axis=0)))
        for span, size in ((rows, h), (cols, w)):
            np.testing.assert_array_equal(span, np.arange(span[0], span[-1] + 1))
            assert len(span) == side or span[0] == 0 or span[-1] == size - 1
            assert side - side // 2 <= len(span) <= side
        full += len(rows) == len(cols) == side
    assert full >= 1  # a centre at least side / 2 from the borders: p = 0.28 (0.25 on 28)

    # Identical inputs, 24 examples: each draws its own ops and magnitudes.
    views = np.asarray(_strong(images, jax.random.key(2), cutout=False))
    assert np.all(views != randaugment.CUTOUT_GREY)
    assert len(np.unique(views.reshape(len(views), -1), axis=0)) >= len(views) - 2
    changed = np.any(views != np.asarray(images), axis=(1, 2, 3))
    assert changed.mean() > 0.75


def test_strong_keeps_inputs_without_ops():
    images = _batch("rgb", 4)
    out = _strong(images, jax.random.key(0), num_ops=0, cutout=False)
    chex.assert_trees_all_close(out, images, atol=1e-6)


def test_strong_takes_uint8_images_as_their_float_form():
    images = _batch("rgb", 4)
    levels = np.round((np.asarray(images) + 1.0) * 127.5).astype(np.uint8)
    key = jax.random.key(3)
    chex.assert_trees_all_equal(_strong(jnp.asarray(levels), key), _strong(images, key))
