"""Memory budgets: how many SSC problems, and how many rows of one, fit at once."""

from __future__ import annotations

import os
from typing import NamedTuple

import jax

# Live (b, n) arrays of one ADMM block: C, Lam, Z, the shifted iterate and their temporaries.
_STATE_ARRAYS = 6


class ChunkPlan(NamedTuple):
    """Problems solved together, and rows of each problem solved together."""

    problems: int
    rows: int


def default_memory_budget() -> int:
    """Half of the default device's memory (accelerator limit, or physical RAM on a CPU)."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(0.5 * stats["bytes_limit"])
    return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def problem_bytes(n: int, rank: int, rows: int, itemsize: int) -> int:
    """Peak bytes of one problem with ``rows`` rows in flight.

    The Gram (later its eigenvectors) is n^2; a dense factor adds the n x n inverse, a
    low-rank one an n x rank basis; the ADMM state is a few (rows, n) arrays.
    """
    shared = n * n + (n * n if rank >= n else n * rank)
    return (shared + _STATE_ARRAYS * rows * n) * itemsize


def plan_chunks(n: int, batch: int, rank: int, itemsize: int, budget: int) -> ChunkPlan:
    """The largest chunking that fits ``budget`` bytes: whole problems if one fits, else rows.

    Raises:
      ValueError: when not even a block of 8 rows of one problem fits.
    """
    whole = problem_bytes(n, rank, n, itemsize)
    if whole <= budget:
        return ChunkPlan(problems=max(1, min(batch, budget // whole)), rows=n)
    shared = problem_bytes(n, rank, 0, itemsize)
    rows = (budget - shared) // (_STATE_ARRAYS * n * itemsize)
    rows = min(n, rows - rows % 8)
    if rows < 8:
        raise ValueError(
            f"an SSC problem with n={n} needs at least {problem_bytes(n, rank, 8, itemsize):,} "
            f"bytes; the memory budget is {budget:,}"
        )
    return ChunkPlan(problems=1, rows=int(rows))
