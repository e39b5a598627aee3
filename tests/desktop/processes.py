"""Real ``idle-watchdog`` processes for end-to-end tests: a config file, its log, its history.

Each process talks to the test's moto server over HTTP (the environment the
``aws`` fixture set) and writes JSON log lines on stderr, which a thread reads
so a test can wait for an event by name instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
#: Never a margin a test relies on: only how long to wait before calling it a hang.
PATIENCE = 60.0


def write_config(path: Path, *, database: Path, **sections: dict[str, Any]) -> Path:
    """A TOML config: ``scheduler.database`` set, the other keys given as sections."""
    sections.setdefault("scheduler", {})["database"] = str(database)
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def command(config: Path, *args: str) -> list[str]:
    """``idle-watchdog ARGS --config CONFIG`` (after the subcommand: works either way)."""
    return [sys.executable, "-m", "watchdog", *args, "--config", str(config)]


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    """``idle-watchdog run --once``, to its end."""
    argv = command(config, "run", "--once")
    return subprocess.run(argv, capture_output=True, text=True, timeout=PATIENCE * 2, check=False)


class Watchdog:
    """One ``idle-watchdog`` process started by the test, and its log as it comes."""

    def __init__(self, argv: Sequence[str], **popen: Any) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **popen,
        )
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._new: queue.Queue[None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))
            self._new.put(None)
        self._new.put(None)

    def wait_for_event(
        self, event: str, *, after: int = 0, timeout: float = PATIENCE, **fields: Any
    ) -> dict[str, Any]:
        """The first log event named ``event`` (with ``fields``) from index ``after`` on."""
        deadline = time.monotonic() + timeout
        while True:
            wanted = {"event": event, **fields}
            for entry in self.events[after:]:
                if all(entry.get(k) == v for k, v in wanted.items()):
                    return entry
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"exited {self.proc.returncode} before {event!r}:\n{self.log}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} after {timeout} s:\n{self.log}")
            with contextlib.suppress(queue.Empty):
                self._new.get(timeout=left)

    @property
    def log(self) -> str:
        return "".join(self.lines[-40:])

    def finish(self, timeout: float = PATIENCE) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.finish()


@contextlib.contextmanager
def watchdog(argv: Sequence[str], **popen: Any) -> Iterator[Watchdog]:
    process = Watchdog(argv, **popen)
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def read_only(database: Path) -> Iterator[None]:
    """The history file cannot be written, even by root (who ignores file modes):
    ``chattr +i`` as root, ``chmod a-w`` on the file and its directory otherwise."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(database)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"chattr +i does not work here: {made.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(database)], check=True)
        return
    modes = {p: p.stat().st_mode for p in (database, database.parent)}
    database.chmod(0o444)
    database.parent.chmod(0o555)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def query(database: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read the history the way ``status`` would, from the test process ([] before it exists)."""
    if not database.exists():
        return []
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # being created
            return []
        raise
    finally:
        db.close()


def until(check: Callable[[], T], what: str, timeout: float = PATIENCE) -> T:
    """Polls a condition that a real process will make true (its own pace, not a margin)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
