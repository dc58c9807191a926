"""ADMM's state and its diagnostics (``ssc_jax.solver.admm``): what one block of rows carries
from step to step, and what a finished solve reports of itself."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class ADMMState(NamedTuple):
    """Iterates for a block of b rows of an n-sample problem.

    Attributes:
      shifted: (b, n) V, from which C and Lam follow (see the module docstring).
      coef: (b, n) the sparse coefficients C = S_{1/mu}(V) off the diagonal.
      mu: () the current penalty.
      inverse: ``factor.prepare(tau, mu)``, the z-update's ``(tau G + mu I)^-1`` at this mu:
        (n, n) for a ``DenseFactor``, the (r,) Woodbury weights for a ``LowRankFactor``.
      iteration: () ADMM steps taken.
      primal_residual: () ||Z - C||_F after the last block.
      dual_residual: () mu ||C - C_prev||_F after the last block.
      eps_primal, eps_dual: () the tolerances of the two residual tests after the last
        block; 0 before the first, so that no test passes.
      objective: () ``||C||_1 + tau/2 ||X - C X||_F^2`` over the rows, at C; NaN while the
        residuals are far from their tolerances (see ``step``).
      gap: () the certified duality gap at C, summed over the rows (``certificate``); NaN
        where ``objective`` is.
      finite: () False once a block met non-finite values; that block is dropped, so the
        iterates are the last finite ones.
      errors: (max_iterations // inner_iterations, 3) the primal and dual residuals and the
        relative duality gap (NaN where not taken) after each block, -1 where no block ran.
    """

    shifted: Array
    coef: Array
    mu: Array
    inverse: Array
    iteration: Array
    primal_residual: Array
    dual_residual: Array
    eps_primal: Array
    eps_dual: Array
    objective: Array
    gap: Array
    finite: Array
    errors: Array

    @property
    def relative_gap(self) -> Array:
        """() ``gap / objective``, which bounds ``(P - P*) / P``; 0 for an all-zero block."""
        return jnp.where(self.objective > 0, self.gap / self.objective, self.gap)


class ADMMDiagnostics(NamedTuple):
    """ADMM's own diagnostics of a solve (``RowSolution.diagnostics``,
    ``SSCResult.diagnostics``).

    Attributes:
      iterations: () ADMM iterations taken.
      primal_residual: () final ``||Z - C||_F``.
      dual_residual: () final ``mu ||C - C_prev||_F``.
      mu: () final penalty.
      rows_polished: () the rows whose polished solution passed the KKT test and replaced
        ADMM's iterate (0 without ``polish``).
    """

    iterations: Array
    primal_residual: Array
    dual_residual: Array
    mu: Array
    rows_polished: Array
