"""Figures, the HTML report, graph storage and atomic output folders, on synthetic arrays."""

from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from conftest import TINY_N
from ssc_jax.pipeline.analysis.analyze import analyze_checkpoint
from ssc_jax.pipeline.analysis.config import AnalysisSet, SolverSettings, settings_record
from ssc_jax.pipeline.analysis.dynamics import Dynamics
from ssc_jax.pipeline.analysis.inputs import AnalysisInputs, run_facts
from ssc_jax.pipeline.publish.write import publish
from ssc_jax.pipeline.report import plots, plots_inputs
from ssc_jax.pipeline.report.html import CSS_PX_PER_INCH, Report, Section, Table
from ssc_jax.pipeline.report.render import render_checkpoint, settings_section
from ssc_jax.pipeline.report.render_dynamics import render_dynamics
from ssc_jax.pipeline.report.wording import (
    analysis_title,
    given_model_text,
    heading,
    setting_text,
    split_columns,
    tokens_text,
)
from ssc_jax.pipeline.store.graph_store import (
    DIAGNOSTICS,
    OWN,
    dense_stack,
    graph_path,
    load_graphs,
    save_graphs,
    settings_key,
)
from ssc_jax.pipeline.store.outputs import (
    MARKER,
    OutputError,
    atomic_output_dir,
    to_jsonable,
    write_json,
)

LAYERS = ["conv1", "conv2", "conv3"]


def _diagnostics(n_layers):
    return {
        "iterations": np.arange(n_layers) + 10,
        "converged": np.ones(n_layers, bool),
        "primal_residual": np.full(n_layers, 1e-5),
        "dual_residual": np.full(n_layers, 2e-5),
        "duality_gap": np.full(n_layers, 1e-5),
        "objective": np.linspace(1.0, 2.0, n_layers),
        "verified": np.full(n_layers, 0.5),
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
    to_final = {"SSC-CKA": panels[1], "linear CKA": panels[2]}
    fig = plots.plot_dynamics(epochs, LAYERS, panels[0], to_final, title="run")
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
    assert [t.get_text() for t in heat_axes[0].get_yticklabels()] == LAYERS
    assert bar_ax.get_ylabel() == "SSC-CKA"


def test_side_by_side_heatmaps_share_a_colour_range_fitted_to_the_values():
    rng = np.random.default_rng(3)
    high = 0.72 + 0.28 * rng.random((4, 4))
    low = 0.41 + 0.5 * rng.random((4, 4))
    fig = plots.plot_cka_heatmaps([("a", high, [*LAYERS, "c4"]), ("b", low, [*LAYERS, "c4"])])
    *heat_axes, bar_ax = fig.axes
    limits = [ax.get_images()[0].get_clim() for ax in heat_axes]
    assert limits == [(0.4, 1.0), (0.4, 1.0)]
    assert bar_ax.get_ylim() == (0.4, 1.0)
    fig = plots.plot_cka_heatmaps([("a", high, [*LAYERS, "c4"])])
    assert fig.axes[0].get_images()[0].get_clim() == (0.7, 1.0)
    fig = plots.plot_cka_heatmaps([("a", high, [*LAYERS, "c4"])], limits=(0.0, 1.0))
    assert fig.axes[0].get_images()[0].get_clim() == (0.0, 1.0)


def test_cka_limits():
    assert plots.cka_limits([np.array([[1.0, 0.73], [0.73, 1.0]])]) == (0.7, 1.0)
    assert plots.cka_limits([np.array([0.31, np.nan]), np.array([0.86])]) == (0.3, 0.9)
    assert plots.cka_limits([np.ones((2, 2))]) == (0.95, 1.0)
    assert plots.cka_limits([np.zeros((2, 2))]) == (0.0, 0.05)
    assert plots.cka_limits([np.full(3, np.nan)]) == (0.0, 1.0)


def _twenty_layer_figures():
    """Every kind of figure, on 20 layers (a resnet18's conv layers) where it has layers."""
    rng = np.random.default_rng(4)
    layers = ["conv1"] + [f"layer{i // 4 + 1}.{i // 2 % 2}.conv{i % 2 + 1}" for i in range(16)]
    layers += ["layer2.0.shortcut.conv", "layer3.0.shortcut.conv", "layer4.0.shortcut.conv"]
    matrix = rng.random((20, 20))
    panels = [(f"epoch {e}", matrix, layers) for e in (1, 30, 60, 100)]
    curves = [rng.random((5, 20)) for _ in range(3)]
    images = rng.integers(0, 255, (9, 8, 8, 3), dtype=np.uint8)
    names = [f"class {c}" for c in range(10)]
    return {
        "modularity": plots.plot_modularity_by_layer({"r": (layers, rng.random(20))}),
        "modularity of runs": plots.plot_modularity_by_layer(
            {"a": (layers, rng.random(20)), "b": (layers[:5], rng.random(5))}
        ),
        "dynamics": plots.plot_dynamics(
            [1, 2, 3, 4, 5], layers, curves[0], {"SSC-CKA": curves[1], "CKA": curves[2]}
        ),
        "4 heatmaps": plots.plot_cka_heatmaps(panels, title="SSC-CKA"),
        "3 heatmaps": plots.plot_cka_heatmaps(panels[:3], title="SSC-CKA"),
        "embeddings": plots_inputs.plot_spectral_embeddings(
            [(name, rng.normal(size=(30, 2))) for name in layers[:6]], np.arange(30) % 10, names
        ),
        "wrong input": plots_inputs.plot_wrong_input(
            images[0], "true: a\npredicted: b", rng.random(10), names, images[1:], names[:8]
        ),
    }


@pytest.mark.parametrize("kind", list(_twenty_layer_figures()))
def test_figures_keep_their_type_readable_on_the_page(kind):
    """Every label is at least ``TEXT_PT`` points, and the figure fits the page, which shows it
    at its size: a 9-point label is 12 CSS pixels there."""
    fig = _twenty_layer_figures()[kind]
    assert fig.get_figwidth() <= plots.MAX_WIDTH_IN
    assert plots.TEXT_PT * CSS_PX_PER_INCH / 72 >= 12
    texts = [t for ax in fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels())]
    texts += [t for legend in fig.legends for t in legend.get_texts()]
    texts += [ax.title for ax in fig.axes]
    shown = [t for t in texts if t.get_text() and t.get_visible()]
    assert shown
    assert min(t.get_fontsize() for t in shown) >= plots.TEXT_PT


def test_heatmap_ticks_name_every_layer_that_fits_without_overlap():
    fig = _twenty_layer_figures()["4 heatmaps"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in fig.axes[:4]:
        labels = ax.get_yticklabels()
        assert 10 <= len(labels) <= 20
        boxes = [t.get_window_extent(renderer) for t in labels]
        for below, above in itertools.pairwise(boxes):
            assert above.y0 >= below.y1
    names = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "layer2.0.shortcut" in names and not any(n.endswith(".conv") for n in names)


def test_report_shows_figures_at_their_size():
    fig = plots.plot_modularity_by_layer({"r": (LAYERS, [0, 1, 2])})
    page = _report(fig).render()
    width = int(re.search(r'<img src="[^"]+" width="(\d+)"', page).group(1))
    assert width == round(fig.get_figwidth() * CSS_PX_PER_INCH)
    assert plots.MAX_WIDTH_IN * CSS_PX_PER_INCH <= 1200 - 2 * 16


def test_embedding_and_wrong_input_figures():
    rng = np.random.default_rng(2)
    points = [rng.normal(size=(20, 2)), rng.normal(size=(20, 2))]
    labels = np.arange(20) % 3
    fig = plots_inputs.plot_spectral_embeddings(
        [("conv1", points[0]), ("conv3", points[1])], labels, ["a", "b", "c"]
    )
    assert [ax.get_title() for ax in fig.axes] == ["conv1", "conv3"]
    for ax, xy in zip(fig.axes, points, strict=True):
        drawn = np.concatenate([c.get_offsets() for c in ax.collections])
        expected = np.concatenate([xy[labels == c] for c in range(3)])
        np.testing.assert_array_equal(drawn, expected)
    scores = np.array([0.2, 0.6, 0.2])
    fig = plots_inputs.plot_wrong_input(
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
    assert '<td class="num">0.1235</td>' in page and "<td>NO</td>" in page
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
    own = {"rounds": np.array([10, 11]), "kkt_violation": np.array([1e-6, 0.0])}
    diagnostics = _diagnostics(2) | {OWN: own}
    path = save_graphs(tmp_path / "g.npz", ["a", "b"], coef, diagnostics, settings)
    with np.load(path) as f:
        assert "c0_indptr" in f and "c1_dense" in f
    stored = load_graphs(path)
    assert stored.layers == ["a", "b"]
    np.testing.assert_array_equal(dense_stack(stored.coef), coef)
    np.testing.assert_array_equal(stored.diagnostics["iterations"], [10, 11])
    assert list(stored.diagnostics[OWN]) == ["rounds", "kkt_violation"]
    np.testing.assert_array_equal(stored.diagnostics[OWN]["kkt_violation"], [1e-6, 0.0])
    assert stored.settings == settings
    assert list(tmp_path.iterdir()) == [path]


def test_a_graph_file_of_an_earlier_version_reads_without_the_later_diagnostics(tmp_path):
    path = save_graphs(tmp_path / "g.npz", ["a"], np.zeros((1, 3, 3)), _diagnostics(1), {})
    with np.load(path) as f:
        older = {k: f[k] for k in f.files if k != "diag_verified"}
    np.savez_compressed(path, **older)
    stored = load_graphs(path)
    assert np.isnan(stored.diagnostics["verified"]).all()
    np.testing.assert_array_equal(stored.diagnostics["iterations"], [10])
    assert OWN not in stored.diagnostics


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
    from ssc_jax.pipeline.analysis import findings

    assert findings.modularity_grows(LAYERS, [0.2, 0.3, 0.5]).holds
    assert not findings.modularity_grows(LAYERS, [0.5, 0.3, 0.2]).holds
    table1 = {"agreement": 0.9, "ssc_label_accuracy": 0.8, "network_accuracy": 0.85}
    assert "agreement 90.0%" in findings.labels_agree(table1, "conv3").evidence
    settling = np.array([[0.99, 0.8, 0.5], [1.0, 0.9, 0.7], [1.0, 1.0, 1.0]])
    assert findings.bottom_up_convergence(LAYERS, settling, "SSC-CKA").holds
    assert not findings.bottom_up_convergence(LAYERS, settling[:, ::-1], "SSC-CKA").holds
    assert findings.linear_converges_faster(settling * 0.9, settling).holds


def test_setting_values_read_as_a_person_writes_them():
    assert setting_text("solver.mu_bounds", (1e-4, 1e8)) == "1e-4 to 1e8"
    assert setting_text("solver.abs_tol", 1e-6) == "1e-6"
    assert setting_text("solver.rel_tol", 1.5e-3) == "0.0015"
    assert setting_text("solver.gap_tol", 2.5e-5) == "2.5e-5"
    assert setting_text("solver.gap_tol", float("inf")) == "inf"
    assert setting_text("solver.tau", 10.0) == "10"
    assert setting_text("solver.tau", 12345.6) == "12345.6"
    assert setting_text("solver.mu", 1e-4) == "1e-4"
    assert setting_text("solver.normalize", False) == "no"
    assert setting_text("analysis.data", None) == "the run's test data"
    assert setting_text("memory_budget_bytes", 2**31) == "2 GiB"
    assert setting_text("memory_budget_bytes", None).startswith("auto")


def test_settings_table_has_no_python_reprs():
    for method in ("working-set", "admm"):
        settings = settings_record(AnalysisSet(), SolverSettings(method=method))
        (table,) = settings_section(settings, "0.0").blocks
        values = dict(table.rows)
        assert len(values) == len(settings["analysis"]) + len(settings["solver"]) + 1
        for name, value in values.items():
            assert isinstance(value, str), name
            assert not re.search(r"None|True|False|\([\d.e+-]+,|\[|e-0|e\+", value), (name, value)
        assert values["solver.method"] == method
        assert values["memory_budget_bytes"].startswith("auto")
    assert values["solver.mu_bounds"] == "1e-4 to 1e8"  # the last table is ADMM's


def test_split_columns_keeps_the_first_column_in_each_part():
    headers = ["layer", *(f"e{i}" for i in range(25))]
    rows = [["q1", *range(25)], ["q2", *range(25, 50)]]
    parts = split_columns(headers, rows, width=10)
    assert [len(h) for h, _ in parts] == [10, 10, 8]
    assert all(h[0] == "layer" and [r[0] for r in part] == ["q1", "q2"] for h, part in parts)
    assert [v for _, part in parts for v in part[1][1:]] == list(range(25, 50))
    assert split_columns(["a", "b"], [[1, 2]]) == [(["a", "b"], [[1, 2]])]


def _dynamics(run, n_epochs: int, n_layers: int) -> Dynamics:
    rng = np.random.default_rng(5)
    layers = [f"layer{i}.conv1" for i in range(n_layers)]
    epochs = list(range(1, n_epochs + 1))
    per_epoch = {name: rng.random((n_epochs, n_layers)) for name in ("q", "ssc", "linear")}
    diagnostics = _diagnostics(n_layers)
    inputs = AnalysisInputs(
        images=np.zeros((40, 8, 8, 1), np.uint8),
        labels=np.arange(40) % 10,
        class_names=[str(c) for c in range(10)],
        indices=np.arange(40),
        key={"data": "digits", "split": "test", "indices": "0"},
    )
    return Dynamics(
        run=str(run),
        epochs=epochs,
        layers=layers,
        inputs=inputs,
        modularity=per_epoch["q"],
        to_final={"ssc_cka": per_epoch["ssc"], "linear_cka": per_epoch["linear"]},
        network_accuracy=np.linspace(0.3, 0.9, n_epochs),
        diagnostics={k: np.stack([v] * n_epochs) for k, v in diagnostics.items()},
        heatmaps={
            e: dict.fromkeys(("ssc_cka", "linear_cka"), rng.random((n_layers, n_layers)))
            for e in epochs[-2:]
        },
        findings=[],
        exports={},
        trained=run_facts(run) if Path(run).is_dir() else None,
    )


@pytest.mark.parametrize(("n_epochs", "n_layers"), [(3, 20), (100, 20), (8, 4)])
def test_per_epoch_tables_fit_the_page(n_epochs, n_layers):
    result = _dynamics("unused", n_epochs, n_layers)
    sections = render_dynamics(result, opening=False)
    tables = [b for s in sections for b in s.blocks if isinstance(b, Table)]
    assert all(
        len(t.headers) <= 12 and all(len(r) == len(t.headers) for r in t.rows) for t in tables
    )
    cells = sorted(v for t in tables for r in t.rows for v in r[1:] if isinstance(v, float))
    settled = [v[:-1].mean(axis=0) for v in result.to_final.values()]
    per_epoch = [v.ravel() for v in result.to_final.values()]
    expected = [*result.network_accuracy, *result.modularity.ravel(), *np.ravel(settled)]
    expected += [*np.ravel(per_epoch)]
    np.testing.assert_allclose(cells, sorted(expected))


@pytest.mark.slow
def test_reports_open_with_model_data_n_and_accuracy(tiny_run, analyzed):
    out, metrics = analyzed
    page = (out / "report.html").read_text()
    head = page[page.index('<dl class="facts">') : page.index("</dl>")]
    assert page.index("</dl>") < page.index("<h2>")
    assert "small_cnn (width 0.5), trained on digits" in head
    assert f"N = {metrics['n']}, a stratified sample of the test split of digits" in head
    assert f"{metrics['network_accuracy']:.3f} on these inputs" in head
    assert f"epoch {metrics['epoch']} of 2" in head
    result = _dynamics(tiny_run, 2, 3)
    (opening, *_) = render_dynamics(result)
    (facts,) = opening.blocks
    about = dict(facts.pairs)
    assert about["model"] == "small_cnn (width 0.5), trained on digits"
    assert about["network accuracy"] == "0.300 at epoch 1, 0.900 at epoch 2"
    assert about["analysis inputs"].startswith("N = 40,")


def test_column_headings_read_as_words():
    assert heading("kkt_violation") == "KKT violation"
    assert heading("rows_polished") == "rows polished"
    assert heading("mu") == "mu"


@pytest.mark.slow
def test_the_solver_table_shows_each_solvers_own_diagnostics(tiny_run, analyzed, fast_analysis):
    out, metrics = analyzed
    page = (out / "report.html").read_text()
    for name in ("rounds", "KKT violation", "rows proven", "change", "certified gap"):
        assert f"<th>{name}</th>" in page
    assert "<th>mu</th>" not in page and "<th>primal residual</th>" not in page
    # metrics.json keeps every diagnostic it had and adds the solver's own
    solver = metrics["solver_diagnostics"]
    assert set(solver) == {*DIAGNOSTICS, OWN}
    assert list(solver[OWN]) == ["rounds", "kkt_violation", "rows_proven", "change"]
    assert solver[OWN]["rounds"] == solver["iterations"]

    admm = analyze_checkpoint(
        tiny_run,
        analysis=AnalysisSet(n=int(fast_analysis[1])),
        solver=SolverSettings(method="admm"),
        cache=False,
        progress=False,
    )
    (table,) = [
        block
        for section in render_checkpoint(admm)
        for block in section.blocks
        if isinstance(block, Table) and "certified gap" in block.headers
    ]
    assert table.headers == [
        "layer",
        "modularity",
        "iterations",
        "primal residual",
        "dual residual",
        "mu",
        "rows polished",
        "converged",
        "certified gap",
        "objective",
    ]
    assert [row[2] for row in table.rows] == admm.metrics["solver_diagnostics"]["iterations"]


def test_findings_evidence_keeps_the_digits_that_tell_numbers_apart():
    from ssc_jax.pipeline.analysis import findings

    small = findings.modularity_grows(LAYERS, [0.00012341, 0.0003, 0.00012349])
    assert "conv1 0.0001234 -> conv3 0.0001235" in small.evidence
    assert "0.000 ->" not in small.evidence
    plain = findings.modularity_grows(LAYERS, [0.2, 0.3, 0.5])
    assert "conv1 0.2 -> conv3 0.5" in plain.evidence
    assert "first analysed layer" in plain.claim and "conv" not in plain.claim
    settling = np.array([[0.91234, 0.91236], [1.0, 1.0]])
    assert (
        "conv1 0.9123, conv3 0.9124"
        in findings.bottom_up_convergence(["conv1", "conv3"], settling, "SSC-CKA").evidence
    )


def test_a_given_model_is_named_as_a_model_in_a_real_title():
    assert analysis_title("grams", None, 300, 12) == (
        "SSC analysis of a network given by its layers' Grams: 12 layers on 300 inputs"
    )
    assert analysis_title("BertModel", None, 2000, 4) == (
        "SSC analysis of BertModel: 4 layers on 2,000 inputs"
    )
    assert analysis_title("/runs/cifar", 30, 1000, 20).startswith("SSC analysis of cifar, epoch 30")
    assert given_model_text("BertModel") == "BertModel, given by its activations"
    assert given_model_text("acts.npz") == "a network given by its activations saved in acts.npz"
    assert tokens_text("last") == "each input's last real token"
    assert tokens_text(None) == "none (no layer has a token axis)"


def test_the_settings_table_of_given_activations_shows_what_applied():
    applied = {"n": 300, "layers": "repeated blocks: the 4 Block modules", "tokens": None}
    settings = settings_record(applied, SolverSettings())
    (table,) = settings_section(settings, "0.0").blocks
    values = dict(table.rows)
    assert values["analysis.n"] == "300"
    assert values["analysis.layers"] == "repeated blocks: the 4 Block modules"
    assert values["analysis.tokens"] == "none (no layer has a token axis)"
    assert settings_record(None, SolverSettings())["analysis"] == {}


def _error_bars(figure) -> list[int]:
    """How many error-bar sets each panel of ``figure`` draws."""
    return [
        sum(type(c).__name__ == "ErrorbarContainer" for c in ax.containers) for ax in figure.axes
    ]


def _first_figure(sections):
    return next(b.figure for s in sections for b in s.blocks if hasattr(b, "figure"))


def _interval_cells(sections, interval_name: str) -> list[str]:
    """Every interval cell ("[low, high]") of the rows or columns that ``interval_name`` heads."""
    cells = []
    for block in (b for s in sections for b in s.blocks if isinstance(b, Table)):
        for row in block.rows:
            if str(row[0]).endswith(interval_name):
                cells += row[1:]
        for j, head in enumerate(block.headers):
            if head.endswith(interval_name):
                cells += [row[j] for row in block.rows]
    return cells


@pytest.mark.slow
def test_dynamics_and_tau_path_reports_draw_and_tabulate_their_intervals(tiny_run):
    from ssc_jax.pipeline.analysis.dynamics import training_dynamics
    from ssc_jax.pipeline.analysis.tau_path import checkpoint_tau_path
    from ssc_jax.pipeline.analysis.uncertainty import Resampling
    from ssc_jax.pipeline.report.render import interval_text
    from ssc_jax.pipeline.report.render_tau_path import render_tau_path

    small = {
        "analysis": AnalysisSet(n=TINY_N),
        "resampling": Resampling(resamples=2, level=0.8, permutations=0),
        "measures": ["ssc_cka"],
        "cache": False,
        "progress": False,
    }
    dynamics = training_dynamics(tiny_run, **small)
    tau = checkpoint_tau_path(tiny_run, [5.0, 10.0], **small)
    assert dynamics.metrics["interval_level"] == tau.metrics["interval_level"] == 0.8
    for result, sections, per, versus in (
        (dynamics, render_dynamics(dynamics), "modularity_per_epoch", "ssc_cka_to_final"),
        (tau, render_tau_path(tau), "modularity_per_tau", "ssc_cka_to_reference_tau"),
    ):
        figure = _first_figure(sections)
        n_layers = len(result.layers)
        # An error bar per layer on the modularity and the measure's panels, none on sparsity.
        assert _error_bars(figure)[:2] == [n_layers, n_layers]
        cells = _interval_cells(sections, "80% interval")
        expected = [result.intervals[per + "_ci"], result.intervals[versus + "_ci"]]
        expected = {interval_text(ci) for values in expected for ci in values.reshape(-1, 2)}
        assert expected <= set(cells)
    table1 = {interval_text(ci) for ci in tau.intervals["network_accuracy_per_tau_ci"]}
    assert table1 <= set(_interval_cells(render_tau_path(tau), "80% interval"))

    without = _dynamics("unused", 3, 4)
    sections = render_dynamics(without, opening=False)
    assert "interval_level" not in without.metrics and not _interval_cells(sections, "interval")
    assert _error_bars(_first_figure(sections))[:2] == [0, 0]
