"""Warm starts along a tau path: rounds / iterations and seconds against cold solves, same run.

``ssc_jax.tau_path`` solves from the smallest tau up, each problem from the previous answer.
This times that path against the same taus solved from C = 0, in alternating rounds after a
warm-up that compiles both, on one problem: a real layer of a trained network (a run folder,
as in ``real_activations.py``), scikit-learn's digits or a union of subspaces::

    python benchmarks/tau_path.py RUN --n 2000 --taus 2 5 10 20 50 --gap-tol 1e-5
    python benchmarks/tau_path.py digits --n 1000

prints, per solver and tau, the iterations (ADMM) or rounds (working set) cold and warm, the
mean nonzeros per row, and the largest relative distance between the two answers; then the
whole path's seconds cold and warm and their ratio, per round.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from sklearn.datasets import load_digits

from real_activations import layer_problem
from ssc_jax import ADMM, WorkingSet, layer_names, load_checkpoint, tau_path
from ssc_jax.solver.synthetic import union_of_subspaces
from timing import alternate, ratio_range

SOLVERS = {"working-set": WorkingSet, "admm": ADMM}


def problem_gram(source: str, n: int, layer: str | None) -> tuple[np.ndarray, str]:
    """(n, n) float32 Gram of ``source`` and a line describing it."""
    if source == "digits":
        x = load_digits().data[:n].astype(np.float32)
        return x @ x.T, f"{len(x)} scikit-learn digits, d = 64"
    if source == "subspaces":
        x = union_of_subspaces(n // 10, 10, 10, n // 5, noise=0.05, seed=0)[0].astype(np.float32)
        return x @ x.T, f"union of 10 subspaces of dimension 10 in {n // 5}, N = {len(x)}"
    model, _ = load_checkpoint(source, None)
    layer = layer or layer_names(model, "conv")[-1]
    problem = layer_problem(source, None, layer, n)
    return problem.gram, f"{source} layer {layer} (d = {problem.width}), N = {n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a training run folder, 'digits' or 'subspaces'")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--layer", help="a run's layer (default: the last conv layer)")
    parser.add_argument("--taus", type=float, nargs="+", default=[2, 5, 10, 20, 50])
    parser.add_argument("--solvers", nargs="+", choices=sorted(SOLVERS), default=list(SOLVERS))
    parser.add_argument("--gap-tol", type=float, default=1e-5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    gram, described = problem_gram(args.source, args.n, args.layer)
    print(f"{jax.devices()[0].device_kind}; {described}; gap_tol {args.gap_tol:g}")
    print("| solver | tau | cold it. | warm it. | warm / cold | nonzeros / row | distance |")
    print("|---|---|---|---|---|---|---|")
    for name in args.solvers:
        solver = SOLVERS[name](gap_tol=args.gap_tol)

        def path(warm: bool, solver=solver):
            return tau_path(gram, args.taus, solver=solver, warm_start=warm, progress=False)

        timed = alternate(
            {"cold": lambda: path(False), "warm": lambda: path(True)}, rounds=args.rounds
        )
        cold, warm = timed.results["cold"], timed.results["warm"]
        for tau, c, w in zip(args.taus, cold, warm, strict=True):
            ci, wi = int(c.iterations), int(w.iterations)
            coef_c, coef_w = np.asarray(c.coef), np.asarray(w.coef)
            distance = np.linalg.norm(coef_w - coef_c) / max(np.linalg.norm(coef_c), 1e-30)
            nonzeros = float((coef_w != 0).sum(axis=1).mean())
            flags = "" if bool(c.converged) and bool(w.converged) else " (unconverged)"
            print(
                f"| {name} | {tau:g} | {ci} | {wi} | {wi / max(ci, 1):.2f}{flags} | "
                f"{nonzeros:.1f} | {distance:.1e} |"
            )
        total_c = sum(int(r.iterations) for r in cold)
        total_w = sum(int(r.iterations) for r in warm)
        print(f"| {name} | all | {total_c} | {total_w} | {total_w / max(total_c, 1):.2f} | | |")
        print(
            f"{name}: path seconds cold {timed.best('cold'):.2f}, warm {timed.best('warm'):.2f}; "
            f"warm / cold per round {ratio_range(timed.ratios('warm', 'cold'), '.2f')}"
        )


if __name__ == "__main__":
    main()
