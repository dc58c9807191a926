"""Model names and :func:`create_model`."""

from __future__ import annotations

import re

from flax import nnx

from ssc_jax.core.checks import check_positive
from ssc_jax.nets.taps import name_taps
from ssc_jax.nets.zoo.densenet import DENSENET_CONFIGS, DenseNet
from ssc_jax.nets.zoo.resnet import RESNET_DEPTHS, ResNet
from ssc_jax.nets.zoo.vgg import SMALL_CNN_STAGES, VGG, VGG_DEPTHS, vgg_stages
from ssc_jax.nets.zoo.wide_resnet import WideResNet, wrn_blocks_per_stage

# The paper names ResNet-34/50/101 after their convolution counts, shortcuts included.
ALIASES = {"resnet36": "resnet34", "resnet53": "resnet50", "resnet104": "resnet101"}
_WRN = re.compile(r"wrn(\d+)_(\d+)")
_WRN_EXAMPLES = ("wrn28_2", "wrn64_2", "wrn64_6", "wrn64_10")


def list_models() -> list[str]:
    """Every accepted name: the fixed ones, the aliases, and examples of ``wrn{depth}_{k}``
    (any depth = 6n + 4 and k >= 1 is accepted)."""
    fixed = ["small_cnn", *VGG_DEPTHS, *RESNET_DEPTHS, *DENSENET_CONFIGS]
    return [*fixed, *ALIASES, *_WRN_EXAMPLES]


def create_model(
    name: str, *, num_classes: int = 10, seed: int = 0, width: float = 1.0, in_channels: int = 3
) -> nnx.Module:
    """Build the model called ``name`` (see :func:`list_models`), in training mode.

    ``width`` multiplies every channel count (0.125 gives fast test-sized nets). The model
    maps float32 images (B, H, W, in_channels) to logits (B, num_classes); switch BatchNorm
    with ``model.train()`` / ``model.eval()``. Raises ``ValueError`` for an unknown name.
    """
    check_positive("width", width)
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if int(value) != value or value < 1:
            raise ValueError(f"{arg} must be a positive integer; got {value!r}")
    key = ALIASES.get(name.lower(), name.lower())
    common = dict(
        num_classes=num_classes, in_channels=in_channels, width=width, rngs=nnx.Rngs(seed)
    )
    if key == "small_cnn":
        model = VGG(SMALL_CNN_STAGES, **common)
    elif key in VGG_DEPTHS:
        model = VGG(vgg_stages(key), **common)
    elif key in RESNET_DEPTHS:
        model = ResNet(*RESNET_DEPTHS[key], **common)
    elif key in DENSENET_CONFIGS:
        model = DenseNet(*DENSENET_CONFIGS[key], **common)
    elif match := _WRN.fullmatch(key):
        depth, k = int(match[1]), int(match[2])
        wrn_blocks_per_stage(depth)
        if k < 1:
            raise ValueError(f"Wide-ResNet width k must be >= 1; got {name!r}")
        model = WideResNet(depth, k, **common)
    else:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())} "
            "(wrn{depth}_{k} for any depth = 6n + 4)"
        )
    return name_taps(model)
