"""The one timing helper of the benchmarks: wall seconds of a call, blocking on JAX results."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax


def timed(
    fn: Callable[..., Any], *args, repeat: int = 1, warmup: bool = False
) -> tuple[Any, float]:
    """(last result, best wall seconds over ``repeat`` calls of ``fn(*args)``).

    Each call waits for its JAX results (``jax.block_until_ready``), so asynchronous dispatch
    is not mistaken for speed. ``warmup`` makes one untimed call first (compilation).
    """
    if warmup:
        jax.block_until_ready(fn(*args))
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return out, best
