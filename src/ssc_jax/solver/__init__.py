"""Sparse subspace clustering: the ADMM and working-set solvers, the certificate, the
factorisations and the work planning.

Depends on jax and numpy only (and SciPy for ``SSCResult.sparse_coef``).
"""

from ssc_jax.solver.admm import ADMM, Status
from ssc_jax.solver.convergence import ConvergenceWarning
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.path import tau_path
from ssc_jax.solver.result import SSCResult
from ssc_jax.solver.solve import affinity, ssc, ssc_gram
from ssc_jax.solver.working_set import WorkingSet
from ssc_jax.solver.working_set.from_features import SparseSSCResult, ssc_sparse

__all__ = [
    "ADMM",
    "ConvergenceWarning",
    "SSCResult",
    "SolverOptions",
    "SparseSSCResult",
    "Status",
    "WorkingSet",
    "affinity",
    "ssc",
    "ssc_gram",
    "ssc_sparse",
    "tau_path",
]
