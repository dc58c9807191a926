"""Intervals from complementary halves: what a statistic of N inputs would read on another
N inputs from the same population.

A statistic ``theta_N`` of N inputs drawn from a population has an expectation ``mu_N``
that depends on N (SSC graphs get sparser per input as N grows, CKA's plug-in estimates
shrink) and a spread ``sd_N`` over independent draws. The interval here is for ``mu_N``:
it is centred on ``theta_N`` and its half-width estimates ``t * sd_N`` from K random
splits of the N inputs into two disjoint halves (without replacement: a bootstrap's
duplicated input would be its twin's perfect one-coefficient SSC representation).

Spread. The two halves of a split are two independent samples of N / 2 inputs, so
``D = (theta_half1 - theta_half2) / 2`` has mean 0 and ``E[D^2] = var(theta_{N/2}) / 2``
exactly, for any statistic and without a model of it. That is ``sd_N^2`` when the
statistic's variance falls as 1 / N between N / 2 and N (every statistic smooth in the
inputs' empirical distribution), and it errs on the wide side when the variance falls
faster. ``D`` does not contain the statistic's dependence on N, nor how that dependence
varies with which inputs a half holds: both move the two halves alike.

Centre. The halves' mean estimates ``mu_{N/2}``, not ``mu_N``; ``mean - theta_N`` (the
``subsample_bias``) estimates ``mu_{N/2} - mu_N``. Centring on ``theta_N`` removes it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

DEFAULT_LEVEL = 0.9


def half_pairs(n: int, pairs: int, seed: int = 0) -> np.ndarray:
    """(2 * pairs, n // 2) sorted indices: rows 2k and 2k + 1 are the two disjoint halves
    of the k-th random split of the n inputs (for an odd n, one input, drawn at random, is
    in neither half of a split).

    Raises:
      ValueError: for n < 2 or pairs < 1.
    """
    if n < 2:
        raise ValueError(f"intervals from halves need at least 2 inputs; got {n}")
    if pairs < 1:
        raise ValueError(f"intervals from halves need at least 1 split; got {pairs}")
    rng = np.random.default_rng(seed)
    half = n // 2
    rows = []
    for _ in range(pairs):
        order = rng.permutation(n)
        rows += [np.sort(order[:half]), np.sort(order[half : 2 * half])]
    return np.stack(rows)


def subsample_bias(estimate, replicates) -> np.ndarray:
    """``mean(replicates) - estimate``: the estimated ``mu_m - mu_N``, how far the statistic's
    expectation at the subsample size m lies from that at N. ``replicates`` has a leading
    resample axis."""
    return np.mean(np.asarray(replicates, np.float64), axis=0) - np.asarray(estimate, np.float64)


def half_sample_variance(replicates) -> np.ndarray:
    """The mean over the K splits of ``((half1 - half2) / 2)^2``, each entry of
    ``replicates`` (2K, ...) being the statistic on a half (the rows of `half_pairs`): an
    unbiased estimate of ``var(theta_{N/2}) / 2``, the variance at N for a 1 / N rate.

    Raises:
      ValueError: for an odd or zero number of replicates.
    """
    replicates = np.asarray(replicates, np.float64)
    if replicates.ndim < 1 or replicates.shape[0] < 2 or replicates.shape[0] % 2:
        raise ValueError(
            f"replicates must be pairs of complementary halves; got {replicates.shape[:1]}"
        )
    difference = (replicates[0::2] - replicates[1::2]) / 2
    return np.mean(difference**2, axis=0)


def half_sample_interval(estimate, replicates, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """The ``level`` interval (..., 2), (low, high), for ``mu_N`` of each entry of
    ``estimate`` (...), from ``replicates`` (2K, ...) of the statistic on the halves of K
    splits of the N inputs (the rows of `half_pairs`).

    ``estimate +- t * sqrt(half_sample_variance(replicates))``, ``t`` the Student quantile
    with K degrees of freedom (the K splits' differences). An entry whose halves agree in
    every split gets a zero-width interval; one with a non-finite replicate gets (nan, nan).

    Raises:
      ValueError: for replicates that are not pairs of halves, a level outside (0, 1) or
        shapes that differ.
    """
    estimate = np.asarray(estimate, np.float64)
    replicates = np.asarray(replicates, np.float64)
    if not 0.0 < level < 1.0:
        raise ValueError(f"the interval level must be in (0, 1); got {level}")
    variance = half_sample_variance(replicates)
    if variance.shape != estimate.shape:
        raise ValueError(f"replicates {replicates.shape} must be (2K, *{estimate.shape})")
    t = float(stats.t.ppf(0.5 + level / 2, df=replicates.shape[0] // 2))
    half = t * np.sqrt(variance)
    return np.stack([estimate - half, estimate + half], axis=-1)
