"""The certified duality gap of SSC rows, from the correlations of their residuals.

Row i of SSC is the LASSO ``min_c ||c||_1 + tau/2 ||x_i - X^T c||^2`` with ``c_i = 0``, whose
dual is ``max theta.x_i - ||theta||^2 / (2 tau)`` over ``|x_j.theta| <= 1`` (j != i). From
the residual ``r = x_i - X^T c`` and its correlations ``q = X r = (e_i - c) G``,
``theta = s tau r`` with ``s = min(1, 1 / (tau max_{j != i} |q_j|))`` is dual feasible, and::

    P - D = ||c||_1 - s tau c.q + tau/2 (1 - s)^2 ||r||^2  >=  P - P*

The dual is (1/tau)-strongly concave, so the optimal theta* lies within ``sqrt(2 tau (P - D))``
of theta, and a coefficient whose constraint stays below 1 over that sphere is zero at the
optimum (gap-safe screening, Fercoq, Gramfort and Salmon 2015): ``safe_zeros``.

Every function takes a block of b rows ``rows`` of one n-sample problem, whose Gram is given
by a ``Factor``; a row index of n is padding, an all-zero problem.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ssc_jax.solver.factor import Factor, GramFactor, sample_count

Array = jax.Array


def diagonal_mask(rows: Array, n: int) -> Array:
    """(b, n) True at the diagonal entries ``(i, rows[i])``; a row index of n (padding) has
    none. A boolean mask, 1 byte an entry, is what the loop reads to find them."""
    return rows[:, None] == jnp.arange(n)[None, :]


def row_certificates(factor: Factor, coef: Array, rows: Array, tau: Array) -> tuple[Array, Array]:
    """(b,) objectives and (b,) duality gaps of the rows of the (b, n) block ``coef``
    (``ADMM.certificate`` before the sums)."""
    diagonal = diagonal_mask(rows, sample_count(factor))
    squared, q = correlations(factor, coef, rows)
    return row_gaps(coef, squared, q, diagonal, tau)


def row_gaps(
    coef: Array, squared: Array, q: Array, diagonal: Array, tau: Array
) -> tuple[Array, Array]:
    """(b,) objectives and duality gaps of the (b, n) block ``coef`` from its residuals'
    (b,) squared norms and (b, n) correlations ``q`` (``correlations``); ``diagonal`` (b, n)
    marks each row's own sample."""
    l1 = jnp.abs(coef).sum(axis=1)
    largest = jnp.max(jnp.where(diagonal, 0, jnp.abs(q)), axis=1)
    scale = 1 / jnp.maximum(tau * largest, 1)
    gap = l1 - scale * tau * jnp.sum(coef * q, axis=1) + 0.5 * tau * (1 - scale) ** 2 * squared
    return l1 + 0.5 * tau * squared, gap


def correlations(factor: Factor, coef: Array, rows: Array) -> tuple[Array, Array]:
    """(b,) ``||r_i||^2`` and (b, n) ``q = X r_i`` of the residuals ``r_i = x_i - X^T c_i``,
    at full float32 precision, which NVIDIA GPUs would otherwise cut to TF32.

    From an eigendecomposition, ``a = (E - C) U`` gives ``||r_i||^2 = sum(a_i^2 l)`` (a sum
    of squares, without the cancellation of the trace form); from G alone
    (``GramFactor``), ``||r_i||^2 = q_i.(e_i - c_i)``.
    """
    n = sample_count(factor)
    residual = diagonal_mask(rows, n).astype(coef.dtype) - coef
    highest = lax.Precision.HIGHEST
    if isinstance(factor, GramFactor):
        q = jnp.matmul(residual, factor.gram, precision=highest)
        return jnp.sum(q * residual, axis=1), q
    a = jnp.matmul(residual, factor.vectors, precision=highest)
    squared = jnp.sum(a**2 * factor.values, axis=1)
    return squared, jnp.matmul(a * factor.values, factor.vectors.T, precision=highest)


def sparse_correlations(
    gram: Array, own: Array, rows: Array, index: Array, values: Array
) -> tuple[Array, Array]:
    """``correlations`` of a block whose coefficients are nonzero only at ``index``: row i
    of C holds ``values[i, t]`` at ``index[i, t]``, both (b, s), and is zero elsewhere.

    ``q_i = G_i - sum_t c_it G_{index_it}`` reads the s rows of G on row i's support, b s n
    multiply-adds for the block instead of the b n^2 of the product with the dense
    coefficients, and ``||r_i||^2 = q_i.(e_i - c_i)`` the entries of q on the support.
    ``own`` (b, n) are the rows' own rows of G (zero for padding), ``rows`` (b,) their
    indices, ``gram`` (n, n). The support is put first in each row, and the loop runs to the
    block's largest support, one (b, n) row gather at a time: two (b, n) arrays in flight.
    """
    n = gram.shape[0]
    first = jnp.argsort(values == 0, axis=1, stable=True)
    index = jnp.take_along_axis(index, first, axis=1)
    values = jnp.take_along_axis(values, first, axis=1)
    width = jnp.max(jnp.sum(values != 0, axis=1))

    def subtract(t: Array, q: Array) -> Array:
        return q - values[:, t, None] * gram[index[:, t]]

    q = lax.fori_loop(0, width, subtract, own)
    inside = rows < n
    diagonal = jnp.where(
        inside, jnp.take_along_axis(q, jnp.minimum(rows, n - 1)[:, None], 1)[:, 0], 0
    )
    on_support = jnp.sum(values * jnp.take_along_axis(q, index, axis=1), axis=1)
    return diagonal - on_support, q


def safe_zeros(
    coef: Array, q: Array, gap: Array, norms: Array, diagonal: Array, tau: Array
) -> Array:
    """(b,) whether every zero of each row of the (b, n) block ``coef`` is provably zero at
    the row's optimum, so the optimum's support lies within the row's: the gap-safe test
    ``s tau |q_j| + sqrt(2 tau gap) ||x_j|| < 1`` holds at each such j.

    ``q`` (b, n) are the correlations (``correlations``), ``gap`` (b,) the rows' duality
    gaps (``row_gaps``), ``norms`` (n,) the samples' norms ``sqrt(G_jj)``.
    """
    largest = jnp.max(jnp.where(diagonal, 0, jnp.abs(q)), axis=1, keepdims=True)
    scale = 1 / jnp.maximum(tau * largest, 1)
    radius = jnp.sqrt(2 * tau * jnp.maximum(gap, 0))[:, None]
    safe = scale * tau * jnp.abs(q) + radius * norms[None, :] < 1
    return jnp.all(diagonal | (coef != 0) | safe, axis=1)
