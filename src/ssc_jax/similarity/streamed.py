"""CKA between sequences of n x n matrices that are never stacked in memory together.

`streamed_cka_matrix` gives the same (biased) CKA matrix as `ssc_jax.cka_matrix`, in
float64 on the host, for two kinds of input:

- SciPy sparse matrices (SSC affinities): with row sums r, column sums c and totals s,
  ``<HKH, HLH>_F = sum(K * L) - (r_K . r_L + c_K . c_L) / n + s_K s_L / n^2``, all
  O(nnz); the elementwise sums of every pair are one sparse product of the flattened
  matrices. Nothing n x n is ever made dense.
- Dense array-likes, such as the layers of an ``np.memmap`` on disk (activation Grams): the
  same sums, each matrix read once in blocks of rows, shifted by one of its entries (as in
  `ssc_jax.similarity.hsic`) into float64, the blocks of all matrices multiplied into the
  running sums of their elementwise products.

The unbiased estimator is not offered here; `ssc_jax.cka_matrix` has it for stacks that
fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ssc_jax.similarity.hsic import ZERO_ULPS, check_samples

# Bytes of the float64 row blocks held at once by the dense path.
DEFAULT_BLOCK_BYTES = 2**28
_ZERO = (ZERO_ULPS * np.finfo(np.float64).eps) ** 2


def streamed_cka_matrix(
    Ks: Sequence, Ls: Sequence | None = None, *, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> np.ndarray:
    """Biased CKA between every pair of a sequence, or across two, of n x n matrices.

    Peak memory besides the inputs: sparse inputs, O(total nnz) (the flattened copies and
    the pairwise products); dense inputs, ``(L1 + L2) * b * n`` float64 shifted entries plus
    ``b * n`` for one block being read and O((L1 + L2) * n) row and column sums, with
    ``b = max(1, block_bytes // (8 * (L1 + L2) * n))`` rows per block (a 2**28-byte
    default: b = 167 rows at n = 10,000 and L1 + L2 = 20). Each dense input is read once.

    Args:
      Ks: L1 matrices (n, n): all ``scipy.sparse`` matrices or arrays, or all dense
        array-likes (an (L1, n, n) array or memmap counts as a sequence of its layers).
      Ls: L2 matrices of the same kind and n; ``None`` compares Ks with itself.
      block_bytes: the budget of the dense path's centered blocks.

    Returns:
      (L1, L2) float64 CKA; symmetric when ``Ls`` is None. 0 where either matrix has no
      variance left after centering (up to float64 rounding).

    Raises:
      ValueError: for non-square matrices, different n, mixed sparse and dense inputs,
        too few samples, NaN or Inf entries.
    """
    groups = [_matrices("Ks", Ks)] + ([] if Ls is None else [_matrices("Ls", Ls)])
    sparse = [sp.issparse(group[0]) for group in groups]
    if len(set(sparse)) != 1:
        raise ValueError("Ks and Ls must be both sparse or both dense")
    ns = {m.shape[0] for group in groups for m in group}
    if len(ns) != 1:
        raise ValueError(f"all matrices must be n x n for one n; got n in {sorted(ns)}")
    n = ns.pop()
    check_samples(n, unbiased=False)
    if sparse[0]:
        cross, selfs = _sparse_hsic(groups, n)
    else:
        cross, selfs = _dense_hsic(groups, n, block_bytes)
    den = np.sqrt(selfs[0])[:, None] * np.sqrt(selfs[-1])[None, :]
    return np.where(den > 0, cross / np.where(den > 0, den, 1), 0.0)


def _matrices(name: str, matrices: Sequence) -> list:
    """``matrices`` as a non-empty list of square 2-D matrices; raise otherwise."""
    out = list(matrices)
    if not out:
        raise ValueError(f"{name} is empty")
    for i, m in enumerate(out):
        if len(m.shape) != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"{name}[{i}] must be an (n, n) matrix; got shape {m.shape}")
    return out


def _sparse_hsic(groups: list[list], n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(L1, L2) centered alignments and each group's (L,) self-alignments, zero-variance
    ones set to 0; sparse inputs."""
    flats, rows, cols, totals, squares = [], [], [], [], []
    for group in groups:
        mats = [sp.csr_array(m, dtype=np.float64) for m in group]
        for m in mats:
            if not np.all(np.isfinite(m.data)):
                raise ValueError("the matrices must be finite; got NaN or Inf")
        flat = sp.vstack([m.reshape((1, n * n)) for m in mats], format="csr")
        flats.append(flat)
        rows.append(np.stack([m.sum(axis=1) for m in mats]))
        cols.append(np.stack([m.sum(axis=0) for m in mats]))
        totals.append(rows[-1].sum(axis=1))
        squares.append(np.asarray(flat.multiply(flat).sum(axis=1)).ravel())

    def aligned(a: int, b: int) -> np.ndarray:
        products = (flats[a] @ flats[b].T).toarray()
        sums = rows[a] @ rows[b].T + cols[a] @ cols[b].T
        return products - sums / n + np.outer(totals[a], totals[b]) / n**2

    last = len(groups) - 1
    cross = aligned(0, last)
    selfs = (
        [np.diagonal(cross).copy()] if last == 0 else [np.diagonal(aligned(g, g)) for g in (0, 1)]
    )
    live = [s > _ZERO * q for s, q in zip(selfs, squares, strict=True)]
    return _masked(cross, selfs, live)


def _dense_hsic(groups: list[list], n: int, block_bytes: int) -> tuple[np.ndarray, list]:
    """As `_sparse_hsic` for dense array-likes, by the same sums, read once in blocks of
    rows: each matrix is shifted by one of its entries (centering removes a constant, as in
    `ssc_jax.similarity.hsic`) into a float64 block, whose row and column sums and products
    with the others' blocks are added up."""
    mats = [m for group in groups for m in group]
    count = len(mats)
    shifts = [float(m[0, 1]) for m in mats]
    b = max(1, min(n, block_bytes // (8 * count * n)))
    products = np.zeros((count, count))
    rows, cols = np.zeros((count, n)), np.zeros((count, n))
    block = np.empty((count, b * n))
    for start in range(0, n, b):
        stop = min(n, start + b)
        size = (stop - start) * n
        for i, (m, shift) in enumerate(zip(mats, shifts, strict=True)):
            part = block[i, :size].reshape(stop - start, n)
            np.subtract(m[start:stop], shift, out=part, dtype=np.float64)
            rows[i, start:stop] = part.sum(axis=1)
            cols[i] += part.sum(axis=0)
        live = block[:, :size]
        products += live @ live.T
    if not np.all(np.isfinite(rows)):
        raise ValueError("the matrices must be finite; got NaN or Inf")
    totals = rows.sum(axis=1)
    aligned = products - (rows @ rows.T + cols @ cols.T) / n + np.outer(totals, totals) / n**2
    bounds = [slice(0, len(group)) for group in groups]
    if len(groups) == 2:
        bounds[1] = slice(len(groups[0]), count)
    cross = aligned[bounds[0], bounds[-1]]
    selfs = [np.diagonal(aligned)[s] for s in bounds]
    energy = np.diagonal(products)
    live = [s > _ZERO * energy[where] for s, where in zip(selfs, bounds, strict=True)]
    return _masked(cross, selfs, live)


def _masked(cross: np.ndarray, selfs: list, live: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cross and self alignments with the rows and columns of zero-variance matrices 0."""
    selfs = [np.where(ok, s, 0.0) for s, ok in zip(selfs, live, strict=True)]
    cross = np.where(live[0][:, None] & live[-1][None, :], cross, 0.0)
    return cross, selfs
