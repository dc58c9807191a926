"""The solver's answer: the coefficients and their diagnostics."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

Array = jax.Array


class SSCResult(NamedTuple):
    """The SSC solution and its diagnostics; every field has the batch shape ``(...)`` first.

    Attributes:
      coef: (..., n, n) coefficients C with zero diagonal and ``X ~= C @ X``; ``C[i, j]`` is
        the weight of sample j in rebuilding sample i.
      objective: (...) ``||C||_1 + tau/2 ||X - C X||_F^2`` on the (normalised) data.
      iterations: (...) ADMM steps taken.
      converged: (...) whether both stopping tests passed: the residuals within their
        tolerances and the certified duality gap within ``gap_tol``.
      status: (...) a ``Status`` value (0 converged, 1 out of iterations, 2 non-finite).
      primal_residual: (...) final ``||Z - C||_F``.
      dual_residual: (...) final ``mu ||C - C_prev||_F``.
      duality_gap: (...) the certified relative duality gap ``(P - D) / P`` of C (the
        ``gap_tol`` test), with D the dual objective of a feasible dual point: the objective
        is within this fraction of the optimum, ``(P - P*) / P <= duality_gap``, up to the
        rounding of the dtype it is computed in.
      mu: (...) final ADMM penalty.
      verified: (...) the fraction of rows proven right: with ``ADMM.polish``, those whose
        polished solution passed the KKT test and replaced ADMM's iterate (0 without
        polishing); with ``WorkingSet``, those whose every zero coefficient gap-safe
        screening proves zero at the optimum, so the exact support lies within theirs.
      errors: (..., blocks, 3) primal and dual residuals and relative duality gap after each
        block of iterations (the gap -1 where not taken), -1 after the last; for a problem
        solved in row blocks, the blocks' residuals combine in quadrature and their gaps by
        the largest.
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
