"""ssc-jax: sparse subspace clustering analysis of neural networks, in JAX."""

from ssc_jax._version import __version__
from ssc_jax.admm import ADMM, Status
from ssc_jax.augment import normalize
from ssc_jax.capture import activation_grams, capture_activations, layer_names, predict
from ssc_jax.checkpoint import list_checkpoints, load_checkpoint
from ssc_jax.cka import MinibatchCKA, cka, cka_matrix, linear_cka, minibatch_cka
from ssc_jax.datasets import analysis_indices, load_dataset, stratified_subset
from ssc_jax.estimator import SparseSubspaceClustering
from ssc_jax.graph import (
    LabelAgreement,
    affinity_labels,
    class_affinity,
    label_agreement,
    modularity,
    top_neighbours,
)
from ssc_jax.hsic import HSICStack, hsic
from ssc_jax.models import create_model, list_models
from ssc_jax.solver import SSCResult, affinity, ssc, ssc_gram
from ssc_jax.spectral import spectral_clustering, spectral_embedding
from ssc_jax.train import TrainConfig, train

__all__ = [
    "ADMM",
    "HSICStack",
    "LabelAgreement",
    "MinibatchCKA",
    "SSCResult",
    "SparseSubspaceClustering",
    "Status",
    "TrainConfig",
    "__version__",
    "activation_grams",
    "affinity",
    "affinity_labels",
    "analysis_indices",
    "capture_activations",
    "cka",
    "cka_matrix",
    "class_affinity",
    "create_model",
    "hsic",
    "label_agreement",
    "layer_names",
    "linear_cka",
    "list_checkpoints",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "minibatch_cka",
    "modularity",
    "normalize",
    "predict",
    "spectral_clustering",
    "spectral_embedding",
    "ssc",
    "ssc_gram",
    "stratified_subset",
    "top_neighbours",
    "train",
]
