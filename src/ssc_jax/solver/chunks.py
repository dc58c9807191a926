"""How ``ssc`` and ``ssc_gram`` run their problems: chunks that fit a memory budget, spread
over the local devices, one compiled program per chunk shape, for any ``Solver``.

On a CPU a chunk's problems are solved one after another, on an accelerator side by side.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from ssc_jax.core.memory import default_memory_budget, plan_chunks
from ssc_jax.solver.devices import device_mesh, leading, replicate, shard_leading
from ssc_jax.solver.distributed import gather, spans_processes
from ssc_jax.solver.factor import Factor
from ssc_jax.solver.options import SolverOptions
from ssc_jax.solver.result import RowSolution, Solver, SSCResult, Status, quadrature

Array = jax.Array


def solve_rows(
    solver: Solver,
    factors: Factor,
    rows: Array,
    starts: Array | None = None,
    *,
    sequential: bool,
    axis_name: str | None = None,
) -> RowSolution:
    """The solutions of the rows ``rows`` of each problem in ``factors``, from C = 0 or
    from ``starts``, (p, b, n) coefficients of those rows.

    ``sequential`` solves the problems one after another (``lax.map``), each stopping on its
    own test; otherwise they run side by side (``vmap``) until the slowest one stops, the
    others idling through its iterations. ``axis_name`` names the vmap axis this call is
    mapped over, if any (see ``Solver.run``).
    """

    def solve(problem: tuple[Factor, Array | None], axis_name: str | None) -> RowSolution:
        factor, start = problem
        return solver.run(factor, rows, axis_name=axis_name, start=start)

    problems = (factors, starts)
    if jax.tree.leaves(factors)[0].shape[0] == 1:
        single = solve(jax.tree.map(lambda a: a[0], problems), axis_name)
        return jax.tree.map(lambda a: a[None], single)
    if sequential:
        return lax.map(functools.partial(solve, axis_name=None), problems)
    return jax.vmap(functools.partial(solve, axis_name=_PROBLEMS), axis_name=_PROBLEMS)(problems)


_PROBLEMS, _ROW_BLOCKS = "problems", "row_blocks"
run_batch = jax.jit(solve_rows, static_argnames="sequential")


@jax.jit
def _run_row_group(
    solver: Solver, factor: Factor, rows: Array, starts: Array | None
) -> RowSolution:
    """``solve_rows`` of one problem for each of the (width, b) row blocks ``rows``, one per
    device; ``starts`` are None or the blocks' (width, 1, b, n) starting coefficients."""
    return jax.vmap(
        lambda block, start: solve_rows(
            solver, factor, block, start, sequential=False, axis_name=_ROW_BLOCKS
        ),
        axis_name=_ROW_BLOCKS,
    )(rows, starts)


def sequential_batches(mesh: Mesh | None) -> bool:
    """Whether ``ssc_gram`` solves a batch on one device a problem at a time.

    One problem's matmuls already keep every CPU core busy, so on a CPU nothing is gained by
    running problems side by side, and each stops as soon as it converges (CNN layers of one
    network need 100 to 250 iterations). An accelerator needs the batch to fill it: there the
    problems run side by side (``vmap``), and so do they across several devices (``mesh``).
    """
    return mesh is None and jax.default_backend() == "cpu"


def solve_chunks(
    *,
    chunk_factor: Callable[[np.ndarray, Callable], Factor],
    batch: int,
    n: int,
    rank: int,
    dtype,
    solver: Solver,
    options: SolverOptions,
    batch_shape: tuple[int, ...],
    init: np.ndarray | Array | None = None,
) -> SSCResult:
    """Solve ``batch`` problems on n samples, chunked over problems and rows by the memory
    budget of ``options``; from C = 0, or from ``init``, (batch, n, n) coefficients.

    ``chunk_factor(index, place)`` factors the problems ``index`` (an int array) only when
    their chunk is reached, so that at most one chunk of Grams and factors is on the device
    at a time; ``place`` puts its arrays on the devices. With several devices, a batch is
    sharded over problems and a single problem over row blocks (see ``devices.py``); the
    budget holds per device. ``rank`` is the factor's width (n dense, r low rank). In a
    multi-process job the result follows ``options.gather``: fields of ``None`` on the
    processes it does not go to.
    """
    itemsize = np.dtype(dtype).itemsize
    budget = options.memory_budget_bytes
    budget = default_memory_budget() if budget is None else int(budget)
    plan = plan_chunks(n, batch, rank, itemsize, budget)
    mesh = device_mesh(options.devices)
    if not solver.shards:
        mesh = None
    problems, width = plan.problems, 1
    if mesh is None:
        # As many chunks as the plan needs, of equal sizes, so that the last chunk's padding
        # (copies, solved in full) is the least: 20 problems in two chunks of 10, not 15 + 15.
        problems = -(-batch // -(-batch // problems))
        place = _unplaced
    elif batch > 1:
        # Whole problems per device; the chunk is padded to a multiple of the device count.
        problems = min(plan.problems * mesh.size, -(-batch // mesh.size) * mesh.size)
        place = functools.partial(shard_leading, mesh=mesh)
    else:
        width = mesh.size
        place = functools.partial(replicate, mesh=mesh)
    sequential = sequential_batches(mesh)
    problem_chunks = [range(s, min(s + problems, batch)) for s in range(0, batch, problems)]
    groups = row_groups(n, width, plan.rows)
    units = len(problem_chunks) * len(groups)
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
        chunk_init = None if init is None else place(jnp.asarray(init[index], dtype))
        solutions = []
        for rows in groups:
            starts = None if chunk_init is None else _row_start(chunk_init, rows)
            if width == 1:
                solutions.append(
                    run_batch(
                        solver=solver,
                        factors=chunk_factors,
                        rows=jnp.asarray(rows[0]),
                        starts=None if starts is None else starts[:, 0],
                        sequential=sequential,
                    )
                )
            else:
                rows = shard_leading(jnp.asarray(rows), mesh)
                if starts is not None:
                    starts = shard_leading(jnp.swapaxes(starts, 0, 1), mesh)
                solutions.append(
                    _run_row_group(solver=solver, factor=chunk_factors, rows=rows, starts=starts)
                )
            bar.update()
        if width == 1:
            merged = _merge_row_blocks(solver, solutions, n=n)
            # With several chunks, each result leaves the device before the next chunk
            # starts; over several processes, it goes where ``options.gather`` says.
            keep = len(problem_chunks) == 1 and not spans_processes(mesh)
            merged = merged if keep else gather(merged, options.gather)
            pieces.append(_first(merged, len(chunk)))
        else:
            pieces.append(_merge_row_groups(solver, solutions, n=n, mesh=mesh, mode=options.gather))
    bar.close()
    result = pieces[0] if len(pieces) == 1 else jax.tree.map(_concat_host, *pieces)
    result = jax.tree.map(lambda a: a.reshape(batch_shape + a.shape[1:]), result)
    if result.status is None:  # a process of a job that gathers to process 0 alone
        return SSCResult(*[None] * len(SSCResult._fields))
    nonfinite = int(np.sum(np.asarray(result.status) == Status.NONFINITE))
    if nonfinite:
        warnings.warn(
            f"{nonfinite} SSC problem(s) hit non-finite values and stopped early; their "
            "coefficients are the last finite iterate",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


def row_groups(n: int, width: int, rows: int) -> list[np.ndarray]:
    """The (width, b) row indices of each step of one problem's solve over ``width`` devices,
    with at most ``rows`` rows per device and step.

    Device d solves the contiguous rows ``d * R`` to ``(d + 1) * R - 1``, R = steps x b, so
    that its part of the answer is one block of rows. Indices past n (padding) are n: a zero
    row of the identity is an all-zero LASSO problem that stays at C = 0 and adds nothing to
    the residuals or the objective.
    """
    per_device = -(-n // width)
    steps = -(-per_device // rows)
    b = -(-per_device // steps)
    first = np.arange(width)[:, None] * steps * b
    return [np.minimum(first + g * b + np.arange(b), n) for g in range(steps)]


def _row_start(coef: Array, rows: np.ndarray) -> Array:
    """Rows ``rows``, (width, b), of a chunk's (p, n, n) starting coefficients, as
    (p, width, b, n); row n (padding) is zero."""
    n = coef.shape[-1]
    inside = jnp.asarray(rows < n)[None, ..., None]
    return jnp.where(inside, coef[:, np.minimum(rows, n - 1)], 0)


def _unplaced(tree):
    return tree


def _concat_host(*arrays: np.ndarray) -> np.ndarray:
    return np.concatenate(arrays)


def _first(result: SSCResult, problems: int) -> SSCResult:
    """The first ``problems`` of a chunk's ``result`` (the rest pad it); fields of ``None``
    stay ``None``."""
    return jax.tree.map(lambda a: a[:problems], result)


@functools.partial(jax.jit, static_argnames="n")
def _merge_row_blocks(solver: Solver, solutions: list[RowSolution], n: int) -> SSCResult:
    """Join the solutions of the row blocks of a chunk's problems into one ``SSCResult`` per
    problem."""
    coef = jnp.concatenate([s.coef for s in solutions], axis=1)[:, :n]
    return _joined_diagnostics(solver, solutions, n)._replace(coef=coef)


def _merge_row_groups(
    solver: Solver, solutions: list[RowSolution], *, n: int, mesh: Mesh, mode: str
) -> SSCResult:
    """The ``SSCResult`` of one problem solved over the devices of ``mesh`` in the steps
    ``solutions`` (each of (width, 1, ...) arrays, one row block per device; see
    ``row_groups``), on the host where ``mode`` says (see ``distributed.gather``).

    The coefficients stay split by rows over the devices until they are gathered, in
    slices, so that no device holds more than its own rows and one slice of the others.
    """
    width = mesh.size
    coef = gather(_join_row_groups([s.coef for s in solutions], mesh=mesh), mode)
    small = [s._replace(coef=None) for s in solutions]
    blocks = [jax.tree.map(lambda a, i=i: a[i], s) for s in small for i in range(width)]
    diagnostics = gather(_merge_diagnostics(solver, blocks, n=n), mode)
    if coef is None:  # a process that the result does not go to
        return SSCResult(*[None] * len(SSCResult._fields))
    # Device d's rows follow device d - 1's: the (width, 1, R, n) blocks read as (1, n, n).
    return diagnostics._replace(coef=coef[:, 0].reshape(-1, n)[None, :n])


@functools.partial(jax.jit, static_argnames="mesh")
def _join_row_groups(coefs: list[Array], mesh: Mesh) -> Array:
    """The (width, 1, b, n) coefficient blocks of each step, joined along the rows and kept
    split over the devices of ``mesh``, one (1, R, n) block each."""
    return lax.with_sharding_constraint(jnp.concatenate(coefs, axis=2), leading(mesh))


_merge_diagnostics = functools.partial(jax.jit, static_argnames="n")(
    lambda solver, solutions, n: _joined_diagnostics(solver, solutions, n)
)


def _joined_diagnostics(solver: Solver, solutions: list[RowSolution], n: int) -> SSCResult:
    """The diagnostics of one problem (or a chunk's) from its row blocks' solutions;
    ``coef`` is left ``None``."""
    stacked = jnp.stack([s.errors for s in solutions])
    ran = jnp.any(stacked >= 0, axis=0)
    residuals = jnp.sqrt(jnp.sum(jnp.maximum(stacked[..., :2], 0) ** 2, axis=0))
    history = jnp.where(ran, jnp.concatenate([residuals, stacked[..., 2:].max(0)], -1), -1)
    status = functools.reduce(jnp.maximum, [s.status for s in solutions])
    objective, gap = sum(s.objective for s in solutions), sum(s.gap for s in solutions)
    primal, dual, mu = zip(*(solver.residuals(s) for s in solutions), strict=True)
    return SSCResult(
        coef=None,
        objective=objective,
        iterations=functools.reduce(jnp.maximum, [s.iterations for s in solutions]),
        converged=status == Status.CONVERGED,
        status=status,
        primal_residual=quadrature(primal),
        dual_residual=quadrature(dual),
        duality_gap=jnp.where(objective > 0, gap / objective, gap),
        mu=mu[0],
        verified=sum(s.verified for s in solutions) / n,
        errors=history,
        diagnostics=solver.merge_diagnostics([s.diagnostics for s in solutions]),
    )
