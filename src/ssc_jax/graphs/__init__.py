"""Reading SSC affinity graphs: modularity, class affinity, spectral embeddings, the estimator."""

from ssc_jax.graphs.communities import (
    LabelAgreement,
    affinity_labels,
    class_affinity,
    label_agreement,
    modularity,
    top_neighbours,
)
from ssc_jax.graphs.estimator import SparseSubspaceClustering
from ssc_jax.graphs.spectral import spectral_clustering, spectral_embedding

__all__ = [
    "LabelAgreement",
    "SparseSubspaceClustering",
    "affinity_labels",
    "class_affinity",
    "label_agreement",
    "modularity",
    "spectral_clustering",
    "spectral_embedding",
    "top_neighbours",
]
