"""A scikit-learn-style estimator: SSC affinities, then spectral clustering."""

from __future__ import annotations

import dataclasses
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import validate_data

from ssc_jax.graphs.spectral import spectral_clustering
from ssc_jax.solver.options import DEFAULT_SOLVER, SolverOptions
from ssc_jax.solver.result import Solver
from ssc_jax.solver.solve import SSCResult, affinity, ssc


class SparseSubspaceClustering(ClusterMixin, BaseEstimator):
    """Cluster samples that lie near a union of linear subspaces (Elhamifar & Vidal, 2013).

    ``fit`` solves SSC on the samples, forms the affinity ``|C| + |C|^T`` and runs spectral
    clustering (Ng-Jordan-Weiss embedding, then k-means) on it.

    Args:
      n_clusters: number of subspaces to find.
      tau: the weight of the data fit, set on ``solver`` (default the solver's).
      normalize: the ``ssc_jax.SolverOptions`` field of that name (default from there).
      random_state: seed of the k-means step.
      solver: what is solved and how far, as in ``ssc_jax.ssc``, e.g. ``ssc_jax.ADMM(mu=5.0)``
        or ``ssc_jax.WorkingSet(gap_tol=1e-5)``; ``None`` is ``ssc``'s default solver.
      options: ``SolverOptions`` (``low_rank``, ``devices``, ...) that ``normalize`` then
        overrides; ``None`` is the default.

    ``fit`` takes dense real input (sparse matrices raise ``TypeError``, complex or
    non-numeric input ``ValueError``) and checks the parameters before solving. It warns
    when ``tau <= 1 / max_{i != j} |x_i . x_j|`` (unit rows when ``normalize``): then every
    coefficient is zero, exactly, and the clustering means nothing.

    Attributes:
      n_features_in_: number of features seen in ``fit``.
      coef_: (n, n) NumPy SSC coefficients, ``X ~= coef_ @ X``.
      affinity_matrix_: (n, n) NumPy affinity graph.
      labels_: (n,) cluster index of each sample.
      result_: the full ``SSCResult`` with the solver's diagnostics.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        tau: float = DEFAULT_SOLVER.tau,
        normalize: bool = SolverOptions.normalize,
        random_state: int = 0,
        solver: Solver | None = None,
        options: SolverOptions | None = None,
    ):
        self.n_clusters = n_clusters
        self.tau = tau
        self.normalize = normalize
        self.random_state = random_state
        self.solver = solver
        self.options = options

    def _check_params(self, n_samples: int) -> None:
        k = self.n_clusters
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= n_samples:
            raise ValueError(
                f"n_clusters must be an integer in [1, n_samples={n_samples}]; got {k!r}"
            )
        if not isinstance(self.tau, numbers.Real) or not self.tau > 0:
            raise ValueError(f"tau must be a number > 0; got {self.tau!r}")

    def _warn_if_all_zero(self, X: np.ndarray) -> None:
        """Warn when ``tau`` is at or below ``1 / max |off-diagonal Gram|``, where C = 0."""
        x = X.astype(np.float64)
        if self.normalize:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1)
        gram = np.abs(x @ x.T)
        np.fill_diagonal(gram, 0)
        largest = gram.max()
        if self.tau * largest <= 1:
            bound = np.inf if largest == 0 else 1 / largest
            warnings.warn(
                f"tau = {self.tau} <= 1 / max |x_i . x_j| = {bound:.4g}: every SSC coefficient "
                f"is zero and the clusters are arbitrary; pass a tau above {bound:.4g}",
                stacklevel=3,
            )

    def fit(self, X, y=None) -> SparseSubspaceClustering:
        """Fit on (n_samples, n_features) ``X``; ``y`` is ignored."""
        X = validate_data(
            self, X, dtype=(np.float64, np.float32), ensure_min_samples=2, ensure_min_features=1
        )
        self._check_params(X.shape[0])
        self._warn_if_all_zero(X)
        # In a jax.distributed job every process fits its own labels from the whole result.
        result: SSCResult = ssc(
            X,
            solver=dataclasses.replace(self.solver or DEFAULT_SOLVER, tau=self.tau),
            options=dataclasses.replace(
                self.options or SolverOptions(), normalize=self.normalize, gather="all"
            ),
        )
        self.result_ = result
        self.coef_ = np.asarray(result.coef)
        self.affinity_matrix_ = np.asarray(affinity(result.coef))
        self.labels_ = spectral_clustering(
            self.affinity_matrix_, self.n_clusters, seed=self.random_state
        )
        return self
