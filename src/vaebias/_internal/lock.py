"""One writer per folder: an advisory lock that a second process is refused, naming the
holder, and that dies with its holder.

The lock is ``flock`` on ``<folder>/.vaebias.lock`` (POSIX). The kernel releases it
when the holding process ends in any way (exit, Ctrl-C, kill -9), so a lock left by a
dead process is taken over without anyone deleting a file. The file keeps the last
holder's pid and host for the refusal message; it is never removed (removing lock files
races with a process about to take them). Within one process the lock is re-entrant.
Where the filesystem has no ``flock`` (some network filesystems) or the platform has no
``fcntl`` (Windows), locking is skipped with a debug log line: one writer is then the
user's responsibility, as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from vaebias._internal.errors import RunError
from vaebias._internal.log import get_logger

__all__ = ["LOCK_NAME", "folder_lock", "holder_of"]

LOCK_NAME = ".vaebias.lock"

log = get_logger()

_HELD: dict[str, list] = {}  # resolved folder -> [fd, depth]
_GUARD = threading.Lock()


def holder_of(folder: str | os.PathLike) -> str:
    """The ``"<pid> on <host>"`` recorded by the last holder of ``folder``'s lock ('' if none)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text().split()
    except OSError:
        return ""
    return f"{text[0]} on {text[1]}" if len(text) >= 2 else ""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold ``folder``'s writer lock while the block runs (the folder must exist).

    Args:
        folder: the folder (a run directory, a results folder, an export folder).
        what: how the refusal names it ("run directory", "results folder", ...).

    Raises:
        RunError: another live process holds the lock; the message names the folder and
            the holder's pid and host.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    with _GUARD:
        entry = _HELD.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            fd = _acquire(folder, what)
            entry = _HELD[key] = [fd, 1]
    try:
        yield folder
    finally:
        with _GUARD:
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[key]
                if entry[0] is not None:
                    os.close(entry[0])  # releases the lock


def _acquire(folder: Path, what: str) -> int | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise RunError(f"{what} {str(folder)!r}: cannot create its lock file ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = holder_of(folder) or "another process"
            raise RunError(f"{what} {str(folder)!r} is in use by process {holder}; wait for it to end or stop "
                           f"it, then rerun (one writer per folder)") from None
        log.debug(f"{path}: no file locks on this filesystem ({exc.strerror}); not locked")
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd
