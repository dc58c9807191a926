"""ssc-jax: sparse subspace clustering analysis of neural networks, in JAX."""

from ssc_jax._version import __version__

# solver (issue 2)

# graph analytics and similarity (issue 3)
from ssc_jax.cka import MinibatchCKA, cka, cka_matrix, linear_cka, minibatch_cka
from ssc_jax.graph import (
    LabelAgreement,
    affinity_labels,
    class_affinity,
    label_agreement,
    modularity,
    top_neighbours,
)
from ssc_jax.hsic import HSICStack, hsic
from ssc_jax.spectral import spectral_clustering, spectral_embedding

# models, data, training, capture (issue 4)
from ssc_jax.augment import normalize
from ssc_jax.capture import activation_grams, capture_activations, layer_names, predict
from ssc_jax.checkpoint import list_checkpoints, load_checkpoint
from ssc_jax.datasets import analysis_indices, load_dataset, stratified_subset
from ssc_jax.models import create_model, list_models
from ssc_jax.train import TrainConfig, train

__all__ = [
    "HSICStack",
    "LabelAgreement",
    "MinibatchCKA",
    "affinity_labels",
    "cka",
    "cka_matrix",
    "class_affinity",
    "hsic",
    "label_agreement",
    "linear_cka",
    "minibatch_cka",
    "modularity",
    "spectral_clustering",
    "spectral_embedding",
    "top_neighbours",
    "activation_grams",
    "capture_activations",
    "create_model",
    "layer_names",
    "list_models",
    "TrainConfig",
    "analysis_indices",
    "list_checkpoints",
    "load_checkpoint",
    "load_dataset",
    "normalize",
    "predict",
    "stratified_subset",
    "train",
    "__version__",
]
