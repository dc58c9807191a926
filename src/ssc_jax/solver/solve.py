"""Sparse subspace clustering: the public solver API over the ADMM core.

``ssc(X)`` takes samples as rows, ``ssc_gram(G)`` takes Gram matrices ``G = X X^T`` with any
leading batch axes (for example the layers of one network on the same inputs). Both
validate their input, scale every sample to unit norm (switchable), choose a dense or a
low-rank factorisation, split the work into chunks that fit a memory budget (and over the
local devices, when there are several), and run one compiled ADMM program per chunk shape:
on a CPU it solves the problems of a chunk one after another, on an accelerator side by side.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from ssc_jax.core import checks
from ssc_jax.core.memory import default_memory_budget, plan_chunks
from ssc_jax.solver.admm import ADMM, ADMMState, Status
from ssc_jax.solver.devices import device_mesh, replicate, shard_leading
from ssc_jax.solver.distributed import spans_processes, to_host
from ssc_jax.solver.factor import (
    Factor,
    LowRankFactor,
    choose_factor,
    factor_eps,
    factorize,
    gram_eigh,
    thin_svd,
)
from ssc_jax.solver.options import SolverOptions, resolve

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
    errors: Array

    @property
    def gap_estimate(self) -> Array:
        """``duality_gap``, under the name of the estimate that it replaced."""
        return self.duality_gap


def affinity(coef) -> Array:
    """The symmetric affinity graph ``|C| + |C|^T`` of (..., n, n) coefficients."""
    coef = jnp.asarray(coef)
    checks.check_square("coef", coef)
    return jnp.abs(coef) + jnp.abs(jnp.swapaxes(coef, -1, -2))


def ssc(
    X, *, solver: ADMM | None = None, options: SolverOptions | None = None, **settings: Any
) -> SSCResult:
    """Solve SSC for samples as rows: ``min ||C||_1 + tau/2 ||X - C X||_F^2``, diag(C) = 0.

    Args:
      X: (n, d) data, one sample per row; n >= 2.
      solver: the ``ADMM`` (what is solved and how far); default ``ADMM()``: tau = mu = 10
        as in the paper, mu adapted by residual balancing.
      options: the ``SolverOptions`` (how the problem is prepared and the work is spread);
        default ``SolverOptions()``. With ``low_rank=None`` the rank-d Woodbury path is taken
        when d <= n / 2; with several ``devices`` the rows of the problem are split among
        them.
      **settings: keyword overrides of fields of either, e.g. ``tau=20.0``, ``mu``,
        ``rel_tol``, ``gap_tol``, ``max_iterations``, ``normalize=False``, ``low_rank``,
        ``rank``, ``precise_factor``, ``memory_budget_bytes``, ``progress``, ``devices``.

    Returns:
      An ``SSCResult`` for the single problem.

    Raises:
      ValueError: for invalid ``X``, an unknown setting, or tau or mu not > 0.
    """
    checks.check_ndim("X", X, 2, "a 2-D array of shape (n_samples, n_features)")
    checks.check_min_samples("X", np.shape(X)[0], 2, "each sample is rebuilt from the others")
    checks.check_finite("X", X)
    checks.check_solver_dtype("X", X)
    solver, options = _configured(solver=solver, options=options, settings=settings)
    x = jnp.asarray(X, _float_dtype(X))
    n, d = x.shape
    width = d if options.rank is None else min(d, options.rank)
    low_rank = width <= n // 2 if options.low_rank is None else options.low_rank
    if low_rank:
        u, values = factorize(
            thin_svd, x, normalize=options.normalize, precise=options.precise_factor
        )
        # Singular values come in descending order: the leading ``width`` pairs.
        factor = LowRankFactor(vectors=u[None, :, :width], values=values[None, :width])
    else:
        # The Gram in the input's precision, as ssc_gram receives it; only the normalisation
        # and the eigendecomposition need float64.
        values, vectors = factorize(
            gram_eigh, (x @ x.T)[None], normalize=options.normalize, precise=options.precise_factor
        )
        factor = choose_factor(
            values, vectors, low_rank=False, eps=factor_eps(x.dtype, options.precise_factor)
        )
    return _solve(
        chunk_factor=lambda index, place: place(factor),
        batch=1,
        n=n,
        rank=width if low_rank else n,
        dtype=x.dtype,
        solver=solver,
        options=options,
        batch_shape=(),
    )


def ssc_gram(
    G, *, solver: ADMM | None = None, options: SolverOptions | None = None, **settings: Any
) -> SSCResult:
    """Solve SSC from Gram matrices ``G = X X^T``, for one problem or a batch of them.

    Args:
      G: (n, n) or (..., n, n) symmetric positive semidefinite Gram matrices; every leading
        axis is a batch of independent problems on n samples (n >= 2). A NumPy stack stays on
        the host and goes to the device one chunk at a time.
      solver, options, **settings: as in ``ssc``. With ``low_rank=None`` the Woodbury path
        on the numerical rank r of G is taken when the largest rank in a chunk is at most
        n / 2, r judged against the rounding of G's dtype and of the factorisation (pass
        ``rank=d`` when G comes from d features); with several ``devices`` a batch is split
        by problems (each answer equals the single-device one), a single problem by rows.

    Returns:
      An ``SSCResult`` with the batch shape of ``G``. When the batch needs several chunks, or
      the devices span several processes (``distributed.py``), its arrays are gathered on the
      host as NumPy arrays (on every process).

    Raises:
      ValueError: for invalid ``G``, an unknown setting, or tau or mu not > 0.
    """
    checks.check_ndim("G", G, tuple(range(2, 8)), "a Gram matrix (n, n) or a stack (..., n, n)")
    checks.check_square("G", G)
    n = np.shape(G)[-1]
    checks.check_min_samples("G", n, 2, "each sample is rebuilt from the others")
    checks.check_finite("G", G)
    checks.check_solver_dtype("G", G)
    solver, options = _configured(solver=solver, options=options, settings=settings)
    dtype = _float_dtype(G)
    stack = G.reshape((-1, n, n)) if isinstance(G, jax.Array) else np.reshape(G, (-1, n, n))

    def chunk_factor(index: np.ndarray, place: Callable) -> Factor:
        gram = place(jnp.asarray(stack[index], dtype))
        asymmetry = float(jnp.max(jnp.abs(gram - jnp.swapaxes(gram, -1, -2))))
        if asymmetry > 1e-4 * max(float(jnp.max(jnp.abs(gram))), 1e-30):
            raise ValueError(
                f"G must be symmetric (a Gram matrix X X^T); max |G - G^T| = {asymmetry}"
            )
        values, vectors = factorize(
            gram_eigh, gram, normalize=options.normalize, precise=options.precise_factor
        )
        factor = choose_factor(
            values,
            vectors,
            low_rank=options.low_rank,
            eps=factor_eps(dtype, options.precise_factor),
            gram_eps=float(np.finfo(dtype).eps),
            rank=options.rank,
        )
        return place(factor)

    known = options.rank is not None and options.rank <= n // 2 and options.low_rank is not False
    return _solve(
        chunk_factor=chunk_factor,
        batch=len(stack),
        n=n,
        rank=options.rank if known else n,
        dtype=dtype,
        solver=solver,
        options=options,
        batch_shape=np.shape(G)[:-2],
    )


def _configured(
    *, solver: ADMM | None, options: SolverOptions | None, settings: Mapping[str, Any]
) -> tuple[ADMM, SolverOptions]:
    """``resolve``, with tau and mu checked, and the solver's numbers held as Python floats
    (the loop lengths as ints): the jitted drivers trace them, and another type would
    compile again.

    Raises:
      ValueError: for an unknown setting, tau or mu not a finite number > 0, or a rank
        that is not a positive int.
    """
    solver, options = resolve(solver, options, settings)
    checks.check_positive("tau", solver.tau)
    checks.check_positive("mu", solver.mu)
    if options.rank is not None and (
        not isinstance(options.rank, int | np.integer) or options.rank < 1
    ):
        raise ValueError(
            f"rank must be a positive int (the data's rank bound); got {options.rank!r}"
        )
    numbers = {
        name: int(value)
        if name in ("max_iterations", "inner_iterations")
        else tuple(map(float, value))
        if name == "mu_bounds"
        else float(value)
        for name, value in dataclasses.asdict(solver).items()
    }
    return dataclasses.replace(solver, **numbers), options


def _float_dtype(x) -> np.dtype:
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return jax.dtypes.canonicalize_dtype(dtype if np.issubdtype(dtype, np.floating) else np.float32)


def _solve_rows(
    solver: ADMM,
    factors: Factor,
    rows: Array,
    *,
    sequential: bool,
    axis_name: str | None = None,
) -> ADMMState:
    """The final states of the rows ``rows`` of each problem in ``factors``.

    ``sequential`` solves the problems one after another (``lax.map``), each stopping on its
    own test; otherwise they run side by side (``vmap``) until the slowest one stops, the
    others idling through its iterations. ``axis_name`` names the vmap axis this call is
    mapped over, if any (see ``ADMM.run``). The states leave out the prepared inverse (n x n
    for a dense factor), which is not needed past the loop.
    """

    def solve(factor: Factor, axis_name: str | None) -> ADMMState:
        return solver.run(factor, rows, axis_name=axis_name)._replace(inverse=None)

    if factors.vectors.shape[0] == 1:
        single = solve(jax.tree.map(lambda a: a[0], factors), axis_name)
        return jax.tree.map(lambda a: a[None], single)
    if sequential:
        return lax.map(functools.partial(solve, axis_name=None), factors)
    return jax.vmap(functools.partial(solve, axis_name=_PROBLEMS), axis_name=_PROBLEMS)(factors)


_PROBLEMS, _ROW_BLOCKS = "problems", "row_blocks"
_run_batch = jax.jit(_solve_rows, static_argnames="sequential")


@jax.jit
def _run_row_group(solver: ADMM, factor: Factor, rows: Array) -> ADMMState:
    """``_solve_rows`` of one problem for each of the (width, b) row blocks ``rows``, one per
    device."""
    return jax.vmap(
        lambda block: _solve_rows(solver, factor, block, sequential=False, axis_name=_ROW_BLOCKS),
        axis_name=_ROW_BLOCKS,
    )(rows)


def sequential_batches(mesh: Mesh | None) -> bool:
    """Whether ``ssc_gram`` solves a batch on one device a problem at a time.

    One problem's matmuls already keep every CPU core busy, so on a CPU nothing is gained by
    running problems side by side, and each stops as soon as it converges (CNN layers of one
    network need 100 to 250 iterations). An accelerator needs the batch to fill it: there the
    problems run side by side (``vmap``), and so do they across several devices (``mesh``).
    """
    return mesh is None and jax.default_backend() == "cpu"


def _solve(
    *,
    chunk_factor: Callable[[np.ndarray, Callable], Factor],
    batch: int,
    n: int,
    rank: int,
    dtype,
    solver: ADMM,
    options: SolverOptions,
    batch_shape: tuple[int, ...],
) -> SSCResult:
    """Solve ``batch`` problems on n samples, chunked over problems and rows by the memory
    budget of ``options``.

    ``chunk_factor(index, place)`` factors the problems ``index`` (an int array) only when
    their chunk is reached, so that at most one chunk of Grams and factors is on the device
    at a time; ``place`` puts its arrays on the devices. With several devices, a batch is
    sharded over problems and a single problem over row blocks (see ``devices.py``); the
    budget holds per device. ``rank`` is the factor's width (n dense, r low rank).
    """
    itemsize = np.dtype(dtype).itemsize
    budget = options.memory_budget_bytes
    budget = default_memory_budget() if budget is None else int(budget)
    plan = plan_chunks(n, batch, rank, itemsize, budget)
    mesh = device_mesh(options.devices)
    problems, rows_per_block, width = plan.problems, plan.rows, 1
    if mesh is None:
        place = _unplaced
    elif batch > 1:
        # Whole problems per device; the chunk is padded to a multiple of the device count.
        problems = min(plan.problems * mesh.size, -(-batch // mesh.size) * mesh.size)
        place = functools.partial(shard_leading, mesh=mesh)
    else:
        rows_per_block, width = min(plan.rows, -(-n // mesh.size)), mesh.size
        place = functools.partial(replicate, mesh=mesh)
    sequential = sequential_batches(mesh)
    problem_chunks = [range(s, min(s + problems, batch)) for s in range(0, batch, problems)]
    group_rows = rows_per_block * width
    units = len(problem_chunks) * math.ceil(n / group_rows)
    bar = tqdm(
        total=units,
        desc="SSC",
        unit="chunk",
        disable=(units == 1) if options.progress is None else not options.progress,
    )
    pieces = []
    for chunk in problem_chunks:
        # Pad the last chunk with copies so that every chunk reuses one compiled program.
        index = np.minimum(np.arange(chunk.start, chunk.start + problems), chunk.stop - 1)
        chunk_factors = chunk_factor(index, place)
        blocks = []
        for start in range(0, n, group_rows):
            # Rows past n become n: a zero row of the identity is an all-zero LASSO problem
            # that stays at C = 0 and adds nothing to the residuals or the objective.
            rows = np.minimum(np.arange(start, start + group_rows), n)
            if width == 1:
                blocks.append(
                    _run_batch(
                        solver=solver,
                        factors=chunk_factors,
                        rows=jnp.asarray(rows),
                        sequential=sequential,
                    )
                )
            else:
                rows = shard_leading(jnp.asarray(rows.reshape(width, rows_per_block)), mesh)
                group = _run_row_group(solver=solver, factor=chunk_factors, rows=rows)
                blocks.extend(jax.tree.map(lambda a, i=i: a[i], group) for i in range(width))
            bar.update()
        merged = _merge_row_blocks(blocks, n=n, problems=len(chunk))
        # With several chunks, each result leaves the device before the next chunk starts;
        # over several processes, every process gathers it.
        keep = len(problem_chunks) == 1 and not spans_processes(mesh)
        pieces.append(merged if keep else to_host(merged))
    bar.close()
    result = pieces[0] if len(pieces) == 1 else jax.tree.map(_concat_host, *pieces)
    result = jax.tree.map(lambda a: a.reshape(batch_shape + a.shape[1:]), result)
    nonfinite = int(np.sum(np.asarray(result.status) == Status.NONFINITE))
    if nonfinite:
        warnings.warn(
            f"{nonfinite} SSC problem(s) hit non-finite values and stopped early; their "
            "coefficients are the last finite iterate",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


def _unplaced(tree):
    return tree


def _concat_host(*arrays: np.ndarray) -> np.ndarray:
    return np.concatenate(arrays)


@functools.partial(jax.jit, static_argnames=("n", "problems"))
def _merge_row_blocks(states: list[ADMMState], n: int, problems: int) -> SSCResult:
    """Join the final states of row blocks into one ``SSCResult`` per problem."""
    coef = jnp.concatenate([s.coef for s in states], axis=1)[:, :n]
    stacked = jnp.stack([s.errors for s in states])
    ran = jnp.any(stacked >= 0, axis=0)
    residuals = jnp.sqrt(jnp.sum(jnp.maximum(stacked[..., :2], 0) ** 2, axis=0))
    history = jnp.where(ran, jnp.concatenate([residuals, stacked[..., 2:].max(0)], -1), -1)
    status = functools.reduce(jnp.maximum, [s.status for s in states])
    objective, gap = sum(s.objective for s in states), sum(s.gap for s in states)
    result = SSCResult(
        coef=coef,
        objective=objective,
        iterations=functools.reduce(jnp.maximum, [s.iteration for s in states]),
        converged=status == Status.CONVERGED,
        status=status,
        primal_residual=jnp.sqrt(sum(s.primal_residual**2 for s in states)),
        dual_residual=jnp.sqrt(sum(s.dual_residual**2 for s in states)),
        duality_gap=jnp.where(objective > 0, gap / objective, gap),
        mu=states[0].mu,
        errors=history,
    )
    return jax.tree.map(lambda a: a[:problems], result)
