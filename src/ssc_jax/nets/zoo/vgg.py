"""VGG for CIFAR (after kuangliu/pytorch-cifar), and the small CNN built the same way.

A VGG is a list of stages; a stage is 3x3 conv-BN-ReLU units followed by 2x2 max pooling.
Global average pooling and one linear layer follow. VGG-N counts weight layers as the
original ImageNet VGG did (N - 3 convolutions plus three fully connected layers); the CIFAR
version keeps the name but has a single linear classifier.

VGG-24 and VGG-29, which the paper uses without spelling out, extend VGG-19 the same way
VGG-19 extends VGG-16, by adding 3x3 convolutions to the stages (64, 128, 256, 512, 512
channels): VGG-24 has 3, 3, 5, 5, 5 convolutions per stage (21) and VGG-29 has 4, 4, 6, 6, 6
(26).

Each pooling halves the image, so a net of s stages needs inputs of at least 2**s pixels a
side: 32x32 for the VGGs, 8x8 for ``small_cnn`` (stages of 32, 32 | 64, 64 | 128 channels).
"""

from __future__ import annotations

import jax
from flax import nnx

from ssc_jax.nets.taps import Tapped, tap
from ssc_jax.nets.zoo.layers import Classifier, ConvBNReLU, channels, global_avg_pool, max_pool

_WIDTHS = (64, 128, 256, 512, 512)
VGG_DEPTHS = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
    "vgg24": (3, 3, 5, 5, 5),
    "vgg29": (4, 4, 6, 6, 6),
}
SMALL_CNN_STAGES = ((32, 32), (64, 64), (128,))


def vgg_stages(name: str) -> tuple[tuple[int, ...], ...]:
    """Channels of every convolution, by stage, of the VGG called ``name``."""
    return tuple((w,) * d for w, d in zip(_WIDTHS, VGG_DEPTHS[name], strict=True))


class VGG(Tapped):
    """Stages of conv-BN-ReLU units, each closed by max pooling; global pool; classifier.

    Taps: ``"block{s}.{i}.conv"`` (conv), ``"block{s}"`` (stage output after pooling) and
    ``"classifier"`` (blocks). ``__call__``: (B, H, W, in_channels) -> (B, num_classes).
    """

    def __init__(
        self,
        stages: tuple[tuple[int, ...], ...],
        *,
        num_classes: int,
        in_channels: int,
        width: float,
        rngs: nnx.Rngs,
    ):
        blocks = []
        c_in = in_channels
        for stage in stages:
            units = []
            for base in stage:
                c_out = channels(base, width)
                units.append(ConvBNReLU(c_in, c_out, rngs=rngs))
                c_in = c_out
            blocks.append(nnx.List(units))
        for s, block in enumerate(blocks, start=1):
            setattr(self, f"block{s}", block)
        self.num_stages = len(blocks)
        self.classifier = Classifier(c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        min_size = 2**self.num_stages
        if min(x.shape[1:3]) < min_size:
            raise ValueError(
                f"this VGG pools {self.num_stages} times and needs inputs of at least "
                f"{min_size}x{min_size} pixels; got {x.shape[1]}x{x.shape[2]}"
            )
        for s in range(1, self.num_stages + 1):
            for unit in getattr(self, f"block{s}"):
                x = unit(x)
            x = tap(self, "blocks", max_pool(x), name=f"block{s}")
        return self.classifier(global_avg_pool(x))
