"""Exact SSC references for the solver tests: scikit-learn's Lasso in float64, row by row;
and what a solve's certified duality gap proves about its answer (``assert_same_optimum``)."""

from typing import NamedTuple

import numpy as np
from sklearn.linear_model import Lasso

TAU = 10.0


def unit_rows(x):
    """(n, d) float64 ``x`` with each row scaled to unit l2 norm."""
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def objective(x, coef, tau=TAU):
    """``||C||_1 + tau/2 ||X - C X||_F^2`` in float64 on the unit-norm rows of ``x``."""
    x, coef = unit_rows(x), np.asarray(coef, np.float64)
    return np.abs(coef).sum() + tau / 2 * np.sum((x - coef @ x) ** 2)


def exact_ssc(x, tau=TAU, tol=1e-12, max_iter=200_000):
    """(n, n) C of Eq. 2 on the unit-norm rows of ``x``, exactly: row i is
    ``min ||c||_1 + tau/2 ||x_i - X^T c||^2`` with ``c_i = 0``, which is sklearn's Lasso
    objective times tau d at ``alpha = 1 / (tau d)``."""
    x = unit_rows(x)
    n, d = x.shape
    coef = np.zeros((n, n))
    for i in range(n):
        others = np.delete(np.arange(n), i)
        lasso = Lasso(alpha=1 / (tau * d), fit_intercept=False, tol=tol, max_iter=max_iter)
        coef[i, others] = lasso.fit(x[others].T, x[i]).coef_
    return coef


def float64_gram(x):
    """(n, n) the Gram of samples ``x`` (n, d) in float64: the problem that a solve from the
    features defines, without the rounding of a float32 product."""
    x = np.asarray(x, np.float64)
    return x @ x.T


def normalized_gram(gram, normalize=True):
    """(..., n, n) float64 Gram of the unit-norm samples, as the solver sees them: each
    ``G_ij / sqrt(G_ii G_jj)``, a zero sample's row and column zero."""
    gram = np.asarray(gram, np.float64)
    if not normalize:
        return gram
    norms = np.sqrt(np.maximum(np.diagonal(gram, axis1=-2, axis2=-1), 0))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return gram * scale[..., :, None] * scale[..., None, :]


def row_certificates(gram, coef, tau=TAU):
    """(..., n) float64 objectives ``P_i`` and duality gaps ``P_i - D_i`` of the rows of
    ``coef`` (..., n, n) on the normalised Gram ``gram``, from the dual point
    ``theta = s tau r`` that the solver certifies with (``ssc_jax.solver.certificate``),
    written again here in NumPy so that the test does not check the library with itself."""
    gram, coef = np.asarray(gram, np.float64), np.asarray(coef, np.float64)
    n = coef.shape[-1]
    residual = np.eye(n) - coef
    q = residual @ gram  # X r_i
    squared = np.sum(q * residual, axis=-1)  # ||r_i||^2
    l1 = np.abs(coef).sum(axis=-1)
    largest = np.max(np.where(np.eye(n, dtype=bool), 0, np.abs(q)), axis=-1)
    scale = 1 / np.maximum(tau * largest, 1)
    gap = l1 - scale * tau * np.sum(coef * q, axis=-1) + tau / 2 * (1 - scale) ** 2 * squared
    return l1 + tau / 2 * squared, gap


# How many float32 roundings of a unit Gram entry the solver's float32 problem and certificate
# may differ from the float64 ones by: its Gram of unit rows is rounded (a product, a square
# root, a division, each half an eps of an entry of magnitude <= 1), and the sums that its
# certificate takes round on the same scale. A perturbation of each Gram entry by at most
# delta moves row i's objective by at most tau/2 ||e_i - c_i||_1^2 delta and its gap by at
# most tau ||e_i - c_i||_1^2 delta (the terms tau c.q and tau/2 ||r||^2, with q = (e_i - c) G).
ROUNDINGS = 4


def rounding_allowance(coef, dtype, tau=TAU):
    """(..., n) the most rounding in ``dtype`` moves each row's objective or gap by:
    ``tau (1 + ||c_i||_1)^2 ROUNDINGS eps``."""
    l1 = np.abs(np.asarray(coef, np.float64)).sum(axis=-1)
    return tau * (1 + l1) ** 2 * ROUNDINGS * np.finfo(dtype).eps


def certified(gram, result, tau=TAU, normalize=True):
    """(..., n) float64 objectives and gaps of the rows of ``result`` (an ``SSCResult``, or
    coefficients alone) on ``gram``; for a result, first asserts that its own reported
    ``objective`` and relative ``duality_gap``, computed in its dtype, are those of its
    coefficients up to that dtype's rounding (``rounding_allowance``)."""
    coef = np.asarray(getattr(result, "coef", result))
    objective, gap = row_certificates(normalized_gram(gram, normalize), coef, tau)
    if hasattr(result, "duality_gap"):
        allowance = rounding_allowance(coef, coef.dtype, tau).sum(axis=-1)
        total = objective.sum(axis=-1)
        reported = np.asarray(result.objective, np.float64)
        assert np.all(np.abs(total - reported) <= allowance / 2), (total, reported)
        bound = np.asarray(result.duality_gap, np.float64) * total + allowance
        assert np.all(gap.sum(axis=-1) <= bound), (gap.sum(axis=-1) / total, result.duality_gap)
    return objective, gap


def assert_same_optimum(gram, first, second, tau=TAU, normalize=True, coef=False):
    """Asserts what two solves of the SSC problem(s) on ``gram`` (..., n, n) certify about
    each other: ``SSCResult``s (whose reported certificates ``certified`` checks) or
    coefficients, e.g. an ``exact_ssc``.

    Each row i is a LASSO whose fit term is tau-strongly convex in the fitted values
    ``X^T c``, so for any c, ``tau/2 ||X^T (c - c*)||^2 <= P_i(c) - P_i* <= gap_i(c)``: two
    solves' rows are within ``sqrt(2 gap_i / tau)`` of the optimum's fitted values each,
    ``||X^T (c1 - c2)|| = sqrt(d G d)`` (d = c1 - c2) within the sum, and their objectives
    are within the larger gap of each other. The gaps are those of the coefficients,
    taken here in float64 (plus float64's rounding); what the solves reported bounds them.
    The coefficients themselves are certified close only where the problem is strongly
    convex: with ``coef``, on the union S of the two rows' supports,
    ``||d|| <= ||X^T d|| / sqrt(lambda_min(G_SS))``.
    """
    gram = normalized_gram(gram, normalize)
    (p1, g1), (p2, g2) = (certified(gram, r, tau, normalize=False) for r in (first, second))
    c1, c2 = (np.asarray(getattr(r, "coef", r), np.float64) for r in (first, second))
    g1 = np.maximum(g1 + rounding_allowance(c1, np.float64, tau), 0)
    g2 = np.maximum(g2 + rounding_allowance(c2, np.float64, tau), 0)
    radius = np.sqrt(2 * g1 / tau) + np.sqrt(2 * g2 / tau)
    d = c1 - c2
    fit = np.sqrt(np.maximum(np.einsum("...ij,...jk,...ik->...i", d, gram, d), 0))
    assert np.all(fit <= radius), f"fit distance {fit.max()} beyond the certified {radius}"
    assert np.all(np.abs(p1 - p2) <= np.maximum(g1, g2)), "objectives beyond the gaps"
    if coef:
        gram, d, radius = np.broadcast_arrays(gram, d, radius[..., None])
        for index in np.ndindex(d.shape[:-1]):
            support = (c1[index] != 0) | (c2[index] != 0)
            if support.any():
                problem = gram[index[:-1]]
                smallest = np.linalg.eigvalsh(problem[np.ix_(support, support)])[0]
                assert smallest > 0, f"row {index}: support not linearly independent"
                bound = radius[index][0] / np.sqrt(smallest)
                assert np.linalg.norm(d[index]) <= bound, (index, np.linalg.norm(d[index]), bound)


class Solved(NamedTuple):
    """What ``certified`` reads of a solve: coefficients, objective and relative gap."""

    coef: np.ndarray
    objective: float
    duality_gap: float


def stored_layers(stored):
    """Each layer of stored graphs (``coef``: L sparse (n, n), ``diagnostics`` by name, as
    ``StoredGraphs`` or ``LayerGraphs`` hold them) as a ``Solved``, for ``certified``."""
    found = stored.diagnostics
    return [
        Solved(c.toarray(), found["objective"][i], found["duality_gap"][i])
        for i, c in enumerate(stored.coef)
    ]


def problem(result, index):
    """Problem ``index`` of a batched ``SSCResult``."""
    return type(result)(*(np.asarray(field)[index] for field in result))
