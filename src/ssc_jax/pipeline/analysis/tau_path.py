"""``tau-path``: how one checkpoint's SSC graphs, and what is read from them, depend on tau.

tau weighs the data fit against sparsity: the paper fixes it, and a reader may ask how much
its conclusions owe to that choice. Per tau and layer: modularity, the mean nonzeros per row
of C, and SSC-CKA of the layer's graph to its graph at the reference tau (the one nearest
the solver's tau); per tau, Table 1 on the last layer. The Grams are computed once; the
solves go from the smallest tau up, each warm-started from the previous tau's graphs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ssc_jax.graphs.communities import label_agreement
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
    resolve_epoch,
    run_facts,
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
)
from ssc_jax.pipeline.analysis.measures import Measure, paired_similarity, select_measures
from ssc_jax.pipeline.analysis.summary import layer_modularity
from ssc_jax.pipeline.analysis.uncertainty import (
    CI_SUFFIX,
    DEFAULT_RESAMPLING,
    NO_INTERVALS,
    RISE,
    Resampling,
    SolvedState,
    Subsample,
    checkpoint_statistic,
    modularity_rise,
    paired_statistic,
    replicate_intervals,
    resampling_keys,
    resolved,
)
from ssc_jax.pipeline.store.graph_store import DIAGNOSTICS
from ssc_jax.solver.path import check_taus


class TauPath(NamedTuple):
    """Everything ``tau-path`` computes, for T taus (ascending) and L layers.

    ``modularity`` and ``nonzeros`` (mean nonzero coefficients per row) are (T, L);
    ``similarity`` maps each selected measure of the graphs to its (T, L) similarity of each
    layer to the same layer at ``reference`` (measures of the Grams are left out: the Grams
    do not depend on tau); ``table1`` maps each Table 1
    number to its (T,) values on the last layer; ``findings`` holds the paper's findings on
    one checkpoint (Sec. 4.1, Table 1) as checked at each tau; ``diagnostics`` maps each
    solver diagnostic to (T, L). ``exports`` maps each tau's graph file in the output folder
    to its source; ``metrics`` gives the ``metrics.json`` entries. ``intervals`` holds the
    intervals (..., 2) of ``modularity_per_tau``, each ``<measure>_to_reference_tau`` and
    each ``<Table 1 number>_per_tau`` under ``name + "_ci"`` (docs/statistics.md), computed
    as ``resampling`` says (None without intervals).
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
    exports: dict[str, GraphSource]
    trained: RunFacts | None = None
    intervals: Mapping[str, np.ndarray] = NO_INTERVALS
    resampling: Resampling | None = None

    METRICS = metrics.layout(
        intervals=metrics.spread(),
        resampling=resampling_keys,
        inputs=metrics.inputs_keys("n", "data", "split"),
        reference="reference_tau",
        modularity="modularity_per_tau",
        nonzeros="nonzeros_per_row_per_tau",
        similarity=metrics.spread("{}_to_reference_tau"),
        table1=metrics.spread("{}_per_tau"),
        findings=metrics.findings_rule("findings_per_tau"),
        diagnostics=lambda d, r: {
            "solver_diagnostics_per_tau": d,
            "unconverged_layers": metrics.unconverged_along(
                (f"{tau:g}" for tau in r.taus), r.layers, d
            ),
        },
        exports=metrics.graph_files,
        trained=None,
    )

    @property
    def metrics(self) -> dict:
        return metrics.metrics_of(self)


def reference_tau(taus: Sequence[float], tau: float) -> float:
    """The one of ``taus`` nearest ``tau`` on a log scale (the smaller one on a tie)."""
    return min(sorted(taus), key=lambda t: abs(np.log(t / tau)))


def _mean_nonzeros(graphs: LayerGraphs) -> list[float]:
    return [float(c.nnz / c.shape[0]) for c in graphs.coef]


def plan(
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
    resampling: Resampling = DEFAULT_RESAMPLING,
) -> Computation[TauPath]:
    """`checkpoint_tau_path` as its solves, one per tau from the smallest up, each followed
    by its graphs on the subsamples ``resampling`` draws, and its summary (see
    `Computation`).

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
    reference = reference_tau(values, solver.solver.tau)

    def solves() -> Iterator[LayerGraphs]:
        computed = checkpoint_grams(
            run_dir,
            epoch,
            inputs,
            analysis=analysis,
            memory_budget_bytes=solver.memory_budget_bytes,
            progress=progress,
        )
        previous = None
        for tau in tqdm(values, desc="tau path", unit="tau", disable=not progress):
            settings = dataclasses.replace(
                solver,
                admm=dataclasses.replace(solver.admm, tau=tau),
                working_set=dataclasses.replace(solver.working_set, tau=tau),
            )
            previous = solved_graphs(
                computed,
                inputs,
                epoch=epoch,
                solver=settings,
                cache_dir=run_cache(run_dir, cache),
                progress=False,
                init=previous.coef if warm_start and previous is not None else None,
            )
            yield previous
            state = SolvedState(computed.grams, previous.coef, settings)
            for idx, (sub,) in resolved([state], resampling):
                yield idx, [Subsample(sub.affinity, None)]  # the graph measures' inputs

    def summary(solved: Iterator) -> TauPath:
        graphs, subsamples = [], []
        for _ in values:
            graphs.append(next(solved))
            subsamples.append(list(islice(solved, resampling.resamples)))
        result = _summarise(str(run_dir), epoch, inputs, values, reference, graphs, on_graphs)
        return _with_intervals(result, graphs, subsamples, on_graphs, resampling)

    return Computation(solves(), summary)


def checkpoint_tau_path(run_dir: str | Path, taus: Sequence[float], **options) -> TauPath:
    """Analyse the checkpoint of ``epoch`` (default: the last) of ``run_dir`` at each of
    ``taus``, all other solver settings from ``solver``; ``measures`` (default the paper's
    two) names the similarity measures, of which those of the graphs are followed over tau.
    ``options`` are those of `plan`.

    Writes nothing, except new solutions into the run's graph cache when ``cache`` is on.
    """
    return plan(run_dir, taus, **options).result()


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
    return TauPath(
        run=run,
        epoch=epoch,
        inputs=inputs,
        layers=layers,
        taus=np.asarray(taus),
        reference=reference,
        modularity=np.stack(modularity),
        nonzeros=np.asarray(nonzeros),
        similarity={m.name: np.stack([s[m.name] for s in similarity]) for m in measures},
        table1=table,
        findings=found,
        diagnostics=diagnostics,
        exports=exports,
        trained=run_facts(run),
    )


def _with_intervals(
    result: TauPath,
    solved: list[LayerGraphs],
    subsamples: list[list],
    measures: Sequence[Measure],
    resampling: Resampling,
) -> TauPath:
    """``result`` with the intervals of each tau's numbers, from its graphs on
    ``subsamples`` (one list per tau, the same inputs at every tau); each tau's finding on
    modularity decided on the interval of its rise."""
    if not subsamples[0]:
        return result
    labels, n_classes = result.inputs.labels, len(result.inputs.class_names)
    at_reference = subsamples[list(result.taus).index(result.reference)]
    paired = paired_statistic(measures, suffix="_to_reference_tau")
    per_tau, found = [], []
    for t, graphs in enumerate(solved):
        own = checkpoint_statistic(labels, graphs.probs, n_classes, ())

        def statistic(idx, pair, own=own) -> dict:
            return {**own(idx, pair[:1]), **paired(idx, pair)}

        q = result.modularity[t]
        estimates = {
            "modularity": q,
            RISE: modularity_rise(q),
            **{name: values[t] for name, values in result.table1.items()},
            **{f"{name}_to_reference_tau": v[t] for name, v in result.similarity.items()},
        }
        joint = [
            (idx, [sub, ref])
            for (idx, (sub,)), (_, (ref,)) in zip(subsamples[t], at_reference, strict=True)
        ]
        ci = replicate_intervals(estimates, joint, statistic, len(labels), resampling.level)
        rise = ci.pop(RISE + CI_SUFFIX)
        found.append([findings.modularity_grows(result.layers, q, rise), *result.findings[t][1:]])
        per_tau.append(ci)
    renamed = {"modularity": "modularity_per_tau", **{n: f"{n}_per_tau" for n in result.table1}}
    intervals = {
        renamed.get(name[: -len(CI_SUFFIX)], name[: -len(CI_SUFFIX)]) + CI_SUFFIX: np.stack(
            [ci[name] for ci in per_tau]
        )
        for name in per_tau[0]
    }
    return result._replace(intervals=intervals, findings=found, resampling=resampling)
