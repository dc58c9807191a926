"""Building blocks shared by the architectures: tapped convolution and classifier, BatchNorm
with PyTorch's defaults, pooling. Images are NHWC float32.

Weights are drawn on the host with NumPy, seeded from the module's JAX key: eager JAX would
compile one random-number kernel per distinct weight shape, which dominates building a deep
net on a CPU (tens of seconds for a DenseNet).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ssc_jax.nets.taps import Tapped, tap


def _host_rng(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())


def he_normal_fan_out(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """N(0, 2 / fan_out) for a (kh, kw, in, out) kernel, as torchvision initialises ResNets."""
    fan_out = math.prod(shape[:-2]) * shape[-1]
    return jnp.asarray(_host_rng(key).normal(0.0, math.sqrt(2.0 / fan_out), shape), dtype)


def fan_in_uniform(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for a linear layer's weights and
    bias; ``fan_in`` is the layer's input size (the bias shape does not tell it)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jnp.asarray(_host_rng(key).uniform(-bound, bound, shape), dtype)

    return init


class Conv(nnx.Conv, Tapped):
    """``nnx.Conv`` whose output is a ``"conv"`` tap: bias-free (a BatchNorm follows), padding
    ``k // 2`` on each side as in PyTorch, He-normal (fan-out) initialisation."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        strides: int = 1,
        rngs: nnx.Rngs,
    ):
        pad = kernel_size // 2
        super().__init__(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=strides,
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            kernel_init=he_normal_fan_out,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return tap(self, "conv", super().__call__(x))


class Classifier(nnx.Linear, Tapped):
    """``nnx.Linear`` on pooled features whose logits are a ``"blocks"`` tap."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        init = fan_in_uniform(in_features)
        super().__init__(in_features, out_features, kernel_init=init, bias_init=init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return tap(self, "blocks", super().__call__(x))


def batch_norm(num_features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm with PyTorch's defaults (running-average momentum 0.1, eps 1e-5)."""
    return nnx.BatchNorm(num_features, momentum=0.9, epsilon=1e-5, rngs=rngs)


def channels(base: int, width: float) -> int:
    """``base`` channels scaled by the width multiplier, at least 1."""
    return max(1, round(base * width))


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2: (B, H, W, C) -> (B, H // 2, W // 2, C)."""
    return nnx.max_pool(x, (2, 2), strides=(2, 2))


def avg_pool(x: jax.Array) -> jax.Array:
    """2x2 average pooling, stride 2: (B, H, W, C) -> (B, H // 2, W // 2, C)."""
    return nnx.avg_pool(x, (2, 2), strides=(2, 2))


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes: (B, H, W, C) -> (B, C); makes any input size work."""
    return jnp.mean(x, axis=(1, 2))


class ConvBNReLU(nnx.Module):
    """3x3 convolution, BatchNorm, ReLU: (B, H, W, in) -> (B, H, W, out)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.conv = Conv(in_features, out_features, 3, rngs=rngs)
        self.bn = batch_norm(out_features, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x)))
