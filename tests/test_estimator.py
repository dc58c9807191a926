"""The scikit-learn-style estimator recovers a noisy union of subspaces."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone

from ssc_jax.graphs.estimator import SparseSubspaceClustering
from ssc_jax.solver import ADMM, SolverOptions, ssc
from ssc_jax.solver.synthetic import union_of_subspaces


def clustering_accuracy(truth, found):
    """Accuracy under the best one-to-one matching of cluster ids (Hungarian algorithm)."""
    k = max(truth.max(), found.max()) + 1
    counts = np.zeros((k, k))
    np.add.at(counts, (truth, found), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / truth.size


def test_recovers_five_noisy_subspaces():
    X, truth = union_of_subspaces(40, 5, 4, 30, noise=0.1, seed=3)
    order = np.random.default_rng(0).permutation(len(truth))
    model = SparseSubspaceClustering(n_clusters=5).fit(X[order])
    assert clustering_accuracy(truth[order], model.labels_) >= 0.95
    assert model.coef_.shape == (200, 200) and np.all(np.diag(model.coef_) == 0)
    np.testing.assert_allclose(model.affinity_matrix_, model.affinity_matrix_.T)
    assert bool(model.result_.converged)
    np.testing.assert_array_equal(model.fit_predict(X[order]), model.labels_)


def test_sklearn_protocol():
    model = SparseSubspaceClustering(n_clusters=3, tau=20.0, solver_options={"rel_tol": 1e-4})
    params = clone(model).get_params()
    assert params["tau"] == 20.0 and params["solver_options"] == {"rel_tol": 1e-4}
    assert params["mu"] == ADMM().mu and params["options"] is None


def test_options_and_settings_reach_the_solver():
    X, _ = union_of_subspaces(12, 3, 3, 20, noise=0.05, seed=1)
    X = X * np.linspace(0.5, 2, len(X))[:, None]
    options = SolverOptions(normalize=True, low_rank=False)
    model = SparseSubspaceClustering(
        n_clusters=3, tau=5.0, normalize=False, options=options, solver_options={"rel_tol": 1e-3}
    ).fit(X)
    want = ssc(X, tau=5.0, normalize=False, low_rank=False, rel_tol=1e-3)
    np.testing.assert_array_equal(model.coef_, np.asarray(want.coef))
    assert int(model.result_.iterations) == int(want.iterations)


def test_too_many_clusters():
    with pytest.raises(ValueError, match="n_clusters"):
        SparseSubspaceClustering(n_clusters=10).fit(np.random.default_rng(0).normal(size=(5, 3)))
