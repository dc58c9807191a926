"""The solver contract and the solver's answer.

A solver solves the rows ``rows`` (b,) of one n-sample problem, given its factor (see
``ssc_jax.solver.factor``). It keeps a state of its own type (``ADMMState``,
``WorkingSetState``) and says four things of it: where it starts (``init``), one step
(``step``), whether to stop (``terminate``, an array, since exceptions cannot cross
``vmap``: why it stopped is the ``Status`` ``postprocess`` decides) and the answer
(``postprocess``), a ``RowSolution``, the same type for every solver. ``Solver.run`` is
the loop, a ``lax.while_loop`` over ``terminate`` and ``step``; the drivers in
``chunks.py`` run it for row blocks and problems and join the ``RowSolution``s into the
``SSCResult`` that ``ssc`` and ``ssc_gram`` return. A solver is a frozen dataclass
registered as a pytree (``ADMM``, ``WorkingSet``), its numbers leaves that the jitted
drivers trace.
"""

from __future__ import annotations

import abc
import enum
import functools
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssc_jax.solver.factor import Factor

Array = jax.Array


class Status(enum.IntEnum):
    """Why the solver stopped; stored per problem, since exceptions cannot cross vmap."""

    CONVERGED = 0
    MAX_ITERATIONS = 1
    NONFINITE = 2


class RowSolution(NamedTuple):
    """A solver's answer for a block of b rows of an n-sample problem.

    Attributes:
      coef: (b, n) the coefficients, zero on the diagonal.
      objective: () ``||C||_1 + tau/2 ||X - C X||_F^2`` over the rows, at ``coef``.
      gap: () the certified duality gap at ``coef``, summed over the rows (``certificate``).
      iterations: () int32, the solver's own steps (ADMM iterations, working-set rounds).
      status: () int32, a ``Status`` value.
      verified: () int32, the rows the solver proved right (see ``SSCResult.verified``).
      errors: (steps, 3) per step the solver's two error measures and the relative gap, -1
        where no step ran (see ``SSCResult.errors``).
      diagnostics: the solver's own diagnostics, a NamedTuple of () arrays.
    """

    coef: Array
    objective: Array
    gap: Array
    iterations: Array
    status: Array
    verified: Array
    errors: Array
    diagnostics: Any


class Solver(abc.ABC):
    """An SSC solver: ``init``, ``step``, ``terminate`` and ``postprocess`` over a state of
    its own, run by ``run``.

    Every method takes the ``factor`` and ``rows`` (b,) of one problem; a row index of n
    (padding) is an all-zero problem. ``axis_name`` names the vmap axis a solve is mapped
    over, if any (see ``run``).
    """

    reads_gram: ClassVar[bool] = False
    """Whether the solver reads G's entries (a ``GramFactor``) where the drivers would
    otherwise take G's eigendecomposition; the low-rank path of ``ssc`` gives it a
    ``LowRankFactor`` either way."""

    shards: ClassVar[bool] = True
    """Whether the solver runs sharded over several devices (a batch split by problems, one
    problem by row blocks); where not, every problem runs on one device of this process."""

    @abc.abstractmethod
    def init(self, factor: Factor, rows: Array, start: Array | None = None) -> Any:
        """The state at C = 0, or warm at C = ``start`` (b, n)."""

    @abc.abstractmethod
    def step(self, factor: Factor, state: Any, rows: Array, axis_name: str | None = None) -> Any:
        """The state after one step."""

    @abc.abstractmethod
    def terminate(self, state: Any) -> Array:
        """() bool: whether the run stops at ``state``."""

    @abc.abstractmethod
    def postprocess(
        self, factor: Factor, state: Any, rows: Array, axis_name: str | None = None
    ) -> RowSolution:
        """The answer at the final ``state``, with its certificate and status."""

    def run(
        self,
        factor: Factor,
        rows: Array,
        axis_name: str | None = None,
        start: Array | None = None,
    ) -> RowSolution:
        """Step from ``init`` until ``terminate``, then ``postprocess``.

        Under ``jax.vmap(..., axis_name=axis_name)`` (over problems, or over row blocks of
        one problem) a solver can do optional work (``lax.cond``) for the whole batch when
        any member needs it and keep it only where it is needed; without the name, vmap
        would turn each ``lax.cond`` into a select that always does it.
        """
        state = lax.while_loop(
            lambda state: ~self.terminate(state),
            lambda state: self.step(factor, state, rows, axis_name),
            self.init(factor, rows, start),
        )
        return self.postprocess(factor, state, rows, axis_name)

    def merge_diagnostics(self, parts: Sequence[Any]) -> Any:
        """The ``diagnostics`` of a problem solved in row blocks, from its blocks': by
        default the largest of each."""
        return jax.tree.map(lambda *values: functools.reduce(jnp.maximum, values), *parts)

    def residuals(self, solution: RowSolution) -> tuple[Array, Array, Array]:
        """One row block's ``SSCResult.primal_residual``, ``dual_residual`` and ``mu``,
        fields older than ``SSCResult.diagnostics``; NaN by default."""
        nan = jnp.full_like(solution.objective, jnp.nan)
        return nan, nan, nan


def quadrature(values: Sequence[Array]) -> Array:
    """``sqrt(sum(v^2))`` of the row blocks' ``values``: a Frobenius norm from its blocks'."""
    return jnp.sqrt(sum(v**2 for v in values))


class SSCResult(NamedTuple):
    """The SSC solution and its diagnostics; every field has the batch shape ``(...)`` first.

    Attributes:
      coef: (..., n, n) coefficients C with zero diagonal and ``X ~= C @ X``; ``C[i, j]`` is
        the weight of sample j in rebuilding sample i.
      objective: (...) ``||C||_1 + tau/2 ||X - C X||_F^2`` on the (normalised) data.
      iterations: (...) the solver's steps taken: ADMM iterations, working-set rounds.
      converged: (...) whether the solver's stopping tests passed (``status`` 0): for ADMM
        the residuals within their tolerances and the certified duality gap within
        ``gap_tol``, for the working set the gap.
      status: (...) a ``Status`` value (0 converged, 1 out of iterations, 2 non-finite).
      primal_residual: (...) final ``||Z - C||_F`` (ADMM); the working set's KKT violation,
        a solver without either NaN. ``diagnostics`` holds each solver's under its own name.
      dual_residual: (...) final ``mu ||C - C_prev||_F`` (ADMM); the working set's last
        coefficient change, a solver without either NaN.
      duality_gap: (...) the certified relative duality gap ``(P - D) / P`` of C (the
        ``gap_tol`` test), with D the dual objective of a feasible dual point: the objective
        is within this fraction of the optimum, ``(P - P*) / P <= duality_gap``, up to the
        rounding of the dtype it is computed in; for a float32 working-set solve that stopped
        short of ``gap_tol``, computed in float64 after the float64 finish
        (``working_set.float64_finish``), rounded up.
      mu: (...) final ADMM penalty; NaN for another solver.
      verified: (...) the fraction of rows proven right: with ``ADMM.polish``, those whose
        polished solution passed the KKT test and replaced ADMM's iterate (0 without
        polishing); with ``WorkingSet``, those whose every zero coefficient gap-safe
        screening proves zero at the optimum, so the exact support lies within theirs.
      errors: (..., blocks, 3) primal and dual residuals and relative duality gap after each
        block of iterations (the gap -1 where not taken), -1 after the last; for a problem
        solved in row blocks, the blocks' residuals combine in quadrature and their gaps by
        the largest. The working set's rows are its rounds, with the KKT violation and the
        coefficient change in place of the residuals.
      diagnostics: the solver's own diagnostics by name, a NamedTuple of (...) arrays
        (``._asdict()`` gives a dict): for ``ADMM`` an ``ADMMDiagnostics`` (iterations,
        primal_residual, dual_residual, mu, rows_polished), for ``WorkingSet`` a
        ``WorkingSetDiagnostics`` (rounds, kkt_violation, rows_proven, change). For a
        problem solved in row blocks, ADMM's residuals combine in quadrature; the steps,
        violation and change by the largest, the rows polished or proven by their sum.
    """

    coef: Array
    objective: Array
    iterations: Array
    converged: Array
    status: Array
    primal_residual: Array
    dual_residual: Array
    duality_gap: Array
    mu: Array
    verified: Array
    errors: Array
    diagnostics: Any = None

    def sparse_coef(self, threshold: float = 0.0):
        """C as SciPy CSR arrays on the host, one per problem, without the entries of
        magnitude ``threshold`` or less (the exact zeros by default).

        Returns:
          A ``scipy.sparse.csr_array`` (n, n) for a single problem; for a batch, a list of
          them along the first batch axis (nested lists for more axes).

        Raises:
          ValueError: for a negative threshold.
        """
        import scipy.sparse  # only this method needs SciPy

        if not threshold >= 0:
            raise ValueError(f"threshold must be >= 0; got {threshold}")

        def convert(coef):
            if coef.ndim > 2:
                return [convert(coef[i]) for i in range(coef.shape[0])]
            coef = np.asarray(coef)
            return scipy.sparse.csr_array(np.where(np.abs(coef) > threshold, coef, 0))

        return convert(self.coef)
