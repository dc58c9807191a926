"""``compare``: several runs (depths, widths, data fractions) on the same analysis inputs.

Their pairwise SSC-CKA and linear-CKA heatmaps go side by side (Fig 3/4/5/7) and their
modularity curves on one axis of relative depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.pipeline import plots
from ssc_jax.pipeline.config import (
    DEFAULT_ANALYSIS,
    DEFAULT_SOLVER,
    AnalysisSet,
    SolverSettings,
)
from ssc_jax.pipeline.inputs import held_out_data, load_inputs, resolve_epoch, run_info
from ssc_jax.pipeline.layer_graphs import LayerGraphs, checkpoint_graphs, export_graphs
from ssc_jax.pipeline.report import Report
from ssc_jax.pipeline.summary import graph_summary


class RunSummary(NamedTuple):
    """One compared run at one epoch: ``modularity`` (L,), ``ssc_cka``/``linear_cka`` (L, L),
    ``diagnostics`` name -> (L,), ``graphs`` the run's graphs."""

    name: str
    run: str
    epoch: int
    layers: list[str]
    modularity: np.ndarray
    ssc_cka: np.ndarray
    linear_cka: np.ndarray
    network_accuracy: float
    diagnostics: dict[str, np.ndarray]
    graphs: LayerGraphs


def parse_run(spec: str) -> tuple[Path, int | None]:
    """``"RUN_DIR"`` or ``"RUN_DIR@EPOCH"`` -> (run folder, epoch or None for the last)."""
    run, sep, epoch = spec.rpartition("@")
    if not sep or not epoch.isdigit():
        return Path(spec), None
    return Path(run), int(epoch)


def compare_runs(
    runs: list[str],
    *,
    names: list[str] | None = None,
    analysis: AnalysisSet = DEFAULT_ANALYSIS,
    solver: SolverSettings = DEFAULT_SOLVER,
    progress: bool = True,
) -> list[RunSummary]:
    """Analyse the checkpoint named by each ``runs`` spec (see ``parse_run``) on one input set."""
    if names is not None and len(names) != len(runs):
        raise ValueError(f"got {len(names)} names for {len(runs)} runs")
    specs = [parse_run(s) for s in runs]
    checkpoints = [(run, resolve_epoch(run, epoch)) for run, epoch in specs]
    datasets = {held_out_data(run_info(run)) for run, _ in checkpoints}
    if analysis.data is None and len(datasets) > 1:
        raise ValueError(
            f"the runs were trained on different data ({sorted(datasets)}); "
            "pass --data to choose the inputs they are compared on"
        )
    inputs = load_inputs(analysis, datasets.pop())
    out = []
    for i, (run, epoch) in enumerate(checkpoints):
        graphs = checkpoint_graphs(
            run, epoch, inputs, analysis=analysis, solver=solver, progress=progress
        )
        summary = graph_summary(
            graphs.affinity, graphs.grams, inputs.labels, len(inputs.class_names)
        )
        name = names[i] if names else f"{run.name}@{epoch}"
        accuracy = float(np.mean(graphs.probs.argmax(axis=1) == inputs.labels))
        out.append(
            RunSummary(
                name,
                str(run),
                epoch,
                graphs.layers,
                *summary,
                accuracy,
                graphs.diagnostics,
                graphs,
            )
        )
    return out


def write_comparison(results: list[RunSummary], out_dir: Path, report: Report) -> dict:
    """Write the side-by-side figures and graph files, add the report sections, and return
    the ``metrics.json`` entries (one per run under ``runs``)."""
    figures = out_dir / "figures"
    report.heading("Runs compared")
    report.table(
        ["run", "epoch", "layers", "network accuracy", "Q first layer", "Q last layer"],
        [
            [
                r.name,
                r.epoch,
                len(r.layers),
                r.network_accuracy,
                float(r.modularity[0]),
                float(r.modularity[-1]),
            ]
            for r in results
        ],
    )
    report.heading("Pairwise SSC-CKA side by side (Fig 3/4/5/7)")
    for field, label, stem in (
        ("ssc_cka", "SSC-CKA", "compare_ssc_cka"),
        ("linear_cka", "linear CKA", "compare_linear_cka"),
    ):
        panels = [
            (f"{r.name} (acc {r.network_accuracy:.2f})", getattr(r, field), r.layers)
            for r in results
        ]
        fig = plots.plot_cka_heatmaps(panels, title=f"{label} between layers", colorbar_label=label)
        report.figure(plots.save_figure(fig, figures, stem))
    report.heading("Modularity against depth")
    fig = plots.plot_modularity_by_layer({r.name: (r.layers, r.modularity) for r in results})
    report.figure(plots.save_figure(fig, figures, "compare_modularity"))
    runs = []
    for r in results:
        graph_file = export_graphs(r.graphs, r.epoch, out_dir / "graphs" / r.name.replace("/", "_"))
        runs.append(
            {
                "name": r.name,
                "run": r.run,
                "epoch": r.epoch,
                "layers": r.layers,
                "modularity": r.modularity,
                "ssc_cka": r.ssc_cka,
                "linear_cka": r.linear_cka,
                "network_accuracy": r.network_accuracy,
                "solver_diagnostics": r.diagnostics,
                "graph_file": graph_file.relative_to(out_dir),
            }
        )
    return {"runs": runs}
