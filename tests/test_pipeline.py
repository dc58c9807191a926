"""End to end on tiny settings: train, analyze, dynamics, compare and the offline default."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp

import ssc_jax.pipeline.analysis.layer_graphs as graphs_module
from conftest import TINY_N
from lasso_reference import assert_same_optimum, stored_layers
from ssc_jax.nets.capture import predict
from ssc_jax.pipeline.analysis.analyze import MIN_EMBEDDED, analyze_checkpoint, embedded_inputs
from ssc_jax.pipeline.analysis.config import COMMAND_SETTINGS, AnalysisSet, SolverSettings
from ssc_jax.pipeline.cli.main import main
from ssc_jax.pipeline.store.graph_store import dense_stack, load_graphs
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.solve import ssc_gram
from ssc_jax.solver.working_set import WorkingSet
from ssc_jax.training.checkpoints import load_checkpoint
from ssc_jax.training.datasets import analysis_indices, load_dataset

EPS64 = np.finfo(np.float64).eps
ANALYZE_KEYS = {
    "layers",
    "modularity",
    "ssc_cka",
    "linear_cka",
    "ssc_label_accuracy",
    "network_accuracy",
    "agreement",
    "solver_diagnostics",
}


def _check_layer_metrics(metrics):
    n_layers = len(metrics["layers"])
    assert n_layers >= 2
    assert len(metrics["modularity"]) == n_layers
    for key in ("ssc_cka", "linear_cka"):
        matrix = np.asarray(metrics[key], dtype=float)
        assert matrix.shape == (n_layers, n_layers)
        # Each matrix with itself: float64 alignments divided by their own square roots.
        np.testing.assert_allclose(np.diag(matrix), 1.0, rtol=0, atol=2 * EPS64)
        # (i, j) and (j, i) are the same float64 sums of n^2 products taken in other orders:
        # within recursive summation's worst case, n^2 eps, of each other.
        n = metrics.get("n", TINY_N)
        np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=n**2 * EPS64)
    for key in ("iterations", "converged"):
        assert len(metrics["solver_diagnostics"][key]) == n_layers
    assert all(metrics["solver_diagnostics"]["converged"])


def _check_report(out, figures):
    for stem in figures:
        assert (out / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (out / "figures" / f"{stem}.pdf").exists()
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') >= len(figures)


def _recomputed_table1(run, metrics, stored):
    """Table 1 from scratch: the network's predictions on the analysis inputs, and SSC labels
    as the class of largest summed affinity on the stored last-layer graph."""
    images, labels, _ = load_dataset("digits", "test")
    pick = analysis_indices(labels, metrics["n"], seed=0)
    model, info = load_checkpoint(run, metrics["epoch"])
    mean, std = (np.asarray(info[k], np.float32) for k in ("mean", "std"))
    scaled = (images[pick].astype(np.float32) / np.float32(255) - mean) / std
    predicted = np.asarray(predict(model, scaled)).argmax(axis=1)
    labels = labels[pick]
    coef = stored.coef[-1].toarray().astype(np.float64)
    A = np.abs(coef) + np.abs(coef).T
    np.fill_diagonal(A, 0.0)
    scores = A @ np.eye(10)[labels]
    ssc = np.where(scores.max(axis=1) > 0, scores.argmax(axis=1), -1)
    return {
        "ssc_label_accuracy": np.mean(ssc == labels),
        "network_accuracy": np.mean(predicted == labels),
        "agreement": np.mean(ssc == predicted),
    }


@pytest.mark.slow
def test_train_writes_a_checkpoint_per_epoch(tiny_run):
    from ssc_jax.training.checkpoints import list_checkpoints

    assert list(list_checkpoints(tiny_run)) == [1, 2]


@pytest.mark.slow
def test_analyze(tiny_run, analyzed):
    out, metrics = analyzed
    assert metrics["command"] == "analyze" and metrics["epoch"] == 2
    assert set(metrics) >= ANALYZE_KEYS
    _check_layer_metrics(metrics)
    # intervals by default
    assert np.shape(metrics["modularity_ci"]) == (len(metrics["layers"]), 2)
    stored = load_graphs(out / metrics["graph_file"])
    recomputed = _recomputed_table1(tiny_run, metrics, stored)
    for key, value in recomputed.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    for wrong in metrics["confidently_wrong"]:
        assert wrong["true"] != wrong["predicted"] and len(wrong["neighbours"]) == 8
    correct = round(metrics["network_accuracy"] * metrics["n"])
    want = correct if correct >= MIN_EMBEDDED else metrics["n"]
    assert metrics["embedded_inputs"] == want  # Fig 8: the correctly classified inputs
    figures = ["modularity_by_layer", "cka_heatmaps", "spectral_embeddings"]
    figures += [f"wrong_input_{k + 1}" for k in range(len(metrics["confidently_wrong"]))]
    _check_report(out, figures)
    assert stored.layers == metrics["layers"]
    coef = dense_stack(stored.coef)
    assert coef.shape == (len(stored.layers), metrics["n"], metrics["n"])
    assert np.all(np.diagonal(coef, axis1=1, axis2=2) == 0)


def test_fig8_embeds_the_correctly_classified_inputs():
    labels = np.arange(40) % 4
    predicted = labels.copy()
    predicted[[3, 7, 11]] = (labels[[3, 7, 11]] + 1) % 4
    np.testing.assert_array_equal(
        embedded_inputs(labels, predicted), np.delete(np.arange(40), [3, 7, 11])
    )
    # Too few correct inputs for a meaningful picture: every input is embedded.
    np.testing.assert_array_equal(embedded_inputs(labels, (labels + 1) % 4), np.arange(40))


@pytest.mark.slow
def test_computing_writes_nothing(tiny_run, analyzed, tmp_path, monkeypatch, fast_analysis):
    """A notebook gets the metrics without a file written: no cache, cwd untouched."""
    before = sorted(p for p in tiny_run.rglob("*"))
    monkeypatch.chdir(tmp_path)
    result = analyze_checkpoint(
        tiny_run,
        analysis=AnalysisSet(n=int(fast_analysis[1])),
        solver=COMMAND_SETTINGS,
        cache=False,
        progress=False,
    )
    assert list(tmp_path.iterdir()) == []
    assert sorted(p for p in tiny_run.rglob("*")) == before
    assert result.graphs.path is None
    metrics = json.loads(json.dumps(result.metrics, allow_nan=False))
    assert metrics == result.metrics  # JSON types already
    expected = {k: v for k, v in analyzed[1].items() if k not in ("command", "settings", "version")}
    assert set(metrics) == set(expected)
    # The same program on the same checkpoint and inputs solves the same graphs, to the last
    # bit, as `analyze` did before storing them: their metrics are equal.
    assert metrics["modularity"] == expected["modularity"]
    assert metrics["graph_file"] == expected["graph_file"]


def test_solver_settings_key_the_chosen_solver_and_call_it():
    settings = SolverSettings(
        admm=ADMM(tau=20.0, rel_tol=1e-3),
        working_set=WorkingSet(tau=20.0, size=32),
        options=SolverOptions(memory_budget_bytes=2**20),
    )
    assert settings.solver == settings.working_set and settings.memory_budget_bytes == 2**20
    assert settings.key() == {
        "normalize": True,
        "method": "working-set",
        **dataclasses.asdict(WorkingSet(tau=20.0, size=32)),
    }
    admm = SolverSettings(method="admm")
    assert admm.key() == {"normalize": True, "method": "admm", **dataclasses.asdict(ADMM())}
    x = np.random.default_rng(0).normal(size=(12, 4))
    result = ssc_gram(x @ x.T, solver=settings.solver, options=settings.options, progress=False)
    direct = ssc_gram(x @ x.T, solver=WorkingSet(tau=20.0, size=32))
    assert_same_optimum(x @ x.T, result, direct, tau=20.0)
    with pytest.raises(ValueError, match="method must be one of"):
        SolverSettings(method="lars")


@pytest.mark.slow
def test_later_commands_reuse_stored_graphs(
    tiny_run, analyzed, tmp_path, monkeypatch, fast_analysis
):
    """A second analysis of the same checkpoint and settings must not solve again."""

    def no_solving(*args, **kwargs):
        raise AssertionError("solved again instead of loading the stored graphs")

    monkeypatch.setattr(graphs_module, "ssc_gram", no_solving)
    out = tmp_path / "again"
    # fast_analysis has no intervals, whose subsamples are solved anew each time.
    assert main(["analyze", str(tiny_run), "--out", str(out), *fast_analysis]) == 0
    again = json.loads((out / "metrics.json").read_text())
    # the stored graphs, read back exactly: the same metrics to the last bit
    assert again["modularity"] == analyzed[1]["modularity"]
    with pytest.raises(AssertionError, match="solved again"):
        main(["analyze", str(tiny_run), "--out", str(out), "--tau", "20", *fast_analysis])


@pytest.mark.slow
def test_dynamics(tiny_run, analyzed, tmp_path, fast_analysis):
    out = tmp_path / "dynamics"
    assert main(["dynamics", str(tiny_run), "--out", str(out), *fast_analysis]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _check_layer_metrics(metrics)
    n_layers = len(metrics["layers"])
    assert metrics["epochs"] == [1, 2]
    for key in ("modularity_per_epoch", "ssc_cka_to_final", "linear_cka_to_final"):
        assert np.asarray(metrics[key]).shape == (2, n_layers)
    # The final epoch against itself: its alignment and self-alignments are the same float64
    # sum s, so CKA = s / (sqrt(s) sqrt(s)): three correctly rounded operations from 1.
    np.testing.assert_allclose(metrics["ssc_cka_to_final"][-1], 1.0, rtol=0, atol=2 * EPS64)
    # the final epoch's graphs are those `analyze` stored in the run's cache
    assert metrics["modularity"] == analyzed[1]["modularity"]
    assert set(metrics["heatmaps"]) == {"1", "2"}
    assert len(metrics["graph_files"]) == 2
    _check_report(out, ["dynamics", "epoch_heatmaps_ssc_cka", "epoch_heatmaps_linear_cka"])


@pytest.mark.slow
def test_compare(tiny_run, tmp_path, fast_analysis):
    out = tmp_path / "compare"
    runs = [f"{tiny_run}@1", str(tiny_run)]
    argv = ["compare", *runs, "--names", "epoch1", "final", "--out", str(out)]
    assert main([*argv, *fast_analysis]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in metrics["runs"]] == ["epoch1", "final"]
    assert [r["epoch"] for r in metrics["runs"]] == [1, 2]
    for run in metrics["runs"]:
        _check_layer_metrics(run)
        assert (out / run["graph_file"]).exists()
    (cross,) = metrics["cross"]
    layers = metrics["runs"][0]["layers"]
    assert (cross["a"], cross["b"]) == ("epoch1", "final")
    assert np.shape(cross["ssc_cka"]) == np.shape(cross["linear_cka"]) == (len(layers),) * 2
    _check_report(out, ["compare_ssc_cka", "compare_linear_cka", "compare_modularity", "cross_1"])


@pytest.mark.slow
def test_offline_default(tmp_path, capsys):
    base = tmp_path / "default"
    out, run = base / "report", base / "run"
    argv = ["--out", str(base), "--epochs", "2", "--n", "60", "--quiet"]
    assert main(argv) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == "default"
    assert set(metrics) >= ANALYZE_KEYS
    _check_layer_metrics(metrics)
    # intervals by default
    assert np.shape(metrics["modularity_ci"]) == (len(metrics["layers"]), 2)
    assert metrics["dynamics"]["epochs"] == [1, 2]
    assert metrics["run"] == metrics["dynamics"]["run"] == str(run.absolute())
    _check_report(out, ["modularity_by_layer", "cka_heatmaps", "dynamics"])
    checkpoints = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # Rerunning reuses the finished run and replaces only the report.
    assert main(argv) == 0
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == checkpoints
    # Analysing the run into the default's folder is refused and changes nothing.
    assert main(["analyze", str(run), "--out", str(base), "--n", "60", "--quiet"]) == 2
    assert "error: --out" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == checkpoints


@pytest.mark.slow
def test_warm_started_dynamics_reach_the_cold_answer_in_fewer_iterations(tiny_run):
    from ssc_jax.pipeline.analysis.config import AnalysisSet
    from ssc_jax.pipeline.analysis.dynamics import training_dynamics
    from ssc_jax.pipeline.analysis.layer_graphs import checkpoint_grams
    from ssc_jax.pipeline.analysis.summary import layer_modularity
    from ssc_jax.similarity.streamed import streamed_cka_matrix

    def run(warm_start):
        return training_dynamics(
            tiny_run,
            analysis=AnalysisSet(n=80),
            cache=False,
            progress=False,
            warm_start=warm_start,
        )

    def affinity(layers):
        return [sp.csr_array(abs(s.coef) + abs(s.coef).T) for s in layers]

    cold, warm = run(False), run(True)
    # Each epoch's warm and cold graphs: the same optimum to within their certified gaps.
    # The certificate bounds each row's fitted values, not its coefficients on their own:
    # those only through the support's smallest Gram eigenvalue (about 0.01 here), which
    # leaves metrics of |C| (modularity, SSC-CKA) uncertified at gap_tol 2e-3. So each
    # metric is checked to be that of its own graphs, computed again from them.
    n_classes = len(warm.inputs.class_names)
    for dynamics in (warm, cold):
        graphs = [stored_layers(source) for source in dynamics.exports.values()]
        final = affinity(graphs[-1])
        assert np.all(dynamics.diagnostics["converged"])
        for e, layers in enumerate(graphs):
            # the same program on the same graphs: equal to the last bit
            A = affinity(layers)
            modularity = layer_modularity(A, dynamics.inputs.labels, n_classes)
            np.testing.assert_array_equal(dynamics.modularity[e], modularity)
            similarity = np.diagonal(streamed_cka_matrix(A, final))
            np.testing.assert_array_equal(dynamics.to_final["ssc_cka"][e], similarity)
    exports = (d.exports.values() for d in (warm, cold))
    for epoch, first, second in zip(warm.epochs, *exports, strict=True):
        grams = checkpoint_grams(tiny_run, epoch, warm.inputs, analysis=AnalysisSet(n=80)).grams
        for gram, *pair in zip(grams, stored_layers(first), stored_layers(second), strict=True):
            assert_same_optimum(gram, *pair)
    # the final epoch is solved first, cold both times; epoch 1 starts from its graphs
    cold_iterations = np.asarray(cold.diagnostics["iterations"])
    warm_iterations = np.asarray(warm.diagnostics["iterations"])
    np.testing.assert_array_equal(warm_iterations[-1], cold_iterations[-1])
    assert warm_iterations[0].sum() < cold_iterations[0].sum()
