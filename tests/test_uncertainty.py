"""Intervals from complementary halves and permutation p-values: the half-sample variance
exactly and against statistics of known rate, coverage and validity by simulation with
binomial bounds, and the pipeline's intervals on SSC graphs."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from ssc_jax.graphs.communities import modularity
from ssc_jax.graphs.permutation import (
    label_modularity,
    modularity_p,
    permutation_p,
    permutations,
    relabel,
)
from ssc_jax.graphs.resampling import (
    half_pairs,
    half_sample_interval,
    half_sample_variance,
    subsample_bias,
)
from ssc_jax.pipeline.analysis import findings
from ssc_jax.pipeline.analysis.config import SolverSettings
from ssc_jax.pipeline.analysis.layer_graphs import solve_layers
from ssc_jax.pipeline.analysis.measures import RowMoments, select_measures
from ssc_jax.pipeline.analysis.uncertainty import (
    Resampling,
    SolvedState,
    Subsample,
    checkpoint_statistic,
    cross_statistic,
    intervals,
    layer_modularity_p,
    similarity_p,
)

# Two-sided binomial range holding a calibrated count with probability 0.999.
CONFIDENCE = 0.999


def binomial_range(draws: int, p: float) -> tuple[float, float]:
    low, high = stats.binom.ppf([(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2], draws, p)
    return low / draws, high / draws


def test_half_sample_variance_of_a_mean_is_its_variance_estimate_at_n():
    # Over all splits of N values into halves, (mean_1 - mean_2) / 2 is mean_1 minus the
    # mean of all N, whose variance over the C(N, N / 2) halves is S^2 / N (the finite
    # population correction at m = N / 2): the variance estimate of the mean of N inputs.
    x = np.random.default_rng(0).normal(size=10)
    replicates = []
    for first in itertools.combinations(range(10), 5):
        second = sorted(set(range(10)) - set(first))
        replicates += [x[list(first)].mean(), x[second].mean()]
    np.testing.assert_allclose(
        half_sample_variance(np.array(replicates)), x.var(ddof=1) / 10, rtol=1e-12
    )


@pytest.mark.parametrize("rate", [1, 2])
def test_half_sample_variance_estimates_the_variance_at_half_n_over_two(rate):
    # Statistics of Gaussian inputs whose variance is known: the mean (var 1 / n, rate 1)
    # and the square of the mean (var 2 / n^2, rate 2). The estimate is var(theta_{n/2}) / 2:
    # the variance at n for rate 1, twice it for rate 2.
    n, pairs, draws = 40, 4, 4000
    x = np.random.default_rng(rate).normal(size=(draws, n))
    idx = half_pairs(n, pairs, seed=rate)
    estimates = half_sample_variance(np.moveaxis(x[:, idx].mean(axis=-1) ** rate, 1, 0))
    at_half_n = (1 / (n / 2) if rate == 1 else 2 / (n / 2) ** 2) / 2
    at_n = 1 / n if rate == 1 else 2 / n**2
    assert abs(estimates.mean() - at_half_n) < 4 * estimates.std(ddof=1) / np.sqrt(draws)
    np.testing.assert_allclose(at_half_n / at_n, 2 ** (rate - 1))


def test_interval_is_centred_on_the_estimate_with_the_student_half_width():
    rng = np.random.default_rng(0)
    replicates = rng.normal(size=(6, 3, 2))
    estimate = rng.normal(size=(3, 2))
    ci = half_sample_interval(estimate, replicates, level=0.8)
    difference = (replicates[0::2] - replicates[1::2]) / 2
    half = stats.t.ppf(0.9, 3) * np.sqrt(np.mean(difference**2, axis=0))
    assert ci.shape == (3, 2, 2)
    np.testing.assert_allclose(ci[..., 0], estimate - half, rtol=1e-12)
    np.testing.assert_allclose(ci[..., 1], estimate + half, rtol=1e-12)
    flat = half_sample_interval(1.0, np.ones(4))
    assert tuple(flat) == (1.0, 1.0)


def test_bad_interval_inputs_raise_one_clear_error():
    with pytest.raises(ValueError, match="pairs of complementary halves"):
        half_sample_interval(0.0, np.zeros(3))
    with pytest.raises(ValueError, match="level"):
        half_sample_interval(0.0, np.zeros(4), level=1.0)
    with pytest.raises(ValueError, match="replicates"):
        half_sample_interval(np.zeros(2), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2 inputs"):
        half_pairs(1, 4)
    with pytest.raises(ValueError, match="even number"):
        Resampling(resamples=3)


@pytest.mark.parametrize("n", [30, 31])
def test_each_split_is_two_disjoint_halves(n):
    idx = half_pairs(n, 5, seed=1)
    assert idx.shape == (10, n // 2)
    for first, second in zip(idx[0::2], idx[1::2], strict=True):
        assert len(set(first) | set(second)) == 2 * (n // 2) and max(*first, *second) < n


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Biased linear CKA of two (n, d) representations, float64 NumPy."""
    kx, ky = x @ x.T, y @ y.T
    h = np.eye(len(x)) - 1.0 / len(x)
    kc, lc = h @ kx @ h, h @ ky @ h
    return float(np.sum(kc * lc) / np.sqrt(np.sum(kc * kc) * np.sum(lc * lc)))


def _cka_draw(rng, n, signal):
    """Linear CKA of x and signal * x W + noise on n Gaussian inputs: its expectation falls
    with n (the biased estimator's O(d / n) excess), so it tests the correction of the
    centre; at signal 0 the two are independent."""
    x = rng.normal(size=(n, 5))
    y = signal * x @ np.linspace(-1, 1, 25).reshape(5, 5) + rng.normal(size=(n, 5))
    return _linear_cka(x, y), x, y


@pytest.mark.parametrize("signal", [1.0, 0.0])
def test_intervals_cover_the_expectation_at_n_of_an_n_dependent_statistic(signal):
    rng = np.random.default_rng(3)
    n, resamples, draws, truth_draws = 40, 10, 200, 1000
    truth = np.mean([_cka_draw(rng, n, signal)[0] for _ in range(truth_draws)])
    at_m = [_cka_draw(rng, n // 2, signal)[0] for _ in range(truth_draws)]
    covered, bias = [], []
    for _ in range(draws):
        estimate, x, y = _cka_draw(rng, n, signal)
        idx = half_pairs(n, resamples // 2, seed=int(rng.integers(2**31)))
        reps = np.array([_linear_cka(x[i], y[i]) for i in idx])
        low, high = half_sample_interval(estimate, reps, level=0.9)
        covered.append(low <= truth <= high)
        bias.append(subsample_bias(estimate, reps))
    low, high = binomial_range(draws, 0.9)
    if signal:
        assert low <= np.mean(covered) <= high
    else:
        # At a degenerate point (independent representations) the statistic's spread
        # shrinks like 1 / n, not 1 / sqrt(n): the halves overstate it, so the interval is
        # conservative.
        assert np.mean(covered) >= low
    # The halves sit near mu_{n/2}, not mu_N: their mean's offset estimates mu_{n/2} - mu_N.
    offset_error = np.std(bias, ddof=1) / np.sqrt(draws) + np.std(at_m) / np.sqrt(truth_draws)
    assert abs(np.mean(bias) - (np.mean(at_m) - truth)) < 4 * offset_error
    assert np.mean(at_m) - truth > 4 * offset_error


def _planted(rng, n, k, p_in, p_out):
    labels = rng.integers(k, size=n)
    p = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    upper = np.triu(rng.random((n, n)) < p, 1) * rng.random((n, n))
    return sp.csr_array(upper + upper.T), labels


def test_label_modularity_is_the_modularity_of_each_labelling():
    rng = np.random.default_rng(0)
    A, labels = _planted(rng, 40, 3, 0.4, 0.1)
    labellings = np.stack([labels, *labels[permutations(40, 3)]])
    expected = [float(modularity(A.toarray(), lab, n_classes=3)) for lab in labellings]
    # float32 JAX against float64 NumPy: float32 rounding of sums of O(n^2) weights.
    np.testing.assert_allclose(label_modularity(A, labellings, 3), expected, atol=1e-5)


def test_modularity_p_is_valid_under_the_null_and_small_under_planted_classes():
    rng = np.random.default_rng(1)
    draws, count = 200, 99
    null_p = []
    for _ in range(draws):
        A, _ = _planted(rng, 30, 3, 0.3, 0.3)
        null_p.append(modularity_p(A, rng.integers(3, size=30), 3, count, int(rng.integers(99))))
    null_p = np.array(null_p)
    for a in (0.1, 0.5):
        low, high = binomial_range(draws, a)
        assert low <= np.mean(null_p <= a) <= high
    A, labels = _planted(rng, 60, 3, 0.5, 0.05)
    assert modularity_p(A, labels, 3, count) == 1 / (count + 1)


def test_permutation_p_counts_ties_against_the_observation():
    assert permutation_p(1.0, [0.0, 1.0, 2.0]) == 0.75
    assert np.isnan(permutation_p(np.nan, [0.0, 1.0]))


def test_relabel_reorders_sparse_and_dense_alike():
    x = np.arange(16.0).reshape(4, 4)
    order = np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(relabel(sp.csr_array(x), order).toarray(), relabel(x, order))
    assert relabel(x, order)[0, 1] == x[2, 0]


def test_similarity_p_is_valid_for_independent_representations():
    rng = np.random.default_rng(2)
    draws, linear = 150, select_measures(["linear_cka"])
    found = []
    for _ in range(draws):
        x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
        inputs = ({"grams": [x @ x.T]}, {"grams": [y @ y.T]})
        found.append(similarity_p(linear, *inputs, count=49, seed=int(rng.integers(99))))
    p = np.array([f["linear_cka"][0, 0] for f in found])
    low, high = binomial_range(draws, 0.1)
    assert low <= np.mean(p <= 0.1) <= high
    x = rng.normal(size=(20, 4))
    same = similarity_p(linear, {"grams": [x @ x.T]}, {"grams": [x @ x.T + 0.01]}, count=49)
    assert same["linear_cka"][0, 0] == 1 / 50


def test_similarity_p_of_a_distance_counts_smaller_distances_as_more_alike():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 4))
    y = x + 0.01 * rng.normal(size=(20, 4))

    def side(z):
        return {"grams": [z @ z.T], "moments": RowMoments.given(z.sum(axis=1)[None], [4])}

    found = similarity_p(select_measures(["procrustes"]), side(x), side(y), count=19)
    assert found["procrustes"][0, 0] == 1 / 20


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [
        ((0.01, 0.2), findings.HOLDS),
        ((-0.2, -0.01), findings.DOES_NOT_HOLD),
        ((-0.05, 0.2), findings.UNDECIDED),
        (None, findings.HOLDS),
    ],
)
def test_modularity_grows_is_decided_on_the_interval_of_the_rise(interval, verdict):
    found = findings.modularity_grows(["a", "b", "c"], np.array([0.2, 0.25, 0.3]), interval)
    assert found.holds and found.verdict == verdict
    assert findings.as_json([found])[0]["verdict"] == verdict
    assert ("last - first 0.1 [" in found.evidence) == (interval is not None)


@pytest.fixture(scope="module")
def solved():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    bases = [np.linalg.qr(rng.normal(size=(10, 2)))[0] for _ in range(3)]
    x = np.stack([bases[c] @ rng.normal(size=2) for c in labels]) + 0.05 * rng.normal(size=(36, 10))
    layers = [x, np.maximum(x @ rng.normal(size=(10, 12)), 0)]
    grams = np.stack([a @ a.T for a in layers]).astype(np.float32)
    solver = SolverSettings()
    coef, _ = solve_layers(grams, solver, progress=False)
    return labels, grams, coef, solver


def test_every_number_of_an_analysis_gets_an_interval_around_it(solved):
    labels, grams, coef, solver = solved
    probs = np.eye(3)[labels] * 0.8 + 0.2 / 3
    statistic = checkpoint_statistic(labels, probs, 3, select_measures(None))
    affinity = [sp.csr_array(abs(c) + abs(c).T) for c in coef]
    estimates = statistic(np.arange(36), [Subsample(affinity, grams)])
    found = intervals(
        estimates, [SolvedState(grams, coef, solver)], statistic, Resampling(resamples=4)
    )
    assert set(found) == {name + "_ci" for name in estimates}
    assert found["modularity_ci"].shape == (2, 2)
    assert found["ssc_cka_ci"].shape == found["linear_cka_ci"].shape == (2, 2, 2)
    assert found["agreement_ci"].shape == (2,)
    for name, value in estimates.items():
        ci = found[name + "_ci"]
        assert np.all(ci[..., 0] <= np.asarray(value) + 1e-12)
        assert np.all(np.asarray(value) <= ci[..., 1] + 1e-12)
    assert intervals(estimates, [], statistic, Resampling(resamples=0)) == {}
    p = layer_modularity_p(affinity, labels, 3, Resampling(permutations=19))
    assert p.shape == (2,) and np.all(p == 1 / 20)


def test_cross_network_intervals_pair_the_same_inputs(solved):
    # A network against itself: each layer's SSC-CKA with itself stays 1 on every
    # subsample only because both sides are solved on the same inputs.
    _, grams, coef, solver = solved
    state = SolvedState(grams, coef, solver)
    affinity = [sp.csr_array(abs(c) + abs(c).T) for c in coef]
    statistic = cross_statistic(select_measures(None))
    estimates = statistic(np.arange(36), [Subsample(affinity, grams)] * 2)
    found = intervals(estimates, [state, state], statistic, Resampling(resamples=4))
    diagonal = np.diagonal(found["ssc_cka_ci"], axis1=0, axis2=1)
    np.testing.assert_allclose(diagonal, 1.0, atol=1e-5)


def test_analyze_writes_an_interval_beside_every_number(analyzed):
    out, metrics = analyzed
    layers = len(metrics["layers"])
    assert np.shape(metrics["modularity_ci"]) == (layers, 2)
    assert np.shape(metrics["modularity_p"]) == (layers,)
    for name in ("ssc_cka", "linear_cka"):
        ci = np.asarray(metrics[name + "_ci"])
        assert ci.shape == (layers, layers, 2)
        value = np.asarray(metrics[name])
        assert np.all((ci[..., 0] <= value + 1e-9) & (value <= ci[..., 1] + 1e-9))
    for name in ("ssc_label_accuracy", "network_accuracy", "agreement"):
        assert np.shape(metrics[name + "_ci"]) == (2,)
    assert metrics["interval_level"] == 0.9 and metrics["resamples"] == 8
    assert metrics["findings"][0]["verdict"] in (
        findings.HOLDS,
        findings.DOES_NOT_HOLD,
        findings.UNDECIDED,
    )
    assert "90% interval" in (out / "report.html").read_text()


def test_a_bad_resample_count_is_one_clear_error(tiny_run, tmp_path, capsys):
    from ssc_jax.pipeline.cli.main import main

    argv = ["analyze", str(tiny_run), "--out", str(tmp_path / "x"), "--resamples", "1"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ssc-jax: error: --resamples/--level: resamples must be")
