"""``tau-path``: how one checkpoint's SSC graphs, and what is read from them, depend on tau.

tau weighs the data fit against sparsity: the paper fixes it, and a reader may ask how much
its conclusions owe to that choice. Per tau and layer: modularity, the mean nonzeros per row
of C, and SSC-CKA of the layer's graph to its graph at the reference tau (the one nearest
the solver's tau); per tau, Table 1 on the last layer. The Grams are computed once; the
solves go from the smallest tau up, each warm-started from the previous tau's graphs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ssc_jax.graphs.communities import label_agreement
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
    resolve_epoch,
    run_info,
)
from ssc_jax.pipeline.analysis.layer_graphs import (
    GraphSource,
    LayerGraphs,
    checkpoint_grams,
    export_name,
    export_source,
    run_cache,
    solved_graphs,
    unconverged_layers,
)
from ssc_jax.pipeline.analysis.measures import Measure, paired_similarity, select_measures
from ssc_jax.pipeline.analysis.summary import layer_modularity
from ssc_jax.pipeline.store.graph_store import DIAGNOSTICS
from ssc_jax.pipeline.store.outputs import to_jsonable
from ssc_jax.solver.distributed import is_writer
from ssc_jax.solver.path import check_taus


class TauPath(NamedTuple):
    """Everything ``tau-path`` computes, for T taus (ascending) and L layers.

    ``modularity`` and ``nonzeros`` (mean nonzero coefficients per row) are (T, L);
    ``similarity`` maps each selected measure of the graphs to its (T, L) similarity of each
    layer to the same layer at ``reference`` (measures of the Grams are left out: the Grams
    do not depend on tau); ``table1`` maps each Table 1
    number to its (T,) values on the last layer; ``findings`` holds the paper's findings on
    one checkpoint (Sec. 4.1, Table 1) as checked at each tau; ``diagnostics`` maps each
    solver diagnostic to (T, L). ``metrics`` holds the ``metrics.json`` entries; ``exports``
    maps each tau's graph file in the output folder to its source.
    """

    run: str
    epoch: int
    inputs: AnalysisInputs
    layers: list[str]
    taus: np.ndarray
    reference: float
    modularity: np.ndarray
    nonzeros: np.ndarray
    similarity: dict[str, np.ndarray]
    table1: dict[str, np.ndarray]
    findings: list[list[Finding]]
    diagnostics: dict[str, np.ndarray]
    metrics: dict
    exports: dict[str, GraphSource]


def reference_tau(taus: Sequence[float], tau: float) -> float:
    """The one of ``taus`` nearest ``tau`` on a log scale (the smaller one on a tie)."""
    return min(sorted(taus), key=lambda t: abs(np.log(t / tau)))


def _mean_nonzeros(graphs: LayerGraphs) -> list[float]:
    return [float(c.nnz / c.shape[0]) for c in graphs.coef]


def checkpoint_tau_path(
    run_dir: str | Path,
    taus: Sequence[float],
    *,
    epoch: int | None = None,
    analysis: AnalysisSet = DEFAULT_ANALYSIS,
    solver: SolverSettings = DEFAULT_SETTINGS,
    measures: Sequence[str] | None = None,
    cache: bool = True,
    progress: bool = True,
    warm_start: bool = True,
) -> TauPath | None:
    """Analyse the checkpoint of ``epoch`` (default: the last) of ``run_dir`` at each of
    ``taus``, all other solver settings from ``solver``; ``measures`` (default the paper's
    two) names the similarity measures, of which those of the graphs are followed over tau.

    Writes nothing, except new solutions into the run's graph cache when ``cache`` is on.
    In a ``jax.distributed`` job, process 0 analyses; the others take part in the solves and
    return None.

    Raises:
      InputError: for a bad tau (not > 0, or repeated), or what ``analyze`` rejects.
    """
    on_graphs = [m for m in select_measures(measures) if m.on == "graphs"]
    try:
        values = sorted(check_taus(taus))
    except ValueError as err:
        raise InputError(f"--taus: {err}") from None
    epoch = resolve_epoch(run_dir, epoch)
    inputs = load_inputs(analysis, held_out_data(run_info(run_dir)))
    computed = checkpoint_grams(
        run_dir,
        epoch,
        inputs,
        analysis=analysis,
        memory_budget_bytes=solver.memory_budget_bytes,
        progress=progress,
    )
    reference = reference_tau(values, solver.solver.tau)
    solved, previous = [], None
    for tau in tqdm(values, desc="tau path", unit="tau", disable=not progress):
        settings = dataclasses.replace(
            solver,
            admm=dataclasses.replace(solver.admm, tau=tau),
            working_set=dataclasses.replace(solver.working_set, tau=tau),
        )
        graphs = solved_graphs(
            computed,
            inputs,
            epoch=epoch,
            solver=settings,
            cache_dir=run_cache(run_dir, cache),
            progress=False,
            init=previous.coef if warm_start and previous is not None else None,
        )
        solved.append(graphs)
        previous = graphs
    if not is_writer():
        return None
    return _summarise(str(run_dir), epoch, inputs, values, reference, solved, on_graphs)


def _summarise(
    run: str,
    epoch: int,
    inputs: AnalysisInputs,
    taus: list[float],
    reference: float,
    solved: list[LayerGraphs],
    measures: Sequence[Measure],
) -> TauPath:
    labels, n_classes = inputs.labels, len(inputs.class_names)
    layers = solved[0].layers
    reference_graphs = {"graphs": solved[taus.index(reference)].affinity}
    modularity, nonzeros, similarity, table1, found = [], [], [], [], []
    for graphs in solved:
        A = graphs.affinity
        modularity.append(layer_modularity(A, labels, n_classes))
        nonzeros.append(_mean_nonzeros(graphs))
        similarity.append(paired_similarity(measures, {"graphs": A}, reference_graphs))
        agreement = label_agreement(
            A[-1].toarray(), labels, graphs.probs.argmax(axis=1), n_classes=n_classes
        )
        table1.append({name: float(getattr(agreement, name)) for name in agreement._fields})
        found.append(
            [
                findings.modularity_grows(layers, modularity[-1]),
                findings.labels_agree(table1[-1], layers[-1]),
            ]
        )
    diagnostics = {
        name: np.stack([np.asarray(g.diagnostics[name]) for g in solved]) for name in DIAGNOSTICS
    }
    table = {name: np.asarray([row[name] for row in table1]) for name in table1[0]}
    exports = {export_name(g, epoch): export_source(g) for g in solved}
    result = dict(
        modularity=np.stack(modularity),
        nonzeros=np.asarray(nonzeros),
    )
    to_reference = {m.name: np.stack([s[m.name] for s in similarity]) for m in measures}
    metrics = {
        "run": run,
        "epoch": epoch,
        "n": len(labels),
        "data": inputs.key["data"],
        "split": inputs.key["split"],
        "layers": layers,
        "taus": taus,
        "reference_tau": reference,
        "modularity_per_tau": result["modularity"],
        "nonzeros_per_row_per_tau": result["nonzeros"],
        **{f"{name}_to_reference_tau": values for name, values in to_reference.items()},
        **{f"{name}_per_tau": values for name, values in table.items()},
        "findings_per_tau": [findings.as_json(f) for f in found],
        "solver_diagnostics_per_tau": diagnostics,
        "unconverged_layers": {
            f"{tau:g}": missed
            for tau, g in zip(taus, solved, strict=True)
            if (missed := unconverged_layers(layers, g.diagnostics))
        },
        "graph_files": list(exports),
    }
    return TauPath(
        run=run,
        epoch=epoch,
        inputs=inputs,
        layers=layers,
        taus=np.asarray(taus),
        reference=reference,
        table1=table,
        findings=found,
        diagnostics=diagnostics,
        metrics=to_jsonable(metrics),
        exports=exports,
        similarity=to_reference,
        **result,
    )
