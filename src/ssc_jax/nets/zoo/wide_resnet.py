"""Wide-ResNet WRN-d-k for CIFAR (after meliketoy/wide-resnet.pytorch), without dropout.

A 3x3 stem with 16 channels, three stages of n = (d - 4) / 6 pre-activation blocks
(BN-ReLU-conv3x3-BN-ReLU-conv3x3; 16k, 32k, 64k channels; strides 1, 2, 2; the second
convolution carries the stride), a final BN-ReLU, global average pooling, a linear layer.
The first block of every stage has a 1x1 convolution shortcut, even where the shapes agree
(stage 1 with k = 1), so the net has exactly d convolutions: 1 + 6n + 3.
"""

from __future__ import annotations

import jax
from flax import nnx

from ssc_jax.nets.taps import Tapped, tap
from ssc_jax.nets.zoo.layers import Classifier, Conv, batch_norm, channels, global_avg_pool


def wrn_blocks_per_stage(depth: int) -> int:
    """n = (depth - 4) / 6; raises unless depth = 6n + 4 with n >= 1."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"Wide-ResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...); got {depth}"
        )
    return (depth - 4) // 6


class WideBasic(Tapped):
    """Pre-activation block with two 3x3 convolutions; output is a ``"blocks"`` tap."""

    def __init__(self, in_planes: int, planes: int, stride: int, project: bool, *, rngs: nnx.Rngs):
        self.bn1 = batch_norm(in_planes, rngs)
        self.conv1 = Conv(in_planes, planes, 3, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs)
        self.conv2 = Conv(planes, planes, 3, strides=stride, rngs=rngs)
        self.shortcut = Conv(in_planes, planes, 1, strides=stride, rngs=rngs) if project else None

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv1(nnx.relu(self.bn1(x)))
        out = self.conv2(nnx.relu(self.bn2(out)))
        skip = x if self.shortcut is None else self.shortcut(x)
        return tap(self, "blocks", out + skip)


class WideResNet(nnx.Module):
    """WRN-depth-k. Taps: ``"conv1"``, ``"layer{s}.{b}.conv{i}"``, ``"layer{s}.0.shortcut"``
    (conv); ``"layer{s}.{b}"`` and ``"classifier"`` (blocks).
    ``__call__``: (B, H, W, in_channels) -> (B, num_classes)."""

    def __init__(
        self,
        depth: int,
        k: int,
        *,
        num_classes: int,
        in_channels: int,
        width: float,
        rngs: nnx.Rngs,
    ):
        n = wrn_blocks_per_stage(depth)
        in_planes = channels(16, width)
        self.conv1 = Conv(in_channels, in_planes, 3, rngs=rngs)
        for s, (base, stride) in enumerate(zip((16, 32, 64), (1, 2, 2), strict=True), start=1):
            planes = channels(base * k, width)
            blocks = []
            for b in range(n):
                first = b == 0
                blocks.append(
                    WideBasic(in_planes, planes, stride if first else 1, first, rngs=rngs)
                )
                in_planes = planes
            setattr(self, f"layer{s}", nnx.List(blocks))
        self.bn = batch_norm(in_planes, rngs)
        self.classifier = Classifier(in_planes, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv1(x)
        for blocks in (self.layer1, self.layer2, self.layer3):
            for block in blocks:
                x = block(x)
        return self.classifier(global_avg_pool(nnx.relu(self.bn(x))))
