"""The memory policy: one default budget, and how work is cut to fit a budget.

Every computation whose memory grows with its input takes its default budget from
`default_memory_budget`, half the memory of JAX's default device:

* the SSC solver (``solver/solve.py``) solves as many problems, or rows of one problem, at
  once as `plan_chunks` fits in it, by the byte model `problem_bytes`;
* activation Grams (``nets/capture.py``) hold as many layers' features at once as fit in it;
* HSIC (``similarity/hsic.py``) streams centered blocks, which are sized for speed rather
  than capacity: `block_budget`, at most the default budget.

The other half of the device is headroom for what a plan does not count: the caller's inputs
and results, XLA's workspace, and fragmentation.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

# Bytes of the blocks that a streamed computation writes and reads back at once. On a CPU the
# block stays in cache between the two, which makes HSIC's centering then matmul faster than
# in one large block (see benchmarks/RESULTS.md, "Similarity"). An accelerator prefers few,
# large matmuls.
_CPU_BLOCK_BYTES = 4 * 2**20
_ACCELERATOR_BLOCK_BYTES = 512 * 2**20

# n x n arrays of a dense factor during ADMM: the eigenvectors U, the inverse M carried
# through the loop and, when mu moves, U scaled by 1 / (tau l + mu) and the new M.
_DENSE_FACTOR_ARRAYS = 4
# (rows, n) arrays per problem: the iterate V, the coefficients C and the z-update's operand
# carried through the loop, Z, S(V) and the residual terms, and under vmap the selects that
# keep each problem's own state. XLA's memory analysis of the compiled solver peaks at 8.3.
_STATE_ARRAYS = 9


class MemoryBudgetError(ValueError):
    """Work that does not fit the memory budget even when cut as small as it goes; ``needed``
    is the smallest budget, in bytes, that it fits."""

    def __init__(self, what: str, needed: int, budget: int):
        super().__init__(f"{what} needs at least {needed:,} bytes; the memory budget is {budget:,}")
        self.needed = needed


class ChunkPlan(NamedTuple):
    """Problems solved together, and rows of each problem solved together."""

    problems: int
    rows: int


def default_memory_budget() -> int:
    """Bytes that one chunk of work may hold on JAX's default device: half its memory.

    That is half the accelerator's ``bytes_limit``, or half the physical RAM on a CPU. With
    several devices the budget holds per device (on a CPU, per process: several processes on
    one machine each plan on half of its RAM).
    """
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(0.5 * stats["bytes_limit"])
    return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def block_budget() -> int:
    """Bytes of the transient blocks of a streamed computation (HSIC's centered blocks).

    4 MiB on a CPU, so that a block is still in cache when it is read back; 512 MiB on an
    accelerator, but at most `default_memory_budget`.
    """
    if jax.local_devices()[0].platform == "cpu":
        return _CPU_BLOCK_BYTES
    return min(_ACCELERATOR_BLOCK_BYTES, default_memory_budget())


def problem_bytes(n: int, rank: int, rows: int, itemsize: int) -> int:
    """Peak bytes of ADMM on one n-sample problem with ``rows`` rows in flight.

    A dense factor (``rank >= n``) holds four n x n arrays (the eigenvectors, the inverse,
    and its rebuild when mu moves), a low-rank one its (n, rank) basis; the state is
    `_STATE_ARRAYS` (rows, n) arrays. This bounds XLA's own count (arguments, outputs and
    temporaries of the compiled solver, checked in ``tests/test_memory.py``), leaving out
    the residual history, ``max_iterations / inner_iterations`` triples.
    """
    factor = _DENSE_FACTOR_ARRAYS * n * n if rank >= n else n * rank
    return (factor + _STATE_ARRAYS * rows * n) * itemsize


def plan_chunks(n: int, batch: int, rank: int, itemsize: int, budget: int) -> ChunkPlan:
    """The largest chunking that fits ``budget`` bytes: whole problems if one fits, else rows.

    Rows are planned in multiples of 8.

    Raises:
      MemoryBudgetError: when not even a block of 8 rows of one problem fits.
    """
    whole = problem_bytes(n, rank, n, itemsize)
    if whole <= budget:
        return ChunkPlan(problems=max(1, min(batch, budget // whole)), rows=n)
    shared = problem_bytes(n, rank, 0, itemsize)
    rows = (budget - shared) // (_STATE_ARRAYS * n * itemsize)
    rows = min(n, rows - rows % 8)
    if rows < 8:
        needed = problem_bytes(n, rank, 8, itemsize)
        raise MemoryBudgetError(f"an SSC problem with n={n}", needed, budget)
    return ChunkPlan(problems=1, rows=int(rows))


class DiskSpaceError(OSError):
    """A folder's disk has no room for an array that was to be held there."""


def disk_array(shape: tuple[int, ...], dtype, folder: str | Path) -> np.memmap:
    """A zeroed array of ``shape`` backed by a file in ``folder`` that is unlinked at once:
    the operating system frees it with the last reference to the array, and no file is left
    behind, even if the process dies.

    The file's blocks are reserved first, where the file system can: a sparse file on a full
    disk would otherwise end the process with SIGBUS at the first write past the free space.

    Raises:
      DiskSpaceError: when ``folder``'s disk cannot hold the array.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    handle, name = tempfile.mkstemp(prefix="ssc-jax-", suffix=".f32", dir=folder)
    try:
        if nbytes and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(handle, 0, nbytes)
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise DiskSpaceError(
                        errno.ENOSPC,
                        f"no room in {Path(folder).absolute()} for {nbytes / 2**30:.2g} GiB "
                        "of Grams held on disk; free space there, or set TMPDIR to a folder "
                        "on a disk with room",
                    ) from None
                # EOPNOTSUPP, EINVAL: the file system reserves nothing; write as before
        array = np.memmap(name, dtype=dtype, mode="w+", shape=shape)
    finally:
        os.close(handle)
        os.unlink(name)
    return array
