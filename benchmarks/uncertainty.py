"""Intervals from halves of the inputs: their calibration on a synthetic network, and their
cost on a trained ResNet-18.

``calibrate``: a ``SyntheticNetwork`` (a fixed union of subspaces through a fixed random
ReLU network, of layer widths ``--widths``) is sampled ``--draws`` times independently at
each N of ``--sizes``. Each draw's modularity (L,) and SSC-CKA and linear CKA between layers
(the L (L - 1) / 2 pairs) are computed on its N inputs, with their intervals from
``--resamples`` halves (``--resamples / 2`` random splits of the N inputs). The truth is
each statistic's mean over the draws (its expectation at N, known to ``sd / sqrt(draws)``);
the table gives the fraction of draws whose interval covers it, for each layer or pair and
pooled, and the two-sided 99% binomial range of that fraction for a calibrated interval.

``cost``: ``analyze`` on a trained run with ``--resamples 0`` and with the default, timed one
after the other in this run, each solving the full graphs (the run's graph cache is emptied
before each); the ratio is what intervals cost. The run's graph cache is deleted.

    flock /tmp/ssc_heavy.lock python benchmarks/uncertainty.py calibrate --sizes 200 1000
    flock /tmp/ssc_heavy.lock python benchmarks/uncertainty.py calibrate --sizes 200 \
        --widths 32 32 32 32 32 32 32 16
    flock /tmp/ssc_heavy.lock python benchmarks/uncertainty.py cost --run /tmp/r18 --n 2000 \\
        --scratch /tmp/cost
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy import stats

from ssc_jax.nets.synthetic import SyntheticNetwork
from ssc_jax.pipeline.analysis.config import SolverSettings
from ssc_jax.pipeline.analysis.layer_graphs import CACHE_DIR, solve_layers
from ssc_jax.pipeline.analysis.measures import select_measures
from ssc_jax.pipeline.analysis.uncertainty import (
    Resampling,
    SolvedState,
    Subsample,
    intervals,
    summary_statistic,
)

MEASURES = ("ssc_cka", "linear_cka")


def one_draw(net: SyntheticNetwork, n: int, seed: int, resampling: Resampling) -> tuple[dict, dict]:
    """The statistics of one independent N-input draw and their intervals."""
    sample = net.sample(n, seed)
    grams = np.stack([a @ a.T for a in sample.activations]).astype(np.float32)
    solver = SolverSettings()
    coef, _ = solve_layers(grams, solver, progress=False)
    affinity = [sp.csr_array(abs(c) + abs(c).T) for c in coef]
    statistic = summary_statistic(sample.labels, net.n_classes, select_measures(MEASURES))
    estimates = statistic(np.arange(n), [Subsample(affinity, grams)])
    found = intervals(estimates, [SolvedState(grams, coef, solver)], statistic, resampling)
    return estimates, found


def entries(name: str, value: np.ndarray) -> np.ndarray:
    """The entries of a statistic that vary: every layer's modularity, the pairs i < j."""
    value = np.asarray(value)
    if name == "modularity":
        return value
    return value[np.triu_indices(value.shape[0], k=1)]


def calibrate(args) -> None:
    net = SyntheticNetwork(widths=args.widths)
    resampling = Resampling(resamples=args.resamples, level=args.level)
    low, high = stats.binom.ppf([0.005, 0.995], args.draws, args.level) / args.draws
    print(f"# {platform.node()}: widths {args.widths}, {args.draws} draws, ")
    print(f"# {args.resamples} halves ({args.resamples // 2} splits of the N inputs), ")
    print(f"# level {args.level}; 99% binomial range of a calibrated coverage {low:.3f}-{high:.3f}")
    print("| N | statistic | entries | coverage per entry | pooled | mean width | sd over draws |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        start = time.perf_counter()
        drawn = []
        for d in range(args.draws):
            drawn.append(one_draw(net, n, 10_000 * n + d, resampling))
            if (d + 1) % 20 == 0:
                print(f"# N = {n}: {d + 1} draws", file=sys.stderr, flush=True)
        for name in ("modularity", *MEASURES):
            est = np.stack([entries(name, e[name]) for e, _ in drawn])
            ci = np.stack([entries(name, c[name + "_ci"]) for _, c in drawn])
            truth = est.mean(axis=0)
            covered = (ci[..., 0] <= truth) & (truth <= ci[..., 1])
            per_entry = ", ".join(f"{c:.3f}" for c in covered.mean(axis=0))
            width = float(np.mean(ci[..., 1] - ci[..., 0]))
            sd = ", ".join(f"{s:.3f}" for s in est.std(axis=0, ddof=1))
            print(
                f"| {n} | {name} | {est.shape[1]} | {per_entry} | {covered.mean():.3f} "
                f"| {width:.4f} | {sd} |"
            )
        print(f"# N = {n}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def cost(args) -> None:
    base = [sys.executable, "-m", "ssc_jax.run", "analyze", args.run, "--n", str(args.n)]
    base += ["--quiet", "--out"]
    times = {}
    for resamples in (0, None):
        label = "off" if resamples == 0 else "default"
        command = [*base, str(Path(args.scratch) / label)]
        if resamples is not None:
            command += ["--resamples", str(resamples)]
        # Each run solves the full graphs too: none is read from the run's graph cache.
        shutil.rmtree(Path(args.run) / CACHE_DIR, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times[label] = time.perf_counter() - start
        print(f"# analyze --n {args.n}, intervals {label}: {times[label]:.1f} s", flush=True)
    print("| N | without intervals (s) | with (s) | ratio |\n|---|---|---|---|")
    print(
        f"| {args.n} | {times['off']:.1f} | {times['default']:.1f} "
        f"| {times['default'] / times['off']:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cal = commands.add_parser("calibrate")
    cal.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    cal.add_argument("--draws", type=int, default=200)
    cal.add_argument("--widths", type=int, nargs="+", default=[32, 32, 16])
    cal.add_argument("--resamples", type=int, default=Resampling().resamples)
    cal.add_argument("--level", type=float, default=Resampling().level)
    cal.set_defaults(action=calibrate)
    timed = commands.add_parser("cost")
    timed.add_argument("--run", required=True)
    timed.add_argument("--n", type=int, default=2000)
    timed.add_argument("--scratch", required=True, help="folder for the two outputs")
    timed.set_defaults(action=cost)
    args = parser.parse_args()
    args.action(args)


if __name__ == "__main__":
    main()
