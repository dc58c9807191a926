"""``tau_path``: warm-started solves over tau against independent cold ones."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

import ssc_jax
from lasso_reference import assert_same_optimum
from ssc_jax.solver import chunks
from ssc_jax.solver.path import check_taus, path_order
from ssc_jax.solver.synthetic import union_of_subspaces

TAUS = [20.0, 2.0, 5.0, 10.0]


@pytest.fixture(scope="module")
def grams():
    subspaces = union_of_subspaces(15, 6, 4, 40, noise=0.05, seed=1)[0].astype(np.float32)
    digits = load_digits().data[:200].astype(np.float32)
    return {"subspaces": subspaces @ subspaces.T, "digits": digits @ digits.T}


@pytest.mark.parametrize("name", ["subspaces", "digits"])
def test_the_warm_path_finds_each_cold_answer_in_no_more_rounds(grams, name):
    solver = ssc_jax.WorkingSet(gap_tol=1e-6)
    warm = ssc_jax.tau_path(grams[name], TAUS, solver=solver)
    cold = [ssc_jax.ssc_gram(grams[name], solver=solver, tau=tau) for tau in TAUS]
    for tau, w, c in zip(TAUS, warm, cold, strict=True):
        assert bool(w.converged) and float(w.duality_gap) <= 1e-6
        assert_same_optimum(grams[name], w, c, tau=tau)
    # The smallest tau starts the path from C = 0: the same solve as its cold one.
    first = TAUS.index(min(TAUS))
    assert int(warm[first].iterations) == int(cold[first].iterations)
    warm_rounds = sum(int(r.iterations) for r in warm)
    cold_rounds = sum(int(r.iterations) for r in cold)
    # On 200 digits both paths take a round or two per tau; on the subspaces warm saves.
    assert warm_rounds < cold_rounds if name == "subspaces" else warm_rounds <= cold_rounds
    # In the order given; a larger tau rebuilds each sample from more others.
    nonzeros = [int((np.asarray(r.coef) != 0).sum()) for r in warm]
    assert [nonzeros[i] for i in path_order(TAUS)] == sorted(nonzeros)


def test_warm_start_off_is_the_cold_baseline_and_admm_walks_the_path_too(grams):
    gram = grams["subspaces"]
    off = ssc_jax.tau_path(gram, TAUS, solver=ssc_jax.WorkingSet(), warm_start=False)
    for tau, r in zip(TAUS, off, strict=True):
        cold = ssc_jax.ssc_gram(gram, solver=ssc_jax.WorkingSet(), tau=tau)
        np.testing.assert_array_equal(r.coef, cold.coef)
    admm = ssc_jax.tau_path(gram, TAUS, solver=ssc_jax.ADMM(gap_tol=1e-4))
    assert all(bool(r.converged) and float(r.duality_gap) <= 1e-4 for r in admm)


def test_a_path_compiles_once_per_start(grams):
    gram = grams["subspaces"][:43, :43]  # a shape no other test compiles
    before = chunks.run_batch._cache_size()
    ssc_jax.tau_path(gram, [1.0, 3.0, 9.0, 27.0])
    # One program starts from C = 0, one from a previous answer; tau is traced.
    assert chunks.run_batch._cache_size() == before + 2
    ssc_jax.tau_path(gram, [2.0, 4.0])
    assert chunks.run_batch._cache_size() == before + 2


def test_bad_taus_are_named(grams):
    gram = grams["subspaces"]
    for taus, match in (([], "at least one"), ([1.0, -2.0], "-2.0"), ([3.0, 3.0], "repeat")):
        with pytest.raises(ValueError, match=match):
            ssc_jax.tau_path(gram, taus)
    with pytest.raises(ValueError, match="set by taus"):
        ssc_jax.tau_path(gram, [1.0], tau=2.0)
    assert check_taus(np.asarray([2, 1])) == [2.0, 1.0]


def test_the_command_reads_each_layer_over_tau(tiny_run, analyzed, tmp_path, fast_analysis):
    import json

    from ssc_jax.pipeline.cli.main import main
    from ssc_jax.pipeline.store.graph_store import load_graphs

    out = tmp_path / "tau-path"
    argv = ["tau-path", str(tiny_run), "--taus", "20", "5", "10", "--out", str(out)]
    assert main([*argv, *fast_analysis]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    layers = metrics["layers"]
    assert metrics["taus"] == [5.0, 10.0, 20.0] and metrics["reference_tau"] == 10.0
    for key in ("modularity_per_tau", "nonzeros_per_row_per_tau", "ssc_cka_to_reference_tau"):
        assert np.asarray(metrics[key]).shape == (3, len(layers))
    # The reference tau against itself: its alignment and self-alignments are the same
    # float64 sum s, so CKA = s / (sqrt(s) sqrt(s)): three correctly rounded operations from 1.
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(metrics["ssc_cka_to_reference_tau"][1], 1.0, rtol=0, atol=2 * eps)
    # At the reference tau (the default), the graphs are those analyze solved from C = 0 and
    # stored in the run's cache, read back exactly: the same modularity to the last bit.
    reference = load_graphs(out / metrics["graph_files"][1])
    stored = load_graphs(analyzed[0] / analyzed[1]["graph_file"])
    for mine, theirs in zip(reference.coef, stored.coef, strict=True):
        assert (mine != theirs).nnz == 0
    assert metrics["modularity_per_tau"][1] == analyzed[1]["modularity"]
    assert np.all(np.diff(np.mean(metrics["nonzeros_per_row_per_tau"], axis=1)) > 0)
    assert len(set(metrics["network_accuracy_per_tau"])) == 1
    claims = [[f["claim"] for f in at_tau] for at_tau in metrics["findings_per_tau"]]
    assert len(claims) == 3 and claims[0] == claims[2] and "Sec. 4.1" in claims[0][0]
    reference = metrics["findings_per_tau"][1][0]
    assert reference["holds"] == (analyzed[1]["modularity"][-1] > analyzed[1]["modularity"][0])
    assert all(all(c) for c in metrics["solver_diagnostics_per_tau"]["converged"])
    taus_stored = []
    for name in metrics["graph_files"]:
        stored = load_graphs(out / name)
        taus_stored.append(stored.settings["solver"]["tau"])
        nonzeros = [c.nnz / c.shape[0] for c in stored.coef]
        row = metrics["nonzeros_per_row_per_tau"][len(taus_stored) - 1]
        np.testing.assert_allclose(nonzeros, row, rtol=1e-6)
    assert taus_stored == [5.0, 10.0, 20.0]
    assert (out / "figures" / "tau_path.png").stat().st_size > 1000
    assert "Table 1 on the last analysed layer" in (out / "report.html").read_text()


def test_the_command_names_a_bad_tau(tiny_run, tmp_path, fast_analysis, capsys):
    from ssc_jax.pipeline.cli.main import main

    out = tmp_path / "bad"
    assert main(["tau-path", str(tiny_run), "--taus", "5", "5", "--out", str(out)]) == 2
    assert "--taus" in capsys.readouterr().err and not out.exists()
