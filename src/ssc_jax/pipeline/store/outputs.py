"""Output folders that never destroy what ssc-jax did not make, and ``metrics.json``.

A command writes into a hidden temporary folder beside its target and swaps it into place
only when it has finished, so a failed command leaves no partial output behind. The
``MARKER`` file of an output records which command wrote it (its kind) and what it wrote;
a command replaces a folder only if it is empty or a previous output of the same kind that
holds nothing else: no training run, none of the command's inputs, nothing added since.
Everything else is refused with a one-line ``OutputError`` before any work is done.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MARKER = ".ssc-jax-output"
RUN_FILES = ("config.json", "checkpoints")  # what makes a folder a training run
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutputError(ValueError):
    """The output folder cannot be written: it holds something ssc-jax must not replace,
    or the file system refuses it. The message is one line, for the command line."""


def _name(kind: str | None) -> str:
    return repr(kind) if kind else "an unnamed command"


def _elsewhere(target: Path, kind: str | None) -> str:
    instead = target.with_name(f"{target.name}-{kind or 'new'}")
    return f"pass another folder, e.g. --out {instead}"


def _listing(names: set[str], shown: int = 3) -> str:
    first = sorted(names)[:shown]
    return ", ".join(first) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _is_training_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def _training_run_below(folder: Path) -> Path | None:
    """The first training run at or below ``folder`` (symbolic links are not followed)."""
    for root, dirs, files in os.walk(folder):
        if set(RUN_FILES) & {*dirs, *files}:
            return Path(root)
    return None


def _read_marker(target: Path) -> dict | None:
    """The record in ``target``'s marker, ``None`` if it has none; ``OutputError`` if the
    marker does not say what the output holds (older ssc-jax versions wrote plain text)."""
    path = target / MARKER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("entries"), list):
        raise OutputError(
            f"--out {target} was written by an older ssc-jax that did not record what it "
            "holds; delete it yourself or pass another folder"
        )
    return record


def _refuse_inputs(target: Path, kind: str | None, inputs: Iterable[str | Path | None]) -> None:
    resolved = target.resolve()
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        path = Path(given).resolve()
        if path == resolved or resolved in path.parents:
            raise OutputError(
                f"--out {target} contains the input {given}, which replacing it would delete; "
                + _elsewhere(target, kind)
            )


def _refuse_unwritable(target: Path) -> None:
    """Fail before any work if ``target`` cannot be made: its nearest existing ancestor is a
    file, or (for the user running the command) not writable."""
    ancestor = next(p for p in target.parents if p.exists())
    if not ancestor.is_dir():
        raise OutputError(f"--out {target} lies under {ancestor}, which is a file; pass a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write --out {target}: Permission denied ({ancestor})")


def check_output_dir(
    target: str | Path, *, kind: str | None = None, inputs: Iterable[str | Path | None] = ()
) -> None:
    """Raise ``OutputError`` unless a ``kind`` command (``"analyze"``, ``"dynamics"``,
    ``"compare"``, ``"default"``) may replace ``target``: it is absent, empty, or a previous
    output of that kind holding only what it wrote, no training run, and none of ``inputs``
    (the runs and data folders the command reads; ``None`` and names that are not paths are
    skipped)."""
    target = Path(target).absolute()
    _refuse_inputs(target, kind, inputs)
    _refuse_unwritable(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"--out {target} is a file, not a folder; pass a folder path")
    present = {p.name for p in target.iterdir()} - {MARKER}
    record = _read_marker(target)
    if record is None:
        if not present:
            return
        if _is_training_run(target):
            raise OutputError(
                f"--out {target} holds a training run (config.json, checkpoints/), which an "
                f"output would replace; {_elsewhere(target, kind)}"
            )
        raise OutputError(
            f"--out {target} holds {_listing(present)}, not written by ssc-jax; "
            f"choose another output folder, e.g. --out {target / (kind or 'out')}"
        )
    if record.get("kind") != kind:
        raise OutputError(
            f"--out {target} holds the output of ssc-jax {_name(record.get('kind'))}, not of "
            f"{_name(kind)}; {_elsewhere(target, kind)}"
        )
    added = present - set(record["entries"])
    if added:
        raise OutputError(
            f"--out {target} holds {_listing(added)}, which ssc-jax did not write there; "
            f"move {'them' if len(added) > 1 else 'it'} away or {_elsewhere(target, kind)}"
        )
    run = _training_run_below(target)
    if run is not None:
        raise OutputError(
            f"--out {target} holds a training run at {run}, which replacing the output "
            f"would delete; move the run away or {_elsewhere(target, kind)}"
        )


def check_training_dir(target: str | Path) -> None:
    """Raise ``OutputError`` unless ``train`` may write into ``target``: it is absent, empty,
    or a training run (which training resumes)."""
    target = Path(target).absolute()
    _refuse_unwritable(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"--out {target} is a file, not a run folder; pass a folder path")
    if _is_training_run(target) or not any(target.iterdir()):
        return
    what = "files that are not a training run (no config.json)"
    if (target / MARKER).exists():
        what = "an ssc-jax analysis output, not a training run"
    raise OutputError(
        f"--out {target} holds {what}; pass a new folder or an existing run folder to resume"
    )


def _as_output_error(target: Path, err: OSError) -> OutputError:
    """The file system's refusal ``err`` to write ``target`` as a one-line ``OutputError``;
    a full disk or quota names no temporary file, only what to do."""
    if err.errno in DISK_FULL:
        return OutputError(
            f"cannot write --out {target}: {err.strerror}; free space on its disk, or pass "
            "--out on another one"
        )
    where = f" ({err.filename})" if err.filename else ""
    return OutputError(f"cannot write --out {target}: {err.strerror or err}{where}")


def create_parents(target: str | Path) -> list[Path]:
    """Create the missing parent folders of ``target``; return them (deepest first) so that
    ``remove_empty`` can take them back. The file system's refusals become ``OutputError``."""
    target = Path(target).absolute()
    _refuse_unwritable(target)
    missing = [p for p in target.parents if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        remove_empty(missing)
        raise _as_output_error(target, err) from None
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that exist and are empty."""
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
    created = create_parents(target)
    try:
        yield target
    except BaseException:
        if not existed and target.exists() and not keep(target):
            shutil.rmtree(target)
        remove_empty(created)
        raise


def recover_interrupted(target: str | Path) -> None:
    """Undo what a killed command left beside ``target``; call only while holding its lock
    (then no other command is writing it). A previous output that an unfinished swap had set
    aside goes back in place if nothing took it; temporary folders are removed."""
    target = Path(target).absolute()
    if not target.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    for stale in sorted(target.parent.iterdir()):
        found = pattern.fullmatch(stale.name)
        if found is None or not stale.is_dir():
            continue
        previous = stale / "previous"
        if found.group(1) == "old" and previous.exists() and not target.exists():
            os.replace(previous, target)
        shutil.rmtree(stale, ignore_errors=True)


def _fresh_dir(target: Path, kind: str) -> Path:
    """A new hidden folder beside ``target``, with the permissions the umask gives."""
    while True:
        path = target.with_name(f".{target.name}.{kind}-{secrets.token_hex(4)}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _swap_in(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target``; a previous ``target`` goes to a hidden folder, then away
    (or back, if ``tmp`` cannot take its place)."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = _fresh_dir(target, "old")
    os.replace(target, old / "previous")
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / "previous", target)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_output_dir(
    target: str | Path, *, kind: str | None = None, inputs: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target``, on failure it vanishes.

    ``target`` must pass ``check_output_dir(target, kind=kind, inputs=inputs)``, on entry
    and again just before the swap. The temporary folder is a sibling of ``target``, so the
    swap is two renames on one file system; the ``MARKER`` written into it records ``kind``
    and the entries the block wrote. Parent folders created here are removed on failure; the
    file system's refusal to write (a full disk, say) is an ``OutputError``.
    """
    target = Path(target).absolute()
    inputs = list(inputs)
    check_output_dir(target, kind=kind, inputs=inputs)
    created = create_parents(target)
    try:
        tmp = _fresh_dir(target, "tmp")
    except OSError as err:
        remove_empty(created)
        raise _as_output_error(target, err) from None
    try:
        yield tmp
        record = {
            "written_by": "ssc-jax",
            "kind": kind,
            "entries": sorted(p.name for p in tmp.iterdir() if p.name != MARKER),
            "note": "ssc-jax replaces this folder only with a new output of the same kind",
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n")
        check_output_dir(target, kind=kind, inputs=inputs)
        _swap_in(tmp, target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        if isinstance(err, OSError):
            raise _as_output_error(target, err) from None
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
