"""A scikit-learn-style estimator: SSC affinities, then spectral clustering."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from ssc_jax.graphs.spectral import spectral_clustering
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.solve import SSCResult, affinity, ssc


class SparseSubspaceClustering(ClusterMixin, BaseEstimator):
    """Cluster samples that lie near a union of linear subspaces (Elhamifar & Vidal, 2013).

    ``fit`` solves SSC on the samples, forms the affinity ``|C| + |C|^T`` and runs spectral
    clustering (Ng-Jordan-Weiss embedding, then k-means) on it.

    Args:
      n_clusters: number of subspaces to find.
      tau, mu: the ``ssc_jax.ADMM`` fields of that name (defaults from there).
      normalize: the ``ssc_jax.SolverOptions`` field of that name (default from there).
      random_state: seed of the k-means step.
      solver_options: further settings of ``ssc_jax.ssc``, each a field of ``ADMM`` or of
        ``SolverOptions``, e.g. ``{"rel_tol": 1e-4}``.
      options: ``SolverOptions`` (``low_rank``, ``devices``, ...) that ``normalize`` and
        ``solver_options`` then override; ``None`` is the default.

    Attributes:
      coef_: (n, n) NumPy SSC coefficients, ``X ~= coef_ @ X``.
      affinity_matrix_: (n, n) NumPy affinity graph.
      labels_: (n,) cluster index of each sample.
      result_: the full ``SSCResult`` with the solver's diagnostics.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        tau: float = ADMM.tau,
        mu: float = ADMM.mu,
        normalize: bool = SolverOptions.normalize,
        random_state: int = 0,
        solver_options: dict | None = None,
        options: SolverOptions | None = None,
    ):
        self.n_clusters = n_clusters
        self.tau = tau
        self.mu = mu
        self.normalize = normalize
        self.random_state = random_state
        self.solver_options = solver_options
        self.options = options

    def fit(self, X, y=None) -> SparseSubspaceClustering:
        """Fit on (n_samples, n_features) ``X``; ``y`` is ignored."""
        n = np.shape(X)[0] if np.ndim(X) == 2 else None
        if n is not None and not 1 <= self.n_clusters <= n:
            raise ValueError(f"n_clusters must be in [1, n_samples={n}]; got {self.n_clusters}")
        result: SSCResult = ssc(
            X,
            options=self.options,
            tau=self.tau,
            mu=self.mu,
            normalize=self.normalize,
            **(self.solver_options or {}),
        )
        self.result_ = result
        self.coef_ = np.asarray(result.coef)
        self.affinity_matrix_ = np.asarray(affinity(result.coef))
        self.labels_ = spectral_clustering(
            self.affinity_matrix_, self.n_clusters, seed=self.random_state
        )
        return self
