"""Polishing against an exact float64 reference: sklearn's Lasso, one row at a time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import ssc_jax
from lasso_reference import (
    TAU,
    assert_same_optimum,
    exact_ssc,
    normalized_gram,
    rounding_allowance,
    row_certificates,
    unit_rows,
)
from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.factor import DenseFactor
from ssc_jax.solver.polish import polish
from ssc_jax.solver.synthetic import union_of_subspaces

# The slack of polishing's KKT test on the zero coefficients, in float64.
KKT_SLACK = np.sqrt(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def problems():
    """A union of subspaces (60 samples, d = 150 > n: the dense path) and 200 digits
    (d = 64 < n / 2: the low-rank path), each with its exact solution."""
    subspaces = union_of_subspaces(12, 5, 3, 150, noise=0.05, seed=3)[0]
    digits = load_digits().data[:200].astype(np.float64)
    return {name: (x, exact_ssc(x)) for name, x in (("subspaces", subspaces), ("digits", digits))}


@pytest.mark.parametrize("name", ["subspaces", "digits"])
def test_polished_rows_are_the_exact_solution(problems, name):
    x, exact = problems[name]
    with jax.enable_x64(True):
        result = ssc_jax.ssc(x, solver=ADMM(), tau=TAU, polish=True)
        plain = ssc_jax.ssc(x, solver=ADMM(), tau=TAU)
    coef = np.asarray(result.coef)
    # Measured at the default gap_tol 2e-3: 1.0 of the rows verify on subspaces, 0.995 on digits.
    assert float(result.verified) >= 0.95 and float(plain.verified) == 0
    assert int(result.iterations) == int(plain.iterations)
    verified = np.abs(coef - np.asarray(plain.coef)).max(axis=1) > 0
    assert verified.mean() >= 0.95
    # Polishing verifies a row's KKT conditions to the slack sqrt(eps) of its off-support
    # test, which bounds the row's gap by sqrt(eps) of its objective (the dual point is
    # scaled by at most 1 / (1 + sqrt(eps))). Within that gap, the verified rows are as close
    # to the reference as the conditioning of their supports certifies (the other rows are
    # left as the reference's).
    objective, gap = row_certificates(normalized_gram(x @ x.T), coef)
    assert np.all(gap[verified] <= KKT_SLACK * objective[verified])
    assert_same_optimum(x @ x.T, np.where(verified[:, None], coef, exact), exact, coef=True)
    # No spurious tiny coefficients: the support is the reference's.
    np.testing.assert_array_equal(coef[verified] != 0, exact[verified] != 0)
    # The whole gap is that of the rows left as ADMM's plus the verified rows' slack, and
    # polishing lowers it.
    plain_objective, plain_gap = row_certificates(normalized_gram(x @ x.T), plain.coef)
    total = objective.sum()
    bound = (plain_gap[~verified].sum() + KKT_SLACK * objective[verified].sum()) / total
    allowance = rounding_allowance(coef, np.float64).sum() / total
    assert float(result.duality_gap) <= bound + allowance
    assert float(result.duality_gap) < float(plain.duality_gap)
    # Plain ADMM is certifiably not already the optimum on the verified rows: its objective
    # there lies above the polished rows' (which is at or above the optimum) by more than
    # float64 rounding.
    excess = plain_objective[verified] - objective[verified]
    assert excess.sum() > rounding_allowance(coef[verified], np.float64).sum()


def test_polish_is_vmappable_over_problems(problems):
    """Two problems polished under jit(vmap(...)) give each one's own answer."""
    with jax.enable_x64(True):
        factors, starts = [], []
        for name in ("subspaces", "digits"):
            x = unit_rows(problems[name][0][:60])
            values, vectors = np.linalg.eigh(x @ x.T)
            factor = DenseFactor(jnp.asarray(vectors), jnp.asarray(np.maximum(values, 0)))
            factors.append(factor)
            starts.append(ADMM().run(factor, jnp.arange(60)).coef)
        rows = jnp.arange(60)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *factors)
        batched = jax.jit(
            jax.vmap(lambda f, c, tau: polish(f, c, rows, tau, size=32), in_axes=(0, 0, None))
        )(stacked, jnp.stack(starts), TAU)
        for p, (factor, start) in enumerate(zip(factors, starts, strict=True)):
            single = polish(factor, start, rows, TAU, size=32)
            gram = np.asarray(factor.vectors * factor.values) @ np.asarray(factor.vectors).T
            assert_same_optimum(gram, batched.coef[p], single.coef, coef=True)
            np.testing.assert_array_equal(batched.verified[p], single.verified)
            verified = np.asarray(single.verified)
            for gap, objective in (
                (batched.gap[p], batched.objective[p]),
                (single.gap, single.objective),
            ):
                gap, objective = np.asarray(gap)[verified], np.asarray(objective)[verified]
                assert np.all(gap <= KKT_SLACK * objective)
            assert float(np.mean(single.verified)) >= 0.9
