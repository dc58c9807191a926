"""``analyze``: one checkpoint's SSC graphs and everything the paper reads from them.

Per layer: modularity (Fig 1/2 a at one epoch), pairwise similarity by each selected measure
(SSC-CKA and linear CKA by default, Fig 3-7),
spectral embeddings (Fig 8); on the last layer: Table 1 and the confidently wrong inputs
with their class affinities and top neighbours (Fig 9).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.graphs.communities import (
    affinity_labels,
    class_affinity,
    label_agreement,
    top_neighbours,
)
from ssc_jax.graphs.spectral import spectral_embedding
from ssc_jax.pipeline.analysis import findings, metrics
from ssc_jax.pipeline.analysis.computation import Computation
from ssc_jax.pipeline.analysis.config import (
    DEFAULT_ANALYSIS,
    DEFAULT_SETTINGS,
    N_WRONG,
    AnalysisSet,
    SolverSettings,
)
from ssc_jax.pipeline.analysis.findings import Finding
from ssc_jax.pipeline.analysis.inputs import (
    AnalysisInputs,
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
    checkpoint_graphs,
    export_name,
    export_source,
    run_cache,
)
from ssc_jax.pipeline.analysis.measures import select_measures
from ssc_jax.pipeline.analysis.summary import graph_summary
from ssc_jax.pipeline.analysis.uncertainty import (
    CI_SUFFIX,
    DEFAULT_RESAMPLING,
    NO_INTERVALS,
    RISE,
    Resampling,
    SolvedState,
    Subsample,
    checkpoint_statistic,
    layer_modularity_p,
    modularity_rise,
    replicate_intervals,
    resampling_keys,
    resolved,
)


class WrongInput(NamedTuple):
    """An input the network got confidently wrong; indices are into the analysis set."""

    index: int
    true: int
    predicted: int
    confidence: float
    class_scores: np.ndarray
    neighbours: np.ndarray
    weights: np.ndarray


class CheckpointAnalysis(NamedTuple):
    """Everything ``analyze`` computes. Arrays: ``probs`` (n, K), ``modularity`` (L,),
    ``similarity`` {measure name: (L, L)}, ``embedded`` (m,) the inputs in Fig 8 and
    ``embeddings`` [(layer, (m, 2))]; ``probs`` is None, ``wrong`` empty and ``table1``
    only the SSC label accuracy for a network given without its predictions. ``exports``
    maps the path of the graph file in the output folder to its source; ``metrics`` gives
    the ``metrics.json`` entries (JSON types only). ``tokens`` is how token outputs were
    pooled and ``layer_selection`` one line on how the layers were chosen, where a door
    recorded them (None otherwise). ``intervals`` maps ``x + "_ci"`` to the (..., 2) interval
    (low, high) of each number ``x`` (modularity, each measure, Table 1) at the level of
    ``resampling`` (empty when it has no resamples), ``modularity_p`` (L,) each layer's
    modularity against permuted labels (None without permutations); docs/statistics.md.
    """

    run: str
    epoch: int | None
    inputs: AnalysisInputs
    graphs: LayerGraphs
    probs: np.ndarray | None
    modularity: np.ndarray
    similarity: dict[str, np.ndarray]
    table1: dict[str, float]
    embedded: np.ndarray
    embeddings: list[tuple[str, np.ndarray]]
    wrong: list[WrongInput]
    findings: list[Finding]
    exports: dict[str, GraphSource]
    trained: RunFacts | None = None
    tokens: str | None = None
    layer_selection: str | None = None
    intervals: Mapping[str, np.ndarray] = NO_INTERVALS
    modularity_p: np.ndarray | None = None
    resampling: Resampling | None = None

    METRICS = metrics.layout(
        intervals=metrics.spread(),
        modularity_p=lambda p, _: {} if p is None else {"modularity_p": p},
        resampling=resampling_keys,
        inputs=metrics.INPUTS,
        graphs=metrics.graphs_keys,
        probs=None,
        similarity=metrics.spread(),
        table1=metrics.spread(),
        embedded=lambda embedded, _: {"embedded_inputs": int(embedded.size)},
        embeddings=None,
        trained=None,
        wrong=lambda wrong, result: _wrong_metrics(wrong, result.inputs.class_names),
        findings=metrics.findings_rule(),
        exports=metrics.graph_file,
    )

    @property
    def metrics(self) -> dict:
        return metrics.metrics_of(self)


def _wrong_metrics(wrong: list[WrongInput], names: list[str]) -> dict:
    return {
        "neighbour_labels": "ground truth",
        "confidently_wrong": [
            {
                "index": w.index,
                "true": names[w.true],
                "predicted": names[w.predicted],
                "confidence": w.confidence,
                "class_affinity": w.class_scores,
                "neighbours": w.neighbours,
                "neighbour_weights": w.weights,
            }
            for w in wrong
        ],
    }


def embedding_layers(n_layers: int, count: int = 6) -> list[int]:
    """Up to ``count`` layer indices spread evenly from the first layer to the last."""
    return sorted({round(x) for x in np.linspace(0, n_layers - 1, min(count, n_layers))})


# Fewer correctly classified inputs than this, and Fig 8 embeds every input instead.
MIN_EMBEDDED = 10


def embedded_inputs(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Indices of the inputs for Fig 8: the correctly classified ones, as in the paper
    (Sec. 6.1), or every input when fewer than ``MIN_EMBEDDED`` are."""
    correct = np.flatnonzero(np.asarray(predicted) == np.asarray(labels))
    return correct if correct.size >= MIN_EMBEDDED else np.arange(len(labels))


def confidently_wrong(
    A: np.ndarray, labels: np.ndarray, probs: np.ndarray, count: int, k: int = 8
) -> list[WrongInput]:
    """The ``count`` misclassified inputs with the highest softmax score, read on graph A."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    scores = np.asarray(class_affinity(A, labels, n_classes=probs.shape[1]))
    out = []
    for i in wrong:
        neighbours, weights = top_neighbours(A, int(i), k=k)
        out.append(
            WrongInput(
                index=int(i),
                true=int(labels[i]),
                predicted=int(predicted[i]),
                confidence=float(confidence[i]),
                class_scores=scores[i],
                neighbours=np.asarray(neighbours),
                weights=np.asarray(weights),
            )
        )
    return out


def plan(
    run_dir: str | Path,
    *,
    epoch: int | None = None,
    analysis: AnalysisSet = DEFAULT_ANALYSIS,
    solver: SolverSettings = DEFAULT_SETTINGS,
    n_wrong: int = N_WRONG,
    measures: Sequence[str] | None = None,
    cache: bool = True,
    progress: bool = True,
    resampling: Resampling = DEFAULT_RESAMPLING,
) -> Computation[CheckpointAnalysis]:
    """`analyze_checkpoint` as its solve and its summary (see `Computation`): the
    checkpoint's graphs, then its graphs on each subsample ``resampling`` draws."""
    epoch = resolve_epoch(run_dir, epoch)
    inputs = load_inputs(analysis, held_out_data(run_info(run_dir)))
    select_measures(measures)  # an unknown name fails before the solve

    def solves() -> Iterator:
        graphs = checkpoint_graphs(
            run_dir,
            epoch,
            inputs,
            analysis=analysis,
            solver=solver,
            cache_dir=run_cache(run_dir, cache),
            progress=progress,
        )
        yield graphs
        yield from resolved(
            [SolvedState(graphs.grams, graphs.coef, solver)], resampling, progress=progress
        )

    def summary(solved: Iterator) -> CheckpointAnalysis:
        graphs = next(solved)
        result = analyze_graphs(
            graphs,
            inputs,
            source=str(run_dir),
            epoch=epoch,
            n_wrong=n_wrong,
            measures=measures,
            resampling=resampling,
            subsamples=solved,
        )
        return result._replace(trained=run_facts(run_dir))

    return Computation(solves(), summary)


def analyze_checkpoint(run_dir: str | Path, **options) -> CheckpointAnalysis:
    """Analyse the checkpoint of ``epoch`` (default: the last) of the run in ``run_dir``;
    ``options`` are those of `plan`.

    Writes nothing, except a new solution into the run's graph cache when ``cache`` is on.
    """
    return plan(run_dir, **options).result()


def analyze_graphs(
    graphs: LayerGraphs,
    inputs: AnalysisInputs,
    *,
    source: str,
    epoch: int | None,
    n_wrong: int = N_WRONG,
    measures: Sequence[str] | None = None,
    solver: SolverSettings = DEFAULT_SETTINGS,
    resampling: Resampling = DEFAULT_RESAMPLING,
    subsamples: Iterable[tuple[np.ndarray, list[Subsample]]] | None = None,
) -> CheckpointAnalysis:
    """Everything ``analyze`` reads from one network's solved ``graphs`` on ``inputs``.

    ``source`` names where the network came from (a run folder, an activation file) and
    ``epoch`` its checkpoint, None when it has none. Without the network's class
    probabilities (``graphs.probs`` None) Table 1 has only the SSC label accuracy, Fig 8
    embeds every input and there is no Fig 9. ``measures`` names the similarity measures
    (``analysis.measures``; default the paper's SSC-CKA and linear CKA).

    Intervals: every number again on each subsample of ``subsamples`` (`uncertainty.resolved`;
    default: solved here with ``solver`` as ``resampling`` draws them).
    """
    probs = graphs.probs
    A = graphs.affinity
    n_classes = len(inputs.class_names)
    chosen = select_measures(measures)
    modularity, similarity = graph_summary(
        A, graphs.grams, inputs.labels, n_classes, chosen, graphs.moments
    )
    last = A[-1].toarray()
    if probs is None:
        ssc = np.asarray(affinity_labels(last, inputs.labels, n_classes=n_classes))
        table1 = {"ssc_label_accuracy": float(np.mean(ssc == inputs.labels))}
        embedded = np.arange(len(inputs.labels))
        wrong = []
    else:
        predicted = probs.argmax(axis=1)
        agreement = label_agreement(last, inputs.labels, predicted, n_classes=n_classes)
        table1 = {name: float(getattr(agreement, name)) for name in agreement._fields}
        embedded = embedded_inputs(inputs.labels, predicted)
        wrong = confidently_wrong(last, inputs.labels, probs, n_wrong)
    embeddings = [
        (
            graphs.layers[i],
            np.asarray(
                spectral_embedding(
                    A[i][embedded][:, embedded].toarray(), n_components=2, normalized=False
                )
            ),
        )
        for i in embedding_layers(len(graphs.layers))
    ]
    if subsamples is None:
        subsamples = resolved([SolvedState(graphs.grams, graphs.coef, solver)], resampling)
    estimates = {
        "modularity": modularity,
        RISE: modularity_rise(modularity),
        **similarity,
        **table1,
    }
    statistic = checkpoint_statistic(inputs.labels, probs, n_classes, chosen, graphs.moments)
    intervals = replicate_intervals(
        estimates, subsamples, statistic, len(inputs.labels), resampling.level
    )
    rise = intervals.pop(RISE + CI_SUFFIX, None)
    found = [findings.modularity_grows(graphs.layers, modularity, rise)]
    if probs is not None:
        found.append(findings.labels_agree(table1, graphs.layers[-1]))
    graph_file = export_name(graphs, epoch or 0)
    return CheckpointAnalysis(
        run=source,
        epoch=epoch,
        inputs=inputs,
        graphs=graphs,
        probs=probs,
        modularity=modularity,
        similarity=similarity,
        table1=table1,
        embedded=embedded,
        embeddings=embeddings,
        wrong=wrong,
        findings=found,
        exports={graph_file: export_source(graphs)},
        intervals=intervals,
        modularity_p=layer_modularity_p(A, inputs.labels, n_classes, resampling)
        if resampling.permutations
        else None,
        resampling=resampling if intervals else None,
    )
