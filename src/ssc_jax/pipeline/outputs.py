"""Writing a command's output folder all at once, and ``metrics.json``.

A command writes into a hidden temporary folder beside its target and renames it into place
only when it has finished, so a failed command leaves no partial output behind.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MARKER = ".ssc-jax-output"


class OutputError(ValueError):
    """The output folder cannot be written (it exists and is not an ssc-jax output)."""


def check_output_dir(target: str | Path) -> None:
    """Raise ``OutputError`` unless ``target`` is absent, empty or a previous ssc-jax output."""
    target = Path(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"--out {target} exists and is not a folder")
    if any(target.iterdir()) and not (target / MARKER).exists():
        raise OutputError(
            f"--out {target} exists, is not empty and was not written by ssc-jax; "
            "choose another output folder"
        )


def _missing_parents(target: Path) -> list[Path]:
    return [p for p in [target.parent, *target.parent.parents] if not p.exists()]


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:
        if p.exists() and not any(p.iterdir()):
            p.rmdir()


@contextmanager
def removed_on_failure(target: str | Path, keep: Callable[[Path], bool]) -> Iterator[Path]:
    """For commands that write ``target`` in place (training, which must stay resumable):
    if the block fails and ``target`` did not exist before, remove it unless ``keep(target)``
    (say, it holds a finished checkpoint), and remove the parent folders it created."""
    target = Path(target).absolute()
    existed = target.exists()
    created = _missing_parents(target)
    try:
        yield target
    except BaseException:
        if not existed and target.exists() and not keep(target):
            shutil.rmtree(target)
            _remove_empty(created)
        raise


def _fresh_dir(target: Path, kind: str) -> Path:
    """A new hidden folder beside ``target``, with the permissions the umask gives."""
    while True:
        path = target.with_name(f".{target.name}.{kind}-{secrets.token_hex(4)}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


@contextmanager
def atomic_output_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target``, on failure it vanishes.

    ``target`` may already exist only if it is empty or a previous ssc-jax output (it holds
    the ``MARKER`` file). Parent folders created here are removed again on failure.
    """
    target = Path(target).absolute()
    check_output_dir(target)
    created = _missing_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(target, "tmp")
    try:
        yield tmp
        (tmp / MARKER).write_text("written by ssc-jax; safe to replace with a new run\n")
        if target.exists():
            old = _fresh_dir(target, "old")
            os.replace(target, old / "previous")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def to_jsonable(obj):
    """Numpy arrays and scalars to lists and Python numbers; NaN and Inf to ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray | np.generic):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.write_text(json.dumps(to_jsonable(obj), indent=1, allow_nan=False) + "\n")
    return path
