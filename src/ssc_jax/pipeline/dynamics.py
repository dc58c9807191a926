"""``dynamics``: how each layer's SSC graph evolves over a run's per-epoch checkpoints.

Per epoch and layer: modularity (Fig 1/2 a), SSC-CKA against the same layer at the final
epoch (Fig 1/2 b) and the same with linear CKA (Fig 1/2 c); pairwise heatmaps at a few
chosen epochs (Fig 6). All epochs are analysed on the same inputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ssc_jax.graphs.communities import modularity
from ssc_jax.pipeline import findings, plots
from ssc_jax.pipeline.config import (
    DEFAULT_ANALYSIS,
    DEFAULT_SOLVER,
    AnalysisSet,
    SolverSettings,
)
from ssc_jax.pipeline.graph_store import DIAGNOSTICS
from ssc_jax.pipeline.inputs import (
    AnalysisInputs,
    held_out_data,
    load_inputs,
    run_epochs,
    run_info,
)
from ssc_jax.pipeline.layer_graphs import checkpoint_graphs
from ssc_jax.pipeline.report import Report
from ssc_jax.similarity.cka import cka, cka_matrix


class Dynamics(NamedTuple):
    """Per-epoch results; arrays over (E epochs, L layers) unless noted.

    ``heatmaps`` maps a chosen epoch to its (L, L) SSC-CKA and linear-CKA matrices;
    ``graph_files`` holds the cached graph file of each epoch (None if it was not stored).
    """

    run: str
    epochs: list[int]
    layers: list[str]
    inputs: AnalysisInputs
    modularity: np.ndarray
    ssc_cka_to_final: np.ndarray
    linear_cka_to_final: np.ndarray
    network_accuracy: np.ndarray
    diagnostics: dict[str, np.ndarray]
    heatmaps: dict[int, tuple[np.ndarray, np.ndarray]]
    graph_files: list[Path | None]


def spread_epochs(epochs: list[int], count: int = 4) -> list[int]:
    """Up to ``count`` of ``epochs`` spread evenly from the first to the last."""
    picks = np.linspace(0, len(epochs) - 1, min(count, len(epochs))).round().astype(int)
    return [epochs[i] for i in sorted(set(picks.tolist()))]


def training_dynamics(
    run_dir: str | Path,
    *,
    analysis: AnalysisSet = DEFAULT_ANALYSIS,
    solver: SolverSettings = DEFAULT_SOLVER,
    epochs: list[int] | None = None,
    heatmap_epochs: list[int] | None = None,
    progress: bool = True,
) -> Dynamics:
    """Analyse ``epochs`` (default: all) of the run in ``run_dir`` against its last epoch."""
    available = run_epochs(run_dir)
    final = available[-1]
    missing = sorted(set(epochs or []) - set(available))
    if missing:
        raise FileNotFoundError(f"no checkpoints for epochs {missing} in {run_dir}")
    chosen = sorted(set(epochs or available) | {final})
    heatmap_epochs = sorted((set(heatmap_epochs or spread_epochs(chosen)) & set(chosen)) | {final})

    def graphs_of(epoch):
        graphs = checkpoint_graphs(
            run_dir, epoch, inputs, analysis=analysis, solver=solver, progress=False
        )
        return graphs, float(np.mean(graphs.probs.argmax(axis=1) == inputs.labels))

    inputs = load_inputs(analysis, held_out_data(run_info(run_dir)))
    final_graphs, final_accuracy = graphs_of(final)
    final_A = final_graphs.affinity
    rows = []
    for epoch in tqdm(chosen, desc="dynamics", unit="epoch", disable=not progress):
        graphs, accuracy = (final_graphs, final_accuracy) if epoch == final else graphs_of(epoch)
        A = graphs.affinity
        row = {
            "modularity": np.asarray(
                modularity(A, inputs.labels, n_classes=len(inputs.class_names))
            ),
            "ssc": [float(cka(a, b)) for a, b in zip(A, final_A, strict=True)],
            "linear": [
                float(cka(g, h)) for g, h in zip(graphs.grams, final_graphs.grams, strict=True)
            ],
            "accuracy": accuracy,
            "diagnostics": graphs.diagnostics,
            "path": graphs.path,
        }
        if epoch in heatmap_epochs:
            row["heatmap"] = (np.asarray(cka_matrix(A)), np.asarray(cka_matrix(graphs.grams)))
        rows.append(row)
    return Dynamics(
        str(run_dir),
        chosen,
        final_graphs.layers,
        inputs,
        np.stack([r["modularity"] for r in rows]),
        np.asarray([r["ssc"] for r in rows]),
        np.asarray([r["linear"] for r in rows]),
        np.asarray([r["accuracy"] for r in rows]),
        {k: np.stack([np.asarray(r["diagnostics"][k]) for r in rows]) for k in DIAGNOSTICS},
        {e: r["heatmap"] for e, r in zip(chosen, rows, strict=True) if "heatmap" in r},
        [r["path"] for r in rows],
    )


def write_dynamics(result: Dynamics, out_dir: Path, report: Report) -> dict:
    """Write the figures and graph files of ``result`` under ``out_dir``, add its report
    sections, and return its ``metrics.json`` entries."""
    figures = out_dir / "figures"
    layers = result.layers
    found = []
    if len(result.epochs) > 1:
        found = [
            findings.bottom_up_convergence(layers, result.ssc_cka_to_final, "SSC-CKA"),
            findings.bottom_up_convergence(layers, result.linear_cka_to_final, "linear CKA"),
            findings.linear_converges_faster(result.ssc_cka_to_final, result.linear_cka_to_final),
        ]
        report.heading("The paper's findings on this run's training")
        report.table(["finding", "holds here", "evidence"], findings.as_rows(found))
    report.heading("Training dynamics (Fig 1/2)")
    fig = plots.plot_dynamics(
        result.epochs,
        layers,
        result.modularity,
        result.ssc_cka_to_final,
        result.linear_cka_to_final,
        title=f"{Path(result.run).name}: each layer over training, against its final state",
    )
    report.figure(plots.save_figure(fig, figures, "dynamics"))
    report.table(
        ["epoch", "network accuracy", *(f"Q {name}" for name in layers)],
        [
            [e, float(a), *map(float, q)]
            for e, a, q in zip(
                result.epochs, result.network_accuracy, result.modularity, strict=True
            )
        ],
        caption="Network accuracy on the analysis inputs and modularity per layer, per epoch.",
    )
    report.heading("Pairwise SSC-CKA at chosen epochs (Fig 6)")
    for index, name in ((0, "SSC-CKA"), (1, "linear CKA")):
        panels = [
            (
                f"epoch {e} (acc {result.network_accuracy[result.epochs.index(e)]:.2f})",
                m[index],
                layers,
            )
            for e, m in result.heatmaps.items()
        ]
        stem = "epoch_heatmaps" + ("" if index == 0 else "_linear")
        fig = plots.plot_cka_heatmaps(panels, title=f"{name} between layers", colorbar_label=name)
        report.figure(plots.save_figure(fig, figures, stem))
    not_converged = int(np.sum(~result.diagnostics["converged"].astype(bool)))
    report.text(
        f"Solver: {result.modularity.size} problems, {not_converged} did not converge; "
        f"iterations {int(result.diagnostics['iterations'].min())}-"
        f"{int(result.diagnostics['iterations'].max())}.",
        note=True,
    )
    graph_dir = out_dir / "graphs"
    graph_dir.mkdir(parents=True, exist_ok=True)
    graph_files = []
    for path in result.graph_files:
        if path is not None:
            shutil.copyfile(path, graph_dir / path.name)
            graph_files.append(Path("graphs") / path.name)
    final_heatmap = result.heatmaps[result.epochs[-1]]
    return {
        "run": result.run,
        "epochs": result.epochs,
        "layers": layers,
        "modularity": result.modularity[-1],
        "ssc_cka": final_heatmap[0],
        "linear_cka": final_heatmap[1],
        "solver_diagnostics": {k: v[-1] for k, v in result.diagnostics.items()},
        "modularity_per_epoch": result.modularity,
        "ssc_cka_to_final": result.ssc_cka_to_final,
        "linear_cka_to_final": result.linear_cka_to_final,
        "network_accuracy_per_epoch": result.network_accuracy,
        "solver_diagnostics_per_epoch": result.diagnostics,
        "heatmaps": {
            str(e): {"ssc_cka": m[0], "linear_cka": m[1]} for e, m in result.heatmaps.items()
        },
        "graph_files": graph_files,
        "findings": findings.as_json(found),
    }
