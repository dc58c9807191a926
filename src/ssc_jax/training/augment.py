"""Preprocessing: per-channel normalisation and the CIFAR augmentation (random crop after
4-pixel zero padding, horizontal flip), in JAX so that it runs inside the jitted train step.
Images are (B, H, W, C), uint8 or float on the 0..255 scale."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax.core.checks import check_ndim


def channel_stats(images) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``images`` (n, H, W, C) on the 0..1 scale."""
    check_ndim("images", images, 4, "a batch of images (n, H, W, C)")
    scaled = np.asarray(images, np.float64) / 255.0
    std = scaled.std(axis=(0, 1, 2))
    return scaled.mean(axis=(0, 1, 2)).tolist(), np.where(std > 0, std, 1.0).tolist()


def normalize_images(images, mean, std) -> jax.Array:
    """(images / 255 - mean) / std per channel, as float32; (n, H, W, C) -> same shape."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (jnp.asarray(images, jnp.float32) / 255.0 - mean) / std


def random_crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Pad with ``padding`` zero pixels a side, crop back to (H, W) at a random offset, and
    flip left-right with probability 1/2, independently per image: (B, H, W, C) -> same."""
    batch, height, width, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(
            image, (offset[0], offset[1], 0), (height, width, image.shape[-1])
        )

    cropped = jax.vmap(crop)(padded, offsets)
    flip = jax.random.bernoulli(flip_key, 0.5, (batch, 1, 1, 1))
    return jnp.where(flip, cropped[:, :, ::-1], cropped)
