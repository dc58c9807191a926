"""The solvers on real activations: one layer of a trained CIFAR-10 network at several N.

Synthetic unions of subspaces flatter an SSC solver; this times ADMM and the working-set
solver on the Gram of a real layer (default: the last conv layer, the one Table 1 reads) of a
checkpoint trained by ``python -m ssc_jax.run train``, on N stratified test images, in units
of one N x N x N float32 matmul timed in the same run (so the figure travels between
machines)::

    python benchmarks/real_activations.py RUN --n 2000 5000 --gap-tol 2e-3 1e-6

prints, per N, solver and gap tolerance: the layer's feature dimension d, the iterations
(ADMM) or rounds (working set), the certified relative duality gap, the coefficients'
relative distance to the exact solution (float64, up to ``--reference-max-n``), the solve's
seconds and its ratio to the matmul, and Table 1 (SSC labels against the network's
predictions) on the layer's graph.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax import (
    ADMM,
    WorkingSet,
    activation_grams,
    affinity,
    capture_activations,
    label_agreement,
    layer_names,
    load_checkpoint,
    predict,
    ssc_gram,
)
from ssc_jax.pipeline.analysis.config import AnalysisSet
from ssc_jax.pipeline.analysis.inputs import held_out_data, load_inputs, preprocess, run_info
from timing import time_calls


def matmul_seconds(n: int) -> float:
    """Best of three N x N x N float32 matmuls on JAX's default device."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    return time_calls(jax.jit(jnp.matmul), a, a, repeat=3).best


class LayerProblem(NamedTuple):
    """One layer's (n, n) Gram on n stratified test inputs, its feature dimension d, the
    inputs' labels and the network's predictions on them."""

    gram: np.ndarray
    width: int
    labels: np.ndarray
    predictions: np.ndarray


def layer_problem(run: str, epoch: int | None, layer: str, n: int) -> LayerProblem:
    model, info = load_checkpoint(run, epoch)
    inputs = load_inputs(AnalysisSet(n=n), held_out_data(run_info(run)))
    images = preprocess(inputs.images, info)
    width = int(np.prod(capture_activations(model, images[:2], [layer])[layer].shape[1:]))
    _, grams = activation_grams(model, images, layers=[layer])
    predictions = np.asarray(predict(model, images)).argmax(axis=1)
    return LayerProblem(np.asarray(grams[0]), width, inputs.labels, predictions)


SOLVERS = {"admm": ADMM, "working-set": WorkingSet}


def exact_reference(gram: np.ndarray) -> np.ndarray:
    """The float64 working-set solution at a certified relative gap of 1e-10 (exact: it
    matches scikit-learn's per-row Lasso to 1e-7 in tests/test_working_set.py)."""
    with jax.enable_x64(True):
        solver = WorkingSet(gap_tol=1e-10, max_rounds=60)
        return np.asarray(ssc_gram(gram.astype(np.float64), solver=solver, progress=False).coef)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="training run folder")
    parser.add_argument("--epoch", type=int, help="checkpoint epoch (default: the last)")
    parser.add_argument("--layer", help="layer name (default: the last conv layer)")
    parser.add_argument("--n", type=int, nargs="+", default=[2000])
    parser.add_argument("--solvers", nargs="+", choices=sorted(SOLVERS), default=sorted(SOLVERS))
    parser.add_argument("--gap-tol", type=float, nargs="+", default=[2e-3])
    parser.add_argument("--rank", action="store_true", help="ADMM: pass rank=d when d <= n/2")
    parser.add_argument(
        "--reference-max-n",
        type=int,
        default=2000,
        help="distance to the float64 exact solution up to this N",
    )
    args = parser.parse_args()
    model, _ = load_checkpoint(args.run, args.epoch)
    layer = args.layer or layer_names(model, "conv")[-1]
    print(f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s); layer {layer}")
    header = (
        "| N | d | solver | gap_tol | iterations / rounds | certified gap | distance to exact "
        "| solve s | matmul s | solve / matmul | SSC label acc | network acc | agreement |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for n in args.n:
        problem = layer_problem(args.run, args.epoch, layer, n)
        gram, d = problem.gram, problem.width
        exact = exact_reference(gram) if n <= args.reference_max_n else None
        unit = matmul_seconds(n)
        for name in args.solvers:
            for gap_tol in args.gap_tol:
                settings = {"rank": d} if args.rank and name == "admm" and d <= n // 2 else {}
                solver = SOLVERS[name](gap_tol=gap_tol)
                start = time.perf_counter()
                result = jax.block_until_ready(
                    ssc_gram(gram, solver=solver, progress=False, **settings)
                )
                seconds = time.perf_counter() - start
                coef = np.asarray(result.coef)
                distance = (
                    "-"
                    if exact is None
                    else f"{np.linalg.norm(coef - exact) / np.linalg.norm(exact):.1e}"
                )
                table1 = label_agreement(affinity(coef), problem.labels, problem.predictions)
                print(
                    f"| {n} | {d} | {name} | {gap_tol:g} | {int(result.iterations)} | "
                    f"{float(result.duality_gap):.1e} | {distance} | {seconds:.1f} | {unit:.3f} "
                    f"| {seconds / unit:.0f} | {float(table1.ssc_label_accuracy):.3f} | "
                    f"{float(table1.network_accuracy):.3f} | {float(table1.agreement):.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
