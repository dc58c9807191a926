"""ssc-jax: sparse subspace clustering analysis of neural networks, in JAX."""

from ssc_jax._version import __version__

# solver (issue 2)

# graph analytics and similarity (issue 3)

# models, data, training, capture (issue 4)

__all__ = ["__version__"]
