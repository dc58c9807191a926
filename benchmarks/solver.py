"""Solver benchmark: ssc-jax against the paper's released algorithm and an exact solver.

Every figure in the table is measured in this run, on the same data (noisy unions of 10
subspaces of dimension 10), on the default JAX device:

- ssc-jax (float32): first call (with compilation) and warm wall time, iterations, and the
  objective gap to the float64 optimum;
- the paper's released ADMM in NumPy float64 (pinv taken once, mu doubled/halved but never
  refactored, the data fit recomputed every iteration, 100 iterations), for n <=
  ``--paper-max-n``;
- scikit-learn ``Lasso`` per sample in float64 (exact), for n <= ``--sklearn-max-n``;
- one n x n x n float32 matmul, and ssc-jax's time per iteration divided by it: once as
  the warm total over the iterations (factorisation included), once as the marginal cost of
  an ADMM iteration (two fixed-length runs, 20 and 100 iterations, differenced).

The optimum is ssc-jax in float64 with tight tolerances, the only code run under
``jax.enable_x64`` (the timed solves run in JAX's default mode, as a user's would); where
scikit-learn runs, the table shows its objective too, which checks that optimum independently.

Warm ssc-jax, the paper's algorithm and the matmul are timed in alternating rounds
(``--repeat`` of them; 2 for n > 1000, where the paper's algorithm takes minutes), so that
the load of a shared machine falls on all three alike. Each column is the best round; the
speed-up is the best over the best, and the range beside it is the ratio within each round.
With ``--batch``, one ``ssc_gram`` call on the batch and one call per problem alternate alike.

With ``--stopping``, one problem (the first size and ratio) is solved at several certified
gap tolerances (``--gap-tols``; the first is the default) and each answer is compared with an
exact float64 reference (a float64 solve to a certified relative gap of 1e-11, warm-started
from the tightest float32 answer): iterations, warm time, the certified gap, the true gap of
the objective and the coefficients' relative Frobenius distance. The tolerances share one
compiled program (they are traced), so only the first call compiles.

With ``--polish``, the first ``--sizes`` samples of sklearn's digits (unit-norm rows, float32,
default settings otherwise) are solved by ADMM alone to a certified gap of 1e-6, and by ADMM
to each of ``--polish-gaps`` followed by polishing (``ADMM.polish``): iterations, warm time
(best of ``--repeat``), its ratio to ADMM alone, the verified fraction and the relative
Frobenius distance to scikit-learn's exact float64 solution.

    python benchmarks/solver.py --polish --sizes 1000   # polishing against a tight ADMM
    python benchmarks/solver.py                      # n in {500, 1000, 2000}, d in {n/5, 2n}
    python benchmarks/solver.py --stopping --sizes 1000 --ratios 0.2   # the stopping rule
    python benchmarks/solver.py --sizes 10000 --ratios 0.2   # one big problem (GPU)
    python benchmarks/solver.py --batch 16 --sizes 4000      # a batch of problems (GPU)
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import Lasso

import ssc_jax
from ssc_jax.solver.synthetic import union_of_subspaces
from timing import alternate, ratio_range, time_calls

TAU = 10.0


def objective(x: np.ndarray, coef: np.ndarray) -> float:
    """Eq. 2 in float64 on unit-norm rows: ||C||_1 + tau/2 ||X - C X||_F^2."""
    return float(np.abs(coef).sum() + TAU / 2 * np.sum((x - coef @ x) ** 2))


def paper_admm(x: np.ndarray, iterations: int = 100, mu: float = 10.0) -> np.ndarray:
    """The paper's released algorithm, in the column convention of its Algorithm 1.

    The inverse is taken once for the initial mu and kept while mu changes, as in the
    released code; the returned C is transposed to the rows convention.
    """
    xc = x.T
    gram = xc.T @ xc
    n = gram.shape[0]
    inverse = np.linalg.pinv(TAU * gram + mu * np.eye(n))
    coef = np.zeros((n, n))
    dual = np.zeros((n, n))
    for _ in range(iterations):
        z = inverse @ (TAU * gram + mu * (coef - dual / mu))
        previous = coef
        shifted = z + dual / mu
        coef = np.sign(shifted) * np.maximum(np.abs(shifted) - 1 / mu, 0)
        np.fill_diagonal(coef, 0)
        dual = dual + mu * (z - coef)
        primal = np.linalg.norm(z - coef)
        dual_res = np.linalg.norm(mu * (coef - previous))
        np.linalg.norm(xc - xc @ coef)  # the released code tracks the data fit every step
        if primal > 10 * dual_res:
            mu *= 2
        elif dual_res > 10 * primal:
            mu /= 2
    return coef.T


def sklearn_lasso(x: np.ndarray) -> np.ndarray:
    """Exact SSC: one float64 Lasso per sample with alpha = 1 / (tau d)."""
    n, d = x.shape
    coef = np.zeros((n, n))
    for i in range(n):
        others = np.delete(np.arange(n), i)
        model = Lasso(alpha=1 / (TAU * d), fit_intercept=False, tol=1e-8, max_iter=100_000)
        model.fit(x[others].T, x[i])
        coef[i, others] = model.coef_
    return coef


def run_case(n: int, d: int, args) -> dict:
    x, _ = union_of_subspaces(n // 10, 10, 10, d, noise=0.05, seed=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x32 = jnp.asarray(x, jnp.float32)
    first = time_calls(lambda: ssc_jax.ssc(x32, solver=ssc_jax.ADMM(), tau=TAU), warmup=0)
    with jax.enable_x64(True):  # the float64 reference only; the timed solves stay float32
        optimum_coef = ssc_jax.ssc(
            jnp.asarray(x), solver=ssc_jax.ADMM(), tau=TAU, rel_tol=1e-8, abs_tol=1e-12
        ).coef
    optimum = objective(x, np.asarray(optimum_coef))
    ours = objective(x, np.asarray(first.result.coef, np.float64))
    square = jax.jit(lambda a: a @ a)
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    calls = {
        "matmul": lambda: square(a),
        "ssc-jax": lambda: ssc_jax.ssc(x32, solver=ssc_jax.ADMM(), tau=TAU).coef,
    }
    if n <= args.paper_max_n:
        calls["paper"] = lambda: paper_admm(x)
    # ssc-jax was compiled by its first call, and the paper's NumPy code has nothing to compile.
    rounds = alternate(
        calls,
        rounds=args.repeat if n <= 1000 else min(args.repeat, 2),
        repeat={"matmul": 5},
        warm_up=("matmul",),
    )
    row = {
        "n": n,
        "d": d,
        "first_s": first.best,
        "warm_s": rounds.best("ssc-jax"),
        "iterations": int(first.result.iterations),
        "gap": (ours - optimum) / optimum,
        "certified": float(first.result.duality_gap),
        "matmul_s": rounds.best("matmul"),
    }
    row["per_iter_over_matmul"] = row["warm_s"] / row["iterations"] / row["matmul_s"]
    fixed = {}
    for iterations in (20, 100):
        # A tolerance float32 never meets: fixed length, with mu still adapting as by default.
        run = lambda k=iterations: (
            ssc_jax.ssc(
                x32, solver=ssc_jax.ADMM(), tau=TAU, rel_tol=1e-12, abs_tol=0.0, max_iterations=k
            ).coef
        )
        fixed[iterations] = time_calls(run, repeat=args.repeat).best
    row["loop_iter_over_matmul"] = (fixed[100] - fixed[20]) / 80 / row["matmul_s"]
    if "paper" in calls:
        row["paper_s"] = rounds.best("paper")
        row["paper_gap"] = (objective(x, rounds.results["paper"]) - optimum) / optimum
        row["speedup"] = row["paper_s"] / row["warm_s"]
        row["round_speedups"] = ratio_range(rounds.ratios("paper", "ssc-jax"))
    if n <= args.sklearn_max_n:
        exact = time_calls(sklearn_lasso, x, warmup=0)
        row["sklearn_s"] = exact.best
        row["sklearn_gap"] = (objective(x, exact.result) - optimum) / optimum
    return row


def run_batch(n: int, batch: int, args) -> None:
    """A batch of problems in one ``ssc_gram`` call, against one call per problem."""
    grams = []
    for seed in range(batch):
        x, _ = union_of_subspaces(n // 10, 10, 10, 2 * n, noise=0.05, seed=seed)
        grams.append(x @ x.T)
    stack = jnp.asarray(np.stack(grams), jnp.float32)
    first = time_calls(lambda: ssc_jax.ssc_gram(stack, solver=ssc_jax.ADMM(), tau=TAU), warmup=0)
    calls = {
        "batch": lambda: ssc_jax.ssc_gram(stack, solver=ssc_jax.ADMM(), tau=TAU).coef,
        "each": lambda: [
            ssc_jax.ssc_gram(gram, solver=ssc_jax.ADMM(), tau=TAU).coef for gram in stack
        ],
    }
    # The batch was compiled by its first call.
    rounds = alternate(calls, rounds=args.repeat, warm_up=("each",))
    warm, single = rounds.best("batch"), rounds.best("each")
    iterations = np.asarray(first.result.iterations)
    print(
        f"batch of {batch} problems, n={n}, d={2 * n}: first {first.best:.2f} s, "
        f"warm {warm:.2f} s; one call per problem {single:.2f} s ({single / warm:.2f}x the "
        f"batch, per round {ratio_range(rounds.ratios('each', 'batch'), '.2f')}); "
        f"iterations {iterations.min()}-{iterations.max()}"
    )


def run_stopping(n: int, d: int, gap_tols: list[float]) -> None:
    """Each gap tolerance against an exact float64 reference, on one problem."""
    x, _ = union_of_subspaces(n // 10, 10, 10, d, noise=0.05, seed=0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x32 = jnp.asarray(x, jnp.float32)
    ssc_jax.ssc(
        x32, solver=ssc_jax.ADMM(), tau=TAU
    ).coef.block_until_ready()  # compiles, once for every gap_tol
    runs = {
        tol: time_calls(
            lambda tol=tol: ssc_jax.ssc(x32, solver=ssc_jax.ADMM(), tau=TAU, gap_tol=tol), warmup=0
        )
        for tol in gap_tols
    }
    tightest = runs[min(gap_tols)].result
    with jax.enable_x64(True):
        reference = time_calls(
            lambda: ssc_jax.ssc(
                jnp.asarray(x),
                solver=ssc_jax.ADMM(),
                tau=TAU,
                gap_tol=1e-11,
                rel_tol=1e-9,
                abs_tol=1e-13,
                max_iterations=20_000,
                init=np.asarray(tightest.coef, np.float64),
            ),
            warmup=0,
        )
    exact = np.asarray(reference.result.coef)
    optimum = objective(x, exact)
    print(
        f"n={n}, d={d}: float64 reference certified to "
        f"{float(reference.result.duality_gap):.1e} in {int(reference.result.iterations)} "
        f"iterations, {reference.best:.1f} s"
    )
    print("| gap_tol | iters | warm (s) | certified gap | true gap | C distance | converged |")
    print("|---|---|---|---|---|---|---|")
    for tol, run in runs.items():
        coef = np.asarray(run.result.coef, np.float64)
        distance = np.linalg.norm(coef - exact) / np.linalg.norm(exact)
        print(
            f"| {tol:.0e} | {int(run.result.iterations)} | {run.best:.2f} | "
            f"{float(run.result.duality_gap):.1e} | "
            f"{(objective(x, coef) - optimum) / optimum:.1e} | {distance:.1e} | "
            f"{bool(run.result.converged)} |",
            flush=True,
        )


def run_polish(n: int, gap_tols: list[float], repeat: int) -> None:
    """ADMM to a tight gap against ADMM to loose gaps and polishing, on n digits."""
    from sklearn.datasets import load_digits

    x = load_digits().data[:n].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = sklearn_lasso(x)
    x32 = jnp.asarray(x, jnp.float32)
    settings = {"ADMM 1e-6": {"gap_tol": 1e-6}} | {
        f"polish {tol:.0e}": {"gap_tol": tol, "polish": True} for tol in gap_tols
    }
    runs = {
        name: time_calls(
            lambda kw=kw: ssc_jax.ssc(x32, solver=ssc_jax.ADMM(), tau=TAU, **kw), repeat=repeat
        )
        for name, kw in settings.items()
    }
    base = runs["ADMM 1e-6"].best
    print(f"digits n={n}, d={x.shape[1]}, float32; reference: sklearn Lasso per row, float64")
    print("| run | iters | warm (s) | time / ADMM 1e-6 | verified | C distance | certified gap |")
    print("|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        coef = np.asarray(run.result.coef, np.float64)
        distance = np.linalg.norm(coef - exact) / np.linalg.norm(exact)
        print(
            f"| {name} | {int(run.result.iterations)} | {run.best:.2f} | {run.best / base:.2f} | "
            f"{float(run.result.verified):.3f} | {distance:.1e} | "
            f"{float(run.result.duality_gap):.1e} |",
            flush=True,
        )


def fmt(value, spec: str, unit: str = "") -> str:
    return "-" if value is None else format(value, spec) + unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 2.0], help="d / n")
    parser.add_argument("--sklearn-max-n", type=int, default=1000)
    parser.add_argument("--paper-max-n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=0, help="also time a batch of problems")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stopping", action="store_true", help="compare gap tolerances")
    parser.add_argument("--gap-tols", type=float, nargs="+", default=[2e-3, 1e-4, 1e-5, 1e-6])
    parser.add_argument("--polish", action="store_true", help="polishing on digits")
    parser.add_argument("--polish-gaps", type=float, nargs="+", default=[2e-3, 1e-2])
    args = parser.parse_args()

    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({device.platform}); "
        f"host: {platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}"
    )
    if args.batch:
        for n in args.sizes:
            run_batch(n, args.batch, args)
        return
    if args.polish:
        run_polish(args.sizes[0], args.polish_gaps, args.repeat)
        return
    if args.stopping:
        run_stopping(args.sizes[0], int(args.ratios[0] * args.sizes[0]), args.gap_tols)
        return
    header = (
        "| n | d | ssc-jax first (s) | ssc-jax warm (s) | iters | gap | certified | paper (s) "
        "| paper gap "
        "| speedup | per round | sklearn (s) | sklearn gap | matmul (s) | total / iter / matmul "
        "| loop iter / matmul |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for n in args.sizes:
        for ratio in args.ratios:
            r = run_case(n, int(ratio * n), args)
            print(
                f"| {r['n']} | {r['d']} | {r['first_s']:.2f} | {r['warm_s']:.3f} | "
                f"{r['iterations']} | {r['gap']:.1e} | {r['certified']:.1e} | "
                f"{fmt(r.get('paper_s'), '.2f')} | "
                f"{fmt(r.get('paper_gap'), '.1e')} | {fmt(r.get('speedup'), '.1f', 'x')} | "
                f"{r.get('round_speedups', '-')} | "
                f"{fmt(r.get('sklearn_s'), '.1f')} | {fmt(r.get('sklearn_gap'), '.1e')} | "
                f"{r['matmul_s']:.4f} | {r['per_iter_over_matmul']:.2f} | "
                f"{r['loop_iter_over_matmul']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
