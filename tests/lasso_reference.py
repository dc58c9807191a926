"""Exact SSC references for the solver tests: scikit-learn's Lasso in float64, row by row."""

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
