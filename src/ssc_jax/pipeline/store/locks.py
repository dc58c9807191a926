"""One command at a time per folder: an exclusive, non-blocking ``flock`` on a lock file.

The lock file of ``path/to/NAME`` is ``path/to/.NAME.lock``, beside the folder rather than
in it, because an output folder is replaced by renaming. It holds the holder's process id,
for the message a second command fails with. The operating system releases a ``flock``
when its process dies, so a crashed command leaves at most a stale file, which the next
command simply locks again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssc_jax.pipeline.store.outputs import (
    OutputError,
    create_parents,
    recover_interrupted,
    remove_empty,
)


def lock_path(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.NAME.lock`` in its parent."""
    folder = Path(folder).absolute()
    return folder.with_name(f".{folder.name}.lock")


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, folder: Path) -> int:
    """An open descriptor of ``path`` holding its lock; ``OutputError`` if another has it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"cannot lock {folder}: {err.strerror} ({path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"{folder} is in use by another ssc-jax command ({_holder(path)}); "
                "wait for it to finish or pass another folder"
            ) from None
        # The previous holder may have removed the file between our open and our lock.
        if _same_file(fd, path):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the lock of ``folder`` (which need not exist) for the block; yield its absolute
    path. A second holder, in this process or another, fails at once with an
    ``OutputError`` naming the folder and the holder's pid. Taking the lock first tidies
    up after a command that was killed writing ``folder`` (``outputs.recover_interrupted``).
    On exit the lock file and the parent folders created for it are removed again (unless
    something else is in them)."""
    folder = Path(folder).absolute()
    created = create_parents(folder)
    path = lock_path(folder)
    try:
        fd = _acquire(path, folder)
    except BaseException:
        remove_empty(created)
        raise
    try:
        recover_interrupted(folder)
        yield folder
    finally:
        if _same_file(fd, path):
            path.unlink()
        os.close(fd)
        remove_empty(created)


def lock_holder(folder: str | Path) -> str | None:
    """Who holds the lock of ``folder`` now (``"pid N"``), or None when no one does. Only
    probes: it takes the lock for an instant when it is free, and creates no file."""
    path = lock_path(folder)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)
    return None
