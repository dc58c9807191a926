"""SSC of one layer on the CIFAR-10 training set without the Gram: ``ssc_sparse`` at large N.

Loads a checkpoint trained by ``python -m ssc_jax.run train``, passes N stratified training
images through it (the whole set at N = 50,000), flattens one layer's activations (default
the last conv layer) into X (N, d), and solves SSC on X with ``ssc_sparse`` at the commands'
settings (``--gap-tol`` 2e-3). Prints the rounds, the certified gap, the time split
(activations, the working-set problems, the correlation passes, the float64 finish where
one ran) and, as the floor, one N x N x d product ``X X^T`` taken in the same row slabs in
the same run, with the ratio of the solve to it::

    /usr/bin/time -v python benchmarks/large_n.py RUN --n 10000 20000

Several ``--gap-tol`` solve the same activations at each tolerance in turn (the float64
finish's cost: ``--gap-tol 2e-3 1e-6``); several ``--settled`` at each share of ``gap_tol``
that the rows a round leaves as they are may hold (``subproblems.SETTLED_SHARE``).

Peak memory is the process's (``ru_maxrss``, as ``/usr/bin/time -v`` reports it); with
several N in one call it is the largest's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax import capture_activations, load_checkpoint, load_dataset
from ssc_jax.pipeline.analysis.config import COMMAND_SETTINGS
from ssc_jax.pipeline.analysis.inputs import preprocess, run_info
from ssc_jax.solver.working_set import from_features, subproblems
from ssc_jax.training.datasets import analysis_indices

SLAB_ROWS = 1024


def features(run: str, data: str, layer: str, n: int) -> tuple[np.ndarray, float, float]:
    """(n, d) float32 activations of ``layer`` on n stratified images of ``data``, the
    seconds taken to read the images and those of the forward pass."""
    start = time.perf_counter()
    model, _ = load_checkpoint(run, None)
    images, labels, _ = load_dataset(data, "train")
    chosen = analysis_indices(np.asarray(labels), n)
    inputs = preprocess(np.asarray(images)[chosen], run_info(run))
    read = time.perf_counter() - start
    start = time.perf_counter()
    value = capture_activations(model, inputs, [layer])[layer]
    return value.reshape(n, -1), read, time.perf_counter() - start


@jax.jit
def _slab_product(slab: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(jnp.matmul(slab, x.T, precision=jax.lax.Precision.HIGHEST)), axis=1)


def floor_seconds(x: np.ndarray) -> float:
    """Seconds of ``X X^T`` in slabs of ``SLAB_ROWS`` rows, each reduced to its rows' largest
    entry (as a correlation pass reduces its slab), the first slab compiled beforehand."""
    x = jnp.asarray(x)
    _slab_product(x[:SLAB_ROWS], x).block_until_ready()
    start = time.perf_counter()
    for first in range(0, len(x), SLAB_ROWS):
        _slab_product(x[first : first + SLAB_ROWS], x).block_until_ready()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="checkpoint folder (python -m ssc_jax.run train)")
    parser.add_argument("--data", default="../shared/data/cifar10-train.zip")
    parser.add_argument("--layer", default="layer4.1.conv2")
    parser.add_argument("--n", type=int, nargs="+", default=[10_000])
    parser.add_argument(
        "--gap-tol", type=float, nargs="+", default=[COMMAND_SETTINGS.working_set.gap_tol]
    )
    parser.add_argument("--settled", type=float, nargs="+", default=[subproblems.SETTLED_SHARE])
    parser.add_argument(
        "--warm-up",
        action="store_true",
        help="solve once at the commands' settings before the timed solves, so that none of "
        "them pays for compiling",
    )
    args = parser.parse_args()
    print(
        "| N | d | gap_tol | settled | rounds | rows solved | certified gap | rounds' gap | "
        "verified | read s | activations s | problems s | correlations s | float64 finish s | "
        "solve s | X X^T s | solve / X X^T | peak RSS GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        x, read_seconds, activation_seconds = features(args.run, args.data, args.layer, n)
        floor = floor_seconds(x)
        if args.warm_up:
            from_features.ssc_sparse(x, solver=COMMAND_SETTINGS.working_set, progress=False)
        for gap_tol, settled in itertools.product(args.gap_tol, args.settled):
            solver = dataclasses.replace(COMMAND_SETTINGS.working_set, gap_tol=gap_tol)
            subproblems.SETTLED_SHARE = settled
            start = time.perf_counter()
            result = from_features.ssc_sparse(x, solver=solver, progress=True)
            solve = time.perf_counter() - start
            seconds = (read_seconds, activation_seconds, solve, floor)
            report(result, n, x.shape[1], gap_tol, settled, seconds)


def report(result, n: int, d: int, gap_tol: float, settled: float, seconds: tuple) -> None:
    """A table row for one solve, and a line per round; ``seconds`` are those of reading the
    images, the activations, the solve and the floor."""
    read, activations, solve, floor = seconds
    problems = sum(r.solve_seconds for r in result.history)
    correlations = sum(r.correlation_seconds for r in result.history)
    solved = sum(sum(r.rows_per_size.values()) for r in result.history)
    finish = "-" if result.finish_seconds is None else f"{result.finish_seconds:.1f}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"| {n} | {d} | {gap_tol:.0e} | {settled:g} | {result.rounds} | {solved} | "
        f"{result.duality_gap:.2e} | {result.history[-1].relative_gap:.2e} | "
        f"{result.verified:.3f} | {read:.1f} | {activations:.1f} | {problems:.1f} | "
        f"{correlations:.1f} | {finish} | "
        f"{solve:.1f} | {floor:.1f} | {solve / floor:.2f} | {peak:.1f} |",
        flush=True,
    )
    for index, record in enumerate(result.history):
        print(
            f"  round {index}: gap {record.relative_gap:.2e}, KKT violation "
            f"{record.kkt_violation:.2e}, rows per size {record.rows_per_size}, "
            f"problems {record.solve_seconds:.1f} s, correlations "
            f"{record.correlation_seconds:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
