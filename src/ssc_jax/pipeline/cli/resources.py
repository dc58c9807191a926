"""Memory that a command runs out of, as one line saying what to do: a memory budget too
small for one SSC problem, an accelerator's (or the host's) memory exhausted, or no disk
space for the Grams held on disk."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import jax
from jax.errors import JaxRuntimeError

from ssc_jax.core.memory import DiskSpaceError, MemoryBudgetError

# The options of each command that make its work smaller, most effective first.
_SMALLER = {
    "train": ["--batch-size"],
    "default": ["--analysis-batch-size", "--memory-gb", "--n"],
    "activations": ["--memory-gb"],
}
_ANALYSIS = ["--memory-gb", "--analysis-batch-size", "--n"]


class ResourceError(ValueError):
    """The memory budget, or a device's memory, is too small for the work asked of it. The
    message is one line, for the command line."""


def _gib(nbytes: int) -> str:
    """``nbytes`` in GiB, rounded up to two significant digits."""
    gib = nbytes / 2**30
    step = 10.0 ** (math.floor(math.log10(gib)) - 1)
    return f"{math.ceil(gib / step) * step:.2g}"


def _options(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


@contextmanager
def memory_reported(command: str) -> Iterator[None]:
    """Run ``command``'s work, turning a memory budget that cannot hold one SSC problem, a
    device's ``RESOURCE_EXHAUSTED`` and a full disk under the Grams held on disk into a
    ``ResourceError`` naming what to change.
    """
    smaller = _SMALLER.get(command, _ANALYSIS)
    try:
        yield
    except MemoryBudgetError as err:
        fewer = ", or a smaller --n" if "--n" in smaller else ""
        raise ResourceError(f"{err}: pass --memory-gb {_gib(err.needed)} or more{fewer}") from None
    except DiskSpaceError as err:
        raise ResourceError(err.strerror) from None
    except JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        device = jax.local_devices()[0]
        cause = " ".join(str(err).split())[:160]
        raise ResourceError(
            f"the memory of {device.platform} device {device.id} ({device.device_kind}) ran "
            f"out ({cause}); pass a smaller {_options(smaller)}"
        ) from None
