"""Which similarity measure finds the right layer? Kornblith et al. (2019)'s specificity test.

Networks of one architecture trained from different seeds should have corresponding
layers: layer i of seed A is most like layer i of seed B. For each measure and each ordered
pair of networks (A, B), the test scores the fraction of A's layers whose most similar layer
of B (the smallest value, for a distance such as Procrustes) is the same layer. The
networks are trained run folders (their checkpoints analysed on the same N inputs of their
test set, their SSC graphs taken from or written to each run's graph cache, as ``analyze``
does) or saved activation files taken on the same inputs (see ``ssc-jax activations``)::

    python examples/specificity.py runs/vgg-s0 runs/vgg-s1 runs/vgg-s2 --n 1000 \\
        --measures ssc_cka,linear_cka,linear_cka_unbiased,mutual_knn,rsa,procrustes
    python examples/specificity.py a.npz b.npz c.npz

prints a table (mean over the ordered pairs; its interval over samples of the inputs, the
networks solved again on subsamples as the commands' intervals are, seeds held fixed; the
range over the seed pairs) and, with ``--out``, writes it as JSON with every pair's
cross-network matrices. ``within_one`` is the fraction whose
most similar layer is the same one or a neighbour: where neighbouring layers are alike (the
residual stream of a ResNet), it tells a measure that finds the right region from one that
does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ssc_jax.pipeline.analysis.activations import activation_network
from ssc_jax.pipeline.analysis.config import AnalysisSet, SolverSettings
from ssc_jax.pipeline.analysis.inputs import (
    held_out_data,
    load_inputs,
    resolve_epoch,
    run_info,
)
from ssc_jax.pipeline.analysis.layer_graphs import checkpoint_graphs, run_cache
from ssc_jax.pipeline.analysis.measures import (
    cross_similarity_matrices,
    register_measure,
    select_measures,
)
from ssc_jax.pipeline.analysis.uncertainty import Resampling, SolvedState, intervals
from ssc_jax.similarity.cka import cka

DEFAULT_MEASURES = "ssc_cka,linear_cka,linear_cka_unbiased,mutual_knn,rsa,procrustes"


def _dense(graph) -> np.ndarray:
    return graph.toarray() if sp.issparse(graph) else np.asarray(graph)


# Variants of SSC-CKA, each another kernel taken of the same SSC graphs A = |C| + |C|^T.
GRAPH_VARIANTS = {
    # the unbiased HSIC, as for linear CKA
    "ssc_cka_unbiased": lambda a, b: float(cka(_dense(a), _dense(b), unbiased=True)),
    # which edges the graph keeps, not their weights
    "ssc_cka_support": lambda a, b: float(cka(_dense(a != 0) * 1.0, _dense(b != 0) * 1.0)),
    # two steps on the graph: inputs alike when they share neighbours (a denser kernel)
    "ssc_cka_two_step": lambda a, b: float(cka(_dense(a @ a), _dense(b @ b))),
}


def best_matches(matrix: np.ndarray, distance: bool) -> np.ndarray:
    """(L_a,) the layer of B most similar to each layer of A, from their (L_a, L_b)
    similarities (distances when ``distance``)."""
    return np.argmin(matrix, axis=1) if distance else np.argmax(matrix, axis=1)


def specificity(matrix: np.ndarray, distance: bool, slack: int = 0) -> float:
    """The fraction of A's layers i whose most similar layer of B lies within ``slack``
    layers of i; the matrix must be square (the same architecture)."""
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the networks have {matrix.shape} layers; compare one architecture")
    best = best_matches(matrix, distance)
    return float(np.mean(np.abs(best - np.arange(len(best))) <= slack))


def run_network(run: Path, analysis: AnalysisSet, solver: SolverSettings, progress: bool):
    """The solved layers and the labels of the last checkpoint of ``run``, on ``analysis``'s
    inputs of its test set (graphs from or into the run's graph cache, as ``analyze``)."""
    epoch = resolve_epoch(run, None)
    inputs = load_inputs(analysis, held_out_data(run_info(run)))
    graphs = checkpoint_graphs(
        run,
        epoch,
        inputs,
        analysis=analysis,
        solver=solver,
        cache_dir=run_cache(run, True),
        progress=progress,
    )
    return graphs, inputs.labels


def file_network(path: Path, solver: SolverSettings, progress: bool):
    """The solved layers and the labels of saved activations."""
    graphs, inputs = activation_network(path, solver=solver, progress=progress)
    return graphs, inputs.labels


def specificity_table(networks: list[dict], measures) -> dict:
    """{measure: {"pairs": [...], "specificity": [...], "within_one": [...], "matrices":
    [...]}} over every ordered pair of networks (each unordered pair's matrix once, read
    both ways); ``networks`` are the registry's inputs of each network."""
    table = {
        m.name: {"pairs": [], "specificity": [], "within_one": [], "matrices": []} for m in measures
    }
    for a, b in itertools.combinations(range(len(networks)), 2):
        matrices = cross_similarity_matrices(measures, networks[a], networks[b])
        for m in measures:
            row = table[m.name]
            for pair, matrix in (((a, b), matrices[m.name]), ((b, a), matrices[m.name].T)):
                row["pairs"].append(pair)
                row["specificity"].append(specificity(matrix, m.distance))
                row["within_one"].append(specificity(matrix, m.distance, slack=1))
            row["matrices"].append(np.asarray(matrices[m.name]).tolist())
    return table


def mean_scores(table: dict) -> dict[str, float]:
    """{measure: mean specificity, measure + "_within_one": mean within one} over the
    ordered pairs."""
    scores = {}
    for name, row in table.items():
        scores[name] = float(np.mean(row["specificity"]))
        scores[name + "_within_one"] = float(np.mean(row["within_one"]))
    return scores


def score_intervals(
    graphs: list, measures, solver: SolverSettings, resampling: Resampling, progress: bool
):
    """``mean_scores``' intervals ({name + "_ci": (low, high)}): the networks solved again
    on subsamples of the inputs (``ssc_jax.pipeline.analysis.uncertainty``), the seeds held
    fixed."""
    states = [SolvedState(g.grams, g.coef, solver) for g in graphs]
    estimates = mean_scores(specificity_table([g.measure_inputs for g in graphs], measures))

    def statistic(idx: np.ndarray, subsamples: list) -> dict[str, float]:
        networks = [
            {"graphs": s.affinity, "grams": s.grams, "moments": g.moments.subset(idx)}
            for g, s in zip(graphs, subsamples, strict=True)
        ]
        return mean_scores(specificity_table(networks, measures))

    return estimates, intervals(estimates, states, statistic, resampling, progress=progress)


def _print_table(table: dict, cis: dict, layers: int, level: float) -> None:
    interval = f"{level:.0%} interval" if cis else "(no intervals)"
    print(
        f"{'measure':<22}{'specificity':>12}{interval:>16}{'seed pairs':>12}"
        f"{'within one':>12}   ({layers} layers)"
    )
    for name, row in table.items():
        s, w = np.asarray(row["specificity"]), np.asarray(row["within_one"])
        ci = cis.get(name + "_ci")
        ci = "" if ci is None else "{:.2f}-{:.2f}".format(*np.clip(ci, 0, 1))  # a fraction
        print(
            f"{name:<22}{s.mean():>12.2f}{ci:>16}{f'{s.min():.2f}-{s.max():.2f}':>12}"
            f"{w.mean():>12.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks", nargs="+", type=Path, help="run folders or activation files")
    parser.add_argument("--n", type=int, default=1000, help="analysis inputs N (run folders)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the N-input sample")
    parser.add_argument("--layers", default="conv", choices=("conv", "blocks"))
    parser.add_argument("--tau", type=float, default=None, help="SSC tau (default the solver's)")
    parser.add_argument("--measures", default=DEFAULT_MEASURES, help="comma-separated names")
    parser.add_argument(
        "--graph-variants",
        action="store_true",
        help=f"also the SSC-CKA variants {', '.join(GRAPH_VARIANTS)} (other kernels of the graphs)",
    )
    parser.add_argument(
        "--resamples",
        type=int,
        default=10,
        help="subsamples of the inputs for the intervals (0: none; see docs/statistics.md)",
    )
    parser.add_argument("--out", type=Path, help="write the table and matrices as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if len(args.networks) < 2:
        parser.error("give at least two networks of one architecture")
    names = args.measures.split(",")
    if args.graph_variants:
        for name, fn in GRAPH_VARIANTS.items():
            register_measure(name, fn, on="graphs")
        names += list(GRAPH_VARIANTS)
    measures = select_measures(names)
    analysis = AnalysisSet(n=args.n, seed=args.seed, layers=args.layers)
    solver = SolverSettings()
    if args.tau is not None:
        solver = dataclasses.replace(
            solver,
            admm=dataclasses.replace(solver.admm, tau=args.tau),
            working_set=dataclasses.replace(solver.working_set, tau=args.tau),
        )
    graphs, layers, first, started = [], None, None, time.perf_counter()
    for path in args.networks:
        if path.is_dir():
            network, labels = run_network(path, analysis, solver, not args.quiet)
        else:
            network, labels = file_network(path, solver, not args.quiet)
        if layers is not None and (network.layers != layers or not np.array_equal(labels, first)):
            parser.error(f"{path}: not the layers or inputs of {args.networks[0]}")
        layers, first = list(network.layers), labels
        graphs.append(network)
    resampling = Resampling(resamples=args.resamples, permutations=0)
    table = specificity_table([g.measure_inputs for g in graphs], measures)
    _, cis = score_intervals(graphs, measures, solver, resampling, not args.quiet)
    _print_table(table, cis, len(layers), resampling.level)
    print(f"({len(graphs)} networks, N = {len(first)}, {time.perf_counter() - started:.0f} s)")
    if args.out is not None:
        record = {"networks": [str(p) for p in args.networks], "layers": layers, "n": len(first)}
        record |= {"level": resampling.level, "resamples": resampling.resamples}
        record |= {"intervals": {k: np.asarray(v).tolist() for k, v in cis.items()}}
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record | {"measures": table}, indent=1))
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
