"""Certified, exact SSC: ssc-jax's solvers against per-row Lasso solvers and the paper's ADMM.

On each problem (unit-norm rows, tau = 10) every method is timed in this run on the same
data, and its answer compared with one exact reference: ssc-jax's working-set solver in
float64 at a certified relative gap of 1e-11 (it matches scikit-learn's per-row Lasso to
1e-7 in tests/test_working_set.py; celer's column below checks it again). Columns: wall
seconds (ssc-jax warm, best of ``--repeat``; the peers once), the ratio to ssc-jax's ADMM at
its defaults (today's solver) timed in this run, iterations (ADMM) or rounds (working set),
the certified relative duality gap (ssc-jax only), the objective's relative distance to
the reference's and the coefficients' relative Frobenius distance to the reference's C.

Methods: ``ADMM`` and ``WorkingSet`` in float32 at gap_tol 2e-3 (the default) and 1e-6;
the paper's released ADMM in NumPy float64 (100 iterations, ``solver.paper_admm``);
celer's ``Lasso`` (working sets and dual extrapolation, float64) and SPAMS' ``lasso``
(LARS, float64, package spams-bin) one row at a time, each with the row's own sample left
out, for n <= ``--peers-max-n``.

Problems: noisy unions of 10 subspaces of dimension 10 at each n of ``--sizes`` and d in
``--ratios`` x n; the first 1,000 of scikit-learn's digits (d = 64); and, with ``--gram``, a
saved Gram of a real CNN layer (``np.savez(path, gram=G)``; features for the per-row
solvers come from its eigendecomposition, which leaves every Lasso unchanged).

    python benchmarks/certified.py --sizes 1000 2000 --gram runs/gram2000.npz
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

import ssc_jax
from solver import paper_admm
from ssc_jax.solver.synthetic import union_of_subspaces
from timing import time_calls

TAU = 10.0


def unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def objective(x: np.ndarray, coef: np.ndarray) -> float:
    return float(np.abs(coef).sum() + TAU / 2 * np.sum((x - coef @ x) ** 2))


def exact(x: np.ndarray) -> tuple[np.ndarray, float]:
    """The float64 reference C and its wall seconds."""
    start = time.perf_counter()
    with jax.enable_x64(True):
        solver = ssc_jax.WorkingSet(tau=TAU, gap_tol=1e-11, max_rounds=60)
        result = ssc_jax.ssc_gram(x @ x.T, solver=solver, progress=False)
        coef = np.asarray(result.coef)
    return coef, time.perf_counter() - start


def per_row(x: np.ndarray, fit) -> np.ndarray:
    """C from ``fit(dictionary (d, n - 1), target (d,))``, one row at a time."""
    n = x.shape[0]
    coef = np.zeros((n, n))
    for i in range(n):
        others = np.delete(np.arange(n), i)
        coef[i, others] = fit(np.asfortranarray(x[others].T), x[i])
    return coef


def celer_rows(x: np.ndarray) -> np.ndarray:
    from celer import Lasso

    model = Lasso(alpha=1 / (TAU * x.shape[1]), fit_intercept=False, tol=1e-10, max_iter=200)
    return per_row(x, lambda dictionary, target: model.fit(dictionary, target).coef_)


def spams_rows(x: np.ndarray) -> np.ndarray:
    import spams

    def fit(dictionary, target):
        target = np.asfortranarray(target[:, None])
        return spams.lasso(target, D=dictionary, lambda1=1 / TAU, mode=2).toarray()[:, 0]

    return per_row(x, fit)


def problems(args) -> list[tuple[str, np.ndarray]]:
    from sklearn.datasets import load_digits

    cases = []
    for n in args.sizes:
        for ratio in args.ratios:
            d = int(ratio * n)
            x = union_of_subspaces(n // 10, 10, 10, d, noise=0.05, seed=n + d)[0]
            cases.append((f"subspaces n={n} d={d}", unit_rows(np.asarray(x, np.float64))))
    cases.append(("digits n=1000 d=64", unit_rows(load_digits().data[:1000].astype(np.float64))))
    if args.gram:
        gram = np.load(args.gram)["gram"].astype(np.float64)
        values, vectors = np.linalg.eigh(gram)
        keep = values > values.max() * len(values) * np.finfo(np.float64).eps
        x = unit_rows(vectors[:, keep] * np.sqrt(values[keep]))
        cases.append((f"CNN layer n={len(x)} rank={int(keep.sum())}", x))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 2.0], help="d / n")
    parser.add_argument("--gram", help="a saved Gram of a real layer (.npz with 'gram')")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--peers-max-n", type=int, default=1000)
    parser.add_argument("--paper-max-n", type=int, default=2000)
    parser.add_argument("--admm-tight-max-n", type=int, default=1000, help="ADMM to 1e-6")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({device.platform}); "
        f"host: {platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__}"
    )
    header = (
        "| method | seconds | / ADMM default | objective above exact | C distance "
        "| iterations / rounds | certified gap |"
    )
    for name, x in problems(args):
        n = len(x)
        reference, reference_s = exact(x)
        best = objective(x, reference)
        x32 = x.astype(np.float32)
        print(f"\n{name}: exact reference (float64 working set) {reference_s:.1f} s")
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        methods = {
            "ADMM 2e-3 (default)": ssc_jax.ADMM(tau=TAU),
            "WorkingSet 2e-3": ssc_jax.WorkingSet(tau=TAU),
            "WorkingSet 1e-6": ssc_jax.WorkingSet(tau=TAU, gap_tol=1e-6),
        }
        if n <= args.admm_tight_max_n:
            methods["ADMM 1e-6"] = ssc_jax.ADMM(tau=TAU, gap_tol=1e-6, rel_tol=1e-5)
        base = None
        for method, solver in methods.items():
            timing = time_calls(
                lambda solver=solver, x32=x32: ssc_jax.ssc(x32, solver=solver, progress=False),
                repeat=args.repeat,
            )
            base = base or timing.best
            result = timing.result
            row(method, timing.best, base, reference, best, x, np.asarray(result.coef))
            print(f"{int(result.iterations)} | {float(result.duality_gap):.1e} |")
        peers = {}
        if n <= args.paper_max_n:
            peers["paper ADMM, 100 it (f64)"] = paper_admm
        if n <= args.peers_max_n:
            peers |= {"celer per row (f64)": celer_rows, "SPAMS per row (f64)": spams_rows}
        for method, fn in peers.items():
            start = time.perf_counter()
            coef = fn(x)
            row(method, time.perf_counter() - start, base, reference, best, x, coef)
            print("- | - |")


def row(method, seconds, base, reference, best, x, coef) -> None:
    """The row's first columns; the caller prints the solver's own ones."""
    above = (objective(x, coef) - best) / best
    distance = np.linalg.norm(coef - reference) / np.linalg.norm(reference)
    print(
        f"| {method} | {seconds:.2f} | {seconds / base:.2f} | {above:.1e} | {distance:.1e} | ",
        end="",
        flush=True,
    )


if __name__ == "__main__":
    main()
