"""Noisy unions of linear subspaces: the textbook data on which SSC is exact."""

from __future__ import annotations

import numpy as np


def union_of_subspaces(
    n_per_subspace: int,
    n_subspaces: int,
    dim: int,
    ambient_dim: int,
    *,
    noise: float = 0.01,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples from ``n_subspaces`` random ``dim``-dimensional subspaces of R^ambient_dim.

    Each sample is a random unit combination of its subspace's orthonormal basis plus
    isotropic Gaussian noise of standard deviation ``noise / sqrt(ambient_dim)``.

    Returns:
      X: (n_per_subspace * n_subspaces, ambient_dim) float64 samples, as rows.
      labels: (n,) int subspace index of each sample, grouped in order.
    """
    if dim > ambient_dim:
        raise ValueError(f"dim ({dim}) must not exceed ambient_dim ({ambient_dim})")
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(n_subspaces):
        basis, _ = np.linalg.qr(rng.normal(size=(ambient_dim, dim)))
        weights = rng.normal(size=(n_per_subspace, dim))
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        blocks.append(weights @ basis.T)
    X = np.concatenate(blocks)
    X += noise / np.sqrt(ambient_dim) * rng.normal(size=X.shape)
    labels = np.repeat(np.arange(n_subspaces), n_per_subspace)
    return X, labels
