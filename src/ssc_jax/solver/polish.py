"""Polishing: the exact LASSO solution on the support that an ADMM iterate points to.

Row i of SSC is ``min_c ||c||_1 + tau/2 ||x_i - X^T c||^2`` with ``c_i = 0``. With the
correlations ``k = tau q = tau (e_i - c) G`` of its residual, c is optimal exactly when
(KKT)::

    k_j = sign(c_j)  where c_j != 0,      |k_j| <= 1  elsewhere (j != i).

On a support S with signs s, the first condition is the linear system
``tau G_SS c_S = tau G_Si - s``. ADMM's iterate has spurious tiny coefficients, so its
nonzeros make a poor S; its correlations are better: S is taken from the dual side, the
``size`` largest ``|k_j|`` that reach ``1 - threshold``, with the signs of k. The system is
solved for a batch of rows at once, each padded to ``size`` with identity rows, and the
solution kept only where KKT holds: the signs of ``c_S`` agree with s, and no correlation
off S exceeds ``1 + tol``. A row that fails changes its active set and tries again, for up
to ``rounds`` rounds: the coefficients of flipped sign leave S, the most violating
correlation joins it (a primal-dual active-set step).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ssc_jax.solver.certificate import correlations, row_certificates
from ssc_jax.solver.factor import DenseFactor, Factor

Array = jax.Array


class Polished(NamedTuple):
    """Polished rows of a block of b rows of an n-sample problem.

    Attributes:
      coef: (b, n) the exact solution on verified rows, the input coefficients elsewhere.
      verified: (b,) whether the row's polished solution passed the KKT test.
      objective: (b,) each row's objective P at ``coef``.
      gap: (b,) each row's duality gap ``P - D`` at ``coef`` (rounding level where verified).
    """

    coef: Array
    verified: Array
    objective: Array
    gap: Array


class _Support(NamedTuple):
    """Per row: (b, size) candidate indices, whether each is active, and its sign."""

    index: Array
    active: Array
    signs: Array


def polish(
    factor: Factor,
    coef: Array,
    rows: Array,
    tau: Array,
    *,
    size: int,
    rounds: int = 5,
    threshold: float = 3e-2,
) -> Polished:
    """Polish the (b, n) coefficients ``coef`` of the rows ``rows`` (b,) of one problem.

    ``size`` (static) bounds the support; a row whose support needs more fails. A row index
    of n (padding) is an all-zero problem, verified at c = 0. ``tol``, the slack of the
    off-support test, is the square root of the dtype's epsilon (3e-4 in float32, 1.5e-8 in
    float64). Memory: (b, size, size) for the systems and, for a ``LowRankFactor``,
    (b, size, r) for the gathered basis rows; a ``DenseFactor`` forms G (n, n).
    """
    n, dtype = factor.vectors.shape[0], coef.dtype
    b = rows.shape[0]
    tol = jnp.sqrt(jnp.finfo(dtype).eps)
    diagonal = rows[:, None] == jnp.arange(n)[None, :]
    lines = jnp.arange(b)[:, None]
    support_gram = _support_gram(factor, rows)

    def solve(support: _Support):
        gss, gsi = support_gram(support.index)
        both = support.active[:, :, None] & support.active[:, None, :]
        system = jnp.where(both, tau * gss, jnp.eye(size, dtype=dtype))
        rhs = jnp.where(support.active, tau * gsi - support.signs, 0)
        values = jnp.linalg.solve(system, rhs[..., None])[..., 0]
        values = jnp.where(support.active, values, 0)
        # An index may repeat in inactive slots; their values are 0, so adding is exact.
        full = jnp.zeros((b, n), dtype).at[lines, support.index].add(values)
        on = jnp.zeros((b, n), bool).at[lines, support.index].max(support.active)
        k = tau * correlations(factor, full, rows)[1]
        off = jnp.where(on | diagonal, 0, jnp.abs(k))
        flips = support.active & (jnp.sign(values) != support.signs)
        ok = (
            jnp.all(jnp.isfinite(values), axis=1)
            & ~jnp.any(flips, axis=1)
            & (jnp.max(off, axis=1) <= 1 + tol)
        )
        return full, ok, flips, off, k

    def change(support: _Support, flips: Array, off: Array, k: Array) -> _Support:
        """Drop the flipped coefficients, add the most violating correlation in a free slot."""
        active = support.active & ~flips
        worst = jnp.argmax(off, axis=1)
        violated = jnp.max(off, axis=1) > 1 + tol
        slot = jnp.argmax(~active, axis=1)
        add = violated & jnp.any(~active, axis=1)
        at = (jnp.arange(size)[None, :] == slot[:, None]) & add[:, None]
        sign = jnp.sign(jnp.take_along_axis(k, worst[:, None], axis=1))
        return _Support(
            index=jnp.where(at, worst[:, None], support.index).astype(support.index.dtype),
            active=active | at,
            signs=jnp.where(at, sign, support.signs),
        )

    k = tau * correlations(factor, coef, rows)[1]
    top, index = lax.top_k(jnp.where(diagonal, -1, jnp.abs(k)), size)
    support = _Support(
        index=index,
        active=top >= 1 - threshold,
        signs=jnp.sign(jnp.take_along_axis(k, index, axis=1)),
    )
    full, ok, flips, off, k = solve(support)
    done = jnp.where(ok[:, None], full, coef)

    def body(carry):
        step, support, done, verified, flips, off, k = carry
        support = jax.tree.map(
            lambda kept, changed: jnp.where(_rows_like(verified, kept), kept, changed),
            support,
            change(support, flips, off, k),
        )
        full, ok, flips, off, k = solve(support)
        fresh = ok & ~verified
        done = jnp.where(fresh[:, None], full, done)
        return step + 1, support, done, verified | ok, flips, off, k

    carry = lax.while_loop(
        lambda c: (c[0] < rounds) & ~jnp.all(c[3]),
        body,
        (jnp.asarray(0), support, done, ok, flips, off, k),
    )
    done, verified = carry[2], carry[3]
    return Polished(done, verified, *row_certificates(factor, done, rows, tau))


def _rows_like(mask: Array, like: Array) -> Array:
    """(b,) ``mask`` broadcast against (b, ...) ``like``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _support_gram(factor: Factor, rows: Array):
    """A function of (b, size) indices S giving ``G_SS`` (b, size, size) and ``G_Si``
    (b, size) of the rows ``rows``; row index n (padding) has ``G_Si = 0``."""
    n = factor.vectors.shape[0]
    highest = lax.Precision.HIGHEST
    inside = rows < n
    if isinstance(factor, DenseFactor):
        gram = jnp.matmul(factor.vectors * factor.values, factor.vectors.T, precision=highest)

        def dense(index):
            gss = gram[index[:, :, None], index[:, None, :]]
            gsi = jnp.where(inside[:, None], gram[jnp.minimum(rows, n - 1)[:, None], index], 0)
            return gss, gsi

        return dense

    def low_rank(index):
        u = factor.vectors[index]
        own = jnp.where(inside[:, None], factor.vectors[jnp.minimum(rows, n - 1)], 0)
        weighted = u * factor.values
        gss = jnp.matmul(weighted, jnp.swapaxes(u, 1, 2), precision=highest)
        gsi = jnp.einsum("bkr,br->bk", weighted, own, precision=highest)
        return gss, gsi

    return low_rank
