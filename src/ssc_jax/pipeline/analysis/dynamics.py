"""``dynamics``: how each layer's SSC graph evolves over a run's per-epoch checkpoints.

Per epoch and layer: modularity (Fig 1/2 a), SSC-CKA against the same layer at the final
epoch (Fig 1/2 b) and the same with linear CKA (Fig 1/2 c); pairwise heatmaps at a few
chosen epochs (Fig 6). All epochs are analysed on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ssc_jax.pipeline.analysis import findings, metrics
from ssc_jax.pipeline.analysis.computation import Computation
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
    RunFacts,
    held_out_data,
    load_inputs,
    run_epochs,
    run_facts,
    run_info,
)
from ssc_jax.pipeline.analysis.layer_graphs import (
    GraphSource,
    LayerGraphs,
    checkpoint_graphs,
    export_name,
    export_source,
    run_cache,
)
from ssc_jax.pipeline.analysis.measures import (
    Measure,
    layer_similarity,
    paired_similarity,
    select_measures,
)
from ssc_jax.pipeline.analysis.summary import layer_modularity
from ssc_jax.pipeline.analysis.uncertainty import (
    CI_SUFFIX,
    DEFAULT_RESAMPLING,
    NO_INTERVALS,
    Resampling,
    SolvedState,
    Subsample,
    paired_statistic,
    replicate_intervals,
    resampling_keys,
    resolved,
    summary_statistic,
)
from ssc_jax.pipeline.store.graph_store import DIAGNOSTICS


class Dynamics(NamedTuple):
    """Per-epoch results; arrays over (E epochs, L layers) unless noted.

    ``to_final`` maps each measure's name to its (E, L) similarity of each layer to the
    same layer at the final epoch; ``heatmaps`` maps a chosen epoch to {measure name:
    (L, L)}; ``exports`` maps the path of each epoch's graph file in the output folder to
    its source; ``metrics`` gives the ``metrics.json`` entries (JSON types only).
    ``intervals`` holds the intervals (..., 2) of ``modularity_per_epoch`` (E, L), of the
    final epoch's ``modularity`` (L,) and measures (L, L) and of each ``<measure>_to_final``
    (E, L), under ``name + "_ci"`` (docs/statistics.md), computed as ``resampling`` says
    (None without intervals).
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
    exports: dict[str, GraphSource]
    trained: RunFacts | None = None
    intervals: Mapping[str, np.ndarray] = NO_INTERVALS
    resampling: Resampling | None = None

    METRICS = metrics.layout(
        inputs=None,
        trained=None,
        intervals=metrics.spread(),
        resampling=resampling_keys,
        modularity=lambda m, _: {"modularity": m[-1], "modularity_per_epoch": m},
        heatmaps=lambda h, r: {
            **h[r.epochs[-1]],
            "heatmaps": {str(epoch): maps for epoch, maps in h.items()},
        },
        to_final=metrics.spread("{}_to_final"),
        network_accuracy="network_accuracy_per_epoch",
        diagnostics=lambda d, r: {
            "solver_diagnostics": {name: values[-1] for name, values in d.items()},
            "solver_diagnostics_per_epoch": d,
            "unconverged_layers": metrics.unconverged_along(map(str, r.epochs), r.layers, d),
        },
        findings=metrics.findings_rule(),
        exports=metrics.graph_files,
    )

    @property
    def metrics(self) -> dict:
        return metrics.metrics_of(self)


def spread_epochs(epochs: list[int], count: int = 4) -> list[int]:
    """Up to ``count`` of ``epochs`` spread evenly from the first to the last."""
    picks = np.linspace(0, len(epochs) - 1, min(count, len(epochs))).round().astype(int)
    return [epochs[i] for i in sorted(set(picks.tolist()))]


def plan(
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
    resampling: Resampling = DEFAULT_RESAMPLING,
) -> Computation[Dynamics]:
    """`training_dynamics` as its solves and its summary (see `Computation`): the last
    epoch's graphs first, then each chosen epoch's in order, each followed by its graphs on
    the subsamples ``resampling`` draws (the same inputs for every epoch)."""
    chosen_measures = select_measures(measures)
    available = run_epochs(run_dir)
    final = available[-1]
    missing = sorted(set(epochs or []) - set(available))
    if missing:
        raise InputError(f"no checkpoints for epochs {missing} in {run_dir}")
    chosen = sorted(set(epochs or available) | {final})
    heatmap_epochs = sorted((set(heatmap_epochs or spread_epochs(chosen)) & set(chosen)) | {final})
    inputs = load_inputs(analysis, held_out_data(run_info(run_dir)))

    def graphs_of(epoch: int, init=None) -> LayerGraphs:
        return checkpoint_graphs(
            run_dir,
            epoch,
            inputs,
            analysis=analysis,
            solver=solver,
            cache_dir=run_cache(run_dir, cache),
            progress=False,
            init=init if warm_start else None,
        )

    def subsamples_of(graphs: LayerGraphs) -> Iterator:
        return resolved([SolvedState(graphs.grams, graphs.coef, solver)], resampling)

    def solves() -> Iterator:
        final_graphs = graphs_of(final)
        yield final_graphs
        final_subsamples = list(subsamples_of(final_graphs))
        yield from final_subsamples
        previous = final_graphs.coef
        for epoch in tqdm(chosen, desc="dynamics", unit="epoch", disable=not progress):
            graphs = final_graphs if epoch == final else graphs_of(epoch, previous)
            previous = graphs.coef
            yield graphs
            yield from final_subsamples if epoch == final else subsamples_of(graphs)

    def summary(solved: Iterator) -> Dynamics:
        final_graphs = next(solved)
        final_inputs = final_graphs.measure_inputs
        final_subsamples = list(islice(solved, resampling.resamples))
        rows = []
        for epoch in chosen:
            graphs = next(solved)
            subsamples = list(islice(solved, resampling.resamples))
            A = graphs.affinity
            row = {
                "modularity": layer_modularity(A, inputs.labels, len(inputs.class_names)),
                "to_final": paired_similarity(
                    chosen_measures,
                    {"graphs": A, "grams": graphs.grams, "moments": graphs.moments},
                    final_inputs,
                ),
                "accuracy": float(np.mean(graphs.probs.argmax(axis=1) == inputs.labels)),
                "diagnostics": graphs.diagnostics,
                "export": (export_name(graphs, epoch), export_source(graphs)),
            }
            if epoch in heatmap_epochs:
                row["heatmap"] = layer_similarity(chosen_measures, A, graphs.grams, graphs.moments)
            row["intervals"] = _epoch_intervals(
                row,
                graphs,
                final_graphs,
                subsamples,
                final_subsamples,
                inputs,
                chosen_measures,
                resampling.level,
            )
            rows.append(row)
        result = _dynamics(str(run_dir), chosen, final_graphs.layers, inputs, rows, chosen_measures)
        intervals = _stacked_intervals(rows)
        return result._replace(intervals=intervals, resampling=resampling if intervals else None)

    return Computation(solves(), summary)


def training_dynamics(run_dir: str | Path, **options) -> Dynamics:
    """Analyse ``epochs`` (default: all) of the run in ``run_dir`` against its last epoch,
    with the similarity ``measures`` (default the paper's two); ``options`` are those of
    `plan`.

    With ``warm_start`` each epoch's solve starts from the graphs of the epoch analysed
    before it (the first from the last epoch's, which is solved first), which the solver
    reaches in fewer iterations than from nothing. Writes nothing, except new solutions
    into the run's graph cache when ``cache`` is on.
    """
    return plan(run_dir, **options).result()


def _dynamics(
    run: str,
    chosen: list[int],
    layers: list[str],
    inputs: AnalysisInputs,
    rows: list[dict],
    chosen_measures: Sequence[Measure],
) -> Dynamics:
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
    return Dynamics(
        run=run,
        epochs=chosen,
        layers=layers,
        inputs=inputs,
        modularity=per_epoch,
        to_final=to_final,
        network_accuracy=accuracy,
        diagnostics=diagnostics,
        heatmaps=heatmaps,
        findings=found,
        exports=exports,
        trained=run_facts(run),
    )


def _epoch_intervals(
    row: dict,
    graphs: LayerGraphs,
    final_graphs: LayerGraphs,
    subsamples: list,
    final_subsamples: list,
    inputs: AnalysisInputs,
    measures: Sequence[Measure],
    level: float,
) -> dict[str, np.ndarray]:
    """The intervals of one epoch's modularity, its layers' similarity to the final epoch
    and, for the final epoch, its measures between layers, from the two epochs' graphs on
    the same subsamples."""
    final = graphs is final_graphs
    estimates = {
        "modularity": row["modularity"],
        **{name + "_to_final": value for name, value in row["to_final"].items()},
        **(row["heatmap"] if final else {}),
    }
    own = summary_statistic(inputs.labels, len(inputs.class_names), measures, graphs.moments)
    paired = paired_statistic(measures, graphs.moments, final_graphs.moments, "_to_final")

    def statistic(idx: np.ndarray, pair: list[Subsample]) -> dict[str, np.ndarray]:
        return {**own(idx, pair[:1]), **paired(idx, pair)}

    joint = [
        (idx, [sub, final_sub])
        for (idx, (sub,)), (_, (final_sub,)) in zip(subsamples, final_subsamples, strict=True)
    ]
    return replicate_intervals(estimates, joint, statistic, len(inputs.labels), level)


def _stacked_intervals(rows: list[dict]) -> dict[str, np.ndarray]:
    """The epochs' intervals as ``metrics.json`` holds their numbers: the final epoch's
    (modularity (L, 2), measures (L, L, 2)), modularity per epoch (E, L, 2) and each
    measure to the final epoch (E, L, 2); empty without intervals."""
    final = rows[-1]["intervals"]
    if not final:
        return {}
    along = [name for name in final if name.endswith("_to_final" + CI_SUFFIX)]
    stacked = {name: np.stack([r["intervals"][name] for r in rows]) for name in along}
    per_epoch = np.stack([r["intervals"]["modularity" + CI_SUFFIX] for r in rows])
    return {**final, **stacked, "modularity_per_epoch" + CI_SUFFIX: per_epoch}
