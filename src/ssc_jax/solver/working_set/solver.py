"""The working-set solver: its state, one round, and the answer it certifies.

The method is described in the package's docstring (``ssc_jax.solver.working_set``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ssc_jax.solver.certificate import (
    correlations,
    row_gaps,
    safe_zeros,
    sparse_correlations,
)
from ssc_jax.solver.factor import Factor, GramFactor, sample_count
from ssc_jax.solver.result import RowSolution, Solver, Status
from ssc_jax.solver.working_set.subproblems import (
    active_set,
    descend,
    row_levels,
    settled_rows,
    sweep_cap,
    working_set_sizes,
)

Array = jax.Array


class WorkingSetState(NamedTuple):
    """A round's iterate for a block of b rows of an n-sample problem.

    Attributes:
      coef: (b, n) the coefficients.
      k: (b, n) their scaled correlations ``k = tau q = tau (e_i - c) G``.
      objective, gap: (b,) each row's objective and certified duality gap at ``coef``.
      rounds: () working-set rounds taken.
      kkt_violation: () the largest ``|k_j| - 1`` off the support, 0 when none exceeds 1.
      change: () the last round's largest coefficient change (scaled by its sample's
        norm), 0 before the first.
      errors: (max_rounds, 3) the KKT violation, the change and the relative gap after
        each round, -1 where no round ran.
      gram: (n, n) G formed once from a factor that does not hold it; None for a
        ``GramFactor``.
    """

    coef: Array
    k: Array
    objective: Array
    gap: Array
    rounds: Array
    kkt_violation: Array
    change: Array
    errors: Array
    gram: Array | None

    @property
    def relative_gap(self) -> Array:
        """() the block's certified relative gap, ``sum(gap) / sum(objective)``."""
        objective, gap = jnp.sum(self.objective), jnp.sum(self.gap)
        return jnp.where(objective > 0, gap / objective, gap)

    @property
    def stalled(self) -> Array:
        """() whether the last round left the relative gap exactly as the round before it
        did: its working sets and their solutions were the same, so more rounds in this
        precision repeat it. The rounds stall so at the gap's floor in float32
        (``float64_finish``), whatever KKT violation float32's rounding leaves (about 5e-7
        on real activations), and where a row's support fills the largest working set."""
        last = self.errors[jnp.maximum(self.rounds - 1, 0)]
        before = self.errors[jnp.maximum(self.rounds - 2, 0)]
        return (self.rounds >= 2) & (last[2] == before[2])


class _Chunk(NamedTuple):
    """A chunk of c rows of a round: their sample indices ``rows`` (c,), n for padding; their
    coefficients, scaled correlations and own rows of G, ``coef``, ``k`` and ``own`` (c, n);
    the (c, n) mask of their diagonal entries."""

    rows: Array
    coef: Array
    k: Array
    own: Array
    diagonal: Array


class WorkingSetDiagnostics(NamedTuple):
    """The working set's own diagnostics of a solve (``RowSolution.diagnostics``,
    ``SSCResult.diagnostics``).

    Attributes:
      rounds: () working-set rounds taken.
      kkt_violation: () the largest ``|k_j| - 1`` off the support (``WorkingSetState``).
      rows_proven: () the rows whose support gap-safe screening proves to contain the
        optimum's (``certificate.safe_zeros``).
      change: () the last round's largest coefficient change.
    """

    rounds: Array
    kkt_violation: Array
    rows_proven: Array
    change: Array


class _Problem(NamedTuple):
    """What every round reads of one problem: G (n, n), the sample norms (n,), the rows' own
    entries ``G_i`` (b, n) and the (b, n) mask of their diagonal entries."""

    gram: Array
    norms: Array
    own: Array
    diagonal: Array


@functools.partial(
    jax.tree_util.register_dataclass,
    meta_fields=("size", "max_rounds", "max_sweeps", "newton_steps", "chunk_rows"),
    data_fields=("tau", "gap_tol", "sweep_tol"),
)
@dataclass(frozen=True)
class WorkingSet(Solver):
    """Working-set SSC solver, a pytree like ``ADMM``: tau and the tolerances are traced
    leaves, the sizes (which fix the shapes) static.

    Attributes:
      tau: weight of the data fit, > 0.
      gap_tol: stop once the certified relative duality gap of a block of rows is within it;
        1e-6 by default, an exact solution for every purpose (the commands pass their own
        ``--gap-tol``, 2e-3 unless given, and report the gap they certify). A float32 solve
        that stops short of it, out of rounds or ``stalled``, is finished in float64 on the
        host by ``ssc`` and ``ssc_gram`` (``float64_finish``).
      sweep_tol: a working-set problem is solved when no coefficient moved more than this
        (scaled by its sample's norm) in a sweep.
      size: the most samples per working set, so the largest support a row can have; a
        round uses ``size / 8`` to ``size`` of them (``working_set_sizes``). The default,
        128, leaves room for the rows of a real CNN layer at tau = 50 (46 nonzeros on
        average, on the last conv layer of the CIFAR-10 ResNet-18 at N = 2,000).
      max_rounds: cap on working-set rounds.
      max_sweeps: cap on coordinate sweeps per round, doubled after each round whose
        certified gap fell by less than half, up to 16 times (``sweep_cap``): on data of very
        low rank the coordinate descent converges slowly, and a working-set problem left
        unsolved leaves the active-set steps a support they cannot verify.
      newton_steps: primal-dual active-set steps per round after the sweeps, each a batched
        (b, size, size) solve that finds the exact solution once the support is near.
      chunk_rows: rows a round solves together: the rows of a block, sorted by rung, are
        solved in chunks of this many, each chunk at its densest row's rung and its sweeps
        and active-set steps stopping with its own rows; enough rows to keep the batched
        steps efficient, few enough that most chunks hold rows of one rung.

    Example:
      >>> import numpy as np, ssc_jax
      >>> from ssc_jax.solver.working_set import WorkingSet
      >>> X = np.random.default_rng(0).normal(size=(60, 20))
      >>> result = ssc_jax.ssc(X, solver=WorkingSet(gap_tol=1e-5))
      >>> bool(result.converged), bool(result.duality_gap <= 1e-5)
      (True, True)
    """

    tau: float = field(default=10.0, metadata={"help": "weight of the data fit"})
    gap_tol: float = field(default=1e-6, metadata={"help": "certified relative gap tolerance"})
    sweep_tol: float = field(default=1e-5, metadata={"help": "coordinate change that ends a solve"})
    size: int = field(default=128, metadata={"help": "most samples per working set"})
    max_rounds: int = field(default=30, metadata={"help": "cap on working-set rounds"})
    max_sweeps: int = field(default=30, metadata={"help": "cap on coordinate sweeps a round"})
    newton_steps: int = field(default=4, metadata={"help": "active-set steps a round"})
    chunk_rows: int = field(default=512, metadata={"help": "rows a round solves together"})

    reads_gram = True
    # Sharded over several devices its loop stalls, every thread waiting (seen on 4 forced
    # CPU devices, batches and row blocks alike); until that is found, it runs on one.
    shards = False

    def init(self, factor: Factor, rows: Array, start: Array | None = None) -> WorkingSetState:
        """The state at C = 0 or at ``start`` (b, n), measured; G is formed here, once,
        from a factor that does not hold it. Memory: the (n, n) Gram, the (b, size, size)
        blocks of it a round takes and a few (b, n) arrays."""
        n, dtype = sample_count(factor), jax.tree.leaves(factor)[0].dtype
        gram = None
        if not isinstance(factor, GramFactor):
            gram = jnp.matmul(
                factor.vectors * factor.values, factor.vectors.T, precision=lax.Precision.HIGHEST
            )
        problem = _problem(factor, gram, rows)
        tau = jnp.asarray(self.tau, dtype)
        if start is None:
            # At C = 0 the residual is x_i itself: q = G_i, ||r||^2 = G_ii, no product.
            coef = jnp.zeros((rows.shape[0], n), dtype)
            squared, q = jnp.sum(jnp.where(problem.diagonal, problem.own, 0), axis=1), problem.own
        else:
            coef = jnp.where(problem.diagonal, 0, start.astype(dtype))
            squared, q = correlations(factor, coef, rows)
        objective, gap = row_gaps(coef, squared, q, problem.diagonal, tau)
        return WorkingSetState(
            coef=coef,
            k=tau * q,
            objective=objective,
            gap=gap,
            rounds=jnp.asarray(0, jnp.int32),
            kkt_violation=_violation(coef, tau * q, problem.diagonal),
            change=jnp.zeros((), dtype),
            errors=-jnp.ones((self.max_rounds, 3), dtype),
            gram=gram,
        )

    def step(
        self,
        factor: Factor,
        state: WorkingSetState,
        rows: Array,
        axis_name: str | None = None,
    ) -> WorkingSetState:
        """One round: each unsettled row's working set at the rung its support asks for,
        its exact solution, and the certificate of the new coefficients. The rows are sorted
        by rung and solved in chunks of ``chunk_rows``, each at its densest row's rung; the
        rows ``settled_rows`` picks keep their coefficients. ``axis_name`` is accepted for
        the contract's sake; nothing here needs it."""
        del axis_name
        n, dtype = sample_count(factor), state.coef.dtype
        b, tau = rows.shape[0], jnp.asarray(self.tau, dtype)
        problem = _problem(factor, state.gram, rows)
        sizes = working_set_sizes(self.size, n)
        sweeps = sweep_cap(self.max_sweeps, state.errors[:, 2])
        supports = jnp.sum(state.coef != 0, axis=1)
        violated = jnp.sum((state.coef == 0) & ~problem.diagonal & (jnp.abs(state.k) > 1), axis=1)
        levels = row_levels(supports, violated, sizes)
        settled = settled_rows(state.gap, state.objective, jnp.asarray(self.gap_tol, dtype))
        # Unsettled rows first, by rung and then support, so that a chunk's rung and its
        # correlation pass (to its largest support) fit its rows; settled rows last.
        key = jnp.where(settled, len(sizes), levels) * (n + 1) + supports
        chunk = min(b, self.chunk_rows)
        count = -(-b // chunk)
        order = jnp.concatenate(
            [jnp.argsort(key, stable=True), jnp.full((count * chunk - b,), b, jnp.int32)]
        )
        running = -(-jnp.sum(~settled) // chunk)

        def solve_chunk(t: Array, carry: tuple) -> tuple:
            coef, k, objective, gap, change = carry
            position = lax.dynamic_slice(order, (t * chunk,), (chunk,))
            at = jnp.minimum(position, b - 1)
            # Padding and settled rows in the chunk are solved as all-zero problems, and
            # not written back.
            kept = (position < b) & ~settled[at]
            # A row is read and written by its own chunk alone, so the carry still holds its
            # state's values; reading them there lets the loop update coef and k in place.
            chunk_rows = jnp.where(kept, rows[at], n)
            sub = _Chunk(
                rows=chunk_rows,
                coef=jnp.where(kept[:, None], coef[at], 0),
                k=jnp.where(kept[:, None], k[at], 0),
                own=jnp.where(kept[:, None], problem.gram[jnp.minimum(chunk_rows, n - 1)], 0),
                diagonal=chunk_rows[:, None] == jnp.arange(n)[None, :],
            )
            level = jnp.max(jnp.where(kept, levels[at], 0))
            solvers = [
                functools.partial(self._solve_chunk, factor, problem, sub, sweeps, s) for s in sizes
            ]
            new, moved, squared, q = lax.switch(level, solvers)
            new_objective, new_gap = row_gaps(new, squared, q, sub.diagonal, tau)
            write = jnp.where(kept, position, b)
            return (
                coef.at[write].set(new, mode="drop"),
                k.at[write].set(tau * q, mode="drop"),
                objective.at[write].set(new_objective, mode="drop"),
                gap.at[write].set(new_gap, mode="drop"),
                jnp.maximum(change, moved),
            )

        start = (state.coef, state.k, state.objective, state.gap, jnp.zeros((), dtype))
        coef, k, objective, gap, change = lax.fori_loop(0, running, solve_chunk, start)
        measured = state._replace(
            coef=coef,
            k=k,
            objective=objective,
            gap=gap,
            rounds=state.rounds + 1,
            kkt_violation=_violation(coef, k, problem.diagonal),
            change=change,
        )
        row = jnp.stack([measured.kkt_violation, change, measured.relative_gap])
        return measured._replace(errors=state.errors.at[state.rounds].set(row))

    def _solve_chunk(
        self, factor: Factor, problem: _Problem, sub: _Chunk, sweeps: Array, size: int
    ) -> tuple[Array, Array, Array, Array]:
        """The chunk's rows solved on working sets of ``size`` samples (their support, then
        the samples nearest to a KKT violation): (c, n) coefficients, the largest change,
        and their residuals' (c,) squared norms and (c, n) correlations."""
        c, n = sub.coef.shape
        dtype, tau = sub.coef.dtype, jnp.asarray(self.tau, sub.coef.dtype)
        scaled = jnp.abs(sub.k) / jnp.where(problem.norms > 0, problem.norms, 1)
        score = jnp.where(sub.coef != 0, jnp.inf, scaled)
        score = jnp.where(sub.diagonal | (problem.norms == 0)[None, :], -jnp.inf, score)
        index = lax.top_k(score, size)[1]
        blocks = problem.gram[index[:, :, None], index[:, None, :]]
        usable = (index != sub.rows[:, None]) & (jnp.diagonal(blocks, 0, 1, 2) > 0)
        target = jnp.take_along_axis(sub.own, index, axis=1)
        begin = jnp.where(usable, jnp.take_along_axis(sub.coef, index, axis=1), 0)
        values, change = descend(blocks, target, begin, usable, tau, self.sweep_tol, sweeps)
        values = active_set(blocks, target, values, usable, tau, self.newton_steps)
        coef = jnp.zeros((c, n), dtype).at[jnp.arange(c)[:, None], index].set(values)
        if isinstance(factor, GramFactor):
            squared, q = sparse_correlations(problem.gram, sub.own, sub.rows, index, values)
        else:
            squared, q = correlations(factor, coef, sub.rows)
        return coef, change, squared, q

    def terminate(self, state: WorkingSetState) -> Array:
        """Whether the run stops at ``state``: within ``gap_tol``, out of rounds, or
        ``stalled``."""
        running = (state.rounds < self.max_rounds) & (state.relative_gap > self.gap_tol)
        return ~(running & ~state.stalled)

    def postprocess(
        self,
        factor: Factor,
        state: WorkingSetState,
        rows: Array,
        axis_name: str | None = None,
    ) -> RowSolution:
        """The answer at the final state: its status, and the rows whose support gap-safe
        screening proves to contain the optimum's (``certificate.safe_zeros``)."""
        del axis_name
        n, tau = sample_count(factor), jnp.asarray(self.tau, state.coef.dtype)
        problem = _problem(factor, state.gram, rows)
        finite = jnp.all(jnp.isfinite(state.coef))
        converged = state.relative_gap <= self.gap_tol
        status = jnp.where(
            finite, jnp.where(converged, Status.CONVERGED, Status.MAX_ITERATIONS), Status.NONFINITE
        )
        safe = safe_zeros(
            state.coef, state.k / tau, state.gap, problem.norms, problem.diagonal, tau
        )
        proven = jnp.sum(safe & (rows < n))
        return RowSolution(
            coef=state.coef,
            objective=jnp.sum(state.objective),
            gap=jnp.sum(state.gap),
            iterations=state.rounds,
            status=status.astype(jnp.int32),
            verified=proven,
            errors=state.errors,
            diagnostics=WorkingSetDiagnostics(
                rounds=state.rounds,
                kkt_violation=state.kkt_violation,
                rows_proven=proven,
                change=state.change,
            ),
        )

    def merge_diagnostics(self, parts: Sequence[WorkingSetDiagnostics]) -> WorkingSetDiagnostics:
        """Over a problem's row blocks: the most rounds, the largest violation and change,
        and all rows proven."""
        merged = super().merge_diagnostics(parts)
        return merged._replace(rows_proven=sum(p.rows_proven for p in parts))

    def residuals(self, solution: RowSolution) -> tuple[Array, Array, Array]:
        """The KKT violation and the last change stand for ADMM's residuals; mu is NaN."""
        violation = solution.diagnostics.kkt_violation
        return violation, solution.diagnostics.change, jnp.full_like(violation, jnp.nan)


def _problem(factor: Factor, gram: Array | None, rows: Array) -> _Problem:
    """The ``_Problem`` of the rows ``rows`` (b,), G being ``factor``'s or ``gram``."""
    gram = factor.gram if gram is None else gram
    n = gram.shape[0]
    own = jnp.where((rows < n)[:, None], gram[jnp.minimum(rows, n - 1)], 0)
    diagonal = rows[:, None] == jnp.arange(n)[None, :]
    return _Problem(gram, jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0)), own, diagonal)


def _violation(coef: Array, k: Array, diagonal: Array) -> Array:
    """() the largest ``|k_j| - 1`` off the support and the diagonal, 0 when none exceeds 1."""
    off = jnp.where((coef != 0) | diagonal, 0, jnp.abs(k))
    return jnp.maximum(jnp.max(off) - 1, 0)
