"""The working-set subproblems: what one round solves on each row's working set, and how
far (the sweep cap, the ladder of working-set sizes).

On a working set W of s samples, row i's LASSO is ``min ||c||_1 + tau/2 c^T A c - tau c^T g``
with A = G_WW (b, s, s) and g = G_Wi (b, s): cyclic coordinate descent (``descend``) brings
it near, primal-dual active-set steps (``active_set``) find and verify its exact minimiser;
each row takes its own rung of working-set sizes (``row_levels``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def sweep_cap(max_sweeps: int, gaps: Array) -> Array:
    """() the coordinate sweeps a round may take: ``max_sweeps`` doubled for each round so
    far whose relative gap was more than half the previous round's, at most four times;
    ``gaps`` (max_rounds,) holds the rounds' relative gaps, -1 where none ran."""
    ran = (gaps[1:] >= 0) & (gaps[:-1] >= 0)
    slow = jnp.sum(ran & (gaps[1:] > 0.5 * gaps[:-1]))
    return max_sweeps * 2 ** jnp.minimum(slow, 4)


SETTLED_SHARE = 0.5
"""The share of ``gap_tol`` that the rows a round leaves as they are may hold together
(`settled_rows`)."""


def settled_rows(gap: Array, objective: Array, gap_tol: Array) -> Array:
    """(b,) the rows a round keeps as they are: those of smallest certified gap ``gap``
    (b,) that add up to at most ``SETTLED_SHARE * gap_tol`` of the block's objective
    (``objective``, (b,)). The round solves the rows that hold the rest of the block's gap,
    as few as can hold it."""
    order = jnp.argsort(gap)
    held = jnp.cumsum(gap[order]) <= SETTLED_SHARE * gap_tol * jnp.sum(objective)
    return jnp.zeros(gap.shape, bool).at[order].set(held)


def working_set_sizes(size: int, n: int) -> list[int]:
    """The working-set sizes a solve of n samples may use, ascending: ``size / 8``,
    ``size / 4``, ``size / 2`` and ``size``, each at least 8 and at most n - 1."""
    return sorted({min(max(s, 8), n - 1) for s in (size // 8, size // 4, size // 2, size)})


def row_levels(supports: Array, violated: Array, sizes: list[int]) -> Array:
    """(b,) each row's rung of ``sizes``: the smallest that leaves a quarter of it free above
    the row's support (``supports``, (b,)), lifted by one where the support and the KKT
    violations (``violated``, (b,)) together ask for more. From C = 0 every row starts a rung
    above the first: its support then is the samples of largest correlation, and the rounds
    after it, which re-solve most rows, climb the ladder where a support asks for it."""
    limits = jnp.asarray([s - s // 4 for s in sizes])
    need = jnp.sum(supports[:, None] > limits, axis=1)
    wanted = jnp.sum((supports + violated)[:, None] > limits, axis=1)
    return jnp.minimum(jnp.clip(wanted, need, need + 1), len(sizes) - 1)


def active_set(
    blocks: Array, target: Array, coef: Array, usable: Array, tau: Array, steps: int
) -> Array:
    """(b, s) the exact minimiser of the problem ``descend`` solves, where a primal-dual
    active-set step finds and verifies it; ``coef`` elsewhere.

    Each step predicts the support S and signs sigma from the coordinate-descent map at the
    current point, ``z = A_jj c_j + (g - A c)_j``: S where ``tau |z_j| > 1``, sigma the sign
    of z; then solves ``A_SS c_S = g_S - sigma / tau`` by Cholesky (a singular A_SS gives
    non-finite values, and the row keeps its point). A solution is kept where its signs agree
    with sigma and no usable coordinate off S has ``tau |(g - A c)_j| > 1 + sqrt(eps)`` (the
    KKT conditions); the next step starts from it either way. The steps stop once every row's
    solution is verified.
    """
    size, dtype = blocks.shape[-1], coef.dtype
    highest = lax.Precision.HIGHEST
    scale = jnp.diagonal(blocks, 0, 1, 2)
    slack = 1 + jnp.sqrt(jnp.finfo(dtype).eps)
    eye = jnp.eye(size, dtype=dtype)

    def step(carry):
        point, best, verified, taken = carry
        z = scale * point + target - jnp.einsum("bjl,bl->bj", blocks, point, precision=highest)
        support, signs = usable & (tau * jnp.abs(z) > 1), jnp.sign(z)
        system = jnp.where(support[:, :, None] & support[:, None, :], blocks, eye)
        rhs = jnp.where(support, target - signs / tau, 0)
        factor = jax.scipy.linalg.cho_factor(system)
        solved = jax.scipy.linalg.cho_solve(factor, rhs[..., None])[..., 0]
        values = jnp.where(support, solved, 0)
        residual = target - jnp.einsum("bjl,bl->bj", blocks, values, precision=highest)
        finite = jnp.all(jnp.isfinite(values), axis=1)
        ok = (
            finite
            & jnp.all(~support | (jnp.sign(values) == signs), axis=1)
            & jnp.all(~usable | support | (tau * jnp.abs(residual) <= slack), axis=1)
        )
        best = jnp.where((ok & ~verified)[:, None], values, best)
        return jnp.where(finite[:, None], values, point), best, verified | ok, taken + 1

    def running(carry) -> Array:
        return (carry[3] < steps) & ~jnp.all(carry[2])

    verified = jnp.zeros(coef.shape[:1], bool)
    start = (coef, coef, verified, jnp.asarray(0, jnp.int32))
    return lax.while_loop(running, step, start)[1]


def descend(
    blocks: Array,
    target: Array,
    coef: Array,
    usable: Array,
    tau: Array,
    tol: Array,
    max_sweeps: Array,
) -> tuple[Array, Array]:
    """Cyclic coordinate descent on ``min ||c||_1 + tau/2 c^T A c - tau c^T g`` for a batch:
    ``blocks`` A (b, s, s), ``target`` g (b, s), from ``coef`` (b, s); coordinates not
    ``usable`` stay 0. Returns the coefficients and the last sweep's largest change.

    Coordinate j minimises ``|c_j| + tau/2 (A_jj c_j^2 - 2 z c_j)`` with
    ``z = g_j - sum_{l != j} A_jl c_l``: ``c_j = S_{1/tau}(z) / A_jj``. The residual
    ``g - A c`` is updated with column j at each step.
    """
    size = blocks.shape[-1]
    scale = jnp.diagonal(blocks, 0, 1, 2)
    safe = jnp.where(usable, scale, 1)
    residual = target - jnp.einsum("bjl,bl->bj", blocks, coef, precision=lax.Precision.HIGHEST)
    # Coordinate-major layouts, so that each step reads and writes contiguous rows: the
    # columns A_j (s, s, b), and the coefficients and residuals (s, b).
    columns, usable_t, safe_t = jnp.transpose(blocks, (1, 2, 0)), usable.T, safe.T

    def coordinate(j, carry):
        coef, residual, change = carry
        old, a = coef[j], safe_t[j]
        z = residual[j] + a * old
        new = jnp.where(usable_t[j], jnp.sign(z) * jnp.maximum(jnp.abs(z) - 1 / tau, 0) / a, 0)
        delta = new - old
        residual = residual - delta[None, :] * columns[j]
        change = jnp.maximum(change, jnp.max(jnp.abs(delta) * jnp.sqrt(a)))
        return coef.at[j].set(new), residual, change

    def sweep(carry):
        coef, residual, _, sweeps = carry
        coef, residual, change = lax.fori_loop(
            0, size, coordinate, (coef, residual, jnp.zeros((), coef.dtype))
        )
        return coef, residual, change, sweeps + 1

    inf = jnp.asarray(jnp.inf, coef.dtype)
    coef, _, change, _ = lax.while_loop(
        lambda c: (c[3] < max_sweeps) & (c[2] > tol),
        sweep,
        (coef.T, residual.T, inf, jnp.asarray(0, jnp.int32)),
    )
    return coef.T, change
