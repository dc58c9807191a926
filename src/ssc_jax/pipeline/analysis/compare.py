"""``compare``: several networks on the same analysis inputs.

The networks are training runs (depths, widths, data fractions, epochs) or any network's
saved activations on the same inputs. Their pairwise SSC-CKA and linear-CKA heatmaps go side
by side (Fig 3/4/5/7) and their modularity curves on one axis of relative depth. The first
network is also set against each other one layer by layer (the paper's Sec. 2.3 and 7:
"compare two architecturally different neural networks"): cross-network SSC-CKA and linear
CKA, layers of the first x layers of the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssc_jax.pipeline.analysis import metrics
from ssc_jax.pipeline.analysis.activations import activation_network
from ssc_jax.pipeline.analysis.computation import Computation
from ssc_jax.pipeline.analysis.config import (
    DEFAULT_ANALYSIS,
    DEFAULT_SETTINGS,
    AnalysisSet,
    SolverSettings,
)
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
    checkpoint_graphs,
    export_name,
    export_source,
    run_cache,
)
from ssc_jax.pipeline.analysis.measures import (
    Measure,
    cross_similarity_matrices,
    select_measures,
)
from ssc_jax.pipeline.analysis.summary import graph_summary
from ssc_jax.pipeline.analysis.uncertainty import (
    DEFAULT_RESAMPLING,
    NO_INTERVALS,
    Resampling,
    SolvedState,
    cross_statistic,
    layer_modularity_p,
    replicate_intervals,
    resolved,
    summary_statistic,
)


class RunSummary(NamedTuple):
    """One compared run at one epoch: ``modularity`` (L,), ``similarity`` {measure name:
    (L, L)}, ``diagnostics`` name -> (L,); ``graph_file`` is the path of its graph file in
    the output folder; ``intervals`` {``x + "_ci"``: (..., 2)} the interval of each number,
    ``modularity_p`` (L,) modularity against permuted labels (docs/statistics.md)."""

    name: str
    run: str
    epoch: int | None
    layers: list[str]
    modularity: np.ndarray
    similarity: dict[str, np.ndarray]
    network_accuracy: float | None
    diagnostics: dict[str, np.ndarray]
    graph_file: str
    trained: RunFacts | None = None
    intervals: Mapping[str, np.ndarray] = NO_INTERVALS
    modularity_p: np.ndarray | None = None

    METRICS = metrics.layout(
        similarity=metrics.spread(),
        diagnostics="solver_diagnostics",
        trained=None,
        intervals=metrics.spread(),
        modularity_p=lambda p, _: {} if p is None else {"modularity_p": p},
    )


class CrossSimilarity(NamedTuple):
    """Network ``a`` against network ``b`` on the same inputs, layer by layer:
    ``similarity`` maps each measure's name to its (L_a, L_b) values, rows the layers of a;
    ``intervals`` each one's (L_a, L_b, 2) interval under ``name + "_ci"``."""

    a: str
    b: str
    layers_a: list[str]
    layers_b: list[str]
    similarity: dict[str, np.ndarray]
    intervals: Mapping[str, np.ndarray] = NO_INTERVALS

    METRICS = metrics.layout(similarity=metrics.spread(), intervals=metrics.spread())


class Comparison(NamedTuple):
    """The compared networks, and the first against each other one (``cross``), on the same
    ``n`` inputs; ``exports`` maps the path of each network's graph file in the output folder
    to its source; ``metrics`` gives the ``metrics.json`` entries (JSON types only)."""

    runs: list[RunSummary]
    cross: list[CrossSimilarity]
    exports: dict[str, GraphSource]
    n: int

    METRICS = metrics.layout(exports=None)

    @property
    def metrics(self) -> dict:
        return metrics.metrics_of(self)


def cross_similarity(
    a: LayerGraphs, b: LayerGraphs, *, names: tuple[str, str], measures: Sequence[Measure]
) -> CrossSimilarity:
    """Each of ``measures`` between every layer of network ``a`` and every layer of network
    ``b``, solved on the same n inputs."""
    n_a, n_b = a.grams.shape[-1], b.grams.shape[-1]
    if n_a != n_b:
        raise InputError(
            f"{names[0]} has {n_a} inputs and {names[1]} {n_b}; compare networks on the same inputs"
        )
    return CrossSimilarity(
        a=names[0],
        b=names[1],
        layers_a=list(a.layers),
        layers_b=list(b.layers),
        similarity=cross_similarity_matrices(measures, a.measure_inputs, b.measure_inputs),
    )


def is_activation_file(path: Path) -> bool:
    """Whether ``path`` holds saved activations (``.npz``, ``.safetensors``, or a folder with
    ``manifest.json`` or ``.safetensors`` files) rather than a training run."""
    if path.is_file():
        return True
    return path.is_dir() and ((path / "manifest.json").exists() or any(path.glob("*.safetensors")))


def parse_run(spec: str) -> tuple[Path, int | None]:
    """``"RUN_DIR"`` or ``"RUN_DIR@EPOCH"`` -> (run folder, epoch or None for the last)."""
    run, sep, epoch = spec.rpartition("@")
    if not sep or not epoch.isdigit():
        return Path(spec), None
    return Path(run), int(epoch)


class ComparedNetwork(NamedTuple):
    """One network of a comparison, solved: its default ``name``, where it came from, its
    checkpoint's ``epoch`` (None for saved activations) and the inputs it was solved on."""

    name: str
    run: Path
    epoch: int | None
    graphs: LayerGraphs
    inputs: AnalysisInputs


def plan(
    runs: list[str],
    *,
    names: list[str] | None = None,
    analysis: AnalysisSet = DEFAULT_ANALYSIS,
    solver: SolverSettings = DEFAULT_SETTINGS,
    measures: Sequence[str] | None = None,
    cache: bool = True,
    progress: bool = True,
    resampling: Resampling = DEFAULT_RESAMPLING,
) -> Computation[Comparison]:
    """`compare_runs` as its solves, one network after another, each followed by its graphs
    on the subsamples ``resampling`` draws (the same inputs for every network), and its
    summary (see `Computation`)."""
    if names is not None and len(names) != len(runs):
        raise InputError(f"got {len(names)} names for {len(runs)} networks")
    chosen = select_measures(measures)
    specs = [parse_run(s) for s in runs]
    files = [is_activation_file(run) for run, _ in specs]
    checkpoints = {
        i: (run, resolve_epoch(run, epoch))
        for i, ((run, epoch), file) in enumerate(zip(specs, files, strict=True))
        if not file
    }
    datasets = {held_out_data(run_info(run)) for run, _ in checkpoints.values()}
    if analysis.data is None and len(datasets) > 1:
        raise InputError(
            f"the runs were trained on different data ({sorted(datasets)}); "
            "pass --data to choose the inputs they are compared on"
        )

    def solves() -> Iterator[ComparedNetwork]:
        inputs = load_inputs(analysis, datasets.pop()) if datasets else None
        for i, (run, epoch) in enumerate(specs):
            if i in checkpoints:
                epoch = checkpoints[i][1]
                graphs = checkpoint_graphs(
                    run,
                    epoch,
                    inputs,
                    analysis=analysis,
                    solver=solver,
                    cache_dir=run_cache(run, cache),
                    progress=progress,
                )
                yield ComparedNetwork(f"{run.name}@{epoch}", run, epoch, graphs, inputs)
            else:
                graphs, given = activation_network(run, solver=solver, progress=progress)
                inputs = _same_inputs(inputs, given, run)
                yield ComparedNetwork(run.name, run, None, graphs, inputs)
            yield from resolved(
                [SolvedState(graphs.grams, graphs.coef, solver)], resampling, progress=progress
            )

    def summary(solved: Iterator) -> Comparison:
        summaries, cross, exports, first, first_subsamples = [], [], {}, None, []
        for i in range(len(specs)):
            network = next(solved)
            subsamples = list(islice(solved, resampling.resamples))
            name = names[i] if names else network.name
            if any(r.name == name for r in summaries):
                name = f"{name}#{i + 1}"
            graphs, epoch = network.graphs, network.epoch
            graph_file = export_name(graphs, epoch or 0, Path("graphs") / name.replace("/", "_"))
            summaries.append(
                _summary(name, network.run, epoch, graphs, network.inputs, chosen, graph_file)
            )
            summaries[-1] = _with_uncertainty(
                summaries[-1], graphs, network.inputs, chosen, subsamples, resampling
            )
            exports[graph_file] = export_source(graphs)
            if first is None:
                first, first_subsamples = graphs, subsamples
            else:
                pair = cross_similarity(
                    first, graphs, names=(summaries[0].name, name), measures=chosen
                )
                joint = [
                    (idx, [a, b])
                    for (idx, (a,)), (_, (b,)) in zip(first_subsamples, subsamples, strict=True)
                ]
                statistic = cross_statistic(chosen, first.moments, graphs.moments)
                cross.append(
                    pair._replace(
                        intervals=replicate_intervals(
                            pair.similarity,
                            joint,
                            statistic,
                            len(network.inputs.labels),
                            resampling.level,
                        )
                    )
                )
        n = len(network.inputs.labels)
        return Comparison(runs=summaries, cross=cross, exports=exports, n=n)

    return Computation(solves(), summary)


def compare_runs(runs: list[str], **options) -> Comparison:
    """Analyse each network of ``runs`` on one input set: a run's checkpoint (see
    ``parse_run``) or saved activations (see ``is_activation_file``), which must have been
    taken on the inputs the runs are compared on (same labels, in the same order).
    ``measures`` names the similarity measures (default the paper's two); ``options`` are
    those of `plan`.

    Writes nothing, except new solutions into each run's graph cache when ``cache`` is on.
    """
    return plan(runs, **options).result()


def _same_inputs(inputs, given, path: Path):
    """The compared inputs: ``inputs`` if set, checked against the labels of the activations
    at ``path``, else the activations' own ``given`` inputs."""
    if inputs is None:
        return given
    if not np.array_equal(inputs.labels, given.labels):
        raise InputError(
            f"{path}: its labels differ from those of the inputs compared on "
            f"({len(given.labels)} against {len(inputs.labels)} inputs); save the activations "
            "of the same inputs in the same order"
        )
    ours, theirs = given.class_names, inputs.class_names
    if _named(given) and _named(inputs) and ours != theirs:
        pairs = [(k, a, b) for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b]
        where = (
            f"class {pairs[0][0]} is {pairs[0][1]!r} against {pairs[0][2]!r}"
            if pairs
            else f"{len(ours)} names against {len(theirs)}"
        )
        raise InputError(
            f"{path}: its class names differ from those of the inputs compared on ({where})"
        )
    return inputs


def _named(inputs) -> bool:
    """Whether ``inputs`` have class names of their own, not the default "0" .. "K-1"."""
    return inputs.class_names != [str(k) for k in range(len(inputs.class_names))]


def _summary(
    name: str,
    run: Path,
    epoch: int | None,
    graphs: LayerGraphs,
    inputs,
    measures: Sequence[Measure],
    graph_file: str,
) -> RunSummary:
    modularity, similarity = graph_summary(
        graphs.affinity,
        graphs.grams,
        inputs.labels,
        len(inputs.class_names),
        measures,
        moments=graphs.moments,
    )
    accuracy = None
    if graphs.probs is not None:
        accuracy = float(np.mean(graphs.probs.argmax(axis=1) == inputs.labels))
    return RunSummary(
        name=name,
        run=str(run),
        epoch=epoch,
        layers=graphs.layers,
        modularity=modularity,
        similarity=similarity,
        network_accuracy=accuracy,
        diagnostics=graphs.diagnostics,
        graph_file=graph_file,
        trained=None if epoch is None else run_facts(run),
    )


def _with_uncertainty(
    run: RunSummary,
    graphs: LayerGraphs,
    inputs,
    measures: Sequence[Measure],
    subsamples: list,
    resampling: Resampling,
) -> RunSummary:
    """``run`` with the intervals of its numbers from ``subsamples`` and its modularity's
    p-values."""
    n_classes = len(inputs.class_names)
    statistic = summary_statistic(inputs.labels, n_classes, measures, graphs.moments)
    estimates = {"modularity": run.modularity, **run.similarity}
    found = replicate_intervals(
        estimates, subsamples, statistic, len(inputs.labels), resampling.level
    )
    p = None
    if resampling.permutations:
        p = layer_modularity_p(graphs.affinity, inputs.labels, n_classes, resampling)
    return run._replace(intervals=found, modularity_p=p)
