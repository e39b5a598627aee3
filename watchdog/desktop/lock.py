"""One pass at a time per history database: an OS file lock next to it.

Two passes over the same history would both see an idle instance and both
stop it (and both tell). ``flock`` on ``<database>.lock`` is held for the
whole pass, delivery included; the kernel drops it when the process dies,
so a crash never leaves a stale lock. ``run --once`` gives up at once when
another pass holds it; the daemon waits its turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from watchdog.scheduler.history import HistoryUnwritable


class Busy(Exception):
    """Another process holds the lock: a pass over this history is running."""

    def __init__(self, path: str, holder: str):
        who = f" (pid {holder})" if holder else ""
        super().__init__(f"another pass over this history is running{who}; lock file {path}")
        self.path, self.holder = path, holder


def lock_path(database: str) -> str | None:
    return None if database == ":memory:" else f"{database}.lock"


@contextlib.contextmanager
def pass_lock(database: str, *, wait: bool) -> Iterator[None]:
    """Hold the lock for the block. ``wait=False`` raises ``Busy`` instead of waiting."""
    path = lock_path(database)
    if path is None:
        yield
        return
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(path, _holder(fd)) from None
        with contextlib.suppress(OSError):  # a read-only lock file still locks
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open(path: str) -> int:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise HistoryUnwritable(path, exc.strerror or str(exc)) from exc


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    return ""
