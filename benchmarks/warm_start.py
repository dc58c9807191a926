"""Warm starts in ``dynamics``: solver iterations and seconds against cold starts, same run.

``training_dynamics`` solves the last epoch first, then each epoch from the graphs of the one
analysed before it (``warm_start=True``, the default). This runs it both ways on a training
run, without the graph cache, and prints per epoch the iterations (ADMM) or rounds (working
set, ``--solver``) summed over the layers and the seconds of the whole command, warm against
cold::

    python benchmarks/warm_start.py RUN --n 500 --layers blocks --solver admm
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ssc_jax.pipeline.analysis.config import SOLVERS, AnalysisSet, SolverSettings
from ssc_jax.pipeline.analysis.dynamics import training_dynamics


def timed_dynamics(run: str, analysis: AnalysisSet, solver: SolverSettings, warm_start: bool):
    """The dynamics of ``run`` without the cache, and its wall seconds."""
    start = time.perf_counter()
    result = training_dynamics(
        run, analysis=analysis, solver=solver, cache=False, progress=False, warm_start=warm_start
    )
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="training run folder")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--layers", default="blocks")
    parser.add_argument("--solver", choices=SOLVERS, default=SOLVERS[0])
    args = parser.parse_args()
    analysis = AnalysisSet(n=args.n, layers=args.layers)
    solver = SolverSettings(method=args.solver)
    cold, cold_s = timed_dynamics(args.run, analysis, solver, warm_start=False)
    warm, warm_s = timed_dynamics(args.run, analysis, solver, warm_start=True)
    cold_it = np.asarray(cold.metrics["solver_diagnostics_per_epoch"]["iterations"]).sum(axis=1)
    warm_it = np.asarray(warm.metrics["solver_diagnostics_per_epoch"]["iterations"]).sum(axis=1)
    drift = np.max(np.abs(cold.to_final["ssc_cka"] - warm.to_final["ssc_cka"]))
    print(
        f"N = {args.n}, layers {args.layers}, {len(cold.layers)} layers per epoch, "
        f"solver {args.solver}"
    )
    print("| epoch | cold iterations | warm iterations | warm / cold |")
    print("|---|---|---|---|")
    for epoch, c, w in zip(cold.epochs, cold_it, warm_it, strict=True):
        print(f"| {epoch} | {c} | {w} | {w / c:.2f} |")
    print(f"| all | {cold_it.sum()} | {warm_it.sum()} | {warm_it.sum() / cold_it.sum():.2f} |")
    print(f"wall seconds: cold {cold_s:.1f}, warm {warm_s:.1f}, warm / cold {warm_s / cold_s:.2f}")
    print(f"largest change of SSC-CKA to the final epoch, warm vs cold: {drift:.1e}")


if __name__ == "__main__":
    main()
