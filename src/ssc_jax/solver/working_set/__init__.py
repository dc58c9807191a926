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

s climbs a ladder, ``size / 8`` (16 by default) to ``size``: in each round every row takes
the smallest rung that leaves a quarter of it free above its support, or one rung more where
its support and KKT violations together ask for it (``row_levels``); the rows, sorted by
rung, are solved in chunks of ``chunk_rows``, each at its densest row's rung, and one
compiled program holds every rung (``lax.switch``). So the sparse rows of synthetic data run
on 16-32 samples and the denser ones of real layers on up to ``size``, and a few dense rows
do not set the size for the rest. The rows of smallest gap that together hold at most half
of ``gap_tol`` are settled: the round keeps their coefficients (``settled_rows``). A row
whose support reaches ``size`` cannot grow its working set further, and its gap shows it. Under
``vmap`` (problems side by side on an accelerator) a switch runs every rung, and every rung
compiles, so a new problem shape compiles for longer than with one fixed size.

On data of very low rank the coordinate descent is slow, and a working-set problem left
unsolved gives the active-set steps a support they cannot verify: after each round whose gap
fell by less than half, a round may take twice the sweeps (``sweep_cap``).

A ``WorkingSet`` is a ``Solver`` (``ssc_jax.solver.result``) over a ``WorkingSetState``, one
round a step, so it goes wherever an ``ADMM`` does (``ssc(X, solver=WorkingSet())``); it
reads G's entries, and the drivers give it G itself (``reads_gram``).

Modules: ``solver`` (the ``WorkingSet``, its state and rounds), ``subproblems`` (the coordinate
descent and active-set steps on the working sets, the sweep cap and the ladder of sizes).
"""

from ssc_jax.solver.working_set.solver import (
    WorkingSet,
    WorkingSetDiagnostics,
    WorkingSetState,
)
from ssc_jax.solver.working_set.subproblems import sweep_cap, working_set_sizes

__all__ = [
    "WorkingSet",
    "WorkingSetDiagnostics",
    "WorkingSetState",
    "sweep_cap",
    "working_set_sizes",
]
