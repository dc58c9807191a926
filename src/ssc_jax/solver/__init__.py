"""Sparse subspace clustering by ADMM: the solver, its factorisations and its work planning.

Depends on jax and numpy only (and SciPy for ``SSCResult.sparse_coef``).
"""

from ssc_jax.solver.admm import ADMM, Status
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.result import SSCResult
from ssc_jax.solver.solve import affinity, ssc, ssc_gram

__all__ = ["ADMM", "SSCResult", "SolverOptions", "Status", "affinity", "ssc", "ssc_gram"]
