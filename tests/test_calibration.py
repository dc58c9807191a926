"""Calibration of the intervals on a synthetic network whose across-sample distribution is
known by simulation: a small version of ``benchmarks/uncertainty.py calibrate``."""

import numpy as np
import scipy.sparse as sp
from scipy import stats

from ssc_jax.nets.synthetic import SyntheticNetwork
from ssc_jax.pipeline.analysis.config import SolverSettings
from ssc_jax.pipeline.analysis.layer_graphs import solve_layers
from ssc_jax.pipeline.analysis.measures import select_measures
from ssc_jax.pipeline.analysis.uncertainty import (
    Resampling,
    SolvedState,
    Subsample,
    intervals,
    summary_statistic,
)

N, DRAWS, TRUTH_DRAWS = 60, 60, 100
NET = SyntheticNetwork(widths=(24, 16))
SOLVER = SolverSettings()
STATISTIC_NAMES = ("modularity", "ssc_cka")


def _draw(seed: int, resampling: Resampling) -> tuple[dict, dict]:
    sample = NET.sample(N, seed)
    grams = np.stack([a @ a.T for a in sample.activations]).astype(np.float32)
    coef, _ = solve_layers(grams, SOLVER, progress=False)
    affinity = [sp.csr_array(abs(c) + abs(c).T) for c in coef]
    statistic = summary_statistic(sample.labels, NET.n_classes, select_measures(["ssc_cka"]))
    estimates = statistic(np.arange(N), [Subsample(affinity, grams)])
    return estimates, intervals(
        estimates, [SolvedState(grams, coef, SOLVER)], statistic, resampling
    )


def _entries(name: str, value) -> np.ndarray:
    """Each layer's modularity; SSC-CKA of the two layers (the off-diagonal entry)."""
    value = np.asarray(value)
    return value if name == "modularity" else value[..., 0, 1]


def test_nominal_90_percent_intervals_cover_the_expectation_at_n():
    truth = {
        name: np.mean(
            [
                _entries(name, _draw(10_000 + d, Resampling(resamples=0))[0][name])
                for d in range(TRUTH_DRAWS)
            ],
            axis=0,
        )
        for name in STATISTIC_NAMES
    }
    drawn = [_draw(d, Resampling(resamples=6)) for d in range(DRAWS)]
    # Three entries tested: each count of covered draws is Binomial(DRAWS, 0.9) for a
    # calibrated interval; the range holds all three with probability >= 0.999.
    low, high = stats.binom.ppf([0.001 / 6, 1 - 0.001 / 6], DRAWS, 0.9) / DRAWS
    for name in STATISTIC_NAMES:
        ci = np.stack([_entries(name, np.moveaxis(c[name + "_ci"], -1, 0)) for _, c in drawn])
        covered = (ci[:, 0] <= truth[name]) & (truth[name] <= ci[:, 1])
        assert np.all((low <= covered.mean(axis=0)) & (covered.mean(axis=0) <= high)), (
            name,
            covered.mean(axis=0),
        )
