"""A command's computation in two parts: the solves, and the summary read from them.

In a ``jax.distributed`` job every process takes part in every SSC solve, while one reads
the solutions into the result; the caller decides which (the command line: process 0).
The computations themselves therefore hold no check of which process they run on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

Result = TypeVar("Result")


class Computation(NamedTuple, Generic[Result]):
    """``solves`` yields each solved network state (a checkpoint's graphs, an epoch's, a
    tau's) in turn; ``summary`` reads them, as they come, into the result."""

    solves: Iterator[Any]
    summary: Callable[[Iterator[Any]], Result]

    def result(self) -> Result:
        """Solve and summarise, in one process."""
        return self.summary(self.solves)

    def solve_only(self) -> None:
        """Take part in every solve and read nothing from them."""
        for _ in self.solves:
            pass
