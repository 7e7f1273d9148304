"""On-device augmentation, keyed by RNG (runs inside the jitted train step).

Weak augmentation follows the Oliver testbed's in-network jitter: optional horizontal
flip, a random translation by up to `crop_pad` pixels (pad then random crop; `pad_mode`
"reflect", Oliver's, or "zeros", torchvision's RandomCrop(padding) default of black
pixels, value 0 -> -1.0 here, as the ProSelfLC code uses) and
additive Gaussian noise of std `noise_std` on the [-1, 1]-scaled image. Each example
gets its own key, so two calls with different keys give two independent views (the
Pi-model's stochastic passes).
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp


def to_float(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.astype(jnp.float32) * (2.0 / 255.0) - 1.0


PAD_MODES = ("reflect", "zeros")


def weak(images: jax.Array, rng: jax.Array, *, flip: bool, crop_pad: int,
         noise_std: float, pad_mode: str = "reflect") -> jax.Array:
    """Flip (optional) + pad-and-crop + Gaussian noise on float NHWC images in [-1, 1]."""
    n, h, w, c = images.shape
    flip_key, crop_key, noise_key = jax.random.split(rng, 3)
    if flip:
        keys = jax.random.split(flip_key, n)
        images = jax.vmap(pix.random_flip_left_right)(keys, images)
    if crop_pad > 0:
        pad = ((0, 0), (crop_pad, crop_pad), (crop_pad, crop_pad), (0, 0))
        if pad_mode == "reflect":
            padded = jnp.pad(images, pad, mode="reflect")
        elif pad_mode == "zeros":  # black pixels: uint8 0 is -1.0 after to_float
            padded = jnp.pad(images, pad, mode="constant", constant_values=-1.0)
        else:
            raise ValueError(f"unknown pad_mode {pad_mode!r}; allowed: {PAD_MODES}")
        keys = jax.random.split(crop_key, n)
        images = jax.vmap(lambda k, x: pix.random_crop(k, x, (h, w, c)))(keys, padded)
    if noise_std > 0:
        images = images + noise_std * jax.random.normal(noise_key, images.shape, images.dtype)
    return images


def from_config(data_config):
    """`weak` with the `config.data` fields bound: `(images, rng) -> images`."""
    flip, crop_pad, noise_std = (bool(data_config.flip), int(data_config.crop_pad),
                                 float(data_config.noise_std))
    pad_mode = str(data_config.get("pad_mode", "reflect"))
    return lambda images, rng: weak(images, rng, flip=flip, crop_pad=crop_pad,
                                    noise_std=noise_std, pad_mode=pad_mode)
