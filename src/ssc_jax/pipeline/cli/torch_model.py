"""The ``torch`` command's model and inputs: a torch model built from an import path, its
weights loaded without unpickling, and images preprocessed as the command states.

``PACKAGE.MODULE:CALLABLE`` (``torchvision.models:resnet18``, ``mypackage.nets:Net``) is
imported and called with the ``--model-args`` keywords; ``--weights`` is a ``.safetensors``
file or a state dict saved by ``torch.save``, read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers (a pickled model object is refused,
never run). Images (n, H, W, C) uint8 become float32 (n, C, H, W) in [0, 1], resized to
``--image-size`` (bilinear, antialiased) when given, then normalised per channel by
``--mean`` and ``--std`` (ImageNet's by default, as torchvision's and timm's models expect).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import numpy as np

from ssc_jax.nets.tokens import DEFAULT_TOKENS, TOKEN_POOLINGS
from ssc_jax.pipeline.analysis.config import AnalysisSet
from ssc_jax.pipeline.analysis.inputs import InputError
from ssc_jax.pipeline.cli.arguments import (
    ANALYSIS_OPTIONS,
    add_measures_option,
    add_options,
    add_solver_options,
    changed,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The analysis inputs' options but --layers, which the torch command reads as module names.
TORCH_ANALYSIS_OPTIONS = changed(
    [option for option in ANALYSIS_OPTIONS if option.field != "layers"], data={"required": True}
)
# Keys under which training scripts commonly nest a state dict in a checkpoint dict.
_NESTED = ("state_dict", "model_state_dict", "model")


def build_model(target: str, model_args: dict):
    """The ``torch.nn.Module`` that ``PACKAGE.MODULE:CALLABLE(**model_args)`` returns."""
    from torch import nn

    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise InputError(f"model {target!r}: write it as PACKAGE.MODULE:CALLABLE")
    try:
        found = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"model {target!r}: cannot import {module_name} ({err})") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise InputError(f"model {target!r}: {module_name} has no {attribute}")
        found = getattr(found, part)
    try:
        model = found(**model_args)
    except TypeError as err:
        raise InputError(f"model {target!r}: calling it failed: {err}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"model {target!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _state_dict(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for a file it will not unpickle
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"--weights {path}: not a state dict torch.load(weights_only=True) reads ({first})"
        ) from None
    for key in _NESTED:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(model, path: str | Path) -> None:
    """Load the state dict at ``path`` into ``model``, every key matching."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--weights {path}: no such file")
    try:
        model.load_state_dict(_state_dict(path), strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise InputError(
            f"--weights {path}: does not fit the model: {' '.join(first[:2])}"
        ) from None


def preprocessed(images: np.ndarray, *, size: int | None, mean, std):
    """float32 (b, C, H, W) tensor of uint8 (b, H, W, C) ``images``, as the module states."""
    import torch
    from torch.nn import functional

    x = torch.as_tensor(np.asarray(images, np.float32) / 255.0).permute(0, 3, 1, 2)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    channels = x.shape[1]
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise InputError(f"--mean and --std need {channels} values, one per image channel")
    return (
        (x - torch.as_tensor(mean)[:, None, None]) / torch.as_tensor(std)[:, None, None]
    ).contiguous()


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"num_classes\": 10}'")
    return value


class ImageBatches:
    """The analysis images and labels as a torch ``Dataset``, each image preprocessed when
    read (so n large images are never all held as float32)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, args: argparse.Namespace):
        self.images, self.labels, self.args = images, labels, args

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        args = self.args
        image = preprocessed(
            self.images[index : index + 1], size=args.image_size, mean=args.mean, std=args.std
        )
        return image[0], int(self.labels[index])


def add_torch_options(p: argparse.ArgumentParser) -> None:
    """The ``torch`` command's options: the model, its weights, its layers, the
    preprocessing of its inputs, the analysis inputs, the solver and the measures."""
    inputs = p.add_argument_group("analysis inputs")
    add_options(inputs, AnalysisSet, TORCH_ANALYSIS_OPTIONS)
    add_solver_options(p)
    add_measures_option(p)
    p.add_argument("model", help="PACKAGE.MODULE:CALLABLE returning an nn.Module")
    p.add_argument(
        "--model-args",
        type=_json_object,
        default={},
        metavar="JSON",
        help="keyword arguments of CALLABLE, a JSON object",
    )
    p.add_argument("--weights", help="state dict: .safetensors, or .pt/.pth (weights_only)")
    p.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="module names, 'blocks' (repeated blocks) or 'hidden_states'; default every "
        "Conv2d, or the repeated blocks when the model has fewer than two",
    )
    p.add_argument(
        "--tokens",
        choices=TOKEN_POOLINGS,
        default=DEFAULT_TOKENS,
        help="pooling of token outputs (b, T, D) (default: %(default)s)",
    )
    p.add_argument("--image-size", type=int, help="resize the images to this square size")
    p.add_argument(
        "--mean",
        type=float,
        nargs="+",
        default=list(IMAGENET_MEAN),
        help="per-channel mean subtracted after scaling to [0, 1] (default: ImageNet)",
    )
    p.add_argument(
        "--std",
        type=float,
        nargs="+",
        default=list(IMAGENET_STD),
        help="per-channel standard deviation divided by (default: ImageNet)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def layers_of(args: argparse.Namespace):
    """``--layers`` as ``torch_activation_grams`` takes it."""
    if args.layers is None:
        return None
    return args.layers[0] if args.layers in (["blocks"], ["hidden_states"]) else args.layers
