"""Similarity measures as a registry: one registered by a user reaches the metrics, figures and
report of every command with no other code naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import ssc_jax
from ssc_jax.pipeline.analysis import measures
from ssc_jax.pipeline.cli.main import main


def overlap(a, b) -> float:
    """The Jaccard index of the two graphs' edge sets: shared edges over all edges."""
    a, b = sp.csr_array(a) != 0, sp.csr_array(b) != 0
    union = (a + b).nnz
    return float((a.multiply(b)).nnz / union) if union else 1.0


def gram_correlation(x, y) -> float:
    return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])


@pytest.fixture
def registered(monkeypatch):
    """Two user measures, one of the graphs and one of the Grams, removed afterwards."""
    monkeypatch.setattr(measures, "_REGISTRY", dict(measures._REGISTRY))
    ssc_jax.register_measure("edge_overlap", overlap, title="edge overlap")
    ssc_jax.register_measure("gram_corr", gram_correlation, on="grams")
    return ["ssc_cka", "linear_cka", "edge_overlap", "gram_corr"]


def test_registration_is_checked():
    with pytest.raises(ValueError, match="identifier"):
        ssc_jax.register_measure("edge overlap", overlap)
    with pytest.raises(ValueError, match="taken"):
        ssc_jax.register_measure("ssc_cka", overlap)
    with pytest.raises(ValueError, match="taken"):
        ssc_jax.register_measure("modularity", overlap)
    with pytest.raises(ValueError, match="on must be one of"):
        ssc_jax.register_measure("mine", overlap, on="activations")
    with pytest.raises(ValueError, match=r"unknown measure\(s\) nope; registered: ssc_cka"):
        measures.select_measures(["nope"])


def test_a_user_measure_matches_its_own_pairwise_values(registered):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    layers = {f"l{i}": rng.normal(size=(60, 6)) + i * labels[:, None] for i in range(3)}
    quick = {"progress": False, "resamples": 0}
    result = ssc_jax.analyze_activations(layers, labels, measures=registered, **quick)
    assert list(result.similarity) == registered
    A = result.graphs.affinity
    expected = [[overlap(a, b) for b in A] for a in A]
    np.testing.assert_array_equal(result.similarity["edge_overlap"], expected)
    grams = result.graphs.grams
    expected = [[gram_correlation(g, h) for h in grams] for g in grams]
    np.testing.assert_array_equal(result.similarity["gram_corr"], expected)
    paper = ssc_jax.analyze_activations(layers, labels, **quick)
    assert list(paper.similarity) == ["ssc_cka", "linear_cka"]
    np.testing.assert_array_equal(paper.similarity["ssc_cka"], result.similarity["ssc_cka"])


def report_and_figures(out):
    return (out / "report.html").read_text(), {p.stem for p in (out / "figures").glob("*.png")}


def test_every_command_writes_draws_and_reports_a_registered_measure(
    registered, tiny_run, fast_analysis, tmp_path
):
    chosen = ["--measures", *registered]
    runs = tmp_path / "out"

    out = runs / "analyze"
    assert main(["analyze", str(tiny_run), "--out", str(out), *chosen, *fast_analysis]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    layers = metrics["layers"]
    for name in registered:
        assert np.shape(metrics[name]) == (len(layers), len(layers))
    page, figures = report_and_figures(out)
    assert "edge overlap" in page and "gram_corr" in page and "cka_heatmaps" in figures

    saved = tmp_path / "acts.npz"
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    np.savez(saved, a=rng.normal(size=(60, 5)) + labels[:, None], b=rng.normal(size=(60, 4)))
    np.savez(saved, **dict(np.load(saved)), labels=labels)
    out = runs / "activations"
    argv = ["activations", str(saved), "--out", str(out), *chosen]
    assert main([*argv, "--quiet", "--resamples", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.shape(metrics["edge_overlap"]) == np.shape(metrics["gram_corr"]) == (2, 2)
    assert "edge overlap" in report_and_figures(out)[0]

    out = runs / "dynamics"
    assert main(["dynamics", str(tiny_run), "--out", str(out), *chosen, *fast_analysis]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = len(metrics["epochs"])
    for name in registered:
        assert np.shape(metrics[f"{name}_to_final"]) == (epochs, len(layers))
        assert all(name in m for m in metrics["heatmaps"].values())
    np.testing.assert_allclose(np.asarray(metrics["edge_overlap_to_final"])[-1], 1.0)
    page, figures = report_and_figures(out)
    assert {f"epoch_heatmaps_{name}" for name in registered} <= figures
    assert "edge overlap" in page

    out = runs / "compare"
    argv = ["compare", str(tiny_run), f"{tiny_run}@1", "--out", str(out), *chosen]
    assert main([*argv, *fast_analysis]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in registered:
        assert all(np.shape(r[name]) == (len(layers),) * 2 for r in metrics["runs"])
        assert np.shape(metrics["cross"][0][name]) == (len(layers),) * 2
    page, figures = report_and_figures(out)
    assert {f"compare_{name}" for name in registered} <= figures and "edge overlap" in page

    out = runs / "tau-path"
    argv = ["tau-path", str(tiny_run), "--taus", "5", "10", "--out", str(out), *chosen]
    assert main([*argv, *fast_analysis]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # Only the measures of the graphs follow tau: the Grams do not depend on it.
    assert np.shape(metrics["edge_overlap_to_reference_tau"]) == (2, len(layers))
    assert "gram_corr_to_reference_tau" not in metrics
    assert "edge overlap" in report_and_figures(out)[0]


def test_an_unknown_measure_is_one_line(tiny_run, fast_analysis, tmp_path, capsys):
    argv = ["analyze", str(tiny_run), "--out", str(tmp_path / "out"), "--measures", "nope"]
    assert main([*argv, *fast_analysis]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssc-jax: error: --measures: unknown measure(s) nope")
    assert not (tmp_path / "out").exists()


def test_the_most_alike_layer_is_the_nearest_by_a_distance_and_the_largest_by_a_similarity():
    from ssc_jax.pipeline.analysis.measures import most_alike

    values = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    assert most_alike("linear_cka", values).tolist() == [1, 0]
    assert most_alike("procrustes", values).tolist() == [0, 1]
