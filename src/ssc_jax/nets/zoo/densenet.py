"""DenseNet-BC for CIFAR (after kuangliu/pytorch-cifar).

A 3x3 stem with 2g channels (g = growth rate), four dense blocks of bottleneck layers
(BN-ReLU-conv1x1 to 4g, BN-ReLU-conv3x3 to g, concatenated to the input), transitions
between them (BN-ReLU-conv1x1 halving the channels, 2x2 average pooling), then BN-ReLU,
global average pooling and a linear layer. Convolutions: 1 + 2 * (layers) + 3, i.e.
densenet121 120, densenet169 168, densenet201 200, densenet161 160.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ssc_jax.nets.taps import Tapped, tap
from ssc_jax.nets.zoo.layers import (
    Classifier,
    Conv,
    avg_pool,
    batch_norm,
    channels,
    global_avg_pool,
)

DENSENET_CONFIGS = {
    "densenet121": ((6, 12, 24, 16), 32),
    "densenet169": ((6, 12, 32, 32), 32),
    "densenet201": ((6, 12, 48, 32), 32),
    "densenet161": ((6, 12, 36, 24), 48),
}


class DenseLayer(nnx.Module):
    """Bottleneck layer: (B, H, W, c) -> (B, H, W, c + g)."""

    def __init__(self, in_planes: int, growth: int, *, rngs: nnx.Rngs):
        self.bn1 = batch_norm(in_planes, rngs)
        self.conv1 = Conv(in_planes, 4 * growth, 1, rngs=rngs)
        self.bn2 = batch_norm(4 * growth, rngs)
        self.conv2 = Conv(4 * growth, growth, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv1(nnx.relu(self.bn1(x)))
        out = self.conv2(nnx.relu(self.bn2(out)))
        return jnp.concatenate([out, x], axis=-1)


class Transition(Tapped):
    """BN-ReLU-conv1x1 then 2x2 average pooling; output is a ``"blocks"`` tap."""

    def __init__(self, in_planes: int, out_planes: int, *, rngs: nnx.Rngs):
        self.bn = batch_norm(in_planes, rngs)
        self.conv = Conv(in_planes, out_planes, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return tap(self, "blocks", avg_pool(self.conv(nnx.relu(self.bn(x)))))


class DenseNet(Tapped):
    """Taps: ``"conv1"``, ``"dense{s}.{i}.conv{1,2}"``, ``"trans{s}.conv"`` (conv);
    ``"dense{s}"`` (dense block output), ``"trans{s}"`` (after pooling), ``"classifier"``
    (blocks). ``__call__``: (B, H, W, in_channels) -> (B, num_classes)."""

    def __init__(
        self,
        num_layers: tuple[int, ...],
        growth_rate: int,
        *,
        num_classes: int,
        in_channels: int,
        width: float,
        rngs: nnx.Rngs,
    ):
        growth = channels(growth_rate, width)
        planes = 2 * growth
        self.conv1 = Conv(in_channels, planes, 3, rngs=rngs)
        for s, n in enumerate(num_layers, start=1):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(planes, growth, rngs=rngs))
                planes += growth
            setattr(self, f"dense{s}", nnx.List(layers))
            if s < len(num_layers):
                out_planes = math.floor(planes * 0.5)
                setattr(self, f"trans{s}", Transition(planes, out_planes, rngs=rngs))
                planes = out_planes
        self.num_stages = len(num_layers)
        self.bn = batch_norm(planes, rngs)
        self.classifier = Classifier(planes, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv1(x)
        for s in range(1, self.num_stages + 1):
            for layer in getattr(self, f"dense{s}"):
                x = layer(x)
            x = tap(self, "blocks", x, name=f"dense{s}")
            if s < self.num_stages:
                x = getattr(self, f"trans{s}")(x)
        return self.classifier(global_avg_pool(nnx.relu(self.bn(x))))
