"""The scikit-learn-style estimator recovers a noisy union of subspaces."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from ssc_jax.graphs import estimator as estimator_module
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
    model = SparseSubspaceClustering(n_clusters=3, tau=20.0, solver=ADMM(rel_tol=1e-4))
    params = clone(model).get_params()
    assert params["tau"] == 20.0 and params["solver"] == ADMM(rel_tol=1e-4)
    assert params["options"] is None


def test_options_and_settings_reach_the_solver():
    X, _ = union_of_subspaces(12, 3, 3, 20, noise=0.05, seed=1)
    X = X * np.linspace(0.5, 2, len(X))[:, None]
    options = SolverOptions(normalize=True, low_rank=False)
    model = SparseSubspaceClustering(
        n_clusters=3, tau=5.0, normalize=False, options=options, solver=ADMM(rel_tol=1e-3)
    ).fit(X)
    want = ssc(X, solver=ADMM(), tau=5.0, normalize=False, low_rank=False, rel_tol=1e-3)
    np.testing.assert_array_equal(model.coef_, np.asarray(want.coef))
    assert int(model.result_.iterations) == int(want.iterations)


def test_parameters_are_checked_before_solving(monkeypatch):
    def no_solve(*args, **kwargs):
        raise AssertionError("solved before checking the parameters")

    monkeypatch.setattr(estimator_module, "ssc", no_solve)
    X = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match=r"n_clusters must be an integer in \[1, n_samples=5\]"):
        SparseSubspaceClustering(n_clusters=10).fit(X)
    with pytest.raises(ValueError, match="n_clusters must be an integer"):
        SparseSubspaceClustering(n_clusters=2.5).fit(X)
    with pytest.raises(ValueError, match="tau must be a number > 0; got -1"):
        SparseSubspaceClustering(n_clusters=2, tau=-1).fit(X)


def test_input_validation():
    model = SparseSubspaceClustering(n_clusters=2)
    X = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(TypeError, match="dense data is required"):
        model.fit(sp.csr_matrix(X))
    with pytest.raises(ValueError, match="Complex data not supported"):
        model.fit(X + 1j)
    with pytest.raises(ValueError, match="could not convert"):
        model.fit(np.array([["a", "b"]] * 6, dtype=object))
    with pytest.raises(ValueError, match="0 feature"):
        model.fit(np.zeros((6, 0)))
    assert model.fit(X).n_features_in_ == 3


def test_tau_below_the_zero_bound_warns_and_gives_zero_coefficients():
    X, _ = union_of_subspaces(10, 2, 2, 6, noise=0.05, seed=2)
    x = X / np.linalg.norm(X, axis=1, keepdims=True)
    gram = np.abs(x @ x.T)
    np.fill_diagonal(gram, 0)
    bound = 1 / gram.max()
    with pytest.warns(UserWarning, match="every SSC coefficient is zero"):
        below = SparseSubspaceClustering(n_clusters=2, tau=0.99 * bound).fit(X)
    assert np.count_nonzero(below.coef_) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        above = SparseSubspaceClustering(n_clusters=2, tau=1.2 * bound).fit(X)
    assert np.count_nonzero(above.coef_) > 0


@pytest.mark.slow  # 45 checks, each compiling solves of new shapes: ~2 min on 2 CPU cores
@parametrize_with_checks([SparseSubspaceClustering(n_clusters=3)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
