"""Intervals by subsampling without replacement: what a statistic of N inputs would read on
another N inputs from the same population.

A statistic ``theta_N`` of N inputs drawn from a population has an expectation ``mu_N``
that depends on N (SSC graphs get sparser per input as N grows, CKA's plug-in estimates
shrink) and a spread ``sd_N`` over independent draws. The interval here is for ``mu_N``:
it is centred on ``theta_N`` and its half-width estimates ``z * sd_N`` from R subsamples of
m of the N inputs, drawn without replacement (a bootstrap's duplicated input would be its
twin's perfect one-coefficient SSC representation).

Scale. For the mean of N values, m drawn without replacement have variance
``S^2 (N - m) / (N m)`` over the subsamples (S^2 the sample variance), while ``sd_N^2`` is
``S^2 / N``: the replicates' variance times ``m / (N - m)`` estimates ``sd_N^2`` (the
delete-d jackknife, d = N - m, of Shao and Wu 1989). The same holds to first order for any
statistic that is smooth in the inputs' empirical distribution; at m = N / 2 the factor is 1.

Centre. The replicates' mean estimates ``mu_m``, not ``mu_N``; ``mean - theta_N`` (the
``subsample_bias``) estimates ``mu_m - mu_N``, the statistic's dependence on N. Centring on
``theta_N`` and using only the replicates' deviations from their own mean removes it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

DEFAULT_LEVEL = 0.9
DEFAULT_FRACTION = 0.5


def subsample_size(n: int, fraction: float = DEFAULT_FRACTION) -> int:
    """The m inputs of each subsample: ``round(fraction * n)``, kept in [2, n - 1].

    Raises:
      ValueError: for n < 3 (no proper subsample of two inputs) or a fraction outside (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the subsample fraction must be in (0, 1); got {fraction}")
    if n < 3:
        raise ValueError(f"intervals by subsampling need at least 3 inputs; got {n}")
    return int(min(n - 1, max(2, round(fraction * n))))


def subsample_indices(n: int, m: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, m) sorted indices, each row m distinct inputs of n drawn uniformly."""
    rng = np.random.default_rng(seed)
    return np.sort(
        np.stack([rng.choice(n, size=m, replace=False) for _ in range(resamples)]), axis=1
    ).reshape(resamples, m)


def subsample_scale(n: int, m: int) -> float:
    """``sqrt(m / (n - m))``: the factor from the spread of m-input subsamples of n inputs to
    the spread of the statistic over independent draws of n inputs."""
    return float(np.sqrt(m / (n - m)))


def subsample_bias(estimate, replicates) -> np.ndarray:
    """``mean(replicates) - estimate``: the estimated ``mu_m - mu_N``, how far the statistic's
    expectation at the subsample size m lies from that at N. ``replicates`` has a leading
    resample axis."""
    return np.mean(np.asarray(replicates, np.float64), axis=0) - np.asarray(estimate, np.float64)


def subsample_interval(
    estimate, replicates, n: int, m: int, level: float = DEFAULT_LEVEL
) -> np.ndarray:
    """The ``level`` interval (..., 2), (low, high), for ``mu_N`` of each entry of
    ``estimate`` (...), from ``replicates`` (R, ...) of the statistic on R subsamples of m of
    the n inputs.

    ``estimate +- t * subsample_scale(n, m) * std(replicates)``, ``t`` the Student quantile
    with R - 1 degrees of freedom (the spread is estimated from R values). An entry whose
    replicates are all equal gets a zero-width interval; one with a non-finite replicate gets
    (nan, nan).

    Raises:
      ValueError: for fewer than 2 replicates, a level outside (0, 1) or shapes that differ.
    """
    estimate = np.asarray(estimate, np.float64)
    replicates = np.asarray(replicates, np.float64)
    if not 0.0 < level < 1.0:
        raise ValueError(f"the interval level must be in (0, 1); got {level}")
    if replicates.ndim < 1 or replicates.shape[0] < 2:
        raise ValueError("an interval needs the statistic on at least 2 subsamples")
    if replicates.shape[1:] != estimate.shape:
        raise ValueError(f"replicates {replicates.shape} must be (resamples, *{estimate.shape})")
    count = replicates.shape[0]
    t = float(stats.t.ppf(0.5 + level / 2, df=count - 1))
    half = t * subsample_scale(n, m) * np.std(replicates, axis=0, ddof=1)
    return np.stack([estimate - half, estimate + half], axis=-1)
