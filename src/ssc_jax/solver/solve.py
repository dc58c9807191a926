"""Sparse subspace clustering: the public solver API over the ADMM and working-set cores.

``ssc(X)`` takes samples as rows, ``ssc_gram(G)`` takes Gram matrices ``G = X X^T`` with any
leading batch axes (for example the layers of one network on the same inputs). Both
validate their input, scale every sample to unit norm (switchable), choose a dense or a
low-rank factorisation, split the work into chunks that fit a memory budget (and over the
local devices, when there are several), and run one compiled program per chunk shape:
on a CPU it solves the problems of a chunk one after another, on an accelerator side by side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssc_jax.core import checks
from ssc_jax.core.memory import default_memory_budget
from ssc_jax.solver.chunks import solve_chunks
from ssc_jax.solver.convergence import warn_unconverged
from ssc_jax.solver.distributed import GATHER_MODES
from ssc_jax.solver.factor import (
    Factor,
    GramFactor,
    LowRankFactor,
    choose_factor,
    factor_eps,
    factorize,
    gram_eigh,
    normalize_gram,
    thin_svd,
)
from ssc_jax.solver.options import SolverOptions, resolve
from ssc_jax.solver.result import Solver, SSCResult
from ssc_jax.solver.working_set import WorkingSet
from ssc_jax.solver.working_set.float64_finish import (
    Float64Gram,
    finish_unconverged,
    from_gram,
    from_samples,
)

Array = jax.Array


def affinity(coef) -> Array:
    """The symmetric affinity graph ``|C| + |C|^T`` of (..., n, n) coefficients."""
    coef = jnp.asarray(coef)
    checks.check_square("coef", coef)
    return jnp.abs(coef) + jnp.abs(jnp.swapaxes(coef, -1, -2))


def ssc(
    X,
    *,
    solver: Solver | None = None,
    options: SolverOptions | None = None,
    init: SSCResult | Any | None = None,
    **settings: Any,
) -> SSCResult:
    """Solve SSC for samples as rows: ``min ||C||_1 + tau/2 ||X - C X||_F^2``, diag(C) = 0.

    Args:
      X: (n, d) data, one sample per row; n >= 2.
      solver: what is solved and how far: a ``WorkingSet`` (the default,
        ``options.DEFAULT_SOLVER``: the exact row solutions on working sets, certified to its
        ``gap_tol``; no factorisation), an ``ADMM`` (tau = mu = 10 as in the paper, mu adapted
        by residual balancing), or any other ``Solver`` (``ssc_jax.solver.result``).
      options: the ``SolverOptions`` (how the problem is prepared and the work is spread);
        default ``SolverOptions()``. With ``low_rank=None`` the rank-d Woodbury path is taken
        when d <= n / 2; with several ``devices`` the rows of the problem are split among
        them.
      init: a warm start: a previous ``SSCResult`` or its (n, n) coefficients C,
        for a related problem (another tau, a nearby X); default C = 0.
      **settings: keyword overrides of fields of either, e.g. ``tau=20.0``, ``gap_tol``,
        ``mu`` (an ``ADMM``'s), ``normalize=False``, ``low_rank``,
        ``rank``, ``precise_factor``, ``memory_budget_bytes``, ``progress``, ``devices``,
        ``gather``.

    Returns:
      An ``SSCResult`` for the single problem; in a ``jax.distributed`` job, on the host of
      process 0 only by default, its fields ``None`` elsewhere (``gather``, see
      ``distributed.py``).

    Warns:
      ConvergenceWarning: once, when the solve stops before the certified gap reaches
        ``gap_tol`` (``result.converged`` False), naming the setting to raise.

    Raises:
      ValueError: for invalid ``X``, an unknown setting, tau or mu not > 0, or an ``init`` of
        another shape.
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
    elif solver.reads_gram:
        factor = jax.tree.map(lambda a: a[None], _gram_factor(x @ x.T, options))
    else:
        # The Gram in the input's precision, as ssc_gram receives it; only the normalisation
        # and the eigendecomposition need float64.
        values, vectors = factorize(
            gram_eigh, (x @ x.T)[None], normalize=options.normalize, precise=options.precise_factor
        )
        factor = choose_factor(
            values, vectors, low_rank=False, eps=factor_eps(x.dtype, options.precise_factor)
        )
    result = solve_chunks(
        chunk_factor=lambda index, place: place(factor),
        batch=1,
        n=n,
        rank=width if low_rank else n,
        dtype=x.dtype,
        solver=solver,
        options=options,
        batch_shape=(),
        init=_initial(init, (), n),
    )
    if options.rank is None or options.rank >= d:  # else the problem is X's rank-r part
        result = _finished(result, solver, options, lambda p: from_samples(X, options.normalize))
    warn_unconverged([result], solver, stacklevel=2)
    return result


def ssc_gram(
    G,
    *,
    solver: Solver | None = None,
    options: SolverOptions | None = None,
    init: SSCResult | Any | None = None,
    **settings: Any,
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
      init: a warm start: a previous ``SSCResult`` of the same batch shape, or its (..., n, n)
        coefficients; default C = 0.

    Returns:
      An ``SSCResult`` with the batch shape of ``G``. When the batch needs several chunks, one
      problem is split by rows over several devices, or the devices span several processes
      (``distributed.py``), its arrays are gathered on the host as NumPy arrays; in a job,
      on process 0 alone by default (``gather="writer"``, the fields ``None`` on the
      others) or on every process (``gather="all"``).

    Warns:
      ConvergenceWarning: once per call, when any problem of the batch stops unconverged.

    Raises:
      ValueError: for invalid ``G``, an unknown setting, tau or mu not > 0, or an ``init`` of
        another shape.
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
        asymmetry, largest = (float(v) for v in _asymmetry(gram))
        if asymmetry > 1e-4 * max(largest, 1e-30):
            raise ValueError(
                f"G must be symmetric (a Gram matrix X X^T); max |G - G^T| = {asymmetry}"
            )
        if solver.reads_gram:
            return place(_gram_factor(gram, options))
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

    known = (
        options.rank is not None
        and options.rank <= n // 2
        and options.low_rank is not False
        and not solver.reads_gram
    )
    result = solve_chunks(
        chunk_factor=chunk_factor,
        batch=len(stack),
        n=n,
        rank=options.rank if known else n,
        dtype=dtype,
        solver=solver,
        options=options,
        batch_shape=np.shape(G)[:-2],
        init=_initial(init, np.shape(G)[:-2], n),
    )
    result = _finished(result, solver, options, lambda p: from_gram(stack[p], options.normalize))
    warn_unconverged([result], solver, stacklevel=2)
    return result


def _finished(
    result: SSCResult,
    solver: Solver,
    options: SolverOptions,
    problem: Callable[[int], Float64Gram],
) -> SSCResult:
    """A working-set ``result`` whose float32 problems that stopped short of ``gap_tol`` are
    finished in float64 on the host (``float64_finish``); ``problem(p)`` is problem p's Gram."""
    if not isinstance(solver, WorkingSet):
        return result
    budget = options.memory_budget_bytes
    return finish_unconverged(
        result,
        problem,
        tau=solver.tau,
        gap_tol=solver.gap_tol,
        memory_budget_bytes=default_memory_budget() if budget is None else int(budget),
    )


def _gram_factor(gram: Array, options: SolverOptions) -> GramFactor:
    """(..., n, n) ``gram``, normalised as ``options`` asks (in float64 for float32 input
    when ``precise_factor``), for a solver that reads it (``Solver.reads_gram``).

    Raises:
      ValueError: for a negative diagonal entry, or an entry beyond the Cauchy-Schwarz bound
        ``|G_ij| <= sqrt(G_ii G_jj)`` (necessary for positive semidefinite G).
    """
    negative, excess, largest = (float(v) for v in _semidefinite_violations(gram))
    if negative or excess > 1e-4 * largest:
        raise ValueError("G must be positive semidefinite (a Gram matrix X X^T)")
    if not options.normalize:
        return GramFactor(gram)
    if options.precise_factor and gram.dtype == jnp.float32:
        with jax.enable_x64(True):
            return GramFactor(_normalized_in_float64(gram))
    return GramFactor(_normalized(gram))


# The checks and the normalisation of a chunk of Grams, each one compiled pass over it: run
# op by op they take several passes of (p, n, n) temporaries, seconds a chunk at n = 10,000.
@jax.jit
def _asymmetry(gram: Array) -> tuple[Array, Array]:
    """The largest ``|G - G^T|`` and the largest ``|G|`` of (..., n, n) ``gram``."""
    return jnp.max(jnp.abs(gram - jnp.swapaxes(gram, -1, -2))), jnp.max(jnp.abs(gram))


@jax.jit
def _semidefinite_violations(gram: Array) -> tuple[Array, Array, Array]:
    """Of (..., n, n) ``gram``: whether a diagonal entry is negative, the largest excess of
    ``|G_ij|`` over ``sqrt(G_ii G_jj)``, and the largest diagonal entry."""
    diag = jnp.diagonal(gram, axis1=-2, axis2=-1)
    bound = jnp.sqrt(jnp.maximum(diag, 0))
    excess = jnp.abs(gram) - bound[..., :, None] * bound[..., None, :]
    return jnp.any(diag < 0), jnp.max(excess), jnp.max(diag)


_normalized = jax.jit(normalize_gram)


@jax.jit
def _normalized_in_float64(gram: Array) -> Array:
    """float32 (..., n, n) ``gram`` normalised in float64 (under ``jax.enable_x64``)."""
    return normalize_gram(gram.astype(jnp.float64)).astype(jnp.float32)


def _configured(
    *,
    solver: Solver | None,
    options: SolverOptions | None,
    settings: Mapping[str, Any],
) -> tuple[Solver, SolverOptions]:
    """``resolve``, with tau and mu checked, and the solver's numbers held as Python floats
    (the loop lengths as ints): the jitted drivers trace them, and another type would
    compile again.

    Raises:
      ValueError: for an unknown setting, tau or mu not a finite number > 0, a rank
        that is not a positive int, or an unknown ``gather`` mode.
    """
    solver, options = resolve(solver, options, settings)
    if options.gather not in GATHER_MODES:
        raise ValueError(f"gather must be one of {GATHER_MODES}; got {options.gather!r}")
    checks.check_positive("tau", solver.tau)
    if hasattr(solver, "mu"):
        checks.check_positive("mu", solver.mu)
    if options.rank is not None and (
        not isinstance(options.rank, int | np.integer) or options.rank < 1
    ):
        raise ValueError(
            f"rank must be a positive int (the data's rank bound); got {options.rank!r}"
        )
    numbers = {
        f.name: _like(f.default, getattr(solver, f.name)) for f in dataclasses.fields(solver)
    }
    return dataclasses.replace(solver, **numbers), options


def _like(default: Any, value: Any) -> Any:
    """``value`` as the Python type of the field's ``default`` (a tuple of floats stays one)."""
    if isinstance(default, tuple):
        return tuple(map(float, value))
    return type(default)(value)


def _float_dtype(x) -> np.dtype:
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return jax.dtypes.canonicalize_dtype(dtype if np.issubdtype(dtype, np.floating) else np.float32)


def _initial(init, batch_shape: tuple[int, ...], n: int) -> np.ndarray | Array | None:
    """``init`` (an ``SSCResult``, or coefficients of the batch shape) as a (batch, n, n)
    stack of coefficients.

    The run starts at the solver's mu: on unions of subspaces a result's final mu took more
    iterations from there (see benchmarks/RESULTS.md, "Warm starts in ``dynamics``").

    Raises:
      ValueError: for coefficients of another shape, or non-finite ones.
    """
    if init is None:
        return None
    coef = init.coef if isinstance(init, SSCResult) else init
    if np.shape(coef) != (*batch_shape, n, n):
        raise ValueError(
            f"init must be an SSCResult or coefficients of shape {(*batch_shape, n, n)} "
            f"(one (n, n) matrix per problem); got shape {np.shape(coef)}"
        )
    checks.check_finite("init", coef)
    return coef.reshape((-1, n, n)) if isinstance(coef, jax.Array) else np.reshape(coef, (-1, n, n))
