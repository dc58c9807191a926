"""The solver in a multi-process JAX job (``jax.distributed``), and the memory it needs there.

Inside a job that called ``jax.distributed.initialize``, ``ssc`` and ``ssc_gram`` spread their
work over ``jax.devices()``, every device of every process, with the single-process design of
``devices.py``: a batch is split by problems, one problem by row blocks, each device holding
the whole factor and its rows' state. Every process runs the same calls on the same inputs.

Where the results go is the solver option ``gather`` (`gather`):

- ``"writer"`` (the default): the host of process 0 (`is_writer`) gets the whole result, as
  NumPy arrays; on every other process each field of the ``SSCResult`` is ``None``.
- ``"all"``: the host of every process gets the whole result, so that code after a solve
  runs unchanged on each; the pipeline (whose warm starts need the last graphs on every
  process) and the estimator ask for this.

The coefficients of a problem split by rows stay split over the devices, each device
holding its own block of rows, and a batch's stay split by problems; they are all-gathered
in slices of at most `GATHER_SLICE_BYTES`, so no device ever holds the whole result.

Values the solve itself needs on every process (the factor's rank threshold) are all-gathered
whatever ``gather`` says. Outside a job both modes give the whole result on the one process.

The memory math below is that of one problem split by row blocks, from the solver's byte
model ``core.memory.problem_bytes``; `scaling_table` is the table of the README's Scaling
section.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ssc_jax.core.memory import problem_bytes

GIB = 2**30


def is_writer() -> bool:
    """Whether this process writes the job's files: process 0 (always, outside a job)."""
    return jax.process_index() == 0


GATHER_MODES = ("writer", "all")


def spans_processes(mesh: Mesh | None) -> bool:
    """Whether ``mesh`` has devices of more than one process."""
    return mesh is not None and len({d.process_index for d in mesh.devices.flat}) > 1


GATHER_SLICE_BYTES = 64 * 2**20
"""The most bytes of one array that a gather places on every device at once."""


def to_host(tree):
    """Every array of ``tree`` as a NumPy array on this host.

    An array with shards on other processes is all-gathered, in slices of at most
    `GATHER_SLICE_BYTES`, so every process of a job must make the same call; any other array
    is copied from its device.
    """
    return jax.tree.map(_host_array, tree)


def _host_array(a, keep: bool = True) -> np.ndarray | None:
    """``a`` on this host; with ``keep`` False, ``None`` once this process has taken part in
    the all-gather of an array with shards on other processes."""
    if not isinstance(a, jax.Array) or a.is_fully_addressable:
        return np.asarray(jax.device_get(a)) if keep else None
    axis = _unsplit_axis(a)
    if axis is None or a.nbytes <= GATHER_SLICE_BYTES:
        whole = np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return whole if keep else None
    whole = np.empty(a.shape, a.dtype) if keep else None
    step = max(1, a.shape[axis] * GATHER_SLICE_BYTES // a.nbytes)
    for start in range(0, a.shape[axis], step):
        where = (slice(None),) * axis + (slice(start, start + step),)
        piece = multihost_utils.process_allgather(a[where], tiled=True)
        if keep:
            whole[where] = piece
    return whole


def _unsplit_axis(a: jax.Array) -> int | None:
    """The longest axis of ``a`` that its sharding does not split, if any."""
    spec = getattr(a.sharding, "spec", None)
    if spec is None:
        return None
    whole = [i for i in range(a.ndim) if i >= len(spec) or spec[i] is None]
    return max(whole, key=lambda i: a.shape[i], default=None)


def gather(tree, mode: str):
    """Every array of ``tree`` on the host where ``mode`` (one of `GATHER_MODES`) asks.

    ``"all"`` is `to_host`. ``"writer"`` gives NumPy arrays on process 0 and ``None`` in
    place of every array with shards on other processes elsewhere; an array replicated over
    the devices is copied from process 0's own replica. Any other such array is
    all-gathered in slices as in `to_host` and each slice dropped at once on the other
    processes: their devices hold one slice at a time, but the bytes sent are those of an
    all-gather, since XLA's collectives have no gather to one device. Every process of a job
    must make the same call.
    """
    if mode == "all":
        return to_host(tree)
    return jax.tree.map(_writer_array, tree)


def _writer_array(a):
    if not isinstance(a, jax.Array) or a.is_fully_addressable:
        return np.asarray(jax.device_get(a))
    if a.sharding.is_fully_replicated:
        return np.asarray(a.addressable_data(0)) if is_writer() else None
    return _host_array(a, keep=is_writer())


class RowSplitBytes(NamedTuple):
    """Bytes on each device of one n-sample problem split by row blocks.

    Attributes:
      factor: the shared factor, a whole copy on every device (four n x n arrays dense).
      state: the ADMM state of the device's ``ceil(n / devices)`` rows.
    """

    factor: int
    state: int

    @property
    def total(self) -> int:
        return self.factor + self.state


def row_split_bytes(
    n: int, devices: int, *, rank: int | None = None, itemsize: int = 4
) -> RowSplitBytes:
    """Bytes per device when one n-sample problem's rows are split evenly over ``devices``.

    Args:
      n: samples of the problem.
      devices: devices sharing its rows, each with all of its rows in flight at once.
      rank: the factor's width, ``None`` for a dense factor (n).
      itemsize: bytes of the solver's dtype (4 for float32).

    Raises:
      ValueError: for ``n`` or ``devices`` below 1.
    """
    if n < 1 or devices < 1:
        raise ValueError(f"n and devices must be >= 1; got n={n}, devices={devices}")
    rank = n if rank is None else rank
    factor = problem_bytes(n, rank, 0, itemsize)
    rows = math.ceil(n / devices)
    return RowSplitBytes(factor=factor, state=problem_bytes(n, rank, rows, itemsize) - factor)


def fewest_devices(
    n: int, device_bytes: int, *, rank: int | None = None, itemsize: int = 4
) -> int | None:
    """The fewest devices of ``device_bytes`` each that hold one n-sample problem split by
    row blocks, all rows in flight; ``None`` when the factor alone does not fit one device.

    With fewer devices the solver still runs, in row blocks one after another per device
    (``plan_chunks``), as long as the factor and 8 rows fit.
    """
    spare = device_bytes - row_split_bytes(n, 1, rank=rank, itemsize=itemsize).factor
    per_row = row_split_bytes(n, n, rank=rank, itemsize=itemsize).state
    if spare < per_row:
        return None
    # The fewest devices whose ceil(n / devices) rows fit in ``spare``.
    return math.ceil(n / (spare // per_row))


def scaling_table(
    sizes: Sequence[int] = (50_000, 100_000),
    device_counts: Sequence[int] = (1, 2, 8, 64),
    memories_gib: Sequence[int] = (24, 80),
    itemsize: int = 4,
) -> str:
    """The Markdown table of the README's Scaling section: GiB per device of the factor and
    of the row-block state of one dense problem, and the fewest devices that fit it."""
    head = ["N", "factor / device", *(f"state, {d} dev." for d in device_counts)]
    head += [f"fewest {m} GiB devices" for m in memories_gib]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n in sizes:
        cells = [f"{n:,}", f"{row_split_bytes(n, 1, itemsize=itemsize).factor / GIB:.1f} GiB"]
        for d in device_counts:
            cells.append(f"{row_split_bytes(n, d, itemsize=itemsize).state / GIB:.2f} GiB")
        for m in memories_gib:
            fewest = fewest_devices(n, m * GIB, itemsize=itemsize)
            cells.append("none: factor too large" if fewest is None else str(fewest))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
