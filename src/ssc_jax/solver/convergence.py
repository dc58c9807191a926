"""The warning a solve that stopped short of its tolerances gives, as scikit-learn's Lasso
gives its ``ConvergenceWarning``: once per call, with how far the solve got and the setting
that lets it go further."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ssc_jax.solver.admm import ADMM
from ssc_jax.solver.result import SSCResult, Status
from ssc_jax.solver.working_set import WorkingSet


class ConvergenceWarning(UserWarning):
    """An SSC solve stopped before its certified duality gap reached ``gap_tol``."""


def warn_unconverged(
    results: Sequence[SSCResult], solver: ADMM | WorkingSet, *, stacklevel: int = 2
) -> None:
    """One ``ConvergenceWarning`` when any problem of ``results`` (one call's solves, which
    share ``solver``'s caps) did not converge; none for results held on another process
    (fields ``None``)."""
    held = [r for r in results if r.converged is not None]
    if not held:
        return

    def joined(field: str) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(r, field)).ravel() for r in held])

    converged, gaps = joined("converged").astype(bool), joined("duality_gap").astype(float)
    missed = int(np.sum(~converged))
    if not missed:
        return
    gap = np.max(np.where(np.isfinite(gaps[~converged]), gaps[~converged], np.inf))
    if isinstance(solver, WorkingSet):
        cap, advice = (
            f"max_rounds = {solver.max_rounds}",
            "raise max_rounds (or the working-set size)",
        )
        rounds, status = joined("iterations")[~converged], joined("status")[~converged]
        if np.all((rounds < solver.max_rounds) & (status == Status.MAX_ITERATIONS)):
            # ``WorkingSetState.stalled``: more rounds repeat the last, and the float64
            # finish did not reach gap_tol either.
            cap += f" (its rounds stalled after {int(np.max(rounds))})"
            advice = "solve in float64 (under jax.enable_x64(True))"
    else:
        cap, advice = f"max_iterations = {solver.max_iterations}", "raise max_iterations"
    warnings.warn(
        f"SSC ({type(solver).__name__}) did not converge on {missed} of {converged.size} "
        f"problem{'s' if converged.size > 1 else ''} within {cap}: "
        f"largest certified relative gap {gap:.3g}, against gap_tol {solver.gap_tol:.3g}; "
        f"{advice}, or raise gap_tol if that gap is close enough",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )
