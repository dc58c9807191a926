"""The pipeline's sparse graphs: per-layer solves, the store, and the analysis summary."""

from types import SimpleNamespace

import jax
import numpy as np
import scipy.sparse as sp

import ssc_jax
from lasso_reference import assert_same_optimum
from ssc_jax.pipeline.analysis import layer_graphs
from ssc_jax.pipeline.analysis.config import SolverSettings
from ssc_jax.pipeline.analysis.layer_graphs import solve_layers
from ssc_jax.pipeline.analysis.measures import select_measures
from ssc_jax.pipeline.analysis.summary import graph_summary
from ssc_jax.pipeline.store.graph_store import dense_stack, load_graphs, save_graphs


def layer_grams(seed=0, layers=3, n=60, d=10):
    x = np.random.default_rng(seed).standard_normal((layers, n, d)).astype(np.float32)
    return np.einsum("lnd,lmd->lnm", x, x)


def stored(coef, diagnostics):
    """The layers' coefficients and certificates from ``solve_layers``, as a result."""
    return SimpleNamespace(
        coef=dense_stack(coef),
        objective=diagnostics["objective"],
        duality_gap=diagnostics["duality_gap"],
    )


def test_solve_layers_in_groups_matches_one_solve(monkeypatch, capsys):
    grams = layer_grams()
    whole = ssc_jax.ssc_gram(grams, solver=SolverSettings().solver, progress=False)
    monkeypatch.setattr(layer_graphs, "SOLVE_GROUP_BYTES", 4 * 60 * 60)  # one layer a group
    coef, diagnostics = solve_layers(grams, SolverSettings(), progress=True)
    assert "3/3" in capsys.readouterr().err  # one bar over the layers, not one per group
    assert all(isinstance(c, sp.csr_array) and c.dtype == np.float32 for c in coef)
    assert_same_optimum(grams, stored(coef, diagnostics), whole)
    np.testing.assert_array_equal(diagnostics["iterations"], whole.iterations)
    warm, warm_diagnostics = solve_layers(grams, SolverSettings(), progress=False, init=coef)
    assert len(warm) == 3 and np.all(warm_diagnostics["converged"])
    # The warm start stops at another point within the gap tolerance: as close as certified.
    assert_same_optimum(grams, stored(warm, warm_diagnostics), whole)
    assert np.all(warm_diagnostics["iterations"] <= diagnostics["iterations"])


def test_store_round_trip_and_dense_layers(tmp_path):
    rng = np.random.default_rng(1)
    sparse = sp.random_array((30, 30), density=0.05, rng=rng, dtype=np.float32)
    dense = rng.standard_normal((30, 30)).astype(np.float32)
    diagnostics = {
        name: np.zeros(2)
        for name in layer_graphs.DIAGNOSTICS  # the file stores every diagnostic
    }
    path = save_graphs(tmp_path / "g.npz", ["a", "b"], [sparse, dense], diagnostics, {"n": 30})
    with np.load(path) as f:
        assert "c0_indptr" in f and "c1_dense" in f  # a dense layer, as older files hold
    stored = load_graphs(path)
    assert all(isinstance(c, sp.csr_array) for c in stored.coef)
    np.testing.assert_array_equal(dense_stack(stored.coef), np.stack([sparse.toarray(), dense]))


def test_graph_summary_matches_the_dense_stacks(tmp_path):
    grams = layer_grams(seed=2, layers=4)
    coef, _ = solve_layers(grams, SolverSettings(), progress=False)
    A = [sp.csr_array(abs(c) + abs(c).T) for c in coef]
    on_disk = np.lib.format.open_memmap(tmp_path / "g.npy", "w+", np.float32, grams.shape)
    on_disk[:] = grams
    labels = np.arange(60) % 5
    modularity, similarity = graph_summary(A, on_disk, labels, 5, select_measures())
    ssc_cka, linear_cka = similarity["ssc_cka"], similarity["linear_cka"]
    stack = dense_stack(A)
    np.testing.assert_allclose(
        modularity, ssc_jax.modularity(stack, labels, n_classes=5), atol=1e-6
    )
    with jax.enable_x64(True):
        np.testing.assert_allclose(ssc_cka, ssc_jax.cka_matrix(stack.astype(float)), atol=1e-12)
        np.testing.assert_allclose(linear_cka, ssc_jax.cka_matrix(grams.astype(float)), atol=1e-10)
