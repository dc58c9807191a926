"""Spectral embedding and clustering of an affinity graph (Ng, Jordan & Weiss 2001; paper Fig. 8).

NJW embeds node i as row i of the top eigenvectors of ``D^-1/2 A D^-1/2`` (D the degrees),
scaled to unit length. An isolated node (zero degree) gets a zero row, never NaN.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans

from ssc_jax.core.checks import check_finite, check_ndim, check_square


def spectral_embedding(A, n_components: int = 2, *, normalized: bool = True) -> jax.Array:
    """Embed the nodes of an affinity graph with the top eigenvectors.

    Eigenvectors are ordered by decreasing eigenvalue, and each has its largest-magnitude
    entry positive so that the output is deterministic.

    Args:
      A: (n, n) non-negative affinities; a non-symmetric A is replaced by (A + A^T) / 2.
      n_components: embedding dimension, 1 <= n_components <= n.
      normalized: True for NJW, the top eigenvectors of ``D^-1/2 A D^-1/2`` with every row
        scaled to unit length; False for the top eigenvectors of A itself, unscaled, as in
        the paper's Sec. 6.1.

    Returns:
      (n, n_components) embedding.
    """
    A = jnp.asarray(A)
    if not jnp.issubdtype(A.dtype, jnp.floating):
        A = A.astype(jnp.result_type(float))
    check_ndim("A", A, 2, "an (n, n) matrix")
    check_square("A", A)
    check_finite("A", A)
    n = A.shape[0]
    if not (isinstance(n_components, int) and 1 <= n_components <= n):
        raise ValueError(f"n_components must be an integer in [1, n = {n}]; got {n_components!r}")
    return _spectral_embedding(A, n_components, normalized)


def spectral_clustering(A, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """Cluster the nodes of an affinity graph: k-means on the NJW embedding.

    The embedding runs in JAX; k-means is scikit-learn's (10 restarts), so this function runs
    on the host and is not jit-compatible.

    Args:
      A: (n, n) non-negative affinities, symmetrised as in `spectral_embedding`.
      n_clusters: number of clusters, 1 <= n_clusters <= n.
      seed: k-means random state.

    Returns:
      (n,) int labels in [0, n_clusters), like scikit-learn's ``labels_``.
    """
    embedding = np.asarray(spectral_embedding(A, n_clusters), dtype=np.float64)
    kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    return kmeans.fit_predict(embedding).astype(np.int64)


@partial(jax.jit, static_argnums=(1, 2))
def _spectral_embedding(A: jax.Array, n_components: int, normalized: bool) -> jax.Array:
    A = (A + A.T) / 2
    if normalized:
        degree = jnp.sum(A, axis=-1)
        inv_sqrt = jnp.where(degree > 0, jax.lax.rsqrt(jnp.where(degree > 0, degree, 1)), 0)
        A = inv_sqrt[:, None] * A * inv_sqrt[None, :]
    _, vectors = jnp.linalg.eigh(A, symmetrize_input=False)
    top = vectors[:, ::-1][:, :n_components]
    peak = jnp.take_along_axis(top, jnp.argmax(jnp.abs(top), axis=0)[None], axis=0)
    top = top * jnp.where(peak < 0, -1, 1)
    if not normalized:
        return top
    # An isolated node's entries are rounding noise that row scaling would blow up to 1.
    top = jnp.where(degree[:, None] > 0, top, 0)
    norm = jnp.linalg.norm(top, axis=-1, keepdims=True)
    return top / jnp.where(norm > 0, norm, 1)
