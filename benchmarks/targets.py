"""The solver targets of a whole-network analysis, as ratios against baselines timed in this run.

Three measurements on a checkpoint trained by ``python -m ssc_jax.run train`` (CIFAR-10
ResNet-18), each a ratio, so that the figure travels between machines:

* ``--layer-n``: the last conv layer's Gram on N stratified test images solved by the default
  solver to a certified relative gap of 1e-6, in units of one N x N x N float32 matmul;
* ``--analyze-n``: the SSC solve of all conv layers' Grams on N inputs at the commands'
  settings, as ``analyze`` runs it, in units of the same Grams computed alone; with
  ``--command``, the whole ``python -m ssc_jax.run analyze RUN --n N`` too (every other
  measure of the report included), with its peak resident memory;
* ``--grams-n``: the Grams of all conv layers on N inputs from the same captured features,
  by XLA's matmul on the default device (how they were formed before) and by ``_gram`` (on a
  CPU, NumPy's BLAS: a symmetric rank-k update, half the multiply-adds);
* ``--peers-n``: the last conv layer's Gram at each N solved by ADMM (to its default gap and
  to the default solver's certified gap, within ``--admm-iterations``, one cap per N), the
  default solver, the paper's ADMM (NumPy float64, 100 iterations as released; above
  N = 2,000 not run, its time scaled from the smaller N's by N^3) and, where installed,
  celer and SPAMS one row at a time on ``--per-row-rows`` random rows (features from the
  Gram's eigendecomposition; their time scaled by N / rows), each with its certified relative
  gap recomputed in float64 from its coefficients (the sampled rows' own, for the per-row
  peers).

    python benchmarks/targets.py RUN --layer-n 2000 --analyze-n 4000 --peers-n 2000
    python benchmarks/targets.py RUN --grams-n 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from real_activations import layer_problem, matmul_seconds
from solver import paper_admm
from ssc_jax import (
    ADMM,
    WorkingSet,
    activation_grams,
    capture_activations,
    layer_names,
    load_checkpoint,
    ssc_gram,
)
from ssc_jax.nets import capture
from ssc_jax.pipeline.analysis.config import AnalysisSet
from ssc_jax.pipeline.analysis.inputs import held_out_data, load_inputs, preprocess, run_info
from ssc_jax.solver import certificate
from ssc_jax.solver.factor import GramFactor, normalize_gram
from ssc_jax.solver.options import DEFAULT_SOLVER

TAU = DEFAULT_SOLVER.tau


def relative_gap(gram: np.ndarray, coef: np.ndarray) -> float:
    """The certified relative duality gap of ``coef`` on the unit-normalised ``gram``, in
    float64 (``ssc_jax.solver.certificate``)."""
    with jax.enable_x64(True):
        unit = normalize_gram(jnp.asarray(gram, jnp.float64))
        rows = jnp.arange(len(gram))
        objective, gap = certificate.row_certificates(
            GramFactor(unit), jnp.asarray(coef, jnp.float64), rows, jnp.float64(TAU)
        )
        return float(jnp.sum(gap) / jnp.sum(objective))


def layer_target(run: str, n: int) -> None:
    model, _ = load_checkpoint(run)
    layer = layer_names(model, "conv")[-1]
    gram = layer_problem(run, None, layer, n).gram
    unit = matmul_seconds(n)
    solver = WorkingSet(gap_tol=1e-6)
    jax.block_until_ready(ssc_gram(gram, solver=solver, progress=False))  # compiles
    start = time.perf_counter()
    result = jax.block_until_ready(ssc_gram(gram, solver=solver, progress=False))
    seconds = time.perf_counter() - start
    print("| layer | N | rounds | certified gap | solve s | matmul s | solve / matmul |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {layer} | {n} | {int(result.iterations)} | {float(result.duality_gap):.1e} | "
        f"{seconds:.2f} | {unit:.3f} | {seconds / unit:.1f} |",
        flush=True,
    )


def analyze_target(run: str, n: int, command: bool) -> None:
    model, info = load_checkpoint(run)
    inputs = load_inputs(AnalysisSet(n=n), held_out_data(run_info(run)))
    images = preprocess(inputs.images, info)
    names = layer_names(model, "conv")
    activation_grams(model, images[:64], layers=names)  # compiles
    start = time.perf_counter()
    grams = jax.block_until_ready(activation_grams(model, images, layers=names)[1])
    gram_seconds = time.perf_counter() - start
    # The commands' solver: the default one at their --gap-tol, as analyze builds it.
    solver = dataclasses.replace(DEFAULT_SOLVER, gap_tol=ADMM().gap_tol)
    start = time.perf_counter()
    result = jax.block_until_ready(ssc_gram(grams, solver=solver, progress=False))
    ssc_seconds = time.perf_counter() - start
    gaps = np.asarray(result.duality_gap)
    print("| N | layers | Grams alone s | SSC of all layers s | (Grams + SSC) / Grams | gaps |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {n} | {len(names)} | {gram_seconds:.1f} | {ssc_seconds:.1f} | "
        f"{(gram_seconds + ssc_seconds) / gram_seconds:.2f} | {gaps.min():.1e} to "
        f"{gaps.max():.1e} |",
        flush=True,
    )
    if not command:
        return
    with tempfile.TemporaryDirectory(prefix="ssc_targets_") as out:
        command_line = [sys.executable, "-m", "ssc_jax.run", "analyze", run, "--n", str(n)]
        start = time.perf_counter()
        subprocess.run([*command_line, "--out", out, "--quiet"], check=True)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(
        f"analyze command: {seconds:.1f} s, {seconds / gram_seconds:.2f}x the Grams alone, "
        f"peak RSS {peak:.1f} GiB",
        flush=True,
    )


def grams_target(run: str, n: int) -> None:
    """Each conv layer's Gram on n inputs, from one capture of their features, by XLA's
    matmul (``capture._device_gram``) and by ``capture._gram``, each timed over all layers;
    their largest difference relative to the Gram's largest entry."""
    model, info = load_checkpoint(run)
    inputs = load_inputs(AnalysisSet(n=n), held_out_data(run_info(run)))
    images = preprocess(inputs.images, info)
    acts = capture_activations(model, images, layer_names(model, "conv"))
    flat = [a.reshape(n, -1) for a in acts.values()]
    del acts
    methods = {"XLA matmul (before)": capture._device_gram, "_gram (now)": capture._gram}
    for gram in methods.values():
        gram(flat[-1][:64])  # compiles
    seconds = dict.fromkeys(methods, 0.0)
    difference = 0.0
    for x in flat:
        results = []
        for name, gram in methods.items():
            start = time.perf_counter()
            results.append(gram(x))
            seconds[name] += time.perf_counter() - start
        scale = float(np.max(np.abs(results[0])))
        difference = max(difference, float(np.max(np.abs(results[0] - results[1]))) / scale)
        del results
    before, now = seconds.values()
    print("| N | layers | features | XLA matmul s | _gram s | ratio | largest difference |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {n} | {len(flat)} | {sum(x.shape[1] for x in flat):,} | {before:.1f} | {now:.1f} | "
        f"{before / now:.2f} | {difference:.1e} |",
        flush=True,
    )


def features(gram: np.ndarray) -> np.ndarray:
    """(n, n) float64 features whose Gram is the unit-normalised ``gram`` (its
    eigendecomposition), which leaves every row's Lasso unchanged."""
    unit = np.asarray(normalize_gram(jnp.asarray(gram, jnp.float64)))
    values, vectors = np.linalg.eigh(unit)
    return vectors * np.sqrt(np.maximum(values, 0))


def rows_gap(gram: np.ndarray, coef: np.ndarray, rows: np.ndarray) -> float:
    """The certified relative gap of the rows ``rows`` of C alone, ``coef`` (len(rows), n)
    their coefficients, in float64."""
    with jax.enable_x64(True):
        unit = normalize_gram(jnp.asarray(gram, jnp.float64))
        objective, gap = certificate.row_certificates(
            GramFactor(unit), jnp.asarray(coef, jnp.float64), jnp.asarray(rows), jnp.float64(TAU)
        )
        return float(jnp.sum(gap) / jnp.sum(objective))


def per_row(x: np.ndarray, rows: np.ndarray, fit) -> np.ndarray:
    """(len(rows), n) the rows ``rows`` of C, one Lasso each on the features ``x`` (n, d):
    ``fit(A, y, alpha)`` returns the row's coefficients on the other samples."""
    n, d = x.shape
    coef = np.zeros((len(rows), n))
    for k, i in enumerate(rows):
        others = np.delete(np.arange(n), i)
        coef[k, others] = fit(x[others].T, x[i], 1 / (TAU * d))
    return coef


def per_row_fits() -> dict:
    """celer and SPAMS, each a ``fit(A, y, alpha)`` of one row's Lasso, where installed."""
    fits = {}
    try:
        from celer import Lasso as CelerLasso

        def celer_fit(a, y, alpha):
            return CelerLasso(alpha=alpha, fit_intercept=False, tol=1e-7).fit(a, y).coef_

        fits["celer per row (f64)"] = celer_fit
    except ImportError:
        print("celer is not installed: skipped")
    try:
        import spams

        def spams_fit(a, y, alpha):
            out = spams.lasso(
                np.asfortranarray(y[:, None]),
                D=np.asfortranarray(a),
                lambda1=alpha * len(y),
                mode=2,
            )
            return np.asarray(out.todense()).ravel()

        fits["SPAMS per row (f64)"] = spams_fit
    except ImportError:
        print("spams is not installed: skipped")
    return fits


def timed(method, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = jax.block_until_ready(method(*args))
    return time.perf_counter() - start, out


def peers_target(
    run: str, sizes: list[int], gap_tol: float, sampled_rows: int, admm_caps: list[int]
) -> None:
    """The peers on the last conv layer at each N: the whole-problem solvers on all rows,
    ADMM capped at ``admm_caps`` (one per N, the last repeated); the per-row ones on
    ``sampled_rows`` random rows, their time scaled by N / rows; the paper's ADMM where
    N <= 2,000, above that its time scaled by N^3 from the last N it ran at."""
    model, _ = load_checkpoint(run)
    layer = layer_names(model, "conv")[-1]
    paper_at, default = None, WorkingSet(gap_tol=gap_tol)
    for k, n in enumerate(sizes):
        admm_iterations = admm_caps[min(k, len(admm_caps) - 1)]
        gram = layer_problem(run, None, layer, n).gram
        rows = np.sort(np.random.default_rng(0).choice(n, min(sampled_rows, n), replace=False))
        print(f"\n{layer}, N = {n}")
        print("| method | seconds | / default | certified gap (f64) | how |")
        print("|---|---|---|---|---|")
        table = []
        ssc_gram(gram, solver=default, progress=False)  # compiles
        seconds, result = timed(lambda g: ssc_gram(g, solver=default, progress=False), gram)
        table.append(
            (
                f"default (WorkingSet {gap_tol:g})",
                seconds,
                relative_gap(gram, result.coef),
                f"{int(result.iterations)} rounds",
            )
        )
        for name, solver in (("ADMM 2e-3", ADMM()), (f"ADMM {gap_tol:g}", ADMM(gap_tol=gap_tol))):
            solver = dataclasses.replace(solver, max_iterations=admm_iterations)
            # The same program (the tolerances are traced), stopping at its first check.
            loose = dataclasses.replace(solver, abs_tol=1e9, rel_tol=1e9, gap_tol=1e9)
            ssc_gram(gram, solver=loose, progress=False)
            seconds, result = timed(lambda g, s=solver: ssc_gram(g, solver=s, progress=False), gram)
            how = f"{int(result.iterations)} iterations (cap {admm_iterations})"
            table.append((name, seconds, relative_gap(gram, result.coef), how))
        if n <= 2000:
            seconds, coef = timed(paper_admm, features(gram))
            table.append(("paper ADMM, 100 it (f64)", seconds, relative_gap(gram, coef), "run"))
            paper_at = (n, seconds)
        elif paper_at is not None:
            scaled = paper_at[1] * (n / paper_at[0]) ** 3
            how = f"not run: N = {paper_at[0]}'s time x (N / {paper_at[0]})^3"
            table.append(("paper ADMM, 100 it (f64)", scaled, float("nan"), how))
        x = features(gram)
        for name, fit in per_row_fits().items():
            seconds, coef = timed(per_row, x, rows, fit)
            how = f"{len(rows)} random rows, time x N / {len(rows)}"
            table.append((name, seconds * n / len(rows), rows_gap(gram, coef, rows), how))
        base = table[0][1]
        for name, seconds, gap, how in table:
            print(
                f"| {name} | {seconds:.1f} | {seconds / base:.1f} | {gap:.1e} | {how} |", flush=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="training run folder (a CIFAR-10 ResNet-18)")
    parser.add_argument("--layer-n", type=int, nargs="*", default=[])
    parser.add_argument("--analyze-n", type=int, nargs="*", default=[])
    parser.add_argument("--grams-n", type=int, nargs="*", default=[])
    parser.add_argument("--peers-n", type=int, nargs="*", default=[])
    parser.add_argument("--gap-tol", type=float, default=1e-6, help="the peers' gap")
    parser.add_argument("--command", action="store_true", help="also time the analyze command")
    parser.add_argument(
        "--per-row-rows", type=int, default=100, help="rows celer and SPAMS solve at each N"
    )
    parser.add_argument(
        "--admm-iterations",
        type=int,
        nargs="+",
        default=[5000],
        help="ADMM's cap among the peers, one per --peers-n (the last repeated)",
    )
    args = parser.parse_args()
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}"
    )
    for n in args.layer_n:
        layer_target(args.run, n)
    for n in args.grams_n:
        grams_target(args.run, n)
    for n in args.analyze_n:
        analyze_target(args.run, n, args.command)
    if args.peers_n:
        peers_target(args.run, args.peers_n, args.gap_tol, args.per_row_rows, args.admm_iterations)


if __name__ == "__main__":
    main()
