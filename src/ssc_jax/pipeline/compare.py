"""``compare``: several runs (depths, widths, data fractions) on the same analysis inputs.

Their pairwise SSC-CKA and linear-CKA heatmaps go side by side (Fig 3/4/5/7) and their
modularity curves on one axis of relative depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.pipeline.config import (
    DEFAULT_ANALYSIS,
    DEFAULT_SOLVER,
    AnalysisSet,
    SolverSettings,
)
from ssc_jax.pipeline.inputs import InputError, held_out_data, load_inputs, resolve_epoch, run_info
from ssc_jax.pipeline.layer_graphs import (
    GraphSource,
    checkpoint_graphs,
    export_name,
    export_source,
    run_cache,
)
from ssc_jax.pipeline.outputs import to_jsonable
from ssc_jax.pipeline.summary import graph_summary


class RunSummary(NamedTuple):
    """One compared run at one epoch: ``modularity`` (L,), ``ssc_cka``/``linear_cka`` (L, L),
    ``diagnostics`` name -> (L,)."""

    name: str
    run: str
    epoch: int
    layers: list[str]
    modularity: np.ndarray
    ssc_cka: np.ndarray
    linear_cka: np.ndarray
    network_accuracy: float
    diagnostics: dict[str, np.ndarray]


class Comparison(NamedTuple):
    """The compared runs; ``metrics`` holds the ``metrics.json`` entries (JSON types only) and
    ``exports`` maps the path of each run's graph file in the output folder to its source."""

    runs: list[RunSummary]
    metrics: dict
    exports: dict[str, GraphSource]


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
    cache: bool = True,
    progress: bool = True,
) -> Comparison:
    """Analyse the checkpoint named by each ``runs`` spec (see ``parse_run``) on one input set.

    Writes nothing, except new solutions into each run's graph cache when ``cache`` is on.
    """
    if names is not None and len(names) != len(runs):
        raise InputError(f"got {len(names)} names for {len(runs)} runs")
    specs = [parse_run(s) for s in runs]
    checkpoints = [(run, resolve_epoch(run, epoch)) for run, epoch in specs]
    datasets = {held_out_data(run_info(run)) for run, _ in checkpoints}
    if analysis.data is None and len(datasets) > 1:
        raise InputError(
            f"the runs were trained on different data ({sorted(datasets)}); "
            "pass --data to choose the inputs they are compared on"
        )
    inputs = load_inputs(analysis, datasets.pop())
    summaries, graph_files, exports = [], [], {}
    for i, (run, epoch) in enumerate(checkpoints):
        graphs = checkpoint_graphs(
            run,
            epoch,
            inputs,
            analysis=analysis,
            solver=solver,
            cache_dir=run_cache(run, cache),
            progress=progress,
        )
        modularity, ssc_cka, linear_cka = graph_summary(
            graphs.affinity, graphs.grams, inputs.labels, len(inputs.class_names)
        )
        name = names[i] if names else f"{run.name}@{epoch}"
        summaries.append(
            RunSummary(
                name=name,
                run=str(run),
                epoch=epoch,
                layers=graphs.layers,
                modularity=modularity,
                ssc_cka=ssc_cka,
                linear_cka=linear_cka,
                network_accuracy=float(np.mean(graphs.probs.argmax(axis=1) == inputs.labels)),
                diagnostics=graphs.diagnostics,
            )
        )
        graph_file = export_name(graphs, epoch, Path("graphs") / name.replace("/", "_"))
        graph_files.append(graph_file)
        exports[graph_file] = export_source(graphs)
    metrics = {
        "runs": [
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
                "graph_file": graph_file,
            }
            for r, graph_file in zip(summaries, graph_files, strict=True)
        ]
    }
    return Comparison(runs=summaries, metrics=to_jsonable(metrics), exports=exports)
