"""Memory benchmark: peak RSS of the analysis step (``graph_summary``) on L layers at n.

Each path runs in a fresh process on the same synthetic data: L sparse SSC-like
coefficient matrices (``--k`` nonzeros per row) and L rank-``--rank`` activation Grams.

- ``dense``: the earlier path, (L, n, n) float32 stacks of the affinities and Grams in
  memory, modularity and both CKA matrices with ``cka_matrix``;
- ``sparse``: the present path, per-layer CSR affinities and the Grams in an ``np.memmap``
  in a temporary folder (removed after), through ``graph_summary``.

The process's peak RSS (``ru_maxrss``) is reported beside its RSS after the imports and
the data, and the largest difference between the two paths' results.

    python benchmarks/memory.py                  # n = 3,000, L = 20
    python benchmarks/memory.py --n 1000 --layers 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def peak_mib() -> float:
    """This process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, layers: int, k: int, rank: int, grams: np.ndarray, seed: int = 0):
    """L sparse coefficient matrices (n, n) with k entries a row, and Grams written into
    ``grams`` (L, n, n) one layer at a time; returns the coefficients and labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    coef = []
    for layer in range(layers):
        cols = rng.integers(0, n - 1, (n, k))
        cols += cols >= np.arange(n)[:, None]  # no diagonal entries
        values = rng.standard_normal((n, k)).astype(np.float32)
        rows = np.repeat(np.arange(n), k)
        coef.append(sp.csr_array((values.ravel(), (rows, cols.ravel())), shape=(n, n)))
        x = rng.standard_normal((n, rank)).astype(np.float32) + layer
        grams[layer] = x @ x.T
    return coef, labels


def run_path(path: str, n: int, layers: int, k: int, rank: int) -> dict:
    """One path's peak RSS and results, in this process."""
    from ssc_jax.graphs.communities import modularity
    from ssc_jax.pipeline.analysis.summary import graph_summary
    from ssc_jax.similarity.cka import cka_matrix

    with tempfile.TemporaryDirectory() as folder:
        if path == "dense":
            grams = np.empty((layers, n, n), np.float32)
        else:
            grams = np.lib.format.open_memmap(
                Path(folder) / "grams.npy", mode="w+", dtype=np.float32, shape=(layers, n, n)
            )
        coef, labels = synthetic(n, layers, k, rank, grams)
        A = [sp.csr_array(abs(c) + abs(c).T) for c in coef]
        before = peak_mib()
        start = time.perf_counter()
        if path == "dense":
            stack = np.stack([a.toarray() for a in A])
            results = (
                np.asarray(modularity(stack, labels, n_classes=10)),
                np.asarray(cka_matrix(stack)),
                np.asarray(cka_matrix(grams)),
            )
        else:
            results = graph_summary(A, grams, labels, 10)
        seconds = time.perf_counter() - start
        del grams
    return {
        "path": path,
        "rss_before_mib": round(before),
        "peak_rss_mib": round(peak_mib()),
        "seconds": round(seconds, 1),
        "results": [np.asarray(r, np.float64).tolist() for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--k", type=int, default=10, help="nonzeros per coefficient row")
    parser.add_argument("--rank", type=int, default=64, help="feature dimension of a Gram")
    parser.add_argument("--path", choices=["dense", "sparse"], help="run one path, in-process")
    args = parser.parse_args()
    sizes = (args.n, args.layers, args.k, args.rank)
    if args.path:
        print(json.dumps(run_path(args.path, *sizes)))
        return
    runs = {}
    for path in ("dense", "sparse"):
        flags = [f"--n={args.n}", f"--layers={args.layers}", f"--k={args.k}", f"--rank={args.rank}"]
        out = subprocess.run(
            [sys.executable, __file__, f"--path={path}", *flags],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs[path] = json.loads(out.strip().splitlines()[-1])
    stack_mib = args.layers * args.n**2 * 4 / 2**20
    print(f"n = {args.n}, L = {args.layers}: one (L, n, n) float32 stack is {stack_mib:.0f} MiB")
    for path, run in runs.items():
        print(
            f"{path:>6}: peak RSS {run['peak_rss_mib']} MiB (after imports and data "
            f"{run['rss_before_mib']} MiB), analysis {run['seconds']} s"
        )
    names = ("modularity", "SSC-CKA", "linear CKA")
    for name, a, b in zip(names, runs["dense"]["results"], runs["sparse"]["results"], strict=True):
        print(f"largest |dense - sparse| {name}: {np.max(np.abs(np.subtract(a, b))):.1e}")


if __name__ == "__main__":
    main()
