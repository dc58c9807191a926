"""Checksums of a saved checkpoint: the size and SHA-256 of every file of an orbax step,
recorded in ``run_dir/checksums/<epoch>.json`` when it is saved and compared when it is read,
so that a file truncated or altered later is named rather than misread."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path


def checksum_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """The file holding the checksums of the checkpoint of ``epoch``."""
    return Path(run_dir).resolve() / "checksums" / f"{epoch}.json"


def file_sums(step: Path) -> dict[str, list]:
    """``relative path -> [size, sha256]`` of every file under ``step``."""
    sums = {}
    for path in sorted(p for p in step.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sums[path.relative_to(step).as_posix()] = [path.stat().st_size, digest.hexdigest()]
    return sums


def first_mismatch(step: Path, recorded: dict[str, list], items: Sequence[str]) -> str | None:
    """The first file of ``items`` in ``step`` that differs from ``recorded``, described;
    None if all match."""
    found = {}
    for item in items:
        found.update({f"{item}/{name}": sums for name, sums in file_sums(step / item).items()})
    for name, (size, digest) in recorded.items():
        if name.split("/")[0] not in items:
            continue
        shown = step / name
        if name not in found:
            return f"{shown} is missing"
        if found[name][0] != size:
            return f"{shown} has {found[name][0]} bytes, {size} when saved"
        if found[name][1] != digest:
            return f"{shown} has changed since it was saved"
    return None


def recorded_sums(run_dir: str | os.PathLike, epoch: int) -> dict[str, list] | None:
    """The checksums recorded for ``epoch``: None when there are none or they are damaged."""
    try:
        recorded = json.loads(checksum_path(run_dir, epoch).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(recorded, dict):
        return None
    pairs = (isinstance(sums, list) and len(sums) == 2 for sums in recorded.values())
    return recorded if all(pairs) else None
