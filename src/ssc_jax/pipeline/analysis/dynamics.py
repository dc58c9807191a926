"""``dynamics``: how each layer's SSC graph evolves over a run's per-epoch checkpoints.

Per epoch and layer: modularity (Fig 1/2 a), SSC-CKA against the same layer at the final
epoch (Fig 1/2 b) and the same with linear CKA (Fig 1/2 c); pairwise heatmaps at a few
chosen epochs (Fig 6). All epochs are analysed on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ssc_jax.pipeline.analysis import findings
from ssc_jax.pipeline.analysis.config import (
    DEFAULT_ANALYSIS,
    DEFAULT_SETTINGS,
    AnalysisSet,
    SolverSettings,
)
from ssc_jax.pipeline.analysis.findings import Finding
from ssc_jax.pipeline.analysis.inputs import (
    AnalysisInputs,
    InputError,
    held_out_data,
    load_inputs,
    run_epochs,
    run_info,
)
from ssc_jax.pipeline.analysis.layer_graphs import (
    GraphSource,
    checkpoint_graphs,
    export_name,
    export_source,
    run_cache,
    unconverged_layers,
)
from ssc_jax.pipeline.analysis.measures import layer_similarity, paired_similarity, select_measures
from ssc_jax.pipeline.analysis.summary import layer_modularity
from ssc_jax.pipeline.store.graph_store import DIAGNOSTICS
from ssc_jax.pipeline.store.outputs import to_jsonable
from ssc_jax.solver.distributed import is_writer


class Dynamics(NamedTuple):
    """Per-epoch results; arrays over (E epochs, L layers) unless noted.

    ``to_final`` maps each measure's name to its (E, L) similarity of each layer to the
    same layer at the final epoch; ``heatmaps`` maps a chosen epoch to {measure name:
    (L, L)};
    ``metrics`` holds the ``metrics.json`` entries (JSON types only) and ``exports`` maps the
    path of each epoch's graph file in the output folder to its source.
    """

    run: str
    epochs: list[int]
    layers: list[str]
    inputs: AnalysisInputs
    modularity: np.ndarray
    to_final: dict[str, np.ndarray]
    network_accuracy: np.ndarray
    diagnostics: dict[str, np.ndarray]
    heatmaps: dict[int, dict[str, np.ndarray]]
    findings: list[Finding]
    metrics: dict
    exports: dict[str, GraphSource]


def spread_epochs(epochs: list[int], count: int = 4) -> list[int]:
    """Up to ``count`` of ``epochs`` spread evenly from the first to the last."""
    picks = np.linspace(0, len(epochs) - 1, min(count, len(epochs))).round().astype(int)
    return [epochs[i] for i in sorted(set(picks.tolist()))]


def training_dynamics(
    run_dir: str | Path,
    *,
    analysis: AnalysisSet = DEFAULT_ANALYSIS,
    solver: SolverSettings = DEFAULT_SETTINGS,
    measures: Sequence[str] | None = None,
    epochs: list[int] | None = None,
    heatmap_epochs: list[int] | None = None,
    cache: bool = True,
    progress: bool = True,
    warm_start: bool = True,
) -> Dynamics | None:
    """Analyse ``epochs`` (default: all) of the run in ``run_dir`` against its last epoch,
    with the similarity ``measures`` (default the paper's two).

    With ``warm_start`` each epoch's solve starts from the graphs of the epoch analysed
    before it (the first from the last epoch's, which is solved first), which the solver
    reaches in fewer iterations than from nothing. Writes nothing, except new solutions
    into the run's graph cache when ``cache`` is on. In a ``jax.distributed`` job, process 0
    analyses; the others take part in the solves and return None.
    """
    chosen_measures = select_measures(measures)
    available = run_epochs(run_dir)
    final = available[-1]
    missing = sorted(set(epochs or []) - set(available))
    if missing:
        raise InputError(f"no checkpoints for epochs {missing} in {run_dir}")
    chosen = sorted(set(epochs or available) | {final})
    heatmap_epochs = sorted((set(heatmap_epochs or spread_epochs(chosen)) & set(chosen)) | {final})

    def graphs_of(epoch, init=None):
        graphs = checkpoint_graphs(
            run_dir,
            epoch,
            inputs,
            analysis=analysis,
            solver=solver,
            cache_dir=run_cache(run_dir, cache),
            progress=False,
            init=init if warm_start else None,
        )
        return graphs, float(np.mean(graphs.probs.argmax(axis=1) == inputs.labels))

    inputs = load_inputs(analysis, held_out_data(run_info(run_dir)))
    final_graphs, final_accuracy = graphs_of(final)
    final_inputs = (
        {"graphs": final_graphs.affinity, "grams": final_graphs.grams} if is_writer() else None
    )
    rows, previous = [], final_graphs.coef
    for epoch in tqdm(chosen, desc="dynamics", unit="epoch", disable=not progress):
        if epoch == final:
            graphs, accuracy = final_graphs, final_accuracy
        else:
            graphs, accuracy = graphs_of(epoch, previous)
        previous = graphs.coef
        if not is_writer():
            continue
        A = graphs.affinity
        row = {
            "modularity": layer_modularity(A, inputs.labels, len(inputs.class_names)),
            "to_final": paired_similarity(
                chosen_measures, {"graphs": A, "grams": graphs.grams}, final_inputs
            ),
            "accuracy": accuracy,
            "diagnostics": graphs.diagnostics,
            "export": (export_name(graphs, epoch), export_source(graphs)),
        }
        if epoch in heatmap_epochs:
            row["heatmap"] = layer_similarity(chosen_measures, A, graphs.grams)
        rows.append(row)
    if not is_writer():
        return None
    layers = final_graphs.layers
    to_final = {m.name: np.stack([r["to_final"][m.name] for r in rows]) for m in chosen_measures}
    per_epoch = np.stack([r["modularity"] for r in rows])
    accuracy = np.asarray([r["accuracy"] for r in rows])
    diagnostics = {
        k: np.stack([np.asarray(r["diagnostics"][k]) for r in rows]) for k in DIAGNOSTICS
    }
    heatmaps = {e: r["heatmap"] for e, r in zip(chosen, rows, strict=True) if "heatmap" in r}
    exports = dict(r["export"] for r in rows)
    found = []
    if len(chosen) > 1:
        found = [
            findings.bottom_up_convergence(layers, to_final[m.name], m.title)
            for m in chosen_measures
        ]
        if {"ssc_cka", "linear_cka"} <= set(to_final):
            found.append(
                findings.linear_converges_faster(to_final["ssc_cka"], to_final["linear_cka"])
            )
    metrics = {
        "run": str(run_dir),
        "epochs": chosen,
        "layers": layers,
        "modularity": per_epoch[-1],
        **heatmaps[final],
        "solver_diagnostics": {k: v[-1] for k, v in diagnostics.items()},
        "modularity_per_epoch": per_epoch,
        **{f"{name}_to_final": values for name, values in to_final.items()},
        "network_accuracy_per_epoch": accuracy,
        "solver_diagnostics_per_epoch": diagnostics,
        "unconverged_layers": {
            str(epoch): missed
            for epoch, row in zip(chosen, rows, strict=True)
            if (missed := unconverged_layers(layers, row["diagnostics"]))
        },
        "heatmaps": {str(e): m for e, m in heatmaps.items()},
        "graph_files": list(exports),
        "findings": findings.as_json(found),
    }
    return Dynamics(
        run=str(run_dir),
        epochs=chosen,
        layers=layers,
        inputs=inputs,
        modularity=per_epoch,
        to_final=to_final,
        network_accuracy=accuracy,
        diagnostics=diagnostics,
        heatmaps=heatmaps,
        findings=found,
        metrics=to_jsonable(metrics),
        exports=exports,
    )
