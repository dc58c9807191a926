"""Networks: the Flax NNX zoo and the capture of their activations and Gram matrices."""

from ssc_jax.nets.capture import activation_grams, capture_activations, layer_names, predict
from ssc_jax.nets.zoo import create_model, list_models

__all__ = [
    "activation_grams",
    "capture_activations",
    "create_model",
    "layer_names",
    "list_models",
    "predict",
]
