"""ssc-jax: sparse subspace clustering analysis of neural networks, in JAX.

The public names are loaded on first use, so that ``import ssc_jax; ssc_jax.ssc(X)`` imports
the solver alone (jax and numpy), and neither flax, optax, orbax, tensorflow-datasets nor
matplotlib.

>>> import numpy as np, ssc_jax
>>> X = np.random.default_rng(0).normal(size=(40, 8))
>>> ssc_jax.ssc(X).coef.shape
(40, 40)
"""

from __future__ import annotations

import importlib

from ssc_jax._version import __version__

_HOMES = {
    "solver": (
        "ADMM",
        "ConvergenceWarning",
        "SSCResult",
        "SolverOptions",
        "SparseSSCResult",
        "Status",
        "WorkingSet",
        "affinity",
        "ssc",
        "ssc_gram",
        "ssc_sparse",
        "tau_path",
    ),
    "similarity": (
        "HSICStack",
        "MinibatchCKA",
        "cka",
        "cka_matrix",
        "hsic",
        "linear_cka",
        "minibatch_cka",
        "mutual_knn",
        "procrustes",
        "rsa",
        "streamed_cka_matrix",
    ),
    "graphs": (
        "LabelAgreement",
        "SparseSubspaceClustering",
        "affinity_labels",
        "class_affinity",
        "label_agreement",
        "modularity",
        "spectral_clustering",
        "spectral_embedding",
        "top_neighbours",
    ),
    "nets": (
        "ActivationSource",
        "LinenModel",
        "TorchGrams",
        "activation_grams",
        "grams_from_activations",
        "layer_gram",
        "read_activations",
        "save_torch_activations",
        "torch_activation_grams",
        "capture_activations",
        "class_probabilities",
        "create_model",
        "layer_names",
        "layer_selection",
        "list_models",
        "predict",
    ),
    "training": (
        "TrainConfig",
        "analysis_indices",
        "list_checkpoints",
        "load_checkpoint",
        "load_dataset",
        "normalize_images",
        "stratified_subset",
        "train",
    ),
    "pipeline": (
        "analyze_activations",
        "analyze_grams",
        "analyze_torch",
        "compare_models",
        "register_measure",
        "write_analysis",
    ),
}
_HOME_OF = {name: room for room, names in _HOMES.items() for name in names}

__all__ = ["__version__", *sorted(_HOME_OF)]


def __getattr__(name: str):
    room = _HOME_OF.get(name)
    if room is None:
        raise AttributeError(f"module 'ssc_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ssc_jax.{room}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME_OF))
