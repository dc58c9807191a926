"""The Python API says when a solve stops short of its tolerance, once per call."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

import ssc_jax
from ssc_jax import ConvergenceWarning, WorkingSet


@pytest.fixture(scope="module")
def digits():
    """Low-rank, ill-conditioned data that 50 ADMM iterations or one round do not solve."""
    return load_digits().data[:300].astype(np.float32)


def only_warning(record) -> str:
    messages = [w for w in record if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1
    assert messages[0].filename == __file__  # it points at the caller's line
    return str(messages[0].message)


def test_an_iteration_cap_warns_once_with_the_gap_and_the_setting(digits):
    with pytest.warns(ConvergenceWarning) as record:
        result = ssc_jax.ssc(digits, solver=ssc_jax.ADMM(), max_iterations=50)
    message = only_warning(record)
    assert not bool(result.converged)
    assert "ADMM" in message and "1 of 1 problem" in message
    assert f"{float(result.duality_gap):.3g}" in message and "gap_tol 0.002" in message
    assert "max_iterations = 50" in message and "raise max_iterations" in message


def test_a_round_cap_names_the_working_set_settings(digits):
    with pytest.warns(ConvergenceWarning) as record:
        ssc_jax.ssc(digits, solver=WorkingSet(max_rounds=1))
    message = only_warning(record)
    assert "WorkingSet" in message and "max_rounds = 1" in message
    assert "raise max_rounds" in message


def test_a_batch_warns_once_with_the_count_and_the_largest_gap(digits):
    gram = digits @ digits.T
    easy = np.eye(len(digits), dtype=np.float32) + 0.1  # well conditioned: converges in one round
    with pytest.warns(ConvergenceWarning) as record:
        result = ssc_jax.ssc_gram(np.stack([gram, easy, gram]), solver=WorkingSet(max_rounds=1))
    message = only_warning(record)
    missed = ~np.asarray(result.converged)
    assert f"on {missed.sum()} of 3 problems" in message
    assert f"{np.asarray(result.duality_gap)[missed].max():.3g}" in message


def test_a_tau_path_warns_once_for_the_path(digits):
    with pytest.warns(ConvergenceWarning) as record:
        results = ssc_jax.tau_path(digits @ digits.T, [5.0, 10.0, 20.0], max_rounds=1)
    message = only_warning(record)
    missed = sum(not bool(r.converged) for r in results)
    assert missed >= 1 and f"on {missed} of 3 problems" in message
    assert "max_rounds = 1" in message


def test_a_converged_solve_is_silent(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ssc_jax.ssc(digits[:120], solver=WorkingSet())
    assert bool(result.converged)


def relu_samples(n=500, d=30, seed=0):
    """Nonnegative, correlated rows, as a ReLU layer's: float32 rounds stall just above 1e-6."""
    return np.maximum(np.random.default_rng(seed).normal(size=(n, d)), 0).astype(np.float32)


def test_the_float32_floor_of_the_gap_is_finished_in_float64_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ssc_jax.ssc(relu_samples())
    # The rounds stalled above gap_tol (their own float32 gaps, in errors) and stopped early;
    # the float64 finish certifies the answer.
    rounds = int(result.iterations)
    assert rounds < WorkingSet().max_rounds
    assert float(np.asarray(result.errors)[rounds - 1, 2]) > WorkingSet().gap_tol
    assert bool(result.converged) and float(result.duality_gap) <= WorkingSet().gap_tol


def test_a_stall_that_float64_does_not_fix_says_so():
    # At a gap_tol below the float64 finish's reach the rounds stall and still warn, with the
    # precision, not the rounds, named as the remedy.
    with pytest.warns(ConvergenceWarning) as record:
        ssc_jax.ssc(relu_samples(), gap_tol=1e-10)
    message = only_warning(record)
    assert "rounds stalled after" in message and "float64" in message


def test_rounds_that_repeat_with_a_kkt_violation_left_stop_and_say_so():
    # Working sets of 8 samples cannot hold these rows' supports: the KKT violations the
    # rounds leave are real, yet every round repeats the last, so the rounds stop.
    with pytest.warns(ConvergenceWarning) as record:
        result = ssc_jax.ssc(relu_samples(n=300, d=60), solver=WorkingSet(tau=100.0, size=8))
    rounds = int(result.iterations)
    assert rounds < WorkingSet().max_rounds
    assert float(result.diagnostics.kkt_violation) > 1
    gaps = np.asarray(result.errors)[:rounds, 2]
    assert gaps[-1] == gaps[-2]
    assert "rounds stalled after" in only_warning(record)
