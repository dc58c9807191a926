"""The working-set solver against exact float64 LASSO solutions (scikit-learn, per row)."""

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
    float64_gram,
    normalized_gram,
    problem,
    rounding_allowance,
    row_certificates,
    unit_rows,
)
from ssc_jax.solver import certificate, chunks
from ssc_jax.solver.factor import GramFactor
from ssc_jax.solver.synthetic import union_of_subspaces
from ssc_jax.solver.working_set import WorkingSet, working_set_sizes


@pytest.fixture(scope="module")
def problems():
    """Subspaces with d > n (the Gram path) and ill-conditioned digits with d < n / 2 (the
    thin-SVD path of ``ssc``), each with its exact solution."""
    subspaces = union_of_subspaces(12, 5, 3, 150, noise=0.05, seed=3)[0]
    digits = load_digits().data[:150].astype(np.float64)
    return {
        name: (x, exact_ssc(x, tol=1e-14, max_iter=500_000))
        for name, x in (("subspaces", subspaces), ("digits", digits))
    }


@pytest.mark.parametrize("name", ["subspaces", "digits"])
def test_float64_finds_the_exact_solution_and_certifies_it(problems, name):
    x, exact = problems[name]
    with jax.enable_x64(True):
        result = ssc_jax.ssc(x, solver=WorkingSet(tau=TAU, gap_tol=1e-12))
        from_gram = ssc_jax.ssc_gram(x @ x.T, solver=WorkingSet(tau=TAU, gap_tol=1e-12))
    for r in (result, from_gram):
        coef = np.asarray(r.coef)
        assert bool(r.converged) and 0 <= float(r.duality_gap) <= 1e-12
        # The coefficients, not only the fit: as close to the reference's as the two gaps
        # and the conditioning of the rows' supports certify.
        assert_same_optimum(x @ x.T, r, exact, coef=True)
        # No spurious tiny coefficients: the support is the reference's.
        np.testing.assert_array_equal(coef != 0, exact != 0)
        assert np.all(np.diagonal(coef) == 0)


@pytest.mark.parametrize("name", ["subspaces", "digits"])
def test_float32_gap_bounds_the_distance_to_the_optimum(problems, name):
    x, exact = problems[name]
    for gap_tol in (2e-3, 1e-5):
        result = ssc_jax.ssc(x.astype(np.float32), solver=WorkingSet(tau=TAU, gap_tol=gap_tol))
        assert bool(result.converged) and float(result.duality_gap) <= gap_tol
        # The float32 gap bounds the float64 objective's excess over the optimum, and the
        # distance of the fitted values from the optimum's, up to float32 rounding.
        assert_same_optimum(x @ x.T, result, exact)
    # At the tight tolerance, so are the coefficients, by the conditioning of the supports.
    assert_same_optimum(x @ x.T, result, exact, coef=True)


def test_row_chunks_and_batches_give_the_same_answer(problems):
    x = problems["subspaces"][0].astype(np.float32)
    grams = np.stack([x @ x.T, 4 * x @ x.T])
    solver = WorkingSet(gap_tol=1e-5)
    whole = ssc_jax.ssc_gram(grams, solver=solver)
    chunked = ssc_jax.ssc_gram(grams, solver=solver, memory_budget_bytes=400_000)
    for result in (whole, chunked):
        assert np.all(result.converged) and np.all(np.asarray(result.duality_gap) <= 1e-5)
    # Each solve stops within its certified gap of the optimum, not at one point: the row
    # blocks and the whole agree as far as their gaps imply. Normalised samples: a scaled
    # Gram is the same problem.
    assert_same_optimum(grams, chunked, whole)
    assert_same_optimum(grams[0], problem(whole, 0), problem(whole, 1))


def test_a_sweep_over_tau_and_tolerances_compiles_once(problems):
    x = problems["subspaces"][0][:41].astype(np.float32)
    # The first solve compiles this shape, unless another test already has.
    results = [ssc_jax.ssc_gram(x @ x.T, solver=WorkingSet(tau=5.0))]
    compiled = chunks.run_batch._cache_size()
    results += [ssc_jax.ssc_gram(x @ x.T, solver=WorkingSet(tau=tau)) for tau in (10, 20.0)]
    ssc_jax.ssc_gram(x @ x.T, solver=WorkingSet(), gap_tol=1e-5, sweep_tol=1e-4)
    assert chunks.run_batch._cache_size() == compiled
    assert len({float(r.objective) for r in results}) == 3


def test_a_warm_start_from_the_answer_needs_no_round(problems):
    x = problems["digits"][0].astype(np.float32)
    cold = ssc_jax.ssc(x, solver=WorkingSet(gap_tol=1e-4))
    warm = ssc_jax.ssc(x, solver=WorkingSet(gap_tol=1e-4), init=cold)
    assert int(cold.iterations) >= 1 and int(warm.iterations) == 0
    np.testing.assert_array_equal(warm.coef, cold.coef)


def test_a_zero_sample_stays_isolated(problems):
    x = problems["subspaces"][0].astype(np.float32).copy()
    x[7] = 0
    result = ssc_jax.ssc_gram(x @ x.T, solver=WorkingSet())
    coef = np.asarray(result.coef)
    assert bool(result.converged)
    assert not coef[7].any() and not coef[:, 7].any()


def test_settings_are_the_solvers_own_and_bad_input_is_named(problems):
    x = problems["subspaces"][0].astype(np.float32)
    with pytest.raises(ValueError, match="rel_tol for WorkingSet"):
        ssc_jax.ssc(x, solver=WorkingSet(), rel_tol=1e-3)
    indefinite = x @ x.T
    indefinite[0, 1] = indefinite[1, 0] = 10 * indefinite.max()
    with pytest.raises(ValueError, match="positive semidefinite"):
        ssc_jax.ssc_gram(indefinite, solver=WorkingSet())
    with pytest.raises(ValueError, match="tau"):
        ssc_jax.ssc(x, solver=WorkingSet(tau=-1.0))


def _screened(x, coef, tau=TAU):
    """(n,) gap-safe screening of every row of ``coef`` on the unit rows of ``x``, float64."""
    with jax.enable_x64(True):
        gram = jnp.asarray(unit_rows(x) @ unit_rows(x).T)
        rows = jnp.arange(len(x))
        factor = GramFactor(gram)
        diagonal = certificate.diagonal_mask(rows, len(x))
        squared, q = certificate.correlations(factor, jnp.asarray(coef), rows)
        _, gap = certificate.row_gaps(jnp.asarray(coef), squared, q, diagonal, tau)
        norms = jnp.sqrt(jnp.diagonal(gram))
        return np.asarray(certificate.safe_zeros(jnp.asarray(coef), q, gap, norms, diagonal, tau))


@pytest.mark.parametrize("name", ["subspaces", "digits"])
def test_screening_proves_the_exact_support_and_never_a_wrong_one(problems, name):
    x, exact = problems[name]
    assert _screened(x, exact).mean() > 0.9
    # A row missing one coefficient of the optimum's support is never passed.
    missing = exact.copy()
    for i in range(len(x)):
        support = np.flatnonzero(exact[i])
        missing[i, support[np.argmax(np.abs(exact[i, support]))]] = 0
    assert not _screened(x, missing).any()
    # Rows a loose solve leaves proven have the optimum's support within theirs.
    loose = np.asarray(ssc_jax.ssc(x.astype(np.float32), solver=WorkingSet(gap_tol=2e-3)).coef)
    proven = _screened(x, loose.astype(np.float64))
    assert proven.any()
    assert np.all(((exact != 0) <= (loose != 0))[proven])


def test_the_result_counts_the_proven_rows(problems):
    x = problems["subspaces"][0]
    with jax.enable_x64(True):
        tight = ssc_jax.ssc(x, solver=WorkingSet(tau=TAU, gap_tol=1e-12))
    loose = ssc_jax.ssc(x.astype(np.float32), solver=WorkingSet(gap_tol=2e-3))
    assert float(tight.verified) == 1.0
    assert 0 <= float(loose.verified) <= float(tight.verified)


def test_the_working_set_ladder_and_a_row_denser_than_its_lowest_rung(problems):
    assert working_set_sizes(128, 1000) == [16, 32, 64, 128]
    assert working_set_sizes(64, 1000) == [8, 16, 32, 64]
    assert working_set_sizes(16, 1000) == [8, 16]
    assert working_set_sizes(128, 20) == [16, 19]
    # At tau = 100 digits rows use 20-40 samples: the upper rungs, to the same optimum.
    x = problems["digits"][0]
    with jax.enable_x64(True):
        result = ssc_jax.ssc(x, solver=WorkingSet(tau=100.0, gap_tol=1e-10))
    exact = exact_ssc(x, tau=100.0, tol=1e-14, max_iter=500_000)
    assert (exact != 0).sum(axis=1).max() > 16
    assert bool(result.converged) and float(result.duality_gap) <= 1e-10
    assert_same_optimum(x @ x.T, result, exact, tau=100.0, coef=True)


def test_very_low_rank_data_reaches_a_tight_gap():
    """60 samples in 5 dimensions: the coordinate descent converges slowly there, and the
    sweep cap grows after rounds that stall (``sweep_cap``), so the default gap is reached
    and, in float64, the exact solution."""
    x = np.random.default_rng(0).normal(size=(60, 5))
    result = ssc_jax.ssc(x.astype(np.float32))
    assert bool(result.converged) and float(result.duality_gap) <= WorkingSet().gap_tol
    with jax.enable_x64(True):
        exact = ssc_jax.ssc(x, solver=WorkingSet(gap_tol=1e-12))
    assert bool(exact.converged) and float(exact.duality_gap) <= 1e-12
    # The float64 certificate of 1e-12 bounds its distance to the optimum; the float32
    # default's gap bounds its own.
    assert_same_optimum(x @ x.T, result, exact)


def test_the_sweep_cap_doubles_after_each_round_that_stalls():
    from ssc_jax.solver.working_set import sweep_cap

    gaps = jnp.asarray([1e-2, 1e-3, 9e-4, 8e-4, 1e-4, -1.0, -1.0])
    # 1e-3 after 1e-2 halves it; 9e-4 and 8e-4 stall; 1e-4 halves; no round ran after.
    assert int(sweep_cap(30, gaps)) == 30 * 2**2
    assert int(sweep_cap(30, jnp.full(10, 0.9))) == 30 * 2**4
    assert int(sweep_cap(30, -jnp.ones(10))) == 30


@pytest.mark.parametrize("source", ["samples", "gram"])
def test_the_float64_finish_reports_the_float64_certificate(source):
    """A solve that stops short of gap_tol is finished in float64 (``float64_finish``): its
    reported gap is the float64 certificate of its coefficients, rounded up to float32. At
    1e-10, below what float32 coefficients certify, the rounds stall and the finish stops
    short too. 60 samples: the Gram shape the tests above compiled."""
    x = np.maximum(np.random.default_rng(1).normal(size=(60, 64)), 0).astype(np.float32)
    # The problem is what the solve was given: the samples, or their float32 Gram.
    gram = float64_gram(x) if source == "samples" else x @ x.T
    with pytest.warns(ssc_jax.ConvergenceWarning, match="stalled"):
        if source == "samples":
            stopped = ssc_jax.ssc(x, gap_tol=1e-10)
        else:
            stopped = ssc_jax.ssc_gram(gram, gap_tol=1e-10)
    objective, gap = row_certificates(normalized_gram(gram), stopped.coef, TAU)
    relative = gap.sum() / objective.sum()
    # The reference and the finish take the same float64 sums in another order: they agree
    # to float64's rounding of the gap's terms, and the report is rounded up to float32.
    allowance = rounding_allowance(stopped.coef, np.float64).sum() / objective.sum()
    reported = float(stopped.duality_gap)
    top = relative * (1 + 2 * np.finfo(np.float32).eps) + allowance
    assert relative - allowance <= reported <= top
    # Finished below the float32 default's tolerance, though not to 1e-10.
    assert not bool(stopped.converged) and 1e-10 < reported <= WorkingSet().gap_tol
    np.testing.assert_allclose(float(stopped.objective), objective.sum(), rtol=1e-6)


def test_each_row_takes_its_own_rung():
    from ssc_jax.solver.working_set.subproblems import row_levels

    # Rungs 16, 32, 64, 128 leave a quarter free up to 12, 24, 48 and 96 nonzeros.
    supports = jnp.asarray([0, 0, 10, 30, 30, 100])
    violated = jnp.asarray([0, 50, 2, 0, 40, 0])
    levels = row_levels(supports, violated, [16, 32, 64, 128])
    np.testing.assert_array_equal(levels, [0, 1, 0, 2, 3, 3])


def test_the_rows_of_smallest_gap_within_the_settled_share_are_settled():
    from ssc_jax.solver.working_set.subproblems import SETTLED_SHARE, settled_rows

    gap = jnp.asarray([4.0, 0.5, 1.0, 0.0, 2.0])
    objective = jnp.full(5, 200.0)
    # The four smallest gaps add up to 3.5, with the fifth to 7.5.
    for allowed, expected in ((3.6, [0, 1, 1, 1, 1]), (3.4, [0, 1, 1, 1, 0])):
        settled = settled_rows(gap, objective, allowed / (SETTLED_SHARE * 1000))
        np.testing.assert_array_equal(settled, np.asarray(expected, bool))


def test_rows_in_chunks_of_several_rungs_reach_the_optimum(problems):
    """150 rows in chunks of 16: rows sorted by rung, chunks of different rungs, a padded
    last chunk, rows settling at different rounds; the same optimum as the whole block."""
    x, exact = problems["subspaces"]
    x32 = x.astype(np.float32)
    for gap_tol in (2e-3, 1e-5):
        solver = WorkingSet(gap_tol=gap_tol, chunk_rows=16)
        result = ssc_jax.ssc_gram(x32 @ x32.T, solver=solver)
        assert bool(result.converged) and float(result.duality_gap) <= gap_tol
        assert_same_optimum(x @ x.T, result, exact)
    assert_same_optimum(x @ x.T, result, exact, coef=True)


def test_settled_rows_keep_their_coefficients(problems):
    """A warm start whose rows are each within a hundredth of gap_tol, but for 40 rows set
    to zero: those 40 are solved again, the others stay as they were, to the bit."""
    x = problems["subspaces"][0].astype(np.float32)
    start = np.array(ssc_jax.ssc_gram(x @ x.T, solver=WorkingSet(gap_tol=1e-7)).coef)
    objective, gap = row_certificates(normalized_gram(x @ x.T), start, TAU)
    gap_tol = 1e-3
    assert np.all(gap <= 0.01 * gap_tol * objective)
    start[:40] = 0
    result = ssc_jax.ssc_gram(x @ x.T, solver=WorkingSet(gap_tol=gap_tol), init=start)
    coef = np.asarray(result.coef)
    assert bool(result.converged) and int(result.iterations) >= 1
    np.testing.assert_array_equal(coef[40:], start[40:])
    assert np.all(np.any(coef[:40] != 0, axis=1))
