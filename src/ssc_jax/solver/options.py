"""How an SSC problem is prepared and run, apart from what it solves (the solver's fields),
and the default solver."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax

from ssc_jax.solver.result import Solver
from ssc_jax.solver.working_set import WorkingSet

DEFAULT_SOLVER: Solver = WorkingSet()
"""The solver of ``ssc``, ``ssc_gram``, ``tau_path``, the estimator and the commands when
none is given."""


@dataclass(frozen=True)
class SolverOptions:
    """Options shared by ``ssc``, ``ssc_gram``, the estimator and the command line.

    Attributes:
      normalize: scale each sample to unit l2 norm first, so that tau means the same at every
        layer; an all-zero sample gets zero coefficients either way.
      low_rank: use the Woodbury path on the rank of the data; ``None`` decides by size
        (rank at most n / 2).
      rank: a known bound on the rank of the data, such as a layer's feature dimension d:
        with ``rank <= n / 2`` (and ``low_rank`` not False) the Woodbury path takes that many
        eigenpairs (singular pairs for ``ssc``), instead of judging the numerical rank.
      precise_factor: take the one-off factorisation (SVD or eigh) in float64 for float32
        input, then iterate in float32. Off, it is faster (most on GPUs) but the objective
        may stall about 1e-4 above the optimum on ill-conditioned data.
      memory_budget_bytes: bound for one chunk of work on one device; ``None`` is the
        default policy (``ssc_jax.core.memory.default_memory_budget``).
      progress: a progress bar over chunks; ``None`` shows one when there is more than one.
      devices: devices to spread the work over; ``None`` is ``jax.devices()``: every local
        device, and in a ``jax.distributed`` job every device of every process.
      gather: where a ``jax.distributed`` job's result goes (``distributed.gather``):
        ``"writer"``, the host of process 0 only, the other processes getting an
        ``SSCResult`` of ``None`` fields; ``"all"``, the host of every process. Outside a
        job, the one process gets the whole result either way.
    """

    normalize: bool = field(default=True, metadata={"help": "unit-norm samples first"})
    low_rank: bool | None = field(default=None, metadata={"help": "force the low-rank path"})
    rank: int | None = field(default=None, metadata={"help": "known bound on the data's rank"})
    precise_factor: bool = field(default=True, metadata={"help": "float64 factorisation"})
    memory_budget_bytes: int | None = field(
        default=None, metadata={"help": "memory budget for one chunk of solver work (bytes)"}
    )
    progress: bool | None = field(default=None, metadata={"help": "progress bar over chunks"})
    devices: Sequence[jax.Device] | None = field(
        default=None, metadata={"help": "devices to spread the work over"}
    )
    gather: str = field(
        default="writer", metadata={"help": "where a multi-process job's result goes"}
    )


OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(SolverOptions))


def resolve(
    solver: Solver | None, options: SolverOptions | None, settings: Mapping[str, Any]
) -> tuple[Solver, SolverOptions]:
    """``solver`` and ``options`` (``DEFAULT_SOLVER`` and ``SolverOptions()`` when ``None``)
    with ``settings`` applied.

    ``settings`` are keyword overrides, each a field of the solver (``WorkingSet``: ``tau``,
    ``gap_tol``, ...; ``ADMM``: ``mu``, ``rel_tol``, ...) or of ``SolverOptions``
    (``normalize``, ...).

    Raises:
      ValueError: for a name that is neither.
    """
    solver = DEFAULT_SOLVER if solver is None else solver
    solver_fields = frozenset(f.name for f in dataclasses.fields(solver))
    unknown = sorted(set(settings) - solver_fields - OPTION_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown solver setting(s) {', '.join(unknown)} for {type(solver).__name__}; "
            f"valid: {', '.join(sorted(solver_fields | OPTION_FIELDS))}"
        )
    solver = dataclasses.replace(
        solver, **{k: v for k, v in settings.items() if k in solver_fields}
    )
    options = dataclasses.replace(
        options or SolverOptions(), **{k: v for k, v in settings.items() if k in OPTION_FIELDS}
    )
    return solver, options
