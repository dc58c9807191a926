"""HSIC between stacks of n x n matrices: the statistic inside CKA (paper Eq. 3-4).

Biased (Eq. 4), with H = I - 11^T / n::

    HSIC(K, L) = <HKH, HLH>_F / (n - 1)^2

Unbiased (Song et al. 2012), through U-centering (Szekely & Rizzo 2014)::

    HSIC_u(K, L) = <U(K), U(L)>_F / (n (n - 3)),   n >= 4
    U(K)_ij = K~_ij - r_i / (n-2) - c_j / (n-2) + s / ((n-1)(n-2))  for i != j,  U(K)_ii = 0

where K~ is K with a zero diagonal and r, c, s are its row sums, column sums and total. For
symmetric matrices (kernels, SSC affinities) ``<HKH, HLH>_F = tr(KHLH)``, which is Eq. 4; for
other square matrices it is the Frobenius alignment of the centered matrices.

Layout: the HSICs between every pair of two stacks are ONE matmul of the flattened centered
matrices, ``(L1, n^2) @ (n^2, L2)``, taken over blocks of ``chunk_size`` rows of the n x n
axis. Column means are one pass over the stacks; each block is then centered on the fly (its
row means come from the block itself), so at most ``(L1 + L2) * chunk_size * n`` centered
entries (``L1 * chunk_size * n`` when a stack is paired with itself) exist at any time, and
the input is read about twice.

Precision: centering is invariant to a constant, so each matrix first loses one of its own
entries (shifted data), and is centered before any product is formed; no step subtracts two
large accumulated sums, and XLA reduces sums pairwise. Float32 therefore keeps its digits on
inputs with large offsets (a kernel + 1e4 changes CKA by ~1e-7). Float64 inputs under
``jax_enable_x64`` run in float64 throughout. Matmuls use ``Precision.HIGHEST`` so that GPUs
do not drop to TF32.

Zero variance: a matrix that centering removes up to rounding (a constant matrix, or
``a_i + b_j``) has its self-HSIC set to 0 and its cross HSICs too; CKA then reports 0 for
that pair instead of a ratio of rounding noise. A constant matrix centers to exactly 0.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ssc_jax.core.checks import (
    check_finite,
    check_min_samples,
    check_ndim,
    check_same_n,
    check_square,
)
from ssc_jax.core.memory import block_budget

# Centering leaves rounding noise of a few ulps of what it removes; self-HSICs under
# (ZERO_ULPS * eps)^2 times the removed energy count as zero.
ZERO_ULPS = 32


class HSICStack(NamedTuple):
    """HSICs between two stacks of n x n matrices, Ks (L1, n, n) and Ls (L2, n, n).

    Attributes:
      cross: (L1, L2) HSIC(Ks[a], Ls[b]).
      self_k: (L1,) HSIC(Ks[a], Ks[a]); 0 for a numerically constant matrix.
      self_l: (L2,) HSIC(Ls[b], Ls[b]); 0 for a numerically constant matrix.
    """

    cross: jax.Array
    self_k: jax.Array
    self_l: jax.Array


def block_rows(
    n: int, n_matrices: int, itemsize: int, chunk_size: int | None = None, budget: int | None = None
) -> int:
    """Rows per block that `hsic_stack` uses for ``n_matrices`` centered (rows, n) blocks.

    At most ``chunk_size``, by default as many as fit in ``budget`` bytes (by default
    :func:`ssc_jax.core.memory.block_budget`: cache-sized on a CPU, large on an accelerator),
    then balanced so that the blocks cover the n rows almost evenly.
    """
    if chunk_size is None:
        budget = block_budget() if budget is None else budget
        chunk_size = max(1, budget // (n_matrices * n * itemsize))
    n_blocks = -(-n // min(chunk_size, n))
    return -(-n // n_blocks)


def check_samples(n: int, unbiased: bool) -> None:
    """Raise if n is too small for the (biased or unbiased) HSIC estimator."""
    if unbiased:
        check_min_samples("the unbiased HSIC estimator", n, 4, "it divides by n (n - 3)")
    else:
        check_min_samples("HSIC", n, 2, "it divides by (n - 1)^2")


def hsic(K, L, *, unbiased: bool = False) -> jax.Array:
    """HSIC between two n x n matrices (kernels or affinities); a scalar.

    Args:
      K: (n, n) matrix.
      L: (n, n) matrix on the same n samples.
      unbiased: the unbiased estimator of Song et al. (2012), n >= 4; it can be negative.
    """
    return checked_hsic_stack(K, L, ("K", "L"), 2, unbiased=unbiased).cross[0, 0]


def hsic_stack(Ks, Ls=None, *, unbiased: bool = False, chunk_size: int | None = None) -> HSICStack:
    """HSIC between every pair of two stacks of n x n matrices, in one chunked matmul.

    Args:
      Ks: (L1, n, n) stack.
      Ls: (L2, n, n) stack on the same samples; ``None`` pairs Ks with itself.
      unbiased: the unbiased estimator of Song et al. (2012), n >= 4.
      chunk_size: most rows of the n x n axis per block (blocks are balanced); by default
        from a memory budget, see `block_rows`.
    """
    return checked_hsic_stack(Ks, Ls, ("Ks", "Ls"), 3, unbiased=unbiased, chunk_size=chunk_size)


def checked_hsic_stack(
    K, L, names: tuple[str, str], ndim: int, *, unbiased: bool, chunk_size: int | None = None
) -> HSICStack:
    """`hsic_stack` for two matrices (``ndim`` 2) or two stacks (``ndim`` 3) named ``names``.

    Validates shapes and n, runs `hsic_stack_core`, and raises if it met NaN or Inf.
    """
    what = "an (n, n) matrix" if ndim == 2 else "an (L, n, n) stack"
    arrays = []
    for name, x in zip(names, (K, L), strict=True):
        if x is None:
            continue
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        check_ndim(name, x, ndim, what)
        check_square(name, x)
        arrays.append(x if ndim == 3 else x[None])
    if len(arrays) == 2:
        check_same_n(names, arrays[0].shape[-1], arrays[1].shape[-1])
    check_samples(arrays[0].shape[-1], unbiased)
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    dtype = jnp.result_type(*arrays)
    arrays = [x.astype(dtype) for x in arrays]
    out, magnitudes = hsic_stack_core(
        arrays[0], arrays[1] if len(arrays) == 2 else None, unbiased, chunk_size
    )
    for name, magnitude in zip(names, magnitudes, strict=False):
        check_finite(name, magnitude)
    return out


@partial(jax.jit, static_argnums=(2, 3))
def hsic_stack_core(
    Ks: jax.Array, Ls: jax.Array | None, unbiased: bool, chunk_size: int | None
) -> tuple[HSICStack, tuple[jax.Array, ...]]:
    """`hsic_stack` on floating stacks of one dtype, unchecked (the shared jitted core).

    Also returns, per stack, the largest column mean magnitude: NaN and Inf entries reach
    it, so it is finite exactly when the stack is (barring float overflow), and checking it
    costs no pass over the input of its own.
    """
    stacks = (Ks,) if Ls is None else (Ks, Ls)
    n = Ks.shape[-1]
    n_live = sum(s.shape[0] for s in stacks)
    chunk_size = block_rows(n, n_live, Ks.dtype.itemsize, chunk_size)
    n_blocks = -(-n // chunk_size)
    columns = tuple(_column_centering(s, unbiased) for s in stacks)

    def add_block(i, sums):
        # The last block is shifted back to end at row n and masks the rows an earlier block
        # counted, so that every block has one static shape (one compiled body).
        start = jnp.minimum(i * chunk_size, n - chunk_size)
        fresh = start + jnp.arange(chunk_size) >= i * chunk_size
        centered = [
            _center_block(s, cols, start, fresh, unbiased)
            for s, cols in zip(stacks, columns, strict=True)
        ]
        blocks = [block for block, _ in centered]
        cross = jnp.matmul(blocks[0], blocks[-1].T, precision=lax.Precision.HIGHEST)
        squares = () if Ls is None else tuple(jnp.sum(b * b, axis=-1) for b in blocks)
        new = (cross, squares, tuple(row_energy for _, row_energy in centered))
        return jax.tree.map(jnp.add, sums, new)

    L1, L2 = Ks.shape[0], stacks[-1].shape[0]
    zeros = (
        jnp.zeros((L1, L2), Ks.dtype),
        () if Ls is None else (jnp.zeros(L1, Ks.dtype), jnp.zeros(L2, Ks.dtype)),
        tuple(jnp.zeros(s.shape[0], Ks.dtype) for s in stacks),
    )
    cross, selfs, row_energy = lax.fori_loop(0, n_blocks, add_block, zeros)
    selfs = selfs or (jnp.diagonal(cross),)  # a stack paired with itself: the Gram's diagonal

    eps = jnp.finfo(Ks.dtype).eps
    live = []
    for self_sum, rows, cols in zip(selfs, row_energy, columns, strict=True):
        removed = n * n * cols.grand**2 + n * (rows + jnp.sum(cols.col**2, axis=-1))
        live.append(self_sum > (ZERO_ULPS * eps) ** 2 * removed)
    live_k, live_l = live[0], live[-1]
    selfs = (jnp.where(live_k, selfs[0], 0), jnp.where(live_l, selfs[-1], 0))
    cross = jnp.where(live_k[:, None] & live_l[None, :], cross, 0)
    scale = n * (n - 3) if unbiased else (n - 1) ** 2
    magnitudes = tuple(jnp.max(jnp.abs(cols.col)) for cols in columns)
    return HSICStack(cross / scale, selfs[0] / scale, selfs[1] / scale), magnitudes


class _Columns(NamedTuple):
    """Column statistics of a stack (L, n, n), taken after subtracting a per-matrix offset.

    Centering is invariant to subtracting a constant, so every matrix first loses ``shift``,
    one of its off-diagonal entries (the shifted-data method for the variance): the sums
    then run over values as small as the matrix's variation, and float32 keeps its digits
    under a large offset.
    """

    shift: jax.Array  # (L,)
    col: jax.Array  # (L, n) subtracted from each column of the shifted matrix
    grand: jax.Array  # (L,) added back
    diag: jax.Array | None  # (L, n) diagonal of the shifted matrix; U-centering only


def _column_centering(Ks: jax.Array, unbiased: bool) -> _Columns:
    n = Ks.shape[-1]
    shift = Ks[:, 0, 1]
    col = jnp.mean(Ks - shift[:, None, None], axis=-2)
    if not unbiased:
        return _Columns(shift, col, jnp.mean(col, axis=-1), None)
    # Taken from Ks itself: reading the shifted stack twice would make XLA materialise it.
    diag = jnp.diagonal(Ks, axis1=-2, axis2=-1) - shift[:, None]
    col_sum = n * col - diag
    grand = jnp.sum(col_sum, axis=-1) / ((n - 1) * (n - 2))
    return _Columns(shift, col_sum / (n - 2), grand, diag)


def _center_block(
    Ks: jax.Array, columns: _Columns, start, fresh: jax.Array, unbiased: bool
) -> tuple[jax.Array, jax.Array]:
    """Rows [start, start + b) of every matrix, (U-)centered and flattened to (L, b * n).

    Rows where ``fresh`` (b,) is False are zeroed. Also returns the summed squares of the
    subtracted row terms, (L,), for the zero-variance test.
    """
    n = Ks.shape[-1]
    size = fresh.shape[0]
    block = lax.dynamic_slice_in_dim(Ks, start, size, axis=-2) - columns.shift[:, None, None]
    if unbiased:
        diag = lax.dynamic_slice_in_dim(columns.diag, start, size, axis=-1)
        row = (jnp.sum(block, axis=-1) - diag) / (n - 2)
        off_diag = (start + jnp.arange(size))[:, None] != jnp.arange(n)[None, :]
        keep = fresh[:, None] & off_diag
    else:
        row = jnp.mean(block, axis=-1)
        keep = fresh[:, None]
    row = jnp.where(fresh, row, 0)
    centered = block - row[..., None] - columns.col[:, None, :] + columns.grand[:, None, None]
    centered = jnp.where(keep, centered, 0)
    return centered.reshape(Ks.shape[0], size * n), jnp.sum(row**2, axis=-1)
