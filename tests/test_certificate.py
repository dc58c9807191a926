"""The certified duality gap against exact float64 LASSO solutions (scikit-learn, per row)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import Lasso

import ssc_jax
from lasso_reference import assert_same_optimum, certified, rounding_allowance
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


def lasso_rows(x, rows):
    """(len(rows), n) row i's LASSO solution (0 at i), from scikit-learn in float64.

    Its objective ``1/(2 d) ||y - A w||^2 + alpha ||w||_1`` is ours over tau d at
    ``alpha = 1 / (tau d)``, d samples being the regression's observations.
    """
    n, d = x.shape
    coef = np.zeros((len(rows), n))
    for k, i in enumerate(rows):
        others = np.delete(np.arange(n), i)
        lasso = Lasso(alpha=1 / (TAU * d), fit_intercept=False, tol=1e-14, max_iter=500_000)
        coef[k, others] = lasso.fit(x[others].T, x[i]).coef_
    return coef


def lasso_optima(x, rows, coef=None):
    """(len(rows),) the optimal objective of row i's LASSO: that of ``lasso_rows``."""
    coef = lasso_rows(x, rows) if coef is None else coef
    return np.abs(coef).sum(1) + TAU / 2 * np.sum((x[list(rows)] - coef @ x) ** 2, axis=1)


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
    solutions = lasso_rows(x, rows)
    optima = lasso_optima(x, rows, solutions)
    # The last case runs to what it certifies (a 1e-9 gap), not to a count of iterations.
    late = blocks == 60
    with jax.enable_x64(True):
        early = ssc_jax.ssc(
            x,
            solver=ADMM(),
            tau=TAU,
            max_iterations=100_000 if late else 10 * blocks,
            gap_tol=1e-9 if late else 0.0,
        )
        coef = np.asarray(early.coef)
        # what float64 rounding moves a row's objective or gap by
        allowance = rounding_allowance(coef, np.float64)
        solver = ADMM(tau=TAU)
        for low_rank in (False, True):
            factor = factor_of(x, low_rank)
            for i, optimum in zip(rows, optima, strict=True):
                objective, gap = solver.certificate(factor, coef[i : i + 1], jnp.array([i]))
                objective, gap = float(objective), float(gap)
                assert abs(objective - row_objectives(x, coef)[i]) <= allowance[i] / 2
                assert gap >= -allowance[i]  # nonnegative, up to its rounding
                # The dual bound D = P - gap lies below the optimum (scikit-learn's
                # objective is at or above it).
                assert objective - optimum <= gap + allowance[i]
    if late:
        # Converged far: its reported gap, recomputed in float64 from its coefficients
        # (`certified`), is within 1e-9; then each row's objective and fitted values are
        # within their certified gaps of scikit-learn's (whose own gaps are recomputed too).
        assert bool(early.converged) and float(early.duality_gap) <= 1e-9
        reference = coef.copy()
        reference[list(rows)] = solutions
        assert_same_optimum(x @ x.T, early, reference)


@pytest.mark.parametrize("name", ["subspaces-d24", "subspaces-d150", "digits"])
def test_float32_default_is_certified_against_the_float64_optimum(problems, name):
    x = unit_rows(problems[name])
    result = ssc_jax.ssc(x.astype(np.float32), solver=ADMM())
    assert bool(result.converged)
    gap = float(result.duality_gap)
    assert 0 <= gap <= ADMM().gap_tol
    # Its reported objective and gap are those of its coefficients, recomputed in float64,
    # up to the float32 rounding of its problem and certificate (`certified`); the float64
    # gap bounds the distance to the optimum, and scikit-learn's objective is at or above it.
    objective, gaps = certified(x @ x.T, result)
    optimum = lasso_optima(x, range(60)).sum()
    assert objective.sum() - optimum <= gaps.sum()


def test_the_gap_vanishes_at_the_optimum_and_stops_the_solver(problems):
    """Orthogonal samples: C = 0 is optimal, certified from the start."""
    solver = ADMM(tau=TAU)
    factor, rows = DenseFactor(jnp.eye(4), jnp.ones(4)), jnp.arange(4)
    objective, gap = solver.certificate(factor, jnp.zeros((4, 4)), rows)
    assert float(objective) == pytest.approx(2 * TAU) and float(gap) == 0.0
    # Each run meets its own tolerance, its gap recomputed in float64 from its coefficients
    # (`certified`). The two run the same iterations until the loose one stops; the tight
    # one stops there too exactly when that iterate already meets 1e-6.
    x = problems["subspaces-d150"].astype(np.float32)
    loose = ssc_jax.ssc(x, solver=ADMM(gap_tol=1e-3))
    tight = ssc_jax.ssc(x, solver=ADMM(gap_tol=1e-6))
    for result, tol in ((loose, 1e-3), (tight, 1e-6)):
        assert bool(result.converged) and float(result.duality_gap) <= tol
        certified(x @ x.T, result)
    assert int(tight.iterations) >= int(loose.iterations)
    same = int(tight.iterations) == int(loose.iterations)
    assert same == (float(loose.duality_gap) <= 1e-6)


def test_sparse_correlations_are_the_dense_ones_and_give_the_same_gap(problems):
    """The correlations from the rows of G on each support equal the dense product's in
    float64 (to its rounding), padding rows included, and so do the certified gaps."""
    from ssc_jax.solver import certificate
    from ssc_jax.solver.factor import GramFactor

    x = unit_rows(problems["subspaces-d150"])
    n, rng = len(x), np.random.default_rng(0)
    rows = np.array([0, 7, 33, n, n - 1])  # n is a padding row
    index = np.stack([rng.choice(n, 9, replace=False) for _ in rows])
    values = rng.normal(size=index.shape) * (rng.random(index.shape) < 0.6)
    values[rows == n] = 0
    values[index == rows[:, None]] = 0
    coef = np.zeros((len(rows), n))
    np.put_along_axis(coef, index, values, axis=1)
    with jax.enable_x64(True):
        gram = jnp.asarray(x @ x.T)
        own = jnp.where(jnp.asarray(rows < n)[:, None], gram[np.minimum(rows, n - 1)], 0)
        sparse = certificate.sparse_correlations(
            gram, own, jnp.asarray(rows), jnp.asarray(index), jnp.asarray(values)
        )
        dense = certificate.correlations(GramFactor(gram), jnp.asarray(coef), jnp.asarray(rows))
        diagonal = certificate.diagonal_mask(jnp.asarray(rows), n)
        gaps = [
            certificate.row_gaps(jnp.asarray(coef), *pair, diagonal, TAU)
            for pair in (sparse, dense)
        ]
    # Both sum the same products in another order: float64 rounding of sums of |c_j G_jk|.
    bound = 4 * n * np.finfo(np.float64).eps * (1 + np.abs(values).sum())
    for a, b in zip(sparse, dense, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=bound)
    for a, b in zip(*gaps, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=TAU * n * bound)
