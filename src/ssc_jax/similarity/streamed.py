"""CKA between sequences of n x n matrices that are never stacked in memory together.

`streamed_cka_matrix` gives the same (biased) CKA matrix as `ssc_jax.cka_matrix`, in
float64 on the host, for two kinds of input:

- SciPy sparse matrices (SSC affinities): with row sums r, column sums c and totals s,
  ``<HKH, HLH>_F = sum(K * L) - (r_K . r_L + c_K . c_L) / n + s_K s_L / n^2``, all
  O(nnz); the elementwise sums of every pair are one sparse product of the flattened
  matrices. Nothing n x n is ever made dense.
- Dense array-likes, such as the layers of an ``np.memmap`` on disk (activation Grams):
  read in blocks of rows, each block centered (shifted by one of its matrix's entries,
  as in `ssc_jax.similarity.hsic`) and multiplied into the running (L1, L2) sums.

The unbiased estimator is not offered here; `ssc_jax.cka_matrix` has it for stacks that
fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ssc_jax.similarity.hsic import ZERO_ULPS, check_samples

# Bytes of the float64 centered row blocks held at once by the dense path.
DEFAULT_BLOCK_BYTES = 2**28
_ZERO = (ZERO_ULPS * np.finfo(np.float64).eps) ** 2


def streamed_cka_matrix(
    Ks: Sequence, Ls: Sequence | None = None, *, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> np.ndarray:
    """Biased CKA between every pair of a sequence, or across two, of n x n matrices.

    Peak memory besides the inputs: sparse inputs, O(total nnz) (the flattened copies and
    the pairwise products); dense inputs, ``(L1 + L2) * b * n`` float64 centered entries
    plus ``2 * b * n`` for one block being read and O((L1 + L2) * n) column statistics,
    with ``b = max(1, block_bytes // (8 * (L1 + L2) * n))`` rows per block (a 2**28-byte
    default: b = 167 rows at n = 10,000 and L1 + L2 = 20). Each dense input is read twice.

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
    """As `_sparse_hsic` for dense array-likes, streamed in blocks of rows."""
    mats = [m for group in groups for m in group]
    sizes = [len(group) for group in groups]
    stats = [_column_stats(m, n, block_bytes) for m in mats]
    b = max(1, min(n, block_bytes // (8 * len(mats) * n)))
    products = np.zeros((len(mats), len(mats)) if len(groups) == 1 else (sizes[0], sizes[1]))
    squares = np.zeros(len(mats))
    row_energy = np.zeros(len(mats))
    block = np.empty((len(mats), b * n))
    for start in range(0, n, b):
        stop = min(n, start + b)
        size = (stop - start) * n
        for i, (m, (shift, col, grand)) in enumerate(zip(mats, stats, strict=True)):
            rows = np.asarray(m[start:stop], dtype=np.float64) - shift
            row = rows.mean(axis=1)
            row_energy[i] += np.sum(row**2)
            block[i, :size] = (rows - row[:, None] - col[None, :] + grand).ravel()
        live = block[:, :size]
        if len(groups) == 1:
            products += live @ live.T
        else:
            products += live[: sizes[0]] @ live[sizes[0] :].T
            squares += np.einsum("ij,ij->i", live, live)
    if len(groups) == 1:
        squares = np.diagonal(products).copy()
    removed = np.array(
        [
            n * n * g**2 + n * (r + np.sum(c**2))
            for (_, c, g), r in zip(stats, row_energy, strict=True)
        ]
    )
    live = squares > _ZERO * removed
    bounds = [slice(0, sizes[0]), slice(sizes[0], None)] if len(groups) == 2 else [slice(None)]
    return _masked(products, [squares[s] for s in bounds], [live[s] for s in bounds])


def _column_stats(m, n: int, block_bytes: int) -> tuple[float, np.ndarray, float]:
    """(shift, column means of ``m - shift`` (n,), their mean) of a dense n x n matrix,
    read in row blocks of about ``block_bytes``; raise on NaN or Inf."""
    shift = float(m[0, 1])
    col = np.zeros(n)
    b = max(1, min(n, block_bytes // (8 * n)))
    for start in range(0, n, b):
        col += np.sum(np.asarray(m[start : start + b], dtype=np.float64) - shift, axis=0)
    if not np.all(np.isfinite(col)):
        raise ValueError("the matrices must be finite; got NaN or Inf")
    col /= n
    return shift, col, float(col.mean())


def _masked(cross: np.ndarray, selfs: list, live: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cross and self alignments with the rows and columns of zero-variance matrices 0."""
    selfs = [np.where(ok, s, 0.0) for s, ok in zip(selfs, live, strict=True)]
    cross = np.where(live[0][:, None] & live[-1][None, :], cross, 0.0)
    return cross, selfs
