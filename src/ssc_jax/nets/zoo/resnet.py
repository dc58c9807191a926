"""ResNet for CIFAR (after kuangliu/pytorch-cifar): a 3x3 stem without pooling, four stages
of BasicBlocks or Bottlenecks (64, 128, 256, 512 planes; strides 1, 2, 2, 2), global average
pooling, one linear layer. A block whose input and output shapes differ gets a 1x1
convolution + BatchNorm shortcut.

Convolutions, shortcuts included: resnet18 20, resnet34 36, resnet50 53, resnet101 104,
resnet152 155; the paper names ResNet-34/50/101 after these counts (ResNet-36/53/104).
Any input of at least 1x1 works (global pooling).
"""

from __future__ import annotations

import jax
from flax import nnx

from ssc_jax.nets.taps import Tapped, tap
from ssc_jax.nets.zoo.layers import Classifier, Conv, batch_norm, channels, global_avg_pool

RESNET_DEPTHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


class Shortcut(nnx.Module):
    """1x1 convolution + BatchNorm projecting the block input to the block output shape."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = Conv(in_planes, out_planes, 1, strides=stride, rngs=rngs)
        self.bn = batch_norm(out_planes, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class BasicBlock(Tapped):
    """Two 3x3 convolutions with a residual connection; output is a ``"blocks"`` tap."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv(in_planes, planes, 3, strides=stride, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs)
        self.conv2 = Conv(planes, planes, 3, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = Shortcut(in_planes, planes, stride, rngs=rngs) if needs_projection else None

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return tap(self, "blocks", nnx.relu(out + skip))


class Bottleneck(Tapped):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a residual connection."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, *, rngs: nnx.Rngs):
        out_planes = self.expansion * planes
        self.conv1 = Conv(in_planes, planes, 1, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs)
        self.conv2 = Conv(planes, planes, 3, strides=stride, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs)
        self.conv3 = Conv(planes, out_planes, 1, rngs=rngs)
        self.bn3 = batch_norm(out_planes, rngs)
        needs_projection = stride != 1 or in_planes != out_planes
        self.shortcut = (
            Shortcut(in_planes, out_planes, stride, rngs=rngs) if needs_projection else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return tap(self, "blocks", nnx.relu(out + skip))


class ResNet(nnx.Module):
    """CIFAR ResNet. Taps: ``"conv1"``, ``"layer{s}.{b}.conv{i}"``, ``"layer{s}.{b}.shortcut.conv"``
    (conv); ``"layer{s}.{b}"`` and ``"classifier"`` (blocks).
    ``__call__``: (B, H, W, in_channels) -> (B, num_classes)."""

    def __init__(
        self,
        block: str,
        num_blocks: tuple[int, ...],
        *,
        num_classes: int,
        in_channels: int,
        width: float,
        rngs: nnx.Rngs,
    ):
        block_cls = BasicBlock if block == "basic" else Bottleneck
        in_planes = channels(64, width)
        self.conv1 = Conv(in_channels, in_planes, 3, rngs=rngs)
        self.bn1 = batch_norm(in_planes, rngs)
        for s, (base, n, stride) in enumerate(
            zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True), start=1
        ):
            planes = channels(base, width)
            blocks = []
            for b in range(n):
                blocks.append(block_cls(in_planes, planes, stride if b == 0 else 1, rngs=rngs))
                in_planes = planes * block_cls.expansion
            setattr(self, f"layer{s}", nnx.List(blocks))
        self.num_stages = len(num_blocks)
        self.classifier = Classifier(in_planes, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        for s in range(1, self.num_stages + 1):
            for block in getattr(self, f"layer{s}"):
                x = block(x)
        return self.classifier(global_avg_pool(x))
