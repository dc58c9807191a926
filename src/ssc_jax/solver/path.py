"""A path of SSC solutions over tau, each solve warm-started from its neighbour's answer.

The weight tau of the data fit sets how sparse C is: a small tau rebuilds each sample from a
few others, a large one from many. Solving from the smallest tau up, each problem starts from
the previous answer, whose support is mostly the next one's: fewer rounds (working set) or
iterations (ADMM) than from C = 0. tau is a traced leaf of both solvers, so the whole path
runs one compiled program per chunk shape.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.convergence import ConvergenceWarning, warn_unconverged
from ssc_jax.solver.options import DEFAULT_SOLVER, SolverOptions, resolve
from ssc_jax.solver.result import SSCResult
from ssc_jax.solver.solve import ssc_gram
from ssc_jax.solver.working_set import WorkingSet


def check_taus(taus: Sequence[float]) -> list[float]:
    """``taus`` as floats, each finite and > 0, without repeats.

    Raises:
      ValueError: naming the first bad value, a repeat, or an empty sequence.
    """
    values = [float(t) for t in np.ravel(np.asarray(taus, dtype=float))]
    if not values:
        raise ValueError("taus must hold at least one value")
    for t in values:
        if not (np.isfinite(t) and t > 0):
            raise ValueError(f"every tau must be finite and > 0; got {t}")
    if len(set(values)) != len(values):
        raise ValueError(f"taus must not repeat; got {values}")
    return values


def path_order(taus: Sequence[float]) -> list[int]:
    """Indices of ``taus`` from the smallest (sparsest C) to the largest: the order a path
    is solved in."""
    return sorted(range(len(taus)), key=lambda i: taus[i])


def tau_path(
    G,
    taus: Sequence[float],
    *,
    solver: ADMM | WorkingSet | None = None,
    options: SolverOptions | None = None,
    warm_start: bool = True,
    **settings: Any,
) -> list[SSCResult]:
    """``ssc_gram(G)`` at each tau of ``taus``, warm-started along the path.

    Args:
      G: (n, n) or (..., n, n) Gram matrices, as in ``ssc_gram``.
      taus: the data-fit weights, each > 0, in any order.
      solver: the solver whose other fields every solve shares (default ``DEFAULT_SOLVER``,
        a ``WorkingSet``); its own tau is replaced.
      options, **settings: as in ``ssc_gram`` (``tau`` is not a setting here); in a
        ``jax.distributed`` job ``gather`` defaults to ``"all"``, since every process
        starts its next solve from the whole answer.
      warm_start: start each solve from the answer at the next smaller tau; off, every solve
        starts from C = 0 (the baseline the warm path is measured against).

    Returns:
      One ``SSCResult`` per tau, in the order of ``taus``.

    Warns:
      ConvergenceWarning: once for the whole path, when any solve stops unconverged.

    Raises:
      ValueError: for a bad tau (see ``check_taus``), ``tau`` among the settings, or what
        ``ssc_gram`` rejects.

    Example:
      >>> import numpy as np, ssc_jax
      >>> X = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
      >>> path = ssc_jax.tau_path(X @ X.T, [5.0, 20.0])
      >>> [bool(r.converged) for r in path]
      [True, True]
      >>> bool((path[0].coef != 0).sum() < (path[1].coef != 0).sum())
      True
    """
    values = check_taus(taus)
    if "tau" in settings:
        raise ValueError("tau is set by taus in a tau path, not as a setting")
    solver = DEFAULT_SOLVER if solver is None else solver
    settings = {"gather": "all", **settings} if warm_start else settings
    results: list[SSCResult | None] = [None] * len(values)
    previous = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # one warning for the path, below
        for i in path_order(values):
            result = ssc_gram(
                G,
                solver=dataclasses.replace(solver, tau=values[i]),
                options=options,
                init=previous if warm_start else None,
                **settings,
            )
            results[i] = previous = result
    warn_unconverged(results, resolve(solver, options, settings)[0], stacklevel=2)
    return results
