"""SSC from the samples X alone, for n too large to hold G = X X^T: ``ssc_sparse``.

The rounds are the ``WorkingSet``'s (``ssc_jax.solver.working_set``), with every entry of G
they read formed from X (n, d) when it is read, and C held sparse, as each row's support
(``feature_rounds``):

* a row's working-set problem needs ``G_WW`` and ``G_Wi`` on its working set W of s samples:
  the gather ``X[W]`` (s, d) and its products, ``(b, s, d) x (b, d, s)`` for a block of b
  rows; solved by the same coordinate descent and active-set steps (``subproblems``);
* the correlations of every row's residual ``q_i = X r_i``, ``r_i = x_i - X^T c_i``, are
  ``(R X) X^T`` with R the sparse residuals: ``R X`` gathers at most s + 1 rows of X per row,
  and the product is taken for a block of rows at a time, so that only a (b, n) slab of q
  exists at once. Each slab gives its rows' certificate (``certificate.row_gaps``: the
  largest ``|q_j|`` is all of q that it needs besides the support) and their pool, the
  off-support samples of largest ``|q_j| / ||x_j||``.

A pass costs one n x n x d product for all rows, as forming G does, so the rounds skip what
they can: the rows ``subproblems.settled_rows`` picks, as in the ``WorkingSet``, keep their
coefficients, whose correlations, and so whose certificate, are then those of the last pass;
each round solves and measures the other rows alone. Memory: X, a (b, n) slab and the
supports: at n = 50,000 and d = 2,048, 400 MB for X where G would take 10 GB. As in the
``WorkingSet``, each row takes its own rung of working-set sizes
(``subproblems.row_levels``), and rows of one rung are solved together, so a few dense rows
do not set the size for the rest.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ssc_jax.core import checks
from ssc_jax.core.memory import default_memory_budget
from ssc_jax.solver.convergence import ConvergenceWarning
from ssc_jax.solver.options import SolverOptions, resolve
from ssc_jax.solver.working_set.feature_rounds import (
    Measured,
    Supports,
    blocks,
    empty_supports,
    full_pass,
    slab_rows,
    solve_rows,
)
from ssc_jax.solver.working_set.float64_finish import finish_supports, float64_samples
from ssc_jax.solver.working_set.solver import WorkingSet
from ssc_jax.solver.working_set.subproblems import (
    row_levels,
    settled_rows,
    sweep_cap,
    working_set_sizes,
)

Array = jax.Array


class RoundRecord(NamedTuple):
    """A round of ``ssc_sparse`` and the pass that certifies it (round 0: the pass at C = 0).

    Attributes:
      relative_gap: the certified relative duality gap of all rows after the round.
      kkt_violation: the largest ``tau |q_j| - 1`` off a row's support, 0 when none.
      rows_per_size: {working-set size: rows solved at it} in the round; the rows left out
        kept their coefficients and certificates.
      solve_seconds: the working-set problems' seconds (gathers, sweeps, active-set steps).
      correlation_seconds: the pass's seconds (``(R X) X^T`` and the certificate).
    """

    relative_gap: float
    kkt_violation: float
    rows_per_size: dict[int, int]
    solve_seconds: float
    correlation_seconds: float


class SparseSSCResult(NamedTuple):
    """The answer of ``ssc_sparse``.

    Attributes:
      coef: (n, n) ``scipy.sparse.csr_array`` of C, zero diagonal, only the nonzeros stored.
      objective: ``||C||_1 + tau/2 ||X - C X||_F^2`` on the (normalised) samples.
      duality_gap: the certified relative duality gap ``(P - D) / P`` (as ``SSCResult``'s).
      converged: whether ``duality_gap <= gap_tol``.
      rounds: working-set rounds taken (each solves the rows that ``settled_rows`` leaves
        open).
      verified: the fraction of rows whose every zero gap-safe screening proves zero at the
        optimum (as ``SSCResult.verified`` for the ``WorkingSet``).
      history: a ``RoundRecord`` per round, the pass at C = 0 first.
      finish_seconds: the seconds of the float64 finish (``float64_finish.finish_supports``)
        that certified the answer, None where none ran: the rounds reached ``gap_tol``, or
        X was float64.
    """

    coef: Any
    objective: float
    duality_gap: float
    converged: bool
    rounds: int
    verified: float
    history: tuple[RoundRecord, ...]
    finish_seconds: float | None = None


def ssc_sparse(
    X,
    *,
    solver: WorkingSet | None = None,
    options: SolverOptions | None = None,
    **settings: Any,
) -> SparseSSCResult:
    """Solve SSC for samples as rows without forming their Gram: for n where the (n, n) G
    or C does not fit in memory (n = 50,000 samples: 10 GB each in float32).

    Args:
      X: (n, d) data, one sample per row; n >= 2.
      solver: a ``WorkingSet`` (the default's settings): its tau, gap_tol, sizes and caps.
      options: ``SolverOptions``; ``normalize``, ``memory_budget_bytes`` and ``progress``
        (a bar over each round's correlation pass and a line with the gap it certified;
        ``None`` shows them from n = 10,000 on) apply, the others concern the dense drivers.
      **settings: keyword overrides of fields of either, as in ``ssc``.

    Returns:
      A ``SparseSSCResult``, C as a SciPy sparse array, certified as ``ssc`` certifies the
      same problem: the same optimum within the gaps. A float32 solve stalls near a
      relative gap of 1e-6 on real activations; one whose rounds stop short of ``gap_tol``
      is finished in float64, as ``ssc`` finishes it, without G: each row re-solved on its
      support, certified from its residual's float64 correlations with X, one (b, d) x
      (d, n) float64 product a block of rows (``float64_finish.finish_supports``).

    Warns:
      ConvergenceWarning: when the certified gap does not reach ``gap_tol``.

    Raises:
      ValueError: for invalid ``X``, an unknown setting, a solver that is not a
        ``WorkingSet``, or tau not > 0.
    """
    checks.check_ndim("X", X, 2, "a 2-D array of shape (n_samples, n_features)")
    checks.check_min_samples("X", np.shape(X)[0], 2, "each sample is rebuilt from the others")
    checks.check_finite("X", X)
    checks.check_solver_dtype("X", X)
    solver, options = resolve(solver, options, settings)
    if not isinstance(solver, WorkingSet):
        raise ValueError(f"ssc_sparse solves with a WorkingSet; got {type(solver).__name__}")
    checks.check_positive("tau", solver.tau)
    x, norms = _prepared(X, options.normalize)
    n = x.shape[0]
    budget = options.memory_budget_bytes
    budget = default_memory_budget() if budget is None else int(budget)
    sizes = working_set_sizes(solver.size, n)
    show = n >= 10_000 if options.progress is None else options.progress
    supports = empty_supports(n, sizes[-1], x.dtype)
    measure = _Measure(x, norms, float(solver.tau), sizes[-1], budget, show)
    measured, seconds = _timed(measure.full, supports, np.arange(n), "C = 0")
    history = [_record(measured, {}, 0.0, seconds)]
    gaps = -np.ones(solver.max_rounds)
    while not _done(history, solver):
        rounds = len(history) - 1
        gaps[rounds - 1] = history[-1].relative_gap if rounds else -1
        sweeps = sweep_cap(solver.max_sweeps, jnp.asarray(gaps))
        open_rows = ~np.asarray(
            settled_rows(jnp.asarray(measured.gap), jnp.asarray(measured.objective), solver.gap_tol)
        )
        counts = jnp.asarray(np.sum(supports.values != 0, axis=1))
        own_rungs = np.asarray(row_levels(counts, jnp.asarray(measured.violated), sizes))
        rungs = np.where(open_rows, own_rungs, -1)
        (supports, per_size), solving = _timed(
            solve_rows, x, supports, measured, rungs, sizes, solver, sweeps, budget
        )
        label = f"round {rounds + 1}"
        solved = np.flatnonzero(open_rows)
        remeasured, seconds = _timed(measure.full, supports, solved, label)
        measured = Measured(
            *(_updated(a, solved, b) for a, b in zip(measured, remeasured, strict=True))
        )
        history.append(_record(measured, per_size, solving, seconds))
        if show:
            tqdm.write(
                f"SSC round {rounds + 1}: {solved.size} rows solved, certified relative gap "
                f"{history[-1].relative_gap:.2e} (gap_tol {solver.gap_tol:.2e})"
            )
    certified = (measured.objective, measured.gap, measured.safe)
    finish_seconds = None
    if history[-1].relative_gap > solver.gap_tol and x.dtype != jnp.float64:
        x64, norms64 = float64_samples(X, options.normalize)
        finished, finish_seconds = _timed(
            finish_supports,
            x64,
            norms64,
            supports.index,
            supports.values,
            measured.gap,
            tau=float(solver.tau),
            budget=budget,
            progress=show,
        )
        supports = Supports(supports.index, finished.values)
        certified = finished[1:]
    result = _result(supports, *certified, tuple(history), solver.gap_tol, finish_seconds)
    if show and finish_seconds is not None:
        tqdm.write(
            f"SSC float64 finish: certified relative gap {result.duality_gap:.2e} "
            f"(gap_tol {solver.gap_tol:.2e})"
        )
    if not result.converged:
        after = " and a float64 finish" if finish_seconds is not None else ""
        out_of_rounds = result.rounds >= solver.max_rounds
        why = f"max_rounds = {solver.max_rounds}" if out_of_rounds else "its rounds stalled"
        advice = "raise max_rounds, or gap_tol" if out_of_rounds else "raise gap_tol"
        warnings.warn(
            f"ssc_sparse did not converge ({why}): certified relative gap "
            f"{result.duality_gap:.3g} after {result.rounds} rounds{after}, against gap_tol "
            f"{solver.gap_tol:.3g}; {advice} if that gap is close enough",
            ConvergenceWarning,
            stacklevel=2,
        )
    return result


def _done(history: list[RoundRecord], solver: WorkingSet) -> bool:
    """Whether the last pass certified ``gap_tol``, the rounds ran out, or the last two
    certified the same gap: the round repeated the one before (``WorkingSetState.stalled``)."""
    gap = history[-1].relative_gap
    stalled = len(history) > 2 and gap == history[-2].relative_gap
    return gap <= solver.gap_tol or len(history) > solver.max_rounds or stalled


def _updated(array: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``array`` with its rows ``rows`` replaced by ``values``."""
    array = array.copy()
    array[rows] = values
    return array


def _prepared(X, normalize: bool) -> tuple[Array, Array]:
    """(n, d) the samples in their float dtype, scaled to unit norm (in float64) where
    ``normalize``, a zero sample staying zero; and their (n,) norms."""
    x = np.asarray(X)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    if normalize:
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        x = x * scale[:, None].astype(dtype)
        norms = (norms > 0).astype(np.float64)
    return jnp.asarray(x, dtype), jnp.asarray(norms, dtype)


def _timed(function, *args, **keywords):
    start = time.perf_counter()
    value = function(*args, **keywords)
    return value, time.perf_counter() - start


def _record(
    measured: Measured, per_size: dict[int, int], solving: float, seconds: float
) -> RoundRecord:
    total, gap = float(np.sum(measured.objective)), float(np.sum(measured.gap))
    relative = gap / total if total > 0 else gap
    kkt = float(np.max(measured.kkt_violation))
    return RoundRecord(relative, kkt, per_size, solving, seconds)


class _Measure(NamedTuple):
    """The pass over some rows, in (b, n) slabs within ``budget`` bytes, with a bar when
    ``show``; each row's pool holds ``pool`` samples."""

    x: Array
    norms: Array
    tau: float
    pool: int
    budget: int
    show: bool

    def full(self, supports: Supports, rows: np.ndarray, label: str) -> Measured:
        """The ``Measured`` of the rows ``rows`` (m,)."""
        n, m = self.x.shape[0], len(rows)
        block = slab_rows(n, self.x.dtype.itemsize, self.budget)
        top = float(jnp.max(self.norms))
        pieces = []
        with tqdm(total=m, desc=f"SSC {label}", unit="row", disable=not self.show) as bar:
            for part in blocks(m, block):
                chosen = rows[part]
                index, values = supports.index[chosen], supports.values[chosen]
                measured = full_pass(
                    self.x, self.norms, chosen, index, values, self.tau, top, self.pool
                )
                pieces.append(jax.device_get(measured))
                bar.update(min(block, m - int(part[0])))
        return Measured(*(np.concatenate(parts)[:m] for parts in zip(*pieces, strict=True)))


def _result(
    supports: Supports,
    objective: np.ndarray,
    gap: np.ndarray,
    safe: np.ndarray,
    history: tuple[RoundRecord, ...],
    gap_tol: float,
    finish_seconds: float | None,
) -> SparseSSCResult:
    """The ``SparseSSCResult`` of the final supports and their rows' (n,) certificates."""
    import scipy.sparse  # only the sparse answer needs SciPy

    n = supports.index.shape[0]
    nonzero = supports.values != 0
    line = np.repeat(np.arange(n), nonzero.sum(axis=1))
    entries = (supports.values[nonzero], (line, supports.index[nonzero]))
    total = float(np.sum(objective))
    relative = float(np.sum(gap)) / total if total > 0 else float(np.sum(gap))
    return SparseSSCResult(
        coef=scipy.sparse.csr_array(entries, shape=(n, n)),
        objective=total,
        duality_gap=relative,
        converged=relative <= gap_tol,
        rounds=len(history) - 1,
        verified=float(np.mean(safe)),
        history=history,
        finish_seconds=finish_seconds,
    )
