"""The float64 finish of a working-set solve that stopped short of ``gap_tol`` in float32.

In float32 the certified gap of a row has a floor: its dual point is scaled by the largest
correlation ``tau |q_j|``, which on the support is 1 at the optimum, and a solution of the
float32-rounded problem (its Gram entries, its Cholesky steps) leaves that largest correlation
off 1 by about ``tau (1 + ||c||_1)`` roundings. On a 500 x 30 ReLU matrix at tau = 10 the rounds
stall at a relative gap of 1.04e-6, and the same coefficients' gap computed in float64 is
1.03e-6, while the float32 rounding of the exact optimum certifies 4.5e-8.

So on the host, for a problem whose rounds stopped unconverged, every row is solved again in
float64 on its support S with its signs sigma (the active-set equation ``G_SS c_S = G_Si - sigma
/ tau`` of ``subproblems.active_set``, on the float64 problem), rounded to the result's dtype,
and certified in float64 (``certificate.row_gaps``); each row keeps whichever of its old and new
coefficients has the smaller float64 gap, so the finish never loosens a certificate. A solve
that is in fact within ``gap_tol`` is then certified as such, and one that is not still reports
its gap: a support that the rounds had not found is not found here.

The float64 rows of the problem's normalised Gram come from a ``Float64Gram``: from the samples
X (``from_samples``) or from a Gram matrix (``from_gram``), a block of rows at a time, so that
the finish holds at most ``memory_budget_bytes`` of them. ``ssc_sparse``, which holds no G
and C as each row's support, finishes without them (``finish_supports``): each row's
``G_SS`` and ``G_Si`` from the float64 samples on its support, and its certificate from its
residual's correlations ``X r_i``, in float64 row blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from ssc_jax.solver.certificate import row_gaps, safe_zeros
from ssc_jax.solver.result import SSCResult, Status


class Float64Gram(NamedTuple):
    """One problem's normalised Gram G in float64, read a block of rows at a time.

    Attributes:
      rows: ``rows(index)``, the (k, n) rows ``index`` (k,) of G.
      norms: (n,) the samples' norms ``sqrt(G_jj)``.
    """

    rows: Callable[[np.ndarray], np.ndarray]
    norms: np.ndarray


def float64_samples(x: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) the samples ``x`` in float64, scaled to unit norm where ``normalize`` (a zero
    sample stays zero), and their (n,) norms."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=1)
    if normalize:
        x = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0)
        norms = (norms > 0).astype(np.float64)
    return x, norms


def from_samples(x: np.ndarray, normalize: bool) -> Float64Gram:
    """The Gram of the samples ``x`` (n, d), scaled to unit norm where ``normalize`` (a zero
    sample stays zero)."""
    x, norms = float64_samples(x, normalize)
    return Float64Gram(rows=lambda index: x[index] @ x.T, norms=norms)


def from_gram(gram: np.ndarray, normalize: bool) -> Float64Gram:
    """``gram`` (n, n), each entry ``G_ij / sqrt(G_ii G_jj)`` where ``normalize`` (a zero
    sample's row and column zero)."""
    norms = np.sqrt(np.maximum(np.diagonal(gram).astype(np.float64), 0))
    scale = np.ones_like(norms)
    if normalize:
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        norms = (norms > 0).astype(np.float64)

    def rows(index: np.ndarray) -> np.ndarray:
        return np.asarray(gram[index], np.float64) * scale[index, None] * scale[None, :]

    return Float64Gram(rows=rows, norms=norms)


def finish_unconverged(
    result: SSCResult,
    problem: Callable[[int], Float64Gram],
    *,
    tau: float,
    gap_tol: float,
    memory_budget_bytes: int,
) -> SSCResult:
    """``result`` with each float32 problem that stopped unconverged (``Status.MAX_ITERATIONS``)
    finished in float64: its coefficients, objective, duality gap, verified rows, status and
    ``converged`` from the float64 certificate. ``problem(p)`` gives the Gram of problem p
    of the flattened batch. A float64 result, or one held on another process, is returned as
    it is."""
    if result.coef is None or np.dtype(result.coef.dtype) == np.float64:
        return result
    status = np.asarray(result.status)
    stopped = np.flatnonzero(status.ravel() == Status.MAX_ITERATIONS)
    if not stopped.size:
        return result
    batch, n = status.shape, result.coef.shape[-1]
    fields = {
        name: np.array(getattr(result, name)).reshape(
            (-1, *np.shape(getattr(result, name))[len(batch) :])
        )
        for name in ("coef", "objective", "duality_gap", "verified", "status", "converged")
    }
    for p in stopped:
        coef, objective, gap, proven = finish_problem(
            fields["coef"][p], problem(int(p)), tau=tau, budget=memory_budget_bytes
        )
        total = float(np.sum(objective))
        relative = float(np.sum(gap)) / total if total > 0 else float(np.sum(gap))
        reported = _rounded_up(relative, fields["duality_gap"].dtype)
        fields["coef"][p] = coef
        fields["objective"][p] = total
        fields["duality_gap"][p] = reported
        fields["verified"][p] = proven / n
        converged = float(reported) <= gap_tol
        fields["converged"][p] = converged
        fields["status"][p] = Status.CONVERGED if converged else Status.MAX_ITERATIONS
    like = jax.numpy.asarray if isinstance(result.coef, jax.Array) else np.asarray
    return result._replace(
        **{
            name: like(value.reshape(np.shape(getattr(result, name))))
            for name, value in fields.items()
        }
    )


def finish_problem(
    coef: np.ndarray, gram: Float64Gram, *, tau: float, budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One problem's (n, n) coefficients refined row by row in float64 and rounded back to
    their dtype, with the rows' (n,) float64 objectives and gaps, and the number of rows whose
    support gap-safe screening proves to contain the optimum's."""
    n = coef.shape[0]
    widest = int(np.max(np.sum(coef != 0, axis=1)))
    # A block of b rows gathers at most b (widest + 1) rows of G, n float64 entries each.
    block = int(np.clip(budget // (8 * n * (widest + 1)), 1, n))
    refined = coef.copy()
    objectives, gaps = np.empty(n), np.empty(n)
    proven = 0
    for first in range(0, n, block):
        rows = np.arange(first, min(first + block, n))
        kept, objective, gap, safe = _finish_block(coef[rows], rows, gram, tau)
        refined[rows], objectives[rows], gaps[rows] = kept, objective, gap
        proven += int(np.sum(safe))
    return refined, objectives, gaps, proven


def _finish_block(
    coef: np.ndarray, rows: np.ndarray, gram: Float64Gram, tau: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows ``rows`` (b,) of one problem, their (b, n) coefficients ``coef``: each row's
    better of ``coef`` and its float64 refinement, the (b,) float64 objectives and gaps of
    those, and (b,) whether screening proves each row's support."""
    supports = [np.flatnonzero(c) for c in coef]
    needed = np.unique(np.concatenate([rows, *supports]))
    gathered = gram.rows(needed)  # (k, n)
    at = {sample: k for k, sample in enumerate(needed)}
    refined = coef.copy()
    for i, (row, support) in enumerate(zip(rows, supports, strict=True)):
        if not support.size:
            continue
        inside = gathered[[at[j] for j in support]]
        signs = np.sign(coef[i, support]).astype(np.float64)
        try:
            values = np.linalg.solve(inside[:, support], inside[:, row] - signs / tau)
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(values)) and np.all(np.sign(values) == signs):
            refined[i, support] = values.astype(coef.dtype)
    old = _certified(coef, rows, gathered, at, gram.norms, tau)
    new = _certified(refined, rows, gathered, at, gram.norms, tau)
    better = new[1] < old[1]
    kept = np.where(better[:, None], refined, coef)
    objective, gap, safe = (np.where(better, b, a) for a, b in zip(old, new, strict=True))
    return kept, objective, gap, safe


class FinishedSupports(NamedTuple):
    """Supports finished in float64 (``finish_supports``): the (n, w) ``values`` in their
    dtype, and each row's (n,) float64 ``objective``, ``gap`` and screening verdict
    ``safe``."""

    values: np.ndarray
    objective: np.ndarray
    gap: np.ndarray
    safe: np.ndarray


def finish_supports(
    x: np.ndarray,
    norms: np.ndarray,
    index: np.ndarray,
    values: np.ndarray,
    reported: np.ndarray,
    *,
    tau: float,
    budget: int,
    progress: bool = False,
) -> FinishedSupports:
    """The finish of a problem held as supports, for ``ssc_sparse``: without G, from the
    float64 samples ``x`` (n, d) and their (n,) ``norms`` (``float64_samples``).

    Row i's coefficients are ``values[i]`` (n, w) at ``index[i]``, nonzeros first. Each row is
    re-solved on its support as ``finish_problem`` does (``G_SS`` and ``G_Si`` from ``X_S``),
    rounded to the values' dtype, and certified in float64 from its residual's correlations
    ``X r_i``, one (b, d) x (d, n) product a block of rows within ``budget`` bytes. A row
    whose refined gap exceeds ``reported`` (n,), its gap as the rounds certified it, has its
    old coefficients certified in float64 too, and keeps the better: one pass over all rows
    and a second over those few; ``progress`` shows a bar over the first.
    """
    refined = _refined_supports(x, index, values, tau)
    objective, gap, safe = _certified_supports(
        x, norms, np.arange(len(x)), index, refined, tau, budget, progress
    )
    changed = np.any(refined != values, axis=1)
    doubtful = np.flatnonzero(changed & (gap > reported))
    old = _certified_supports(x, norms, doubtful, index, values, tau, budget)
    back = old[1] < gap[doubtful]
    reverted = doubtful[back]
    refined[reverted] = values[reverted]
    for field, from_old in zip((objective, gap, safe), old, strict=True):
        field[reverted] = from_old[back]
    return FinishedSupports(refined, objective, gap, safe)


def _refined_supports(
    x: np.ndarray, index: np.ndarray, values: np.ndarray, tau: float
) -> np.ndarray:
    """(n, w) each row's values solved in float64 on its support with its signs, rounded to
    their dtype; a row whose solve fails, or changes a sign or rounds a value to 0, keeps its
    own."""
    refined = values.copy()
    counts = np.sum(values != 0, axis=1)
    for row in np.flatnonzero(counts):
        support = index[row, : counts[row]]
        signs = np.sign(values[row, : counts[row]]).astype(np.float64)
        inside = x[support]
        try:
            solved = np.linalg.solve(inside @ inside.T, inside @ x[row] - signs / tau)
        except np.linalg.LinAlgError:
            continue
        rounded = solved.astype(values.dtype)
        if np.all(np.isfinite(solved)) and np.all(np.sign(rounded) == signs):
            refined[row, : counts[row]] = rounded
    return refined


def _certified_supports(
    x: np.ndarray,
    norms: np.ndarray,
    rows: np.ndarray,
    index: np.ndarray,
    values: np.ndarray,
    tau: float,
    budget: int,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m,) float64 objectives, gaps and screening verdicts of the rows ``rows`` (m,) with
    supports ``index[rows]``, ``values[rows]``, in blocks of rows within ``budget`` bytes,
    with a bar where ``progress``."""
    n = x.shape[0]
    # (b, n) float64 arrays in flight: q, the dense coefficients and the certificate's copies.
    block = int(np.clip(budget // (8 * 8 * n), 1, 1024))
    objective, gap, safe = np.empty(len(rows)), np.empty(len(rows)), np.empty(len(rows), bool)
    bar = tqdm(total=len(rows), desc="SSC float64 finish", unit="row", disable=not progress)
    for first in range(0, len(rows), block):
        part = rows[first : first + block]
        coef = values[part].astype(np.float64)
        residual = x[part].copy()
        for t in range(int(np.max(np.sum(coef != 0, axis=1), initial=0))):
            residual -= coef[:, t, None] * x[index[part, t]]
        dense = np.zeros((len(part), n))
        np.put_along_axis(dense, index[part], coef, axis=1)
        squared = np.sum(residual**2, axis=1)
        certified = _float64_certificate(dense, part, squared, residual @ x.T, norms, tau)
        done = slice(first, first + len(part))
        objective[done], gap[done], safe[done] = certified
        bar.update(len(part))
    bar.close()
    return objective, gap, safe


def _certified(
    coef: np.ndarray,
    rows: np.ndarray,
    gathered: np.ndarray,
    at: dict[int, int],
    norms: np.ndarray,
    tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(b,) float64 objectives, gaps and screening verdicts of the (b, n) ``coef`` of rows
    ``rows``, from the gathered float64 Gram rows (``at`` maps a sample to its row there) and
    the samples' (n,) ``norms``."""
    own = gathered[[at[r] for r in rows]]
    q = own.copy()
    for i, c in enumerate(coef):
        support = np.flatnonzero(c)
        q[i] -= c[support].astype(np.float64) @ gathered[[at[j] for j in support]]
    residual = -coef.astype(np.float64)
    residual[np.arange(len(rows)), rows] += 1
    squared = np.sum(q * residual, axis=1)
    return _float64_certificate(coef, rows, squared, q, norms, tau)


def _float64_certificate(
    coef: np.ndarray,
    rows: np.ndarray,
    squared: np.ndarray,
    q: np.ndarray,
    norms: np.ndarray,
    tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(b,) float64 objectives, gaps and screening verdicts of the (b, n) ``coef`` of rows
    ``rows``, from their residuals' (b,) squared norms and (b, n) float64 correlations ``q``."""
    n = coef.shape[1]
    diagonal = rows[:, None] == np.arange(n)[None, :]
    with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
        coef64 = np.asarray(coef, np.float64)
        objective, gap = (np.asarray(a) for a in row_gaps(coef64, squared, q, diagonal, tau))
        safe = np.asarray(safe_zeros(coef64, q, gap, norms, diagonal, tau))
    return objective, gap, safe


def _rounded_up(value: float, dtype: np.dtype) -> np.floating:
    """``value`` in ``dtype``, rounded up: a certified bound stays a bound."""
    rounded = np.asarray(value, dtype)
    # float(): compared with a Python float, a float32 would round it to float32 first.
    return np.nextafter(rounded, dtype.type(np.inf)) if float(rounded) < value else rounded
