"""Figures, the HTML report, graph storage and atomic output folders, on synthetic arrays."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from ssc_jax.pipeline import plots
from ssc_jax.pipeline.graph_store import graph_path, load_graphs, save_graphs, settings_key
from ssc_jax.pipeline.outputs import MARKER, OutputError, atomic_output_dir, write_json
from ssc_jax.pipeline.report import Report

LAYERS = ["conv1", "conv2", "conv3"]


def _diagnostics(n_layers):
    return {
        "iterations": np.arange(n_layers) + 10,
        "converged": np.ones(n_layers, bool),
        "primal_residual": np.full(n_layers, 1e-5),
        "dual_residual": np.full(n_layers, 2e-5),
        "gap_estimate": np.full(n_layers, 1e-5),
        "objective": np.linspace(1.0, 2.0, n_layers),
    }


def test_figures_write_png_and_pdf(tmp_path):
    rng = np.random.default_rng(0)
    figs = {
        "modularity": plots.plot_modularity_by_layer({"run": (LAYERS, [0.1, 0.3, 0.6])}),
        "modularity_compare": plots.plot_modularity_by_layer(
            {"a": (LAYERS, [0.1, 0.2, 0.3]), "b": (LAYERS[:2], [0.2, 0.5])}
        ),
        "dynamics": plots.plot_dynamics(
            [1, 2, 3], LAYERS, rng.random((3, 3)), rng.random((3, 3)), rng.random((3, 3))
        ),
        "heatmaps": plots.plot_cka_heatmaps(
            [("epoch 1", rng.random((3, 3)), LAYERS), ("epoch 3", rng.random((2, 2)), LAYERS[:2])]
        ),
        "embedding": plots.plot_spectral_embeddings(
            [("conv1", rng.normal(size=(20, 2))), ("conv3", rng.normal(size=(20, 2)))],
            rng.integers(0, 3, 20),
            ["a", "b", "c"],
        ),
        "wrong": plots.plot_wrong_input(
            rng.integers(0, 255, (8, 8, 1), dtype=np.uint8),
            "true a, predicted b (0.97)",
            np.array([0.2, 0.7, 0.1]),
            ["a", "b", "c"],
            rng.integers(0, 255, (8, 8, 8, 1), dtype=np.uint8),
            [f"n{i}" for i in range(8)],
            highlight=(0, 1),
        ),
    }
    for stem, fig in figs.items():
        png = plots.save_figure(fig, tmp_path, stem)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"


def test_heatmap_has_layer_ticks_and_colour_bar():
    fig = plots.plot_cka_heatmaps([("net", np.eye(3), LAYERS)])
    heat_ax, bar_ax = fig.axes
    assert [t.get_text() for t in heat_ax.get_yticklabels()] == LAYERS
    assert bar_ax.get_ylabel() == "SSC-CKA"


def test_report_is_self_contained(tmp_path):
    fig = plots.plot_modularity_by_layer({"r": (LAYERS, [0, 1, 2])})
    png = plots.save_figure(fig, tmp_path, "m")
    report = Report("A <test> report")
    report.heading("Metrics")
    report.table(["layer", "Q", "converged"], [["conv1", 0.123456, True], ["conv2", 0.5, False]])
    report.figure(png, "modularity")
    page = report.write(tmp_path / "report.html").read_text()
    assert "A &lt;test&gt; report" in page
    assert "<td>0.1235</td>" in page and "<td>NO</td>" in page
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == png.read_bytes()
    assert 'src="http' not in page and "<link" not in page


def test_graph_store_roundtrip_sparse_and_dense(tmp_path):
    rng = np.random.default_rng(1)
    n = 30
    sparse = np.where(rng.random((n, n)) < 0.05, rng.normal(size=(n, n)), 0.0)
    dense = rng.normal(size=(n, n))
    coef = np.stack([sparse, dense]).astype(np.float32)
    settings = {"tau": 10.0, "mu": 10.0, "n": n}
    path = save_graphs(tmp_path / "g.npz", ["a", "b"], coef, _diagnostics(2), settings)
    with np.load(path) as f:
        assert "c0_indptr" in f and "c1_dense" in f
    stored = load_graphs(path)
    assert stored.layers == ["a", "b"]
    np.testing.assert_array_equal(stored.coef, coef)
    np.testing.assert_array_equal(stored.diagnostics["iterations"], [10, 11])
    assert stored.settings == settings
    assert list(tmp_path.iterdir()) == [path]


def test_graph_key_depends_on_settings_not_order(tmp_path):
    assert settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})
    assert graph_path(tmp_path, 3, {"tau": 10}) != graph_path(tmp_path, 3, {"tau": 20})
    assert graph_path(tmp_path, 3, {"tau": 10}).name.startswith("epoch_0003_")


def test_graph_store_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="coef must be"):
        save_graphs(tmp_path / "g.npz", ["a"], np.zeros((2, 3, 3)), _diagnostics(2), {})


def test_atomic_output_success_and_replace(tmp_path):
    target = tmp_path / "out"
    for value in (1, 2):
        with atomic_output_dir(target) as tmp:
            write_json(tmp / "metrics.json", {"x": np.float32(value), "bad": float("nan")})
        assert json.loads((target / "metrics.json").read_text()) == {"x": value, "bad": None}
    assert (target / MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_output_failure_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(target) as tmp:
        (tmp / "partial.txt").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not written by ssc-jax"), atomic_output_dir(tmp_path):
        pass
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_findings_read_the_numbers():
    from ssc_jax.pipeline import findings

    assert findings.modularity_grows(LAYERS, [0.2, 0.3, 0.5]).holds
    assert not findings.modularity_grows(LAYERS, [0.5, 0.3, 0.2]).holds
    table1 = {"agreement": 0.9, "ssc_label_accuracy": 0.8, "network_accuracy": 0.85}
    assert "agreement 90.0%" in findings.labels_agree(table1, "conv3").evidence
    settling = np.array([[0.99, 0.8, 0.5], [1.0, 0.9, 0.7], [1.0, 1.0, 1.0]])
    assert findings.bottom_up_convergence(LAYERS, settling, "SSC-CKA").holds
    assert not findings.bottom_up_convergence(LAYERS, settling[:, ::-1], "SSC-CKA").holds
    assert findings.linear_converges_faster(settling * 0.9, settling).holds
