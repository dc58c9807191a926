"""What a round of ``ssc_sparse`` computes from the samples X (n, d), with C held sparse.

Each row keeps its support (``Supports``): the sample indices and values of its nonzeros,
first in a (n, width) array, padded with the row's own index and 0. Three computations read
X, a block of rows at a time:

* ``full_pass``: the correlations ``q_i = X r_i`` of every sample, ``r_i = x_i - X^T c_i``:
  ``R X`` gathers the support's rows of X, then one (b, d) x (d, n) product gives a (b, n)
  slab of q, from which come the row's certificate (``certificate.row_gaps``) and its
  ``pool``, the off-support samples of largest ``|q_j| / ||x_j||``, best first;
* ``solve_rows``: each row's working-set problem on its support and the best of its pool,
  ``G_WW`` and ``G_Wi`` formed from the gather ``X[W]``, solved by ``descend`` and
  ``active_set`` (``subproblems``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssc_jax.solver.certificate import row_gaps, safe_zeros
from ssc_jax.solver.working_set.solver import WorkingSet
from ssc_jax.solver.working_set.subproblems import active_set, descend

Array = jax.Array
_HIGHEST = lax.Precision.HIGHEST
# (b, n) arrays of a correlation slab in flight: q, the candidates' scores and top_k's copy.
_SLAB_ARRAYS = 4
# Rows of a slab at most: the product runs at full speed from a few hundred rows on.
_MOST_SLAB_ROWS = 1024
# (b, s, d) gathers of a block in flight (X[W] and a copy), and their bytes at most.
_GATHER_ARRAYS = 2
_MOST_GATHER_BYTES = 512 * 2**20


class Supports(NamedTuple):
    """Every row's support: ``index`` (n, width) int32 with the nonzero ``values`` (n, width)
    first, the rest the row's own index and 0."""

    index: np.ndarray
    values: np.ndarray


class Measured(NamedTuple):
    """A pass over rows: their objectives, gaps, screening verdicts, KKT violations off the
    support (how many, and the largest ``tau |q_j| - 1``), and their pools (P samples each),
    best first, ``open`` where a sample is there to take."""

    objective: np.ndarray
    gap: np.ndarray
    safe: np.ndarray
    violated: np.ndarray
    kkt_violation: np.ndarray
    pool: np.ndarray
    open: np.ndarray


def empty_supports(n: int, width: int, dtype) -> Supports:
    """The supports of C = 0."""
    own = np.repeat(np.arange(n, dtype=np.int32)[:, None], width, axis=1)
    return Supports(own, np.zeros((n, width), dtype))


def blocks(n: int, block: int) -> list[np.ndarray]:
    """Row indices in blocks of ``block``, the last padded with its last row, so that every
    block has one shape (one compiled program)."""
    return [np.minimum(np.arange(s, s + block), n - 1) for s in range(0, n, block)]


def slab_rows(n: int, itemsize: int, budget: int) -> int:
    """Rows of a ``full_pass`` slab: within ``budget`` bytes, a multiple of 8."""
    block = int(np.clip(budget // (_SLAB_ARRAYS * itemsize * n), 8, _MOST_SLAB_ROWS)) // 8 * 8
    return min(block, -(-n // 8) * 8)


def _residuals(x: Array, rows: Array, index: Array, values: Array) -> Array:
    """(b, d) ``r_i = x_i - X^T c_i``, one support entry of every row at a time, to the
    block's widest support."""
    width = jnp.max(jnp.sum(values != 0, axis=1))

    def subtract(t: Array, r: Array) -> Array:
        return r - values[:, t, None] * x[index[:, t]]

    return lax.fori_loop(0, width, subtract, x[rows])


def _certificate(values, on_support, largest_off, squared, tau, top):
    """(b,) objectives, gaps and screening verdicts from the support's correlations and the
    largest ``|q_j|`` off it. The certificate reads no more of q, so it is taken on
    (b, width + 1) arrays: the support, then that entry as a zero coefficient of a sample of
    the largest norm ``top`` (a sufficient screening test, exact for unit-norm samples)."""
    width = values.shape[1]
    coef = jnp.concatenate([values, jnp.zeros_like(values[:, :1])], axis=1)
    q = jnp.concatenate([on_support, largest_off[:, None]], axis=1)
    own = jnp.concatenate([values == 0, jnp.zeros_like(values[:, :1], bool)], axis=1)
    objective, gap = row_gaps(coef, squared, q, own, tau)
    norms = jnp.concatenate([jnp.ones(width, values.dtype), jnp.full((1,), top, values.dtype)])
    return objective, gap, safe_zeros(coef, q, gap, norms, own, tau)


@functools.partial(jax.jit, static_argnames="pool")
def full_pass(
    x: Array, norms: Array, rows: Array, index: Array, values: Array, tau, top, pool: int
) -> Measured:
    """The ``Measured`` of the rows ``rows`` (b,) with supports ``index``, ``values``
    (b, width), from their (b, n) slab of q; ``top`` is the largest sample norm, ``pool``
    the samples of the pool."""
    n, dtype = x.shape[0], x.dtype
    tau = jnp.asarray(tau, dtype)
    residual = _residuals(x, rows, index, values)
    q = jnp.matmul(residual, x.T, precision=_HIGHEST)
    lines = jnp.arange(rows.shape[0])[:, None]
    inside = jnp.zeros(q.shape, bool).at[lines, index].set(values != 0)
    off = ~inside & (rows[:, None] != jnp.arange(n)[None, :])
    magnitude = jnp.abs(q)
    largest_off = jnp.max(jnp.where(off, magnitude, 0), axis=1)
    violated = jnp.sum(off & (tau * magnitude > 1), axis=1)
    usable = off & (norms > 0)[None, :]
    score = jnp.where(usable, magnitude / jnp.where(norms > 0, norms, 1), -1)
    best, ranked = lax.top_k(score, pool)
    on_support = jnp.take_along_axis(q, index, axis=1)
    squared = jnp.sum(residual**2, axis=1)
    objective, gap, safe = _certificate(values, on_support, largest_off, squared, tau, top)
    kkt = jnp.maximum(tau * largest_off - 1, 0)
    return Measured(objective, gap, safe, violated, kkt, ranked.astype(jnp.int32), best >= 0)


def solve_rows(
    x: Array,
    supports: Supports,
    measured: Measured,
    rungs: np.ndarray,
    sizes: list[int],
    solver: WorkingSet,
    sweeps: Array,
    budget: int,
) -> tuple[Supports, dict[int, int]]:
    """The working-set problem of every row at its rung ``rungs`` (n,) of ``sizes`` (-1: left
    as it is), rows of one rung in blocks within ``budget`` bytes; the new supports, and
    the rows solved at each size."""
    d = x.shape[1]
    index, values = (a.copy() for a in supports)
    per_size = {}
    for level, size in enumerate(sizes):
        chosen = np.flatnonzero(rungs == level)
        if not chosen.size:
            continue
        per_size[size] = int(chosen.size)
        gather = _GATHER_ARRAYS * x.dtype.itemsize * size * d
        # One block shape a rung, whatever its rows in a round: one compilation.
        block = min(max(1, min(budget, _MOST_GATHER_BYTES) // gather), len(rungs))
        for part in blocks(chosen.size, block):
            picked = chosen[part]
            solved = _solve_block(
                x,
                jnp.asarray(picked),
                jnp.asarray(supports.index[picked]),
                jnp.asarray(supports.values[picked]),
                jnp.asarray(measured.pool[picked]),
                jnp.asarray(measured.open[picked]),
                solver,
                sweeps,
                size,
            )
            index[picked], values[picked] = jax.device_get(solved)
    return Supports(index, values), per_size


@functools.partial(jax.jit, static_argnames="size")
def _solve_block(
    x: Array,
    rows: Array,
    index: Array,
    values: Array,
    pool: Array,
    open_: Array,
    solver: WorkingSet,
    sweeps: Array,
    size: int,
) -> tuple[Array, Array]:
    """The rows ``rows`` (b,) solved on working sets of ``size`` samples: the support
    (``index``, ``values``, (b, width)), then the best open samples of the ``pool`` (b, P).
    Returns the new support, nonzeros first, (b, width) ``index`` and ``values``."""
    width, dtype = index.shape[1], x.dtype
    tau = jnp.asarray(solver.tau, dtype)
    count = jnp.sum(values != 0, axis=1, keepdims=True)
    slot = jnp.arange(size)[None, :]
    from_support = slot < count
    at_candidate = jnp.clip(slot - count, 0, pool.shape[1] - 1)
    at_support = jnp.broadcast_to(jnp.minimum(slot, width - 1), at_candidate.shape)
    picked = jnp.where(
        from_support,
        jnp.take_along_axis(index, at_support, axis=1),
        jnp.take_along_axis(pool, at_candidate, axis=1),
    )
    usable = from_support | jnp.take_along_axis(open_, at_candidate, axis=1)
    gathered = x[picked]  # (b, size, d)
    block = jnp.einsum("bsd,btd->bst", gathered, gathered, precision=_HIGHEST)
    target = jnp.einsum("bsd,bd->bs", gathered, x[rows], precision=_HIGHEST)
    usable &= (picked != rows[:, None]) & (jnp.diagonal(block, 0, 1, 2) > 0)
    begin = jnp.where(from_support & usable, jnp.take_along_axis(values, at_support, axis=1), 0)
    solved, _ = descend(block, target, begin, usable, tau, solver.sweep_tol, sweeps)
    solved = active_set(block, target, solved, usable, tau, solver.newton_steps)
    first = jnp.argsort(solved == 0, axis=1, stable=True)[:, :width]
    kept = jnp.take_along_axis(solved, first, axis=1)
    found = jnp.where(kept != 0, jnp.take_along_axis(picked, first, axis=1), rows[:, None])
    if size < width:
        pad = jnp.zeros((kept.shape[0], width - size), dtype)
        found = jnp.concatenate([found, jnp.repeat(rows[:, None], width - size, 1)], axis=1)
        kept = jnp.concatenate([kept, pad], axis=1)
    return found.astype(index.dtype), kept
