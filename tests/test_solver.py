"""The SSC solver against an exact float64 reference, and its batching, chunking and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssc_jax
from lasso_reference import (
    TAU,
    assert_same_optimum,
    exact_ssc,
    float64_gram,
    problem,
    unit_rows,
)
from ssc_jax.core.memory import problem_bytes
from ssc_jax.solver import chunks
from ssc_jax.solver import options as options_module
from ssc_jax.solver import solve as solver_module
from ssc_jax.solver.admm import ADMM, Status
from ssc_jax.solver.factor import DenseFactor, LowRankFactor
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.synthetic import union_of_subspaces


@pytest.fixture(autouse=True)
def admm_unless_named(monkeypatch):
    """This module tests ADMM: a call that names no solver gets ``ADMM()``."""
    monkeypatch.setattr(options_module, "DEFAULT_SOLVER", ADMM())


@pytest.fixture(scope="module")
def data():
    """Noisy unions of subspaces: 60 samples in d = 24 (d < n) and d = 150 (d > n)."""
    return {
        d: union_of_subspaces(12, 5, 3, d, noise=0.05, seed=d)[0].astype(np.float32)
        for d in (24, 150)
    }


@pytest.mark.parametrize("d", [24, 150])
def test_default_float32_reaches_float64_optimum(data, d):
    x = data[d]
    result = ssc_jax.ssc(x)
    # Within its certified gap of the optimum (objective and fitted values), and its reported
    # objective and gap are those of its coefficients, up to float32 rounding.
    assert_same_optimum(float64_gram(x), result, exact_ssc(x))
    assert bool(result.converged) and int(result.status) == Status.CONVERGED
    coef = np.asarray(result.coef)
    assert coef.shape == (60, 60) and np.all(np.diag(coef) == 0)
    assert int(result.iterations) % ADMM().inner_iterations == 0
    assert 0 <= float(result.duality_gap) <= ADMM().gap_tol
    assert result.errors.shape[-1] == 3


def test_mu_adapts_and_the_inverse_follows_it(data):
    x = unit_rows(data[150].astype(np.float64))
    gram = x @ x.T
    values, vectors = np.linalg.eigh(gram)
    dense = DenseFactor(jnp.asarray(vectors, jnp.float32), jnp.asarray(values, jnp.float32))
    for mu in (0.5, 10.0, 80.0):
        # An exact identity in float32: V diag(1 / (tau l + mu)) V^T has entries of at most
        # 1 / mu = 2, rounded in V and in sums of 60 terms; 2e-5 is 1e-5 of that scale.
        inverse = np.asarray(dense.prepare(TAU, mu))
        np.testing.assert_allclose(inverse, np.linalg.inv(TAU * gram + mu * np.eye(60)), atol=2e-5)
    # A start far from the balanced mu forces many mu changes; the answer must not move.
    start_low = ssc_jax.ssc(data[150], mu=0.5)
    start_high = ssc_jax.ssc(data[150], mu=500.0)
    assert float(start_low.mu) != 0.5 and float(start_high.mu) != 500.0
    exact = exact_ssc(data[150])
    for result in (start_low, start_high):
        assert_same_optimum(float64_gram(data[150]), result, exact)


def test_mu_follows_the_ratio_of_the_relative_residuals():
    solver = ADMM(balance=1.2, mu_factor=10.0, mu_bounds=(1e-4, 1e4))
    rule = lambda mu, primal, dual: float(solver.balanced_mu(jnp.float32(mu), primal, dual))
    assert rule(5.0, 1.1, 1.0) == 5.0  # inside the band: kept
    assert rule(5.0, 4.0, 1.0) == pytest.approx(10.0)  # scaled by sqrt(4)
    assert rule(5.0, 1.0, 16.0) == pytest.approx(1.25)
    assert rule(5.0, 1e6, 1.0) == pytest.approx(50.0)  # at most mu_factor per change
    assert rule(5.0, 1.0, 0.0) == pytest.approx(50.0)  # no dual residual: grow
    assert rule(5.0, 0.0, 0.0) == 5.0  # undefined: kept
    assert rule(5e3, 1e6, 1.0) == pytest.approx(1e4)  # within mu_bounds


@pytest.mark.slow
def test_balancing_finds_a_good_mu_from_a_poor_start():
    """Digits pixels are nonnegative and strongly correlated, like post-ReLU activations."""
    from sklearn.datasets import load_digits

    x = load_digits().data[:200].astype(np.float32)
    default = int(ssc_jax.ssc(x).iterations)
    for start in (1.0, 100.0):
        adapted = ssc_jax.ssc(x, mu=start)
        fixed = ssc_jax.ssc(x, mu=start, balance=np.inf)  # mu never moves
        assert bool(adapted.converged) and float(fixed.mu) == start
        assert int(adapted.iterations) <= 1.5 * default < 0.5 * int(fixed.iterations)


def test_low_rank_update_equals_dense_update(data):
    x = unit_rows(data[24].astype(np.float64))
    values, vectors = np.linalg.eigh(x @ x.T)
    dense = DenseFactor(jnp.asarray(vectors), jnp.asarray(values))
    thin = LowRankFactor(jnp.asarray(vectors[:, -24:]), jnp.asarray(values[-24:]))
    rows = jnp.array([*range(10, 30), 60])  # 60 pads: a zero row of the identity
    d = jnp.asarray(np.random.default_rng(0).normal(size=(21, 60)))
    gram = x @ x.T
    eye_rows = np.eye(61, 60)[np.asarray(rows)]
    for mu in (1.0, 37.0):
        operand = d - mu * eye_rows  # the update takes D - mu E
        want = dense.z_update(dense.prepare(TAU, mu), operand, mu, eye_rows == 1)
        got = thin.z_update(thin.prepare(TAU, mu), operand, mu, eye_rows == 1)
        np.testing.assert_allclose(got, want, atol=1e-4)
        exact = (TAU * eye_rows @ gram + np.asarray(d)) @ np.linalg.inv(
            TAU * gram + mu * np.eye(60)
        )
        np.testing.assert_allclose(want, exact, atol=1e-4)


@pytest.mark.parametrize("d", [24, 150])
def test_gram_and_feature_paths_agree(data, d):
    x = data[d]
    from_features = ssc_jax.ssc(x)
    from_gram = ssc_jax.ssc_gram(x @ x.T)
    dense = ssc_jax.ssc_gram(x @ x.T, low_rank=False)
    for result in (from_gram, dense):
        assert_same_optimum(float64_gram(x), result, from_features)


@pytest.mark.slow
@pytest.mark.parametrize("sequential", [True, False], ids=["one-by-one", "side-by-side"])
def test_batch_equals_single_problems(data, sequential, monkeypatch):
    # The CPU solves a batch one problem at a time, an accelerator side by side (vmap, with
    # the optional work shared across the batch); both must give the single-problem answers.
    monkeypatch.setattr(chunks, "sequential_batches", lambda mesh: sequential)
    grams = np.stack([x @ x.T for x in (data[24], data[150], 2 * data[150])])
    batched = ssc_jax.ssc_gram(grams)
    assert batched.coef.shape == (3, 60, 60) and batched.iterations.shape == (3,)
    for i, gram in enumerate(grams):
        single = ssc_jax.ssc_gram(gram, low_rank=False)
        assert_same_optimum(gram, problem(batched, i), single)
        assert int(batched.iterations[i]) == int(single.iterations)
    nested = ssc_jax.ssc_gram(grams[[0, 1, 2, 0]].reshape(2, 2, 60, 60))
    assert nested.coef.shape == (2, 2, 60, 60)
    assert_same_optimum(grams[0], problem(nested, (1, 1)), problem(batched, 0))


def test_chunks_from_a_memory_budget_give_the_same_answer(data):
    grams = np.stack([x @ x.T for x in (data[24], data[150], data[150] + 0.01)])
    whole = ssc_jax.ssc_gram(grams, low_rank=False)
    one_problem = problem_bytes(60, 60, 60, 4)
    by_problem = ssc_jax.ssc_gram(grams, low_rank=False, memory_budget_bytes=one_problem)
    assert_same_optimum(grams, by_problem, whole)
    # Row blocks of 16: four blocks, the last one padded; each block is its own LASSO set
    # with its own mu and stopping test, so it lands on the same optimum to the tolerance:
    # as close as the certified gaps imply.
    rows_budget = problem_bytes(60, 60, 16, 4)
    by_rows = ssc_jax.ssc_gram(grams, low_rank=False, memory_budget_bytes=rows_budget)
    assert isinstance(by_rows.coef, np.ndarray)
    assert np.all(by_rows.converged)
    assert_same_optimum(grams, by_rows, whole)
    tight = {"rel_tol": 1e-6, "abs_tol": 1e-9, "low_rank": False}
    assert_same_optimum(
        grams,
        ssc_jax.ssc_gram(grams, memory_budget_bytes=rows_budget, **tight),
        ssc_jax.ssc_gram(grams, **tight),
    )


def test_zero_sample_stays_isolated(data):
    x = data[24].copy()
    x[7] = 0
    for result in (ssc_jax.ssc(x), ssc_jax.ssc_gram(x @ x.T), ssc_jax.ssc(x, normalize=False)):
        coef = np.asarray(result.coef)
        assert np.all(np.isfinite(coef))
        assert np.all(coef[7] == 0) and np.all(coef[:, 7] == 0)
        assert np.isfinite(float(result.objective))


def test_normalization_is_switchable(data):
    x = data[24] * np.linspace(0.5, 3, 60, dtype=np.float32)[:, None]
    normalized = ssc_jax.ssc(x)
    assert_same_optimum(float64_gram(x), ssc_jax.ssc(unit_rows(x)), normalized)
    raw = ssc_jax.ssc(x, normalize=False)
    # Another problem: its answer differs by far more than any solve's rounding or gap.
    assert not np.allclose(raw.coef, normalized.coef, atol=1e-3)


def test_affinity():
    coef = np.array([[0.0, -2.0, 0.5], [1.0, 0.0, 0.0], [0.0, 0.25, 0.0]])
    want = np.abs(coef) + np.abs(coef).T
    np.testing.assert_allclose(ssc_jax.affinity(coef), want)
    assert ssc_jax.affinity(np.stack([coef, coef])).shape == (2, 3, 3)


def test_float64_under_strict_promotion(data):
    x = data[150].astype(np.float64)
    with jax.enable_x64(True), jax.numpy_dtype_promotion("strict"):
        result = ssc_jax.ssc(x, rel_tol=1e-7, abs_tol=1e-12)
        assert result.coef.dtype == jnp.float64
        assert_same_optimum(x @ x.T, result, exact_ssc(x))


def test_terminate_needs_both_residual_tests_and_the_certified_gap():
    solver = ADMM(gap_tol=1e-4, max_iterations=100)
    factor, rows = DenseFactor(jnp.eye(3), jnp.ones(3)), jnp.arange(3)
    start = solver.init(factor, rows)
    assert not bool(solver.terminate(start))
    # From C = 0 the objective is tau/2 ||X||_F^2 = 15, taken by postprocess where missing.
    assert float(solver.postprocess(factor, start, rows).objective) == pytest.approx(15.0)
    f32 = jnp.float32
    passing = start._replace(
        iteration=jnp.asarray(50, jnp.int32),
        primal_residual=f32(1.0),
        eps_primal=f32(2.0),
        dual_residual=f32(1.0),
        eps_dual=f32(2.0),
        objective=f32(2.0),
        gap=f32(1e-4),
    )
    assert bool(solver.terminate(passing))
    assert int(solver.postprocess(factor, passing, rows).status) == Status.CONVERGED
    for failing in ({"primal_residual": 3.0}, {"dual_residual": 3.0}, {"gap": 4e-4}):
        state = passing._replace(**{name: f32(value) for name, value in failing.items()})
        assert not bool(solver.terminate(state)), failing
    capped = passing._replace(iteration=jnp.asarray(100, jnp.int32), gap=f32(4e-4))
    assert bool(solver.terminate(capped))
    assert int(solver.postprocess(factor, capped, rows).status) == Status.MAX_ITERATIONS
    broken = passing._replace(finite=jnp.asarray(False))
    assert bool(solver.terminate(broken))
    assert int(solver.postprocess(factor, broken, rows).status) == Status.NONFINITE


def test_options_and_flat_settings_configure_alike(data):
    x = data[24] * np.linspace(0.5, 3, 60, dtype=np.float32)[:, None]
    flat = ssc_jax.ssc(x, normalize=False, tau=5.0)
    for result in (
        ssc_jax.ssc(x, options=SolverOptions(normalize=False), tau=5.0),
        ssc_jax.ssc(x, solver=ADMM(tau=20.0), options=SolverOptions(normalize=False), tau=5.0),
        ssc_jax.ssc(x, solver=ADMM(tau=5.0), normalize=False),
    ):
        np.testing.assert_array_equal(result.coef, flat.coef)
        assert int(result.iterations) == int(flat.iterations)
    assert not np.allclose(ssc_jax.ssc(x, tau=5.0).coef, flat.coef, atol=1e-3)
    assert not np.allclose(ssc_jax.ssc(x, normalize=False).coef, flat.coef, atol=1e-3)


def test_an_unknown_setting_is_named():
    with pytest.raises(ValueError, match="step_size"):
        ssc_jax.ssc(np.eye(3), step_size=2)
    with pytest.raises(ValueError, match="rel_toll"):
        ssc_jax.ssc_gram(np.eye(3), rel_toll=1e-3)


def test_nonfinite_iterates_stop_with_a_status():
    vectors = jnp.full((4, 4), jnp.nan)
    state = ADMM().run(DenseFactor(vectors, jnp.ones(4)), jnp.arange(4))
    assert int(state.status) == Status.NONFINITE
    assert np.all(np.isfinite(state.coef))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ssc_jax.ssc(np.array([[1.0, np.nan], [0.0, 1.0]])), "NaN or Inf"),
        (lambda: ssc_jax.ssc(np.array([[1.0, np.inf], [0.0, 1.0]])), "NaN or Inf"),
        (lambda: ssc_jax.ssc(np.ones(5)), "2-D"),
        (lambda: ssc_jax.ssc(np.ones((2, 3, 4))), "2-D"),
        (lambda: ssc_jax.ssc(np.ones((1, 4))), "at least 2 samples"),
        (lambda: ssc_jax.ssc(np.eye(3), tau=0), "tau"),
        (lambda: ssc_jax.ssc(np.eye(3), tau=-1.0), "tau"),
        (lambda: ssc_jax.ssc(np.eye(3), mu=0), "mu"),
        (lambda: ssc_jax.ssc(np.eye(3), solver=ADMM(mu=-2.0)), "mu"),
        (lambda: ssc_jax.ssc_gram(np.eye(3), tau=0.0), "tau"),
        (lambda: ssc_jax.ssc_gram(np.eye(3), rank=0), "rank"),
        (lambda: ssc_jax.ssc(np.eye(3), rank=1.5), "rank"),
        (lambda: ssc_jax.ssc(np.eye(3), step_size=2), "unknown solver setting"),
        (lambda: ssc_jax.ssc_gram(np.ones((3, 4))), "square"),
        (lambda: ssc_jax.ssc_gram(np.ones(3)), "Gram matrix"),
        (lambda: ssc_jax.ssc_gram(np.ones((1, 1))), "at least 2 samples"),
        (lambda: ssc_jax.ssc_gram(np.full((3, 3), np.nan)), "NaN or Inf"),
        (lambda: ssc_jax.ssc_gram(np.triu(np.ones((3, 3)))), "symmetric"),
        (lambda: ssc_jax.ssc_gram(-np.eye(3) + 0.1, normalize=False), "positive semidefinite"),
        (lambda: ssc_jax.affinity(np.ones((2, 3))), "square"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_ill_conditioned_real_data_reaches_the_optimum():
    """Digits pixels: a Gram whose spectrum spans many decades, like a CNN layer's."""
    from sklearn.datasets import load_digits

    x = load_digits().data[:80].astype(np.float32)
    exact = exact_ssc(x)
    for result in (ssc_jax.ssc_gram(x @ x.T), ssc_jax.ssc(x), ssc_jax.ssc(x, low_rank=False)):
        assert_same_optimum(float64_gram(x), result, exact)


def test_rank_keeps_small_eigenvalues_that_the_gram_resolves():
    """Eigenvalues at 1e-6 of the largest are real in a float64 Gram: never truncated; in a
    float32 Gram of 60 samples they are below its rounding (60 eps = 7e-6) and dropped."""
    from ssc_jax.solver.factor import choose_factor, factor_eps

    values = jnp.asarray(np.r_[np.full(40, 1e-6), np.ones(20)], jnp.float32)
    vectors = jnp.eye(60)[None]
    eps = factor_eps(jnp.float32, True)
    precise = choose_factor(values[None], vectors, None, eps, gram_eps=np.finfo(np.float64).eps)
    assert isinstance(precise, DenseFactor) and precise.values.shape == (1, 60)
    for noisy in (
        choose_factor(values[None], vectors, None, eps, gram_eps=np.finfo(np.float32).eps),
        choose_factor(values[None], vectors, None, factor_eps(jnp.float32, False)),
    ):
        assert isinstance(noisy, LowRankFactor) and noisy.values.shape == (1, 20)


def test_float32_gram_of_few_features_takes_the_low_rank_path(monkeypatch):
    """A float32 Gram of d = 20 < n / 2 features: its rounding noise is not rank."""
    x = union_of_subspaces(16, 5, 3, 20, noise=0.05, seed=3)[0].astype(np.float32)
    gram = x @ x.T
    chosen = []
    choose = solver_module.choose_factor

    def spy(*args, **kwargs):
        chosen.append(choose(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(solver_module, "choose_factor", spy)
    dense = ssc_jax.ssc_gram(gram, low_rank=False)
    judged = ssc_jax.ssc_gram(gram)
    given = ssc_jax.ssc_gram(gram, rank=20)
    assert isinstance(chosen[0], DenseFactor)
    assert [type(f) for f in chosen[1:]] == [LowRankFactor, LowRankFactor]
    assert chosen[1].values.shape == chosen[2].values.shape == (1, 20)
    for result in (judged, given):
        assert_same_optimum(gram, result, dense)
    # Below the data's rank, the bound is what the caller asked for: a truncated problem.
    truncated = ssc_jax.ssc_gram(gram, rank=5)
    assert chosen[3].values.shape == (1, 5)
    assert float(truncated.objective) != pytest.approx(float(dense.objective), rel=1e-2)
    features = ssc_jax.ssc(x, rank=20)
    assert_same_optimum(gram, features, dense)


_SHARDED = """
import jax, numpy as np, ssc_jax
from lasso_reference import assert_same_optimum, float64_gram
from ssc_jax.solver.synthetic import union_of_subspaces
assert len(jax.devices()) == 4
xs = [union_of_subspaces(12, 5, 6, d, noise=0.05, seed=s)[0] for s, d in enumerate((20, 90, 90))]
grams = np.stack([x @ x.T for x in xs]).astype(np.float32)
admm = ssc_jax.ADMM()
one = ssc_jax.ssc_gram(grams, solver=admm, devices=jax.devices()[:1])
many = ssc_jax.ssc_gram(grams, solver=admm)
assert_same_optimum(grams, many, one)
np.testing.assert_array_equal(many.iterations, one.iterations)
x = xs[1].astype(np.float32)
one, many = ssc_jax.ssc(x, solver=admm, devices=jax.devices()[:1]), ssc_jax.ssc(x, solver=admm)
assert bool(many.converged) and many.coef.shape == (60, 60)
# Each row block stops on its own test: the answers agree as far as their gaps certify.
assert_same_optimum(float64_gram(x), many, one)
tight = dict(solver=admm, rel_tol=1e-6, abs_tol=1e-9)
one, many = ssc_jax.ssc(x, devices=jax.devices()[:1], **tight), ssc_jax.ssc(x, **tight)
assert_same_optimum(float64_gram(x), many, one)
# A warm start reaches each device's row block.
again = ssc_jax.ssc(x, init=many, **tight)
assert bool(again.converged) and int(again.iterations) < int(many.iterations)
# A budget of 8 rows per device: each device solves its 15 rows in two steps of 8, and its
# part of the answer stays on it, one block of rows, until the gather.
from ssc_jax.core.memory import problem_bytes
from ssc_jax.solver import chunks
joined, join = [], chunks._join_row_groups
chunks._join_row_groups = lambda coefs, mesh: joined.append(join(coefs, mesh=mesh)) or joined[-1]
stepped = ssc_jax.ssc(x, memory_budget_bytes=problem_bytes(60, 60, 8, 4), **tight)
chunks._join_row_groups = join
assert [s.data.shape for s in joined[0].addressable_shards] == [(1, 1, 16, 60)] * 4
assert_same_optimum(float64_gram(x), stepped, one)
assert bool(stepped.converged)
# The working set runs on one device (Solver.shards): the same answers, without stalling.
ws = ssc_jax.WorkingSet()
one = ssc_jax.ssc_gram(grams, solver=ws, devices=jax.devices()[:1])
assert_same_optimum(grams, ssc_jax.ssc_gram(grams, solver=ws), one)
one = ssc_jax.ssc(x, solver=ws, devices=jax.devices()[:1])
assert_same_optimum(float64_gram(x), ssc_jax.ssc(x, solver=ws), one)
print("ok")
"""


@pytest.mark.slow
def test_several_devices_give_the_single_device_answers():
    """Four CPU devices: a batch split by problems, one problem split by rows."""
    import os
    import subprocess
    import sys

    tests = os.path.dirname(__file__)  # for lasso_reference
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "PYTHONPATH": path,
    }
    done = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_a_sweep_over_tau_compiles_once(data):
    """tau, mu and the tolerances are traced leaves of the solver, not static arguments."""
    x = data[150][:37]  # a shape that no other test compiles
    before = chunks.run_batch._cache_size()
    results = [ssc_jax.ssc(x, tau=tau, mu=mu) for tau, mu in ((5.0, 10.0), (10, 3.0), (20.0, 7))]
    assert chunks.run_batch._cache_size() == before + 1
    objectives = [float(r.objective) for r in results]
    assert len(set(objectives)) == 3 and all(bool(r.converged) for r in results)
    ssc_jax.ssc(x, rel_tol=1e-2, gap_tol=1e-3, abs_tol=0)
    assert chunks.run_batch._cache_size() == before + 1


@pytest.mark.parametrize("start", ["result", "coef"])
def test_a_warm_start_takes_fewer_iterations_to_the_same_answer(data, start):
    x = data[150]
    tight = {"gap_tol": 1e-5}
    previous = ssc_jax.ssc(x, tau=TAU, **tight)
    init = previous if start == "result" else np.asarray(previous.coef)
    noise = np.random.default_rng(1).normal(scale=1e-3, size=x.shape).astype(np.float32)
    for nearby in ({"X": x, "tau": 1.1 * TAU}, {"X": x + noise, "tau": TAU}):
        cold = ssc_jax.ssc(nearby["X"], tau=nearby["tau"], **tight)
        warm = ssc_jax.ssc(nearby["X"], tau=nearby["tau"], init=init, **tight)
        assert bool(warm.converged) and float(warm.duality_gap) <= 1e-5
        assert int(warm.iterations) <= 0.8 * int(cold.iterations)
        assert_same_optimum(float64_gram(nearby["X"]), warm, cold, tau=nearby["tau"])
    # A batch starts from a batch of coefficients of its own shape.
    grams = np.stack([x @ x.T, 2 * x @ x.T])
    batch = ssc_jax.ssc_gram(grams)
    again = ssc_jax.ssc_gram(grams, init=batch)
    assert np.all(np.asarray(again.iterations) < np.asarray(batch.iterations))
    with pytest.raises(ValueError, match="init must be"):
        ssc_jax.ssc_gram(grams, init=previous)


def test_sparse_coefficients(data):
    single = ssc_jax.ssc(data[24])
    coef = np.asarray(single.coef)
    sparse = single.sparse_coef()
    assert sparse.format == "csr" and sparse.nnz == np.count_nonzero(coef)
    np.testing.assert_array_equal(sparse.toarray(), coef)
    small = np.abs(coef[coef != 0]).min()
    assert single.sparse_coef(threshold=small).nnz == np.count_nonzero(coef) - np.sum(
        np.abs(coef) == small
    )
    grams = np.stack([x @ x.T for x in (data[24], data[150])]).reshape(2, 1, 60, 60)
    batch = ssc_jax.ssc_gram(grams)
    nested = batch.sparse_coef()
    assert len(nested) == 2 and len(nested[1]) == 1
    np.testing.assert_array_equal(nested[1][0].toarray(), np.asarray(batch.coef[1, 0]))
    with pytest.raises(ValueError, match="threshold"):
        single.sparse_coef(threshold=-1.0)
