"""ADMM for the SSC matrix LASSO, with the linear system kept in step with an adaptive mu.

The problem (Eq. 2 of the paper, rows convention) for a Gram matrix ``G = X X^T`` is::

    min_C ||C||_1 + tau/2 ||X - C X||_F^2   s.t.  diag(C) = 0

split as ``Z = C`` (Z carries the data fit, C the l1 norm and the zero diagonal)::

    Z   = (tau G + mu C - Lam) (tau G + mu I)^-1
    C   = S_{1/mu}(Z + Lam / mu),  diag(C) = 0
    Lam = Lam + mu (Z - C)

with over-relaxation (Boyd et al. 2011, Sec. 3.4.3), Z replaced by ``a Z + (1 - a) C`` in the
last two lines. Both C and Lam are functions of ``V = a Z + (1 - a) C_prev + Lam / mu``:
``C = S_{1/mu}(V)`` off the diagonal and ``Lam = mu (V - C)``. So the iteration carries V
alone, one (b, n) array instead of two, and reads as ``V <- V + a (Z(V) - S(V))``; a change
of mu keeps C and Lam by mapping ``V -> C + (mu / mu_new) (V - C)``.

``(tau G + mu I)^-1`` comes from one eigendecomposition ``G = U diag(l) U^T``, so every mu
has its exact inverse without refactoring. mu adapts only between blocks of
``inner_iterations`` steps (an inner loop at fixed mu inside an outer ``lax.while_loop``), and
the inverse is rebuilt only when mu moved. The rule balances the residuals relative to their
tolerances, ``r = (primal / eps_primal) / (dual / eps_dual)``, and scales mu by ``sqrt(r)``
(Wohlberg 2017, "ADMM penalty parameter selection by residual balancing"): the mu where both
residual tests are met together. On CNN activations it needs fewer iterations than
doubling and halving on absolute residuals (Boyd et al. 2011, eq. 3.13), and no more on
unions of subspaces (see benchmarks/RESULTS.md, "Solver").

The solver stops when two tests pass after a block. The residual test (Boyd et al. 2011,
Sec. 3.3) bounds ``||Z - C||`` and ``mu ||C - C_prev||``: the ADMM's own health check. The
gap test certifies C: the duality gap of each row's LASSO at a dual-feasible rescaling of its
residual (``ssc_jax.solver.certificate``), summed over the rows, bounds the objective's
distance to the optimum whatever the data; the residuals alone relate to it differently
from problem to problem.

Rows of C are independent LASSO problems that share the factor, so the solver works on a
block of rows (``rows``); the whole matrix is the block ``arange(n)``.

``ADMM`` is a ``Solver`` (``ssc_jax.solver.result``): ``run`` is ``init``, then ``step`` (one
block) while ``terminate`` says go on, over an ``ADMMState``, then ``postprocess``, which
polishes when asked (``ssc_jax.solver.polish``) and gives the ``RowSolution``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from jax import lax

from ssc_jax.solver.admm_state import ADMMDiagnostics, ADMMState
from ssc_jax.solver.certificate import correlations, diagonal_mask, row_certificates
from ssc_jax.solver.factor import Factor
from ssc_jax.solver.polish import polish
from ssc_jax.solver.result import RowSolution, Solver, Status, quadrature

Array = jax.Array


# The certificate is taken once both residuals are within this factor of their tolerances,
# which on unions of subspaces and CNN layers is 2 or more blocks before they meet them.
_NEAR = 3.0


@functools.partial(
    jax.tree_util.register_dataclass,
    meta_fields=("max_iterations", "inner_iterations", "polish", "polish_support"),
    data_fields=(
        "tau",
        "mu",
        "abs_tol",
        "rel_tol",
        "gap_tol",
        "balance",
        "mu_factor",
        "mu_bounds",
        "relaxation",
    ),
)
@dataclass(frozen=True)
class ADMM(Solver):
    """ADMM solver for SSC, a pytree: the numbers are its leaves, traced by the jitted
    drivers (a sweep over tau compiles once), and the loop lengths, which fix the shapes,
    are static.

    The defaults here are the library's: ``ssc``, ``ssc_gram``, the estimator and the
    command line take theirs from these fields.

    Attributes:
      tau: weight of the data fit, > 0.
      mu: initial ADMM penalty, > 0.
      abs_tol, rel_tol: stopping tolerances on the primal and dual residuals (Boyd, Sec. 3.3),
        the absolute one per matrix entry.
      gap_tol: stopping tolerance on the certified relative duality gap, which bounds the
        objective's relative distance to the optimum; ``inf`` leaves the residuals alone to
        decide.
      max_iterations: cap on ADMM steps; rounded up to whole blocks.
      inner_iterations: steps per block at fixed mu; mu may change between blocks.
      balance: mu changes when the ratio of the relative residuals leaves
        ``[1 / balance, balance]``.
      mu_factor: largest factor by which mu grows or shrinks at one change.
      mu_bounds: mu is kept inside these bounds.
      relaxation: over-relaxation factor alpha in [1, 2) (Boyd, Sec. 3.4.3); 1 is plain ADMM.
      polish: after the loop, solve each row exactly on the support its correlations point
        to, and keep the solution where the KKT conditions verify
        (``ssc_jax.solver.polish``); the other rows keep ADMM's iterate.
      polish_support: the largest support polishing solves for (the systems are padded to
        it); a row whose support is larger keeps ADMM's iterate.
    """

    tau: float = field(default=10.0, metadata={"help": "weight of the data fit"})
    mu: float = field(default=10.0, metadata={"help": "initial ADMM penalty"})
    abs_tol: float = field(default=1e-6, metadata={"help": "absolute residual tolerance"})
    rel_tol: float = field(default=1.5e-3, metadata={"help": "relative residual tolerance"})
    gap_tol: float = field(default=2e-3, metadata={"help": "certified relative gap tolerance"})
    max_iterations: int = field(default=5000, metadata={"help": "cap on ADMM iterations"})
    inner_iterations: int = field(default=10, metadata={"help": "ADMM steps per mu update"})
    balance: float = field(default=1.2, metadata={"help": "residual ratio that moves mu"})
    mu_factor: float = field(default=10.0, metadata={"help": "largest change of mu at once"})
    mu_bounds: tuple[float, float] = field(default=(1e-4, 1e8), metadata={"help": "mu range"})
    relaxation: float = field(default=1.7, metadata={"help": "over-relaxation factor"})
    polish: bool = field(default=False, metadata={"help": "exact solve on the support at the end"})
    polish_support: int = field(default=64, metadata={"help": "largest support polished"})

    @property
    def max_blocks(self) -> int:
        return -(-self.max_iterations // self.inner_iterations)

    def init(self, factor: Factor, rows: Array, start: Array | None = None) -> ADMMState:
        """The state at C = Lam = 0, or warm at C = ``start`` (b, n), with the inverse
        prepared for the initial mu.

        A warm start takes the multiplier of ADMM's fixed point at that C,
        ``Lam = tau (E - C) G``, so that ``V = C + Lam / mu``.
        """
        b, n, dtype = rows.shape[0], factor.vectors.shape[0], factor.vectors.dtype
        zeros = jnp.zeros((b, n), dtype)
        inf = jnp.asarray(jnp.inf, dtype)
        mu = jnp.asarray(self.mu, dtype)
        if start is None:
            coef = shifted = zeros
        else:
            coef = jnp.where(diagonal_mask(rows, n), 0, start.astype(dtype))
            shifted = coef + self.tau * correlations(factor, coef, rows)[1] / mu
        return ADMMState(
            shifted=shifted,
            coef=coef,
            mu=mu,
            inverse=factor.prepare(self.tau, mu),
            iteration=jnp.asarray(0, jnp.int32),
            primal_residual=inf,
            dual_residual=inf,
            eps_primal=jnp.zeros((), dtype),
            eps_dual=jnp.zeros((), dtype),
            objective=jnp.asarray(jnp.nan, dtype),
            gap=jnp.asarray(jnp.nan, dtype),
            finite=jnp.asarray(True),
            errors=-jnp.ones((self.max_blocks, 3), dtype),
        )

    def step(
        self, factor: Factor, state: ADMMState, rows: Array, axis_name: str | None = None
    ) -> ADMMState:
        """One block: ``inner_iterations`` ADMM steps at fixed mu, the residuals, their
        tolerances and the certificate, then the mu update and, when mu moved, its inverse.

        ``axis_name`` names the vmap axis this solve is mapped over, if any
        (``Solver.run``).
        """
        n = factor.vectors.shape[0]
        mu, inverse = state.mu, state.inverse
        diagonal = diagonal_mask(rows, n)

        def soft_threshold(V):
            soft = jnp.sign(V) * jnp.maximum(jnp.abs(V) - 1 / mu, 0)
            return jnp.where(diagonal, 0, soft)

        def z_operand(V):
            """``D - mu E`` with ``D = mu C - Lam = mu (2 C - V)``."""
            return mu * (2 * soft_threshold(V) - jnp.where(diagonal, V + 1, V))

        # The carry holds V and the z-update's operand: after the matmul the elementwise work
        # reads V and Z and writes both, with C = S(V) recomputed, not stored.
        def iterate(V, operand):
            Z = factor.z_update(inverse, operand, mu, diagonal)
            V = V + self.relaxation * (Z - soft_threshold(V))
            return Z, V, z_operand(V)

        # The residuals are needed only after the block's last step.
        V, operand = lax.fori_loop(
            0,
            self.inner_iterations - 1,
            lambda _, carry: iterate(*carry)[1:],
            (state.shifted, z_operand(state.shifted)),
        )
        C_prev = soft_threshold(V)
        Z, V, _ = iterate(V, operand)
        C = soft_threshold(V)
        Lam = mu * (V - C)
        primal = jnp.linalg.norm(Z - C)
        dual = mu * jnp.linalg.norm(C - C_prev)
        size = jnp.sqrt(jnp.asarray(C.size, C.dtype))
        eps_primal = size * self.abs_tol + self.rel_tol * jnp.maximum(
            jnp.linalg.norm(Z), jnp.linalg.norm(C)
        )
        eps_dual = size * self.abs_tol + self.rel_tol * jnp.linalg.norm(Lam)
        # The certificate costs two matmuls: it is taken only once the residuals are near
        # their tolerances, where the gap test can matter (NaN marks a block without it).
        near = (primal <= _NEAR * eps_primal) & (dual <= _NEAR * eps_dual)
        nan = jnp.full((2,), jnp.nan, C.dtype)
        objective, gap = lax.cond(
            _anywhere(near, axis_name),
            lambda: jnp.where(near, jnp.stack(self.certificate(factor, C, rows)), nan),
            lambda: nan,
        )
        block = state.iteration // self.inner_iterations
        measured = state._replace(
            coef=C,
            iteration=state.iteration + self.inner_iterations,
            primal_residual=primal,
            dual_residual=dual,
            eps_primal=eps_primal,
            eps_dual=eps_dual,
            objective=objective,
            gap=gap,
        )
        measured = measured._replace(
            errors=state.errors.at[block].set(jnp.stack([primal, dual, measured.relative_gap]))
        )
        finite = jnp.isfinite(primal) & jnp.isfinite(dual)
        # mu is kept on a converged block: the run stops there and needs no new inverse.
        mu_next = jnp.where(
            self.converged(measured), mu, self.balanced_mu(mu, primal * eps_dual, dual * eps_primal)
        )
        # mu settles after a few blocks; the inverse is rebuilt only when it moved.
        moved = finite & (mu_next != mu)
        inverse = lax.cond(
            _anywhere(moved, axis_name),
            lambda: jnp.where(moved, factor.prepare(self.tau, mu_next), inverse),
            lambda: inverse,
        )
        advanced = measured._replace(
            shifted=C + (mu / mu_next) * (V - C), mu=mu_next, inverse=inverse
        )
        # A non-finite block (only reachable from extreme inputs) is dropped: the last finite
        # iterate is kept, and ``finite`` tells ``terminate`` and ``postprocess``.
        dropped = state._replace(finite=jnp.asarray(False))
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), advanced, dropped)

    def balanced_mu(self, mu: Array, primal_share: Array, dual_share: Array) -> Array:
        """mu scaled by ``sqrt(primal_share / dual_share)``, the ratio of the relative
        residuals (``primal / eps_primal`` over ``dual / eps_dual``, cross-multiplied), within
        ``mu_factor`` and ``mu_bounds``; kept while the ratio is inside
        ``[1 / balance, balance]`` or undefined (both residuals or both tolerances zero)."""
        ratio = jnp.where(
            dual_share > 0,
            primal_share / jnp.where(dual_share > 0, dual_share, 1),
            jnp.where(primal_share > 0, jnp.inf, 1),
        )
        scale = jnp.clip(jnp.sqrt(ratio), 1 / self.mu_factor, self.mu_factor)
        moved = (ratio > self.balance) | (ratio * self.balance < 1)
        return jnp.where(moved, jnp.clip(mu * scale, *self.mu_bounds), mu)

    def converged(self, state: ADMMState) -> Array:
        """Whether both residual tests and the gap test pass at ``state``."""
        return (
            (state.primal_residual <= state.eps_primal)
            & (state.dual_residual <= state.eps_dual)
            & ((state.relative_gap <= self.gap_tol) | (self.gap_tol == jnp.inf))
        )

    def terminate(self, state: ADMMState) -> Array:
        """Whether the run stops at ``state``: converged, non-finite or out of iterations."""
        capped = state.iteration >= self.max_blocks * self.inner_iterations
        return self.converged(state) | ~state.finite | capped

    def postprocess(
        self, factor: Factor, state: ADMMState, rows: Array, axis_name: str | None = None
    ) -> RowSolution:
        """The answer at the final state: the certificate at its C where no block took it,
        the status, and with ``polish`` the polished rows."""
        missing = jnp.isnan(state.objective)

        def certify(s: ADMMState) -> ADMMState:
            objective, gap = self.certificate(factor, s.coef, rows)
            return s._replace(
                objective=jnp.where(missing, objective, s.objective),
                gap=jnp.where(missing, gap, s.gap),
            )

        state = lax.cond(_anywhere(missing, axis_name), certify, lambda s: s, state)
        status = jnp.where(
            state.finite,
            jnp.where(self.converged(state), Status.CONVERGED, Status.MAX_ITERATIONS),
            Status.NONFINITE,
        )
        solution = RowSolution(
            coef=state.coef,
            objective=state.objective,
            gap=state.gap,
            iterations=state.iteration,
            status=status.astype(jnp.int32),
            verified=jnp.asarray(0, jnp.int32),
            errors=state.errors,
            diagnostics=ADMMDiagnostics(
                iterations=state.iteration,
                primal_residual=state.primal_residual,
                dual_residual=state.dual_residual,
                mu=state.mu,
                rows_polished=jnp.asarray(0, jnp.int32),
            ),
        )
        if not self.polish:
            return solution
        n = factor.vectors.shape[0]
        polished = polish(factor, state.coef, rows, self.tau, size=min(self.polish_support, n))
        verified = jnp.sum(polished.verified & (rows < n))
        return solution._replace(
            coef=polished.coef,
            objective=jnp.sum(polished.objective),
            gap=jnp.sum(polished.gap),
            verified=verified,
            diagnostics=solution.diagnostics._replace(rows_polished=verified),
        )

    def merge_diagnostics(self, parts: Sequence[ADMMDiagnostics]) -> ADMMDiagnostics:
        """Over a problem's row blocks: the most iterations, the residuals combined in
        quadrature, the first block's mu and all rows polished."""
        return ADMMDiagnostics(
            iterations=functools.reduce(jnp.maximum, [p.iterations for p in parts]),
            primal_residual=quadrature([p.primal_residual for p in parts]),
            dual_residual=quadrature([p.dual_residual for p in parts]),
            mu=parts[0].mu,
            rows_polished=sum(p.rows_polished for p in parts),
        )

    def residuals(self, solution: RowSolution) -> tuple[Array, Array, Array]:
        d = solution.diagnostics
        return d.primal_residual, d.dual_residual, d.mu

    def certificate(self, factor: Factor, coef: Array, rows: Array) -> tuple[Array, Array]:
        """``(P, P - D)`` of the (b, n) block ``coef``: the objective
        ``||C||_1 + tau/2 ||X - C X||_F^2`` and the duality gap, each summed over the rows.

        With ``a = (E - C) U``, ``||r_i||^2 = sum(a_i^2 l)`` for any X with
        ``X X^T = U diag(l) U^T`` (a sum of squares, without the cancellation of the trace
        form), and the correlations are ``q = (a l) U^T`` (``correlations``).
        """
        objective, gap = row_certificates(factor, coef, rows, self.tau)
        return jnp.sum(objective), jnp.sum(gap)


def _anywhere(flag: Array, axis_name: str | None) -> Array:
    """``flag`` for one problem; whether it holds for any problem along a named vmap axis."""
    if axis_name is None:
        return flag
    return lax.psum(flag.astype(jnp.int32), axis_name) > 0
