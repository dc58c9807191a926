"""GPU suite: the solver, the sparse route, a batch, ``cka_matrix``, a ResNet-18 epoch and the
certificate's float32 check, in one markdown table, sized for under 8 minutes on one H100 or
H200.

Rows (``--sizes full``; ``--sizes tiny`` scales each down to run in about a minute on a CPU):

1. ``ssc_gram`` on one noisy union of 10 subspaces of dimension 10, N = 10,000 samples in
   d = 2N dimensions, dense path: first call (compilation and the float64 eigendecomposition
   included) and warm seconds, iterations, the certified duality gap, and the warm time in
   units of one N x N x N float32 matmul timed in the same run (its own row); then the
   same problem by the working-set solver (``WorkingSet``, rounds instead of iterations),
   and by ``ssc_sparse`` from the samples (no Gram, C sparse);
   then, at the same N, ReLU features (rank 64 in d = 512, whose rows, like a real conv
   layer's, have supports of 20 to 50 samples and take several rungs of working-set sizes)
   by the working set through ``ssc_gram`` and by ``ssc_sparse``, the rows per rung in the
   notes;
2. a batch of 16 such problems at N = 4,000 in one ``ssc_gram`` call;
3. ``cka_matrix`` over 20 (N x N) float32 graphs at N = 10,000 (7.5 GiB of input);
4. one epoch of ResNet-18 at width 1 (batch 128, augmentation on) with the trainer's jitted
   step, at JAX's default matmul precision as a user would train, on the CIFAR-10 images of
   ``--data`` (a zip or folder of class folders), or on as many synthetic images when it is
   absent (the row says which);
5. the certificate in float32: one problem at N = 4,000 solved in float32 at the suite's
   matmul precision and at JAX's default one (TF32 on NVIDIA GPUs), against a tight float64
   solve on the same device. The true gap is ``(P(C) - P*) / P*``, both objectives evaluated
   in NumPy float64 from the data; the float64 solve's own certified gap says how tight P*
   is.

Every timed call blocks on its result (``timing.py``): the first call is the warm-up, the
second the warm time. The suite runs under ``jax.default_matmul_precision(--precision)``,
"highest" by default: the solver itself asks for full float32 only in its certificate, so
without it its iterations and the matmul unit would run in TF32 on NVIDIA GPUs. Each row
names its precision. The table is rewritten to ``--out`` after every row, so a run cut short
keeps the rows it finished; a row that fails says why, and the script then exits with 1.

On a lent device (the ``run`` tool): first, on this machine, copy the training zip into
the checkout's git-ignored ``data/`` (the ``../shared`` beside the checkout does not travel),
then call ``run`` with that folder carried::

    mkdir -p data && cp ../shared/data/cifar10-train.zip data/
    run(command="bash benchmarks/gpu_suite.sh", carry=["data"], timeout_s=600)

``gpu_suite.sh`` prints nvidia-smi and JAX's devices, runs this script with ``--sizes full``
under an 8-minute timeout, and writes the table to ``$OUT/gpu_suite.md``. On a CPU::

    python benchmarks/gpu_suite.py --sizes tiny --out /tmp/gpu_suite.md
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import ssc_jax
from ssc_jax.solver.synthetic import union_of_subspaces
from timing import Timing, time_calls
from training import time_steps

TAU = 10.0
BATCH = 128
FEATURE_RANK, FEATURE_DIM = 64, 512
# The float64 reference: tolerances that float64 meets, so that P* is the optimum to ~1e-9.
REFERENCE = dict(rel_tol=1e-8, abs_tol=1e-14, gap_tol=1e-9, max_iterations=20_000)


class Sizes(NamedTuple):
    """Problem sizes of one profile."""

    solver_n: int
    features_n: int
    batch: int
    batch_n: int
    graphs: int
    cka_n: int
    width: float
    train_images: int | None  # None: every image of the training set (one epoch)
    train_steps: int | None  # None: one epoch
    check_n: int


SIZES = {
    "full": Sizes(10_000, 10_000, 16, 4_000, 20, 10_000, 1.0, None, None, 4_000),
    "tiny": Sizes(200, 200, 4, 100, 20, 200, 0.25, 256, 2, 100),
}
COLUMNS = (
    "item",
    "size",
    "precision",
    "first call (s)",
    "warm (s)",
    "/ N^3 matmul",
    "iterations",
    "certified gap",
    "true gap",
    "notes",
)


class Row(NamedTuple):
    """One line of the table; ``None`` numbers print as "-"."""

    item: str
    size: str
    precision: str
    first: float | None = None
    warm: float | None = None
    matmuls: float | None = None
    iterations: str = "-"
    gap: float | None = None
    true_gap: float | None = None
    notes: str = ""

    def cells(self) -> list[str]:
        def number(value: float | None, spec: str) -> str:
            return "-" if value is None else format(value, spec)

        return [
            self.item,
            self.size,
            self.precision,
            number(self.first, ".3g"),
            number(self.warm, ".3g"),
            number(self.matmuls, ".1f"),
            self.iterations,
            number(self.gap, ".1e"),
            number(self.true_gap, ".1e"),
            self.notes,
        ]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def precision_scope(precision: str):
    """``jax.default_matmul_precision``; "default" leaves the backend's own (TF32 on NVIDIA)."""
    return jax.default_matmul_precision(None if precision == "default" else precision)


def samples(n: int, seed: int) -> np.ndarray:
    """(n, 2n) float64 noisy union of 10 subspaces of dimension 10, as benchmarks/solver.py."""
    x, _ = union_of_subspaces(n // 10, 10, 10, 2 * n, noise=0.05, seed=seed)
    return x


def relu_features(n: int, seed: int) -> np.ndarray:
    """(n, 512) float32 ReLU features of rank 64: max(0, Z W), Z (n, 64) and W (64, 512)
    Gaussian."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, FEATURE_RANK)) @ rng.normal(size=(FEATURE_RANK, FEATURE_DIM))
    return np.maximum(z, 0).astype(np.float32)


def supports(coef) -> str:
    """The median and largest nonzeros of a row of C (dense or SciPy sparse)."""
    counts = np.diff(coef.indptr) if hasattr(coef, "indptr") else np.sum(coef != 0, axis=1)
    return f"nonzeros a row: median {np.median(counts):g}, largest {np.max(counts)}"


@jax.jit
def gram_of(x: jax.Array) -> jax.Array:
    return x @ x.T


def float32_gram(n: int, seed: int) -> jax.Array:
    """The (n, n) float32 Gram of ``samples(n, seed)``, formed on the device."""
    return gram_of(jnp.asarray(samples(n, seed), jnp.float32))


def objective(x: np.ndarray, coef: np.ndarray) -> float:
    """Eq. 2 in NumPy float64 on unit-norm rows: ||C||_1 + tau/2 ||X - C X||_F^2."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    coef = np.asarray(coef, np.float64)
    return float(np.abs(coef).sum() + TAU / 2 * np.sum((x - coef @ x) ** 2))


def matmul_row(n: int, precision: str) -> Row:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    square = jax.jit(lambda m: m @ m)
    timing = time_calls(square, a, repeat=5)
    return Row(
        "matmul (the unit)",
        f"N={n}: (N, N) @ (N, N) float32",
        precision,
        warm=timing.best,
        matmuls=1.0,
        notes=f"best of 5 after a warm-up; {2 * n**3 / timing.best / 1e12:.3g} TFLOP/s",
    )


def first_and_warm(solve: Callable[[], Any]) -> tuple[Timing, Timing]:
    """The first call of ``solve`` (compiling included), then a second, warm one."""
    return time_calls(solve, warmup=0), time_calls(solve, warmup=0)


def one_problem_row(
    what: str,
    shape: str,
    precision: str,
    solve: Callable[[], Any],
    unit: float,
    notes: Callable[[Any], str],
) -> Row:
    """The row of ``solve``, an ``ssc_gram`` call on one problem: its first and warm times,
    its iterations and gap, and ``notes(result)`` after whether it converged."""
    first, warm = first_and_warm(solve)
    result = warm.result
    return Row(
        what,
        shape,
        precision,
        first=first.best,
        warm=warm.best,
        matmuls=warm.best / unit,
        iterations=str(int(result.iterations)),
        gap=float(result.duality_gap),
        notes=f"converged: {bool(result.converged)}; {notes(result)}",
    )


def solver_row(n: int, unit: float, precision: str, working_set: bool = False) -> Row:
    gram = float32_gram(n, seed=0)
    solver = ssc_jax.WorkingSet(tau=TAU) if working_set else ssc_jax.ADMM(tau=TAU)
    return one_problem_row(
        f"`ssc_gram`, {'working set' if working_set else 'ADMM'}, one problem",
        f"N={n}, d={2 * n}, dense",
        precision,
        lambda: ssc_jax.ssc_gram(gram, solver=solver, low_rank=False),
        unit,
        lambda result: (
            "rounds, no factorisation" if working_set else "float64 eigendecomposition included"
        ),
    )


def sparse_row(x: np.ndarray, what: str, unit: float, precision: str) -> Row:
    """``ssc_sparse`` on the samples ``x`` (n, d): its rounds, the rows each solved at each
    working-set size, and the float64 finish where one ran."""
    n, d = x.shape
    solve = lambda: ssc_jax.ssc_sparse(x, tau=TAU, progress=False)
    first, warm = first_and_warm(solve)
    result = warm.result
    rungs = "; ".join(
        f"round {i}: {record.rows_per_size}" for i, record in enumerate(result.history[1:], 1)
    )
    finish = "none" if result.finish_seconds is None else f"{result.finish_seconds:.3g} s"
    return Row(
        f"`ssc_sparse`, {what}",
        f"N={n}, d={d}, from X",
        precision,
        first=first.best,
        warm=warm.best,
        matmuls=warm.best / unit,
        iterations=str(result.rounds),
        gap=result.duality_gap,
        notes=f"converged: {result.converged}; float64 finish: {finish}; rows per "
        f"working-set size: {rungs}; {supports(result.coef)}",
    )


def features_row(n: int, unit: float, precision: str) -> Row:
    """The working set through ``ssc_gram`` on ReLU features, rows at several rungs."""
    gram = gram_of(jnp.asarray(relu_features(n, seed=0)))
    return one_problem_row(
        "`ssc_gram`, working set, ReLU features",
        f"N={n}, d={FEATURE_DIM}, rank {FEATURE_RANK}, Gram",
        precision,
        lambda: ssc_jax.ssc_gram(gram, solver=ssc_jax.WorkingSet(tau=TAU)),
        unit,
        lambda result: supports(np.asarray(result.coef)),
    )


def batch_row(batch: int, n: int, unit: float, precision: str) -> Row:
    stack = jnp.stack([float32_gram(n, seed=seed) for seed in range(batch)])
    solve = lambda: ssc_jax.ssc_gram(stack, solver=ssc_jax.ADMM(), tau=TAU, low_rank=False)
    first, warm = first_and_warm(solve)
    result = warm.result
    iterations = np.asarray(result.iterations)
    converged = int(np.sum(np.asarray(result.converged)))
    return Row(
        f"`ssc_gram`, a batch of {batch} in one call",
        f"N={n}, d={2 * n}, dense",
        precision,
        first=first.best,
        warm=warm.best,
        matmuls=warm.best / unit,
        iterations=f"{iterations.min()}-{iterations.max()}",
        gap=float(np.max(np.asarray(result.duality_gap))),
        notes=f"{converged} of {batch} converged; gap: the largest in the batch",
    )


@functools.partial(jax.jit, static_argnames=("count", "n"))
def random_graphs(key: jax.Array, count: int, n: int) -> jax.Array:
    """(count, n, n) symmetric non-negative graphs, graph i mixing a shared part with its own
    noise in the ratio (count - i - 1) : (i + 1), so that their CKAs spread out."""

    def graph(i):
        weight = (i + 1) / count
        a = (1 - weight) * jax.random.uniform(key, (n, n))
        a += weight * jax.random.uniform(jax.random.fold_in(key, i + 1), (n, n))
        return a + a.T

    return jax.lax.map(graph, jnp.arange(count))


def cka_row(count: int, n: int, unit: float, precision: str) -> Row:
    graphs = random_graphs(jax.random.key(0), count=count, n=n)
    first = time_calls(ssc_jax.cka_matrix, graphs, warmup=0)
    warm = time_calls(ssc_jax.cka_matrix, graphs, warmup=0)
    matrix = np.asarray(warm.result, np.float64)
    diagonal_error = float(np.max(np.abs(np.diag(matrix) - 1)))
    gib = graphs.size * graphs.dtype.itemsize / 2**30
    return Row(
        f"`cka_matrix` over {count} graphs",
        f"{count} x (N={n}, N) float32, {gib:.2g} GiB",
        precision,
        first=first.best,
        warm=warm.best,
        matmuls=warm.best / unit,
        notes=f"CKA {matrix.min():.3f} to {matrix.max():.3f}; max abs(diag - 1) "
        f"{diagonal_error:.1e}",
    )


def training_images(data: str | None, count: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Images uint8 (n, 32, 32, 3), labels, and where they came from.

    ``count`` images drawn at random (seeded), or all of them; without ``data``, as many
    synthetic images as CIFAR-10's training set has (or ``count``).
    """
    rng = np.random.default_rng(0)
    if data is not None and Path(data).exists():
        start = time.perf_counter()
        images, labels, _ = ssc_jax.load_dataset(data, "train")
        source = f"real images from {data} (decoded in {time.perf_counter() - start:.0f} s)"
        if count is not None and count < len(images):
            keep = rng.choice(len(images), count, replace=False)
            images, labels = images[keep], labels[keep]
    else:
        size = 50_000 if count is None else count
        images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size).astype(np.int32)
        source = f"SYNTHETIC images: no data at --data {data}"
    return images, labels, source


def training_row(sizes: Sizes, data: str | None, precision: str) -> Row:
    images, labels, source = training_images(data, sizes.train_images)
    batch = min(BATCH, len(images))
    steps = sizes.train_steps or len(images) // batch
    config = ssc_jax.TrainConfig(model="resnet18", width=sizes.width, batch_size=batch)
    start = time.perf_counter()
    per_step = time_steps(config, images, labels, steps)
    total = time.perf_counter() - start
    what = "one epoch" if sizes.train_steps is None else f"{steps} steps"
    return Row(
        f"ResNet-18 training, {what}",
        f"{len(images)} images, batch {batch}, width {sizes.width:g}",
        precision,
        first=total - per_step * steps,
        warm=per_step * steps,
        iterations=str(steps),
        notes=f"{batch / per_step:.0f} images/s; first call: model, optimiser and the "
        f"compiling step; {source}",
    )


def check_rows(n: int, precisions: tuple[str, ...]) -> list[Row]:
    """The float32 certificate at each matmul precision against a tight float64 solve."""
    x = samples(n, seed=1)
    with jax.enable_x64(True):
        gram64 = gram_of(jnp.asarray(x))
        start = time.perf_counter()
        reference = jax.block_until_ready(
            ssc_jax.ssc_gram(gram64, solver=ssc_jax.ADMM(), tau=TAU, low_rank=False, **REFERENCE)
        )
        reference_s = time.perf_counter() - start
        gram32 = gram64.astype(jnp.float32)
    optimum = objective(x, reference.coef)
    about = (
        f"float64 reference: {int(reference.iterations)} iterations in {reference_s:.3g} s, "
        f"converged {bool(reference.converged)}, certified gap "
        f"{float(reference.duality_gap):.1e}"
    )
    rows = []
    for precision in precisions:
        with precision_scope(precision):
            solve = lambda: ssc_jax.ssc_gram(gram32, solver=ssc_jax.ADMM(), tau=TAU, low_rank=False)
            first, warm = first_and_warm(solve)
        result = warm.result
        gap, true_gap = float(result.duality_gap), (objective(x, result.coef) - optimum) / optimum
        rows.append(
            Row(
                "certificate, float32 vs float64",
                f"N={n}, d={2 * n}, dense",
                precision,
                first=first.best,
                warm=warm.best,
                iterations=str(int(result.iterations)),
                gap=gap,
                true_gap=true_gap,
                notes=f"true gap <= certified: {true_gap <= gap}; {about}",
            )
        )
    return rows


def header(args: argparse.Namespace) -> str:
    device = jax.devices()[0]
    today = datetime.date.today().isoformat()
    return (
        f"GPU suite, {today}, `--sizes {args.sizes}`: {device.device_kind} ({device.platform}), "
        f"{jax.device_count()} device(s), jax {jax.__version__}; matmul precision "
        f"'{args.precision}' unless a row says otherwise (JAX's 'default' is TF32 on NVIDIA "
        f"GPUs); tau = {TAU:g}.\n\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--data", help="CIFAR-10 training zip or folder of class folders")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--precision", default="highest", help="jax.default_matmul_precision of the suite"
    )
    args = parser.parse_args(argv)
    sizes, precision = SIZES[args.sizes], args.precision
    rows: list[Row] = []
    failed = False

    started = time.perf_counter()

    def add(make: Callable[[], Row | list[Row]], item: str, scope: str = precision) -> None:
        nonlocal failed
        # On stderr, so that a run cut short says which row it was on.
        print(f"[{time.perf_counter() - started:.0f} s] {item} ...", file=sys.stderr, flush=True)
        try:
            with precision_scope(scope):
                made = make()
        except Exception as error:  # a failed row is reported; the suite goes on
            failed = True
            # One table cell: no pipes or newlines, and at most the head of XLA's long messages.
            message = " ".join(str(error).replace("|", "/").split())[:300]
            made = Row(item, "-", scope, notes=f"FAILED: {type(error).__name__}: {message}")
        made = made if isinstance(made, list) else [made]
        rows.extend(made)
        print("\n".join(markdown(made).splitlines()[2:]), flush=True)
        if args.out is not None:
            args.out.write_text(header(args) + markdown(rows))

    print(header(args) + markdown([]), end="", flush=True)
    units = {}
    for n in dict.fromkeys((sizes.solver_n, sizes.features_n, sizes.batch_n, sizes.cka_n)):
        add(lambda n=n: matmul_row(n, precision), "matmul (the unit)")
        units[n] = rows[-1].warm or float("nan")
    add(lambda: solver_row(sizes.solver_n, units[sizes.solver_n], precision), "`ssc_gram`")
    add(
        lambda: solver_row(sizes.solver_n, units[sizes.solver_n], precision, working_set=True),
        "`ssc_gram`, working set",
    )
    add(
        lambda: sparse_row(
            samples(sizes.solver_n, seed=0).astype(np.float32),
            "union of subspaces",
            units[sizes.solver_n],
            precision,
        ),
        "`ssc_sparse`",
    )
    features_unit = units[sizes.features_n]
    add(lambda: features_row(sizes.features_n, features_unit, precision), "ReLU features")
    add(
        lambda: sparse_row(
            relu_features(sizes.features_n, seed=0), "ReLU features", features_unit, precision
        ),
        "`ssc_sparse`, ReLU features",
    )
    add(
        lambda: batch_row(sizes.batch, sizes.batch_n, units[sizes.batch_n], precision),
        "`ssc_gram`, a batch",
    )
    add(lambda: cka_row(sizes.graphs, sizes.cka_n, units[sizes.cka_n], precision), "CKA")
    # Training runs as a user's would, at JAX's default precision.
    add(lambda: training_row(sizes, args.data, "default"), "ResNet-18 training", "default")
    precisions = tuple(dict.fromkeys((precision, "default")))
    add(lambda: check_rows(sizes.check_n, precisions), "certificate, float32 vs float64")
    print(f"[{time.perf_counter() - started:.0f} s] done", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
