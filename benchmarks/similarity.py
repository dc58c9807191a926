"""Benchmark: `cka_matrix` over L layers against a Python loop of `cka` and against its matmul.

The matmul is the single ``(L, n^2) @ (n^2, L)`` product of the flattened stack that
`cka_matrix` performs over centered blocks; the target is to stay within 2x of it. The same
product over the same row blocks, without centering, isolates the cost of centering. The four
are timed in alternating rounds, so that each ratio to the matmul is also taken within a round.
Prints a markdown table.

    python benchmarks/similarity.py --layers 36 --n 2000           # CPU
    python benchmarks/similarity.py --layers 36 --n 10000 --no-loop  # a GPU

With ``--peers``, the registry's measures of the Grams instead: the (L, L) matrix of each
(unbiased linear CKA, mutual kNN, RSA, Procrustes) against linear CKA's, in alternating
rounds, on the Grams of L ReLU layers of width ``--width``; then one pair of layers at
``--pair-n`` inputs (10,000 by default), with each measure's peak of NumPy allocations::

    python benchmarks/similarity.py --peers --layers 8 --n 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssc_jax import cka, cka_matrix
from ssc_jax.pipeline.analysis.measures import (
    RowMoments,
    cross_similarity_matrices,
    select_measures,
)
from ssc_jax.similarity.hsic import block_rows
from timing import alternate, ratio_range, run_blocking, time_calls


def blocked_matmul(Ks: jax.Array, rows: int) -> jax.Array:
    """The same Gram as the single matmul, over the row blocks `cka_matrix` uses, uncentered."""
    L, n, _ = Ks.shape

    def add_block(i, acc):
        start = jnp.minimum(i * rows, n - rows)
        block = lax.dynamic_slice_in_dim(Ks, start, rows, axis=1).reshape(L, rows * n)
        return acc + jnp.matmul(block, block.T, precision=lax.Precision.HIGHEST)

    return lax.fori_loop(0, -(-n // rows), add_block, jnp.zeros((L, L), Ks.dtype))


PEER_MEASURES = ("linear_cka", "linear_cka_unbiased", "mutual_knn", "rsa", "procrustes")


def relu_layers(n: int, layers: int, width: int, seed: int = 0) -> dict:
    """The registry's inputs for ``layers`` ReLU layers of ``width`` features on n inputs:
    float32 Grams (L, n, n) and their ``RowMoments``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype(np.float32)
    grams, sums = np.empty((layers, n, n), np.float32), np.empty((layers, n))
    for layer in range(layers):
        x = np.maximum(x @ rng.normal(size=(width, width)).astype(np.float32) / np.sqrt(width), 0)
        grams[layer], sums[layer] = x @ x.T, x.sum(axis=1, dtype=np.float64)
    return {"grams": grams, "moments": RowMoments.given(sums, [width] * layers)}


def peers(args) -> None:
    measures = select_measures(PEER_MEASURES)
    inputs = relu_layers(args.n, args.layers, args.width)
    calls = {m.name: (lambda m=m: cross_similarity_matrices([m], inputs, inputs)) for m in measures}
    rounds = alternate(calls, rounds=args.repeats, warm_up=["linear_cka"])
    print(
        f"L = {args.layers} ReLU layers of width {args.width}, n = {args.n}, float32 Grams; "
        f"the (L, L) matrix of each measure, best and median of {args.repeats} alternating "
        "rounds"
    )
    print()
    print("| measure | best (s) | median (s) | / linear CKA | per round |")
    print("| --- | ---: | ---: | ---: | ---: |")
    base = rounds.best("linear_cka")
    for name in calls:
        per_round = (
            "-" if name == "linear_cka" else ratio_range(rounds.ratios(name, "linear_cka"), ".1f")
        )
        print(
            f"| {name} | {rounds.best(name):.2f} | {rounds.median(name):.2f} | "
            f"{rounds.best(name) / base:.1f} | {per_round} |"
        )
    print()
    pair = relu_layers(args.pair_n, 2, args.width)
    a = {
        "grams": pair["grams"][:1],
        "moments": RowMoments.given(pair["moments"].values[0][:1], [args.width]),
    }
    b = {
        "grams": pair["grams"][1:],
        "moments": RowMoments.given(pair["moments"].values[0][1:], [args.width]),
    }
    gram_mib = args.pair_n**2 * 4 / 2**20
    print(f"One pair of layers at n = {args.pair_n} (each float32 Gram {gram_mib:.0f} MiB):")
    print()
    print("| measure | time (s) | peak NumPy allocations (MiB) | / one Gram |")
    print("| --- | ---: | ---: | ---: |")
    for m in measures[1:]:
        tracemalloc.start()
        started = time.perf_counter()
        cross_similarity_matrices([m], a, b)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"| {m.name} | {seconds:.1f} | {peak:.0f} | {peak / gram_mib:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--peers", action="store_true", help="the registry's peer measures")
    parser.add_argument("--width", type=int, default=256, help="--peers: features per layer")
    parser.add_argument("--pair-n", type=int, default=10000, help="--peers: n of the one pair")
    parser.add_argument("--chunk-size", type=int, default=None, help="rows per block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-loop", action="store_true", help="skip the Python double loop")
    args = parser.parse_args()
    if args.peers:
        peers(args)
        return
    L, n = args.layers, args.n

    Ks = jax.random.uniform(jax.random.key(0), (L, n, n), jnp.float32)
    flat = Ks.reshape(L, n * n)
    matmul = jax.jit(lambda F: jnp.matmul(F, F.T, precision=lax.Precision.HIGHEST))
    rows = block_rows(n, L, Ks.dtype.itemsize, args.chunk_size)

    blocked = jax.jit(blocked_matmul, static_argnums=1)
    calls = {
        "matmul (L, n^2) @ (n^2, L), one call": lambda: matmul(flat),
        f"the same matmul over {rows}-row blocks, no centering": lambda: blocked(Ks, rows),
        "`cka_matrix` (biased)": lambda: cka_matrix(Ks, chunk_size=args.chunk_size),
        "`cka_matrix(unbiased=True)`": lambda: cka_matrix(
            Ks, unbiased=True, chunk_size=args.chunk_size
        ),
    }
    rounds = alternate(calls, rounds=args.repeats)
    baseline = next(iter(calls))
    table = [
        (
            name,
            rounds.best(name),
            rounds.median(name),
            "-" if name == baseline else ratio_range(rounds.ratios(name, baseline), ".2f"),
        )
        for name in calls
    ]
    if not args.no_loop:
        pairs = [(i, j) for i in range(L) for j in range(i, L)]

        def loop() -> None:
            for i, j in pairs:
                run_blocking(cka, Ks[i], Ks[j])

        run_blocking(cka, Ks[0], Ks[1])
        seconds = time_calls(loop, warmup=0).best
        loop_name = f"Python loop of `cka` over the {len(pairs)} pairs i <= j"
        table.append((loop_name, seconds, seconds, "-"))

    device = jax.devices()[0]
    print(
        f"L = {L} layers, n = {n}, float32, {device.platform} ({device.device_kind}); "
        f"after a warm-up, the best and median of {args.repeats} alternating rounds "
        "(the loop: one pass)"
    )
    print()
    print("| method | best (s) | median (s) | / matmul | / matmul per round |")
    print("| --- | ---: | ---: | ---: | ---: |")
    t_matmul = rounds.best(baseline)
    for name, best, median, per_round in table:
        print(f"| {name} | {best:.3f} | {median:.3f} | {best / t_matmul:.2f} | {per_round} |")
    print()
    mib = 2**20
    print(
        f"Blocks of {rows} rows ({-(-n // rows)} blocks): centered blocks take at most "
        f"L * rows * n * 4 B = {L * rows * n * 4 / mib:.0f} MiB beyond the "
        f"{L * n * n * 4 / mib:.0f} MiB input stack."
    )


if __name__ == "__main__":
    main()
