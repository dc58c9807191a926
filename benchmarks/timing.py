"""Wall-clock timing shared by the benchmarks: warm-up, blocking, repeats, alternating rounds.

JAX dispatches asynchronously, so every timed call blocks on its result
(``jax.block_until_ready``, a no-op on NumPy values). A shared, noisy machine moves its load
within a minute, so a candidate and its baseline are timed in alternating rounds, seconds
apart, and compared round by round (`Rounds.ratios`) as well as best against best.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax


def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, once its JAX results (if any) are ready."""
    return jax.block_until_ready(fn(*args))


class Timing(NamedTuple):
    """The last result of the timed calls and the wall seconds of each."""

    result: Any
    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.seconds)


def time_calls(fn: Callable[..., Any], *args: Any, repeat: int = 1, warmup: int = 1) -> Timing:
    """Time ``repeat`` blocking calls of ``fn(*args)`` after ``warmup`` untimed ones.

    ``warmup=0`` times the first call, compilation included.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        run_blocking(fn, *args)
    result, seconds = None, []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run_blocking(fn, *args)
        seconds.append(time.perf_counter() - start)
    return Timing(result=result, seconds=tuple(seconds))


class Rounds(NamedTuple):
    """Per name, the best seconds within each round, and the last result of each call."""

    seconds: dict[str, tuple[float, ...]]
    results: dict[str, Any]

    def best(self, name: str) -> float:
        return min(self.seconds[name])

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratios(self, numerator: str, denominator: str) -> tuple[float, ...]:
        """``numerator`` seconds over ``denominator`` seconds, round by round."""
        pairs = zip(self.seconds[numerator], self.seconds[denominator], strict=True)
        return tuple(top / bottom for top, bottom in pairs)


def alternate(
    calls: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    repeat: Mapping[str, int] | None = None,
    warm_up: Iterable[str] | None = None,
) -> Rounds:
    """Time the ``calls`` in turn, ``rounds`` times over, so that they share the machine's load.

    Args:
      calls: name -> a function of no arguments, timed in this order within each round.
      rounds: how many rounds.
      repeat: name -> blocking calls per round, of which the round keeps the best (default 1).
      warm_up: names to call once, untimed, before the first round (default: all of them);
        leave out NumPy code, which has nothing to compile, or a function already compiled.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    repeat = {} if repeat is None else repeat
    for name in calls if warm_up is None else warm_up:
        run_blocking(calls[name])
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    results: dict[str, Any] = {}
    for _ in range(rounds):
        for name, fn in calls.items():
            timing = time_calls(fn, repeat=repeat.get(name, 1), warmup=0)
            seconds[name].append(timing.best)
            results[name] = timing.result
    return Rounds(
        seconds={name: tuple(values) for name, values in seconds.items()}, results=results
    )


def ratio_range(ratios: Iterable[float], spec: str = ".1f") -> str:
    """The range of per-round ratios, as ``"lo-hix"`` with each bound in format ``spec``."""
    ratios = tuple(ratios)
    return f"{min(ratios):{spec}}-{max(ratios):{spec}}x"
