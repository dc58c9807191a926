"""Figures, the HTML report, graph storage and atomic output folders, on synthetic arrays."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from PIL import Image

from ssc_jax.pipeline import plots
from ssc_jax.pipeline.config import AnalysisSet, SolverSettings
from ssc_jax.pipeline.graph_store import graph_path, load_graphs, save_graphs, settings_key
from ssc_jax.pipeline.outputs import (
    MARKER,
    OutputError,
    atomic_output_dir,
    to_jsonable,
    write_json,
)
from ssc_jax.pipeline.publish import publish
from ssc_jax.pipeline.report import Report, Section

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


def test_modularity_figure_draws_one_line_per_curve():
    fig = plots.plot_modularity_by_layer({"run": (LAYERS, [0.1, 0.3, 0.6])}, title="Q per layer")
    (ax,) = fig.axes
    assert ax.get_title() == "Q per layer"
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(line.get_ydata(), [0.1, 0.3, 0.6])
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    # Runs of different depth share the relative-depth axis and get a legend.
    fig = plots.plot_modularity_by_layer(
        {"a": (LAYERS, [0.1, 0.2, 0.3]), "b": (LAYERS[:2], [0.2, 0.5])}
    )
    a, b = fig.axes[0].get_lines()
    np.testing.assert_array_equal(a.get_xdata(), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(b.get_xdata(), [0.0, 1.0])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]


def test_dynamics_figure_has_three_panels_of_a_line_per_layer():
    rng = np.random.default_rng(0)
    epochs = [1, 2, 3, 4]
    panels = [rng.random((4, 3)) for _ in range(3)]
    fig = plots.plot_dynamics(epochs, LAYERS, *panels, title="run")
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == [
        "(a) SSC graph modularity",
        "(b) SSC-CKA vs. final",
        "(c) linear CKA vs. final",
    ]
    for ax, values in zip(fig.axes, panels, strict=True):
        lines = ax.get_lines()
        assert len(lines) == len(LAYERS)
        for j, line in enumerate(lines):
            assert line.get_label() == LAYERS[j]
            np.testing.assert_array_equal(line.get_xdata(), epochs)
            np.testing.assert_array_equal(line.get_ydata(), values[:, j])
    assert fig.get_suptitle() == "run"


def test_heatmaps_show_the_input_matrices():
    rng = np.random.default_rng(1)
    first, second = rng.random((3, 3)), rng.random((2, 2))
    fig = plots.plot_cka_heatmaps(
        [("epoch 1", first, LAYERS), ("epoch 3", second, LAYERS[:2])], title="CKA"
    )
    *heat_axes, bar_ax = fig.axes
    assert [ax.get_title() for ax in heat_axes] == ["epoch 1", "epoch 3"]
    for ax, matrix in zip(heat_axes, (first, second), strict=True):
        (image,) = ax.get_images()
        np.testing.assert_array_equal(image.get_array(), matrix)
        assert image.get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in heat_axes[0].get_yticklabels()] == LAYERS
    assert bar_ax.get_ylabel() == "SSC-CKA"


def test_embedding_and_wrong_input_figures():
    rng = np.random.default_rng(2)
    points = [rng.normal(size=(20, 2)), rng.normal(size=(20, 2))]
    labels = np.arange(20) % 3
    fig = plots.plot_spectral_embeddings(
        [("conv1", points[0]), ("conv3", points[1])], labels, ["a", "b", "c"]
    )
    assert [ax.get_title() for ax in fig.axes] == ["conv1", "conv3"]
    for ax, xy in zip(fig.axes, points, strict=True):
        drawn = np.concatenate([c.get_offsets() for c in ax.collections])
        expected = np.concatenate([xy[labels == c] for c in range(3)])
        np.testing.assert_array_equal(drawn, expected)
    scores = np.array([0.2, 0.6, 0.2])
    fig = plots.plot_wrong_input(
        rng.integers(0, 255, (8, 8, 1), dtype=np.uint8),
        "true a, predicted b (0.97)",
        scores,
        ["a", "b", "c"],
        rng.integers(0, 255, (8, 8, 8, 1), dtype=np.uint8),
        [f"n{i}" for i in range(8)],
        highlight=(0, 1),
    )
    image_ax, bar_ax, *neighbour_axes = fig.axes
    assert image_ax.get_title() == "true a, predicted b (0.97)"
    assert [ax.get_title() for ax in neighbour_axes] == [f"n{i}" for i in range(8)]
    np.testing.assert_allclose([p.get_width() for p in bar_ax.patches], scores / scores.sum())


def _report(figure):
    section = Section("Metrics")
    section.table(["layer", "Q", "converged"], [["conv1", 0.123456, True], ["conv2", 0.5, False]])
    section.figure("m", figure, "modularity")
    return Report("A <test> report", [section])


def test_published_figures_and_self_contained_report(tmp_path):
    fig = plots.plot_modularity_by_layer({"r": (LAYERS, [0, 1, 2])})
    out = publish(
        tmp_path / "out",
        command="test",
        report=_report(fig),
        metrics={"x": 1.5},
        exports={},
        analysis=AnalysisSet(),
        solver=SolverSettings(),
    )
    png = out / "figures" / "m.png"
    with Image.open(png) as image:
        width, height = fig.get_size_inches() * plots.PNG_DPI
        assert image.format == "PNG" and image.size == (round(width), round(height))
    assert (out / "figures" / "m.pdf").read_bytes()[:4] == b"%PDF"
    page = (out / "report.html").read_text()
    assert "A &lt;test&gt; report" in page
    assert "<td>0.1235</td>" in page and "<td>NO</td>" in page
    assert "<h2>Settings</h2>" in page and "<td>solver.tau</td><td>10</td>" in page
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == png.read_bytes()
    assert 'src="http' not in page and "<link" not in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == "test" and metrics["x"] == 1.5
    assert metrics["settings"]["solver"] == to_jsonable(SolverSettings().key())
    written = sorted(p.name for p in out.iterdir())
    assert written == [MARKER, "figures", "metrics.json", "report.html"]


def test_a_report_renders_without_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = _report(plots.plot_modularity_by_layer({"r": (LAYERS, [0, 1, 2])})).render()
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded)[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == []


def test_figure_stems_are_unique():
    fig = plots.plot_modularity_by_layer({"r": (LAYERS, [0, 1, 2])})
    section = Section()
    section.figure("m", fig)
    section.figure("m", fig)
    with pytest.raises(ValueError, match="two figures"):
        Report("r", [section]).figures()


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
