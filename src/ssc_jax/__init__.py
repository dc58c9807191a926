"""ssc-jax: sparse subspace clustering analysis of neural networks, in JAX."""

from ssc_jax._version import __version__

# solver (issue 2)

# graph analytics and similarity (issue 3)

# models, data, training, capture (issue 4)
from ssc_jax.capture import activation_grams, capture_activations, layer_names
from ssc_jax.models import create_model, list_models

__all__ = [
    "activation_grams",
    "capture_activations",
    "create_model",
    "layer_names",
    "list_models","__version__"]
