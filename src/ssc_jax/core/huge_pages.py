"""Transparent huge pages for the command line's large arrays.

A whole-network analysis allocates and frees arrays of hundreds of MB again and again: the
Grams, their float64 normalisation, the working-set solver's (b, n) coefficients and
correlations each round. glibc's malloc takes each from the kernel as a fresh mapping of
4 KiB pages, every one faulted in and zeroed on first touch, and returns it on free: at
N = 10,000 that is tens of millions of page faults (benchmarks/RESULTS.md). Where the kernel
gives transparent huge pages on request (``madvise`` mode), glibc 2.35 and later asks for
them when its tunable ``glibc.malloc.hugetlb`` is 1, and a fault then maps 2 MiB.

glibc reads its tunables once, when the process starts, so the command re-executes itself
with the tunable set (`with_huge_pages`). A user who sets ``glibc.malloc.hugetlb`` in
``GLIBC_TUNABLES`` (to 0 to keep 4 KiB pages) is left as set. The Python API is left alone;
the tunable can be exported before starting Python.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_FIRST_GLIBC = (2, 35)


def thp_mode(path: Path = THP_MODE) -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``), None
    where it does not say."""
    try:
        text = path.read_text()
    except OSError:
        return None
    chosen = [word[1:-1] for word in text.split() if word.startswith("[")]
    return chosen[0] if chosen else None


def glibc_version() -> tuple[int, ...] | None:
    """The running glibc's version, None under another C library."""
    library, version = platform.libc_ver()
    if library != "glibc" or not version:
        return None
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def huge_page_environment(
    environ: Mapping[str, str], mode: str | None, glibc: tuple[int, ...] | None
) -> dict[str, str] | None:
    """The environment to re-execute in, with ``glibc.malloc.hugetlb=1`` added to
    ``GLIBC_TUNABLES``; None where it would change nothing: another C library or a glibc
    before 2.35, a kernel whose mode is not ``madvise``, or the tunable already set."""
    if glibc is None or glibc < _FIRST_GLIBC or mode != "madvise":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(item.split("=")[0] == TUNABLE for item in tunables.split(":")):
        return None
    added = f"{TUNABLE}=1"
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{added}" if tunables else added}


def with_huge_pages() -> None:
    """Re-execute this process, same interpreter and arguments, with glibc's huge-page
    tunable where it helps (`huge_page_environment`); return where it would not."""
    if sys.platform != "linux":
        return
    environment = huge_page_environment(os.environ, thp_mode(), glibc_version())
    if environment is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environment)
