"""The certified duality gap against exact float64 LASSO solutions (scikit-learn, per row)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import Lasso

import ssc_jax
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.factor import DenseFactor, LowRankFactor
from ssc_jax.solver.synthetic import union_of_subspaces

TAU = 10.0


def unit_rows(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def row_objectives(x, coef):
    """(n,) ``||c_i||_1 + tau/2 ||x_i - X^T c_i||^2`` in float64."""
    coef = np.asarray(coef, np.float64)
    return np.abs(coef).sum(1) + TAU / 2 * np.sum((x - coef @ x) ** 2, axis=1)


def lasso_optima(x, rows):
    """(len(rows),) the optimal objective of row i's LASSO, from scikit-learn in float64.

    Its objective ``1/(2 d) ||y - A w||^2 + alpha ||w||_1`` is ours over tau d at
    ``alpha = 1 / (tau d)``, d samples being the regression's observations.
    """
    n, d = x.shape
    optima = []
    for i in rows:
        others = np.delete(np.arange(n), i)
        lasso = Lasso(alpha=1 / (TAU * d), fit_intercept=False, tol=1e-14, max_iter=500_000)
        w = lasso.fit(x[others].T, x[i]).coef_
        optima.append(np.abs(w).sum() + TAU / 2 * np.sum((x[i] - w @ x[others]) ** 2))
    return np.asarray(optima)


@pytest.fixture(scope="module")
def problems():
    """Unit-norm samples: subspaces with d < n and d > n, and ill-conditioned digits."""
    subspaces = {
        f"subspaces-d{d}": union_of_subspaces(12, 5, 3, d, noise=0.05, seed=d)[0] for d in (24, 150)
    }
    return {**subspaces, "digits": load_digits().data[:60]}


def factor_of(x, low_rank):
    values, vectors = np.linalg.eigh(x @ x.T)
    if low_rank:
        rank = np.linalg.matrix_rank(x)
        return LowRankFactor(jnp.asarray(vectors[:, -rank:]), jnp.asarray(values[-rank:]))
    return DenseFactor(jnp.asarray(vectors), jnp.maximum(jnp.asarray(values), 0))


@pytest.mark.parametrize("name", ["subspaces-d24", "subspaces-d150", "digits"])
@pytest.mark.parametrize("blocks", [3, 12, 60])
def test_each_rows_gap_bounds_its_distance_to_the_optimum(problems, name, blocks):
    """Early and late iterates alike: ``0 <= P_i - P*_i <= gap_i`` for every row i."""
    x = unit_rows(problems[name])
    rows = range(0, 60, 7)
    optima = lasso_optima(x, rows)
    with jax.enable_x64(True):
        early = ssc_jax.ssc(x, tau=TAU, max_iterations=10 * blocks, gap_tol=0.0)
        coef = np.asarray(early.coef)
        solver = ADMM(tau=TAU)
        for low_rank in (False, True):
            factor = factor_of(x, low_rank)
            for i, optimum in zip(rows, optima, strict=True):
                objective, gap = solver.certificate(factor, coef[i : i + 1], jnp.array([i]))
                objective, gap = float(objective), float(gap)
                assert objective == pytest.approx(row_objectives(x, coef)[i], rel=1e-10)
                assert gap >= 0
                # The dual bound D = P - gap lies below the optimum (scikit-learn's
                # objective is at or above it).
                assert objective - optimum <= gap + 1e-10 * objective
    if blocks == 60:
        # Converged far: the certificate is tight, and so is C.
        assert float(early.duality_gap) < 1e-9
        np.testing.assert_allclose(row_objectives(x, coef)[list(rows)], optima, rtol=1e-8)


@pytest.mark.parametrize("name", ["subspaces-d24", "subspaces-d150", "digits"])
def test_float32_default_is_certified_against_the_float64_optimum(problems, name):
    x = unit_rows(problems[name])
    result = ssc_jax.ssc(x.astype(np.float32))
    assert bool(result.converged)
    gap = float(result.duality_gap)
    assert 0 <= gap <= ADMM().gap_tol
    objective = row_objectives(x, result.coef).sum()
    optimum = lasso_optima(x, range(60)).sum()
    assert float(result.objective) == pytest.approx(objective, rel=1e-5)
    # The certificate in float32 bounds the float64 distance to the optimum, up to its own
    # rounding (1e-6 of the objective).
    assert 0 <= (objective - optimum) / objective <= gap + 1e-6


def test_the_gap_vanishes_at_the_optimum_and_stops_the_solver(problems):
    """Orthogonal samples: C = 0 is optimal, certified from the start."""
    solver = ADMM(tau=TAU)
    factor, rows = DenseFactor(jnp.eye(4), jnp.ones(4)), jnp.arange(4)
    objective, gap = solver.certificate(factor, jnp.zeros((4, 4)), rows)
    assert float(objective) == pytest.approx(2 * TAU) and float(gap) == 0.0
    # A tighter gap_tol takes more iterations, and each run meets its own tolerance.
    x = problems["subspaces-d150"].astype(np.float32)
    loose, tight = ssc_jax.ssc(x, gap_tol=1e-3), ssc_jax.ssc(x, gap_tol=1e-6)
    assert bool(loose.converged) and bool(tight.converged)
    assert float(tight.duality_gap) <= 1e-6 < float(loose.duality_gap) <= 1e-3
    assert int(tight.iterations) > int(loose.iterations)
