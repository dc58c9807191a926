"""A working-set solver for SSC: exact LASSO rows on small working sets, certified.

Row i of SSC is the LASSO ``min_c ||c||_1 + tau/2 ||x_i - X^T c||^2`` with ``c_i = 0``. Its
solution has a few nonzeros, so each row is solved on a working set W_i of ``size``
samples (celer's strategy, Massias et al. 2018, batched over the rows):

1. the smooth part restricted to W_i is ``tau/2 c^T G_WW c - tau c^T G_Wi``: cyclic
   coordinate descent on the (b, size, size) blocks of G solves all rows of a block at
   once, to ``sweep_tol``;
2. the correlations ``k = tau (e_i - c) G`` of the full residual give the certified duality
   gap (``ssc_jax.solver.certificate``) and the KKT violations outside W_i;
3. W_i is rebuilt from the current support (kept) and the samples of largest ``|k_j| /
   ||x_j||`` (the dual side: the constraints ``|k_j| <= 1`` nearest to being violated).

Rounds repeat until the block's certified relative gap is within ``gap_tol``. Each round
costs one correlation pass and the coordinate sweeps, b s^2 flops each for working sets of s
samples. Row i's residual ``e_i - c_i`` has at most s + 1 nonzeros, so from G the pass reads
the rows of G on each row's support (``certificate.sparse_correlations``, b s n
multiply-adds, not the b n^2 of a dense product); from a low-rank factor it is two
(b, n) x (n, r) products, as one ADMM iteration.

s climbs a ladder, ``size / 8`` (16 by default) to ``size``: each round takes the smallest
rung that leaves a quarter of it free above the block's largest support, or one rung more
where the typical row's support and KKT violations together ask for it (two from C = 0); one
compiled program holds every rung (``lax.switch``). So the sparse rows of synthetic data run
on 16-32 samples and the denser ones of real layers on up to ``size``, faster than a fixed
64 samples in every round (see benchmarks/RESULTS.md, "Certified solvers"). A row whose
support reaches ``size`` cannot grow its working set further, and its gap shows it. Under
``vmap`` (problems side by side on an accelerator) a switch runs every rung, and every rung
compiles, so a new problem shape compiles for longer than with one fixed size.

On data of very low rank the coordinate descent is slow, and a working-set problem left
unsolved gives the active-set steps a support they cannot verify: after each round whose gap
fell by less than half, a round may take twice the sweeps (``sweep_cap``).

A ``WorkingSet`` is a ``Solver`` (``ssc_jax.solver.result``) over a ``WorkingSetState``, one
round a step, so it goes wherever an ``ADMM`` does (``ssc(X, solver=WorkingSet())``); it
reads G's entries, and the drivers give it G itself (``reads_gram``).
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
    meta_fields=("size", "max_rounds", "max_sweeps", "newton_steps"),
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
        ``--gap-tol``, 2e-3 unless given, and report the gap they certify).
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
        """One round: the working sets at the rung the supports ask for, their exact
        solution, and the certificate of the new coefficients. ``axis_name`` is accepted
        for the contract's sake; nothing here needs it."""
        del axis_name
        n, dtype = sample_count(factor), state.coef.dtype
        b, tau = rows.shape[0], jnp.asarray(self.tau, dtype)
        problem = _problem(factor, state.gram, rows)
        lines = jnp.arange(b)[:, None]

        def working_sets(size: int) -> Array:
            """(b, size) the support, then the samples nearest to a KKT violation."""
            scaled = jnp.abs(state.k) / jnp.where(problem.norms > 0, problem.norms, 1)
            score = jnp.where(state.coef != 0, jnp.inf, scaled)
            score = jnp.where(problem.diagonal | (problem.norms == 0)[None, :], -jnp.inf, score)
            return lax.top_k(score, size)[1]

        def solve_on(size: int):
            def solved() -> tuple[Array, Array]:
                index = working_sets(size)
                blocks = problem.gram[index[:, :, None], index[:, None, :]]
                usable = (index != rows[:, None]) & (jnp.diagonal(blocks, 0, 1, 2) > 0)
                target = jnp.take_along_axis(problem.own, index, axis=1)
                begin = jnp.where(usable, jnp.take_along_axis(state.coef, index, axis=1), 0)
                values, change = _descend(
                    blocks, target, begin, usable, tau, self.sweep_tol, sweeps
                )
                values = _active_set(blocks, target, values, usable, tau, self.newton_steps)
                coef = jnp.zeros((b, n), dtype).at[lines, index].set(values)
                if isinstance(factor, GramFactor):
                    squared, q = sparse_correlations(problem.gram, problem.own, rows, index, values)
                else:
                    squared, q = correlations(factor, coef, rows)
                return coef, change, squared, q

            return solved

        sweeps = sweep_cap(self.max_sweeps, state.errors[:, 2])
        sizes = working_set_sizes(self.size, n)
        # A size is used while the block's largest support leaves a quarter of it free.
        limits = jnp.asarray([s - s // 4 for s in sizes])
        supports = jnp.sum(state.coef != 0, axis=1)
        violated = jnp.sum((state.coef == 0) & ~problem.diagonal & (jnp.abs(state.k) > 1), axis=1)
        need = jnp.sum(jnp.max(supports) > limits)
        # The typical row's violations (a few rows correlate with almost every sample) may
        # lift the rung by one above what the largest support needs, by two from C = 0,
        # where no support says anything yet.
        wanted = jnp.sum(jnp.median(supports + violated) > limits)
        lift = jnp.where(jnp.max(supports) == 0, 2, 1)
        level = jnp.minimum(jnp.clip(wanted, need, need + lift), len(sizes) - 1)
        coef, change, squared, q = lax.switch(level, [solve_on(s) for s in sizes])
        objective, gap = row_gaps(coef, squared, q, problem.diagonal, tau)
        measured = state._replace(
            coef=coef,
            k=tau * q,
            objective=objective,
            gap=gap,
            rounds=state.rounds + 1,
            kkt_violation=_violation(coef, tau * q, problem.diagonal),
            change=change,
        )
        row = jnp.stack([measured.kkt_violation, change, measured.relative_gap])
        return measured._replace(errors=state.errors.at[state.rounds].set(row))

    def terminate(self, state: WorkingSetState) -> Array:
        """Whether the run stops at ``state``: within ``gap_tol``, or out of rounds."""
        return ~((state.rounds < self.max_rounds) & (state.relative_gap > self.gap_tol))

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


def sweep_cap(max_sweeps: int, gaps: Array) -> Array:
    """() the coordinate sweeps a round may take: ``max_sweeps`` doubled for each round so
    far whose relative gap was more than half the previous round's, at most four times;
    ``gaps`` (max_rounds,) holds the rounds' relative gaps, -1 where none ran."""
    ran = (gaps[1:] >= 0) & (gaps[:-1] >= 0)
    slow = jnp.sum(ran & (gaps[1:] > 0.5 * gaps[:-1]))
    return max_sweeps * 2 ** jnp.minimum(slow, 4)


def working_set_sizes(size: int, n: int) -> list[int]:
    """The working-set sizes a solve of n samples may use, ascending: ``size / 8``,
    ``size / 4``, ``size / 2`` and ``size``, each at least 8 and at most n - 1."""
    return sorted({min(max(s, 8), n - 1) for s in (size // 8, size // 4, size // 2, size)})


def _active_set(
    blocks: Array, target: Array, coef: Array, usable: Array, tau: Array, steps: int
) -> Array:
    """(b, s) the exact minimiser of the problem ``_descend`` solves, where a primal-dual
    active-set step finds and verifies it; ``coef`` elsewhere.

    Each step predicts the support S and signs sigma from the coordinate-descent map at the
    current point, ``z = A_jj c_j + (g - A c)_j``: S where ``tau |z_j| > 1``, sigma the sign
    of z; then solves ``A_SS c_S = g_S - sigma / tau`` by Cholesky (a singular A_SS gives non-finite
    values, and the row keeps its point). A solution is kept where its signs
    agree with sigma and no usable coordinate off S has ``tau |(g - A c)_j| > 1 +
    sqrt(eps)`` (the KKT conditions); the next step starts from it either way. The steps stop
    once every row's solution is verified.
    """
    size, dtype = blocks.shape[-1], coef.dtype
    highest = lax.Precision.HIGHEST
    scale = jnp.diagonal(blocks, 0, 1, 2)
    slack = 1 + jnp.sqrt(jnp.finfo(dtype).eps)
    eye = jnp.eye(size, dtype=dtype)

    def step(carry):
        point, best, verified, taken = carry
        z = scale * point + target - jnp.einsum("bjl,bl->bj", blocks, point, precision=highest)
        support, signs = usable & (tau * jnp.abs(z) > 1), jnp.sign(z)
        system = jnp.where(support[:, :, None] & support[:, None, :], blocks, eye)
        rhs = jnp.where(support, target - signs / tau, 0)
        factor = jax.scipy.linalg.cho_factor(system)
        solved = jax.scipy.linalg.cho_solve(factor, rhs[..., None])[..., 0]
        values = jnp.where(support, solved, 0)
        residual = target - jnp.einsum("bjl,bl->bj", blocks, values, precision=highest)
        finite = jnp.all(jnp.isfinite(values), axis=1)
        ok = (
            finite
            & jnp.all(~support | (jnp.sign(values) == signs), axis=1)
            & jnp.all(~usable | support | (tau * jnp.abs(residual) <= slack), axis=1)
        )
        best = jnp.where((ok & ~verified)[:, None], values, best)
        return jnp.where(finite[:, None], values, point), best, verified | ok, taken + 1

    def running(carry) -> Array:
        return (carry[3] < steps) & ~jnp.all(carry[2])

    verified = jnp.zeros(coef.shape[:1], bool)
    start = (coef, coef, verified, jnp.asarray(0, jnp.int32))
    return lax.while_loop(running, step, start)[1]


def _descend(
    blocks: Array,
    target: Array,
    coef: Array,
    usable: Array,
    tau: Array,
    tol: Array,
    max_sweeps: Array,
) -> tuple[Array, Array]:
    """Cyclic coordinate descent on ``min ||c||_1 + tau/2 c^T A c - tau c^T g`` for a batch:
    ``blocks`` A (b, s, s), ``target`` g (b, s), from ``coef`` (b, s); coordinates not
    ``usable`` stay 0. Returns the coefficients and the last sweep's largest change.

    Coordinate j minimises ``|c_j| + tau/2 (A_jj c_j^2 - 2 z c_j)`` with
    ``z = g_j - sum_{l != j} A_jl c_l``: ``c_j = S_{1/tau}(z) / A_jj``. The residual
    ``g - A c`` is updated with column j at each step.
    """
    size = blocks.shape[-1]
    scale = jnp.diagonal(blocks, 0, 1, 2)
    safe = jnp.where(usable, scale, 1)
    residual = target - jnp.einsum("bjl,bl->bj", blocks, coef, precision=lax.Precision.HIGHEST)

    def coordinate(j, carry):
        coef, residual, change = carry
        old, a = coef[:, j], safe[:, j]
        z = residual[:, j] + a * old
        new = jnp.where(usable[:, j], jnp.sign(z) * jnp.maximum(jnp.abs(z) - 1 / tau, 0) / a, 0)
        delta = new - old
        residual = residual - delta[:, None] * blocks[:, j, :]
        change = jnp.maximum(change, jnp.max(jnp.abs(delta) * jnp.sqrt(a)))
        return coef.at[:, j].set(new), residual, change

    def sweep(carry):
        coef, residual, _, sweeps = carry
        coef, residual, change = lax.fori_loop(
            0, size, coordinate, (coef, residual, jnp.zeros((), coef.dtype))
        )
        return coef, residual, change, sweeps + 1

    inf = jnp.asarray(jnp.inf, coef.dtype)
    coef, _, change, _ = lax.while_loop(
        lambda c: (c[3] < max_sweeps) & (c[2] > tol),
        sweep,
        (coef, residual, inf, jnp.asarray(0, jnp.int32)),
    )
    return coef, change
