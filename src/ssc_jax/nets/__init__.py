"""Networks: the Flax NNX zoo; the capture of activations and Grams from it, from any Flax
NNX or linen model, from saved activation files and from PyTorch models (torch is imported
only when used)."""

from ssc_jax.nets.activation_files import read_activations
from ssc_jax.nets.activation_source import ActivationSource, class_probabilities
from ssc_jax.nets.capture import (
    activation_grams,
    capture_activations,
    layer_names,
    layer_selection,
    predict,
)
from ssc_jax.nets.external import grams_from_activations, layer_gram
from ssc_jax.nets.linen_capture import LinenModel
from ssc_jax.nets.torch_capture import TorchGrams, torch_activation_grams
from ssc_jax.nets.torch_save import save_torch_activations
from ssc_jax.nets.zoo import create_model, list_models

__all__ = [
    "ActivationSource",
    "LinenModel",
    "TorchGrams",
    "activation_grams",
    "capture_activations",
    "class_probabilities",
    "create_model",
    "grams_from_activations",
    "layer_gram",
    "layer_names",
    "layer_selection",
    "list_models",
    "predict",
    "read_activations",
    "save_torch_activations",
    "torch_activation_grams",
]
