"""What a pass remembers, as one small interface, so any shell can keep it.

The desktop keeps it in SQLite (``watchdog.desktop.store``); a test or
another shell brings its own. Writes happen in short transactions between
AWS calls, never across one.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from watchdog.core.fleet import Instance
from watchdog.core.policy import Decision


class History(Protocol):
    """What was seen, decided, done and told, per pass."""

    def transaction(self) -> AbstractContextManager[None]:
        """Writes inside commit together, or not at all."""
        ...

    def observe(self, now: datetime, instances: Iterable[Instance]) -> None:
        """The state of each instance as scanned (for cumulative uptime)."""
        ...

    def record_pass(
        self, started: datetime, finished: datetime, ok: int, failed: int, *, dry_run: bool
    ) -> None: ...

    def record_decision(self, now: datetime, decision: Decision, *, dry_run: bool) -> None: ...

    def record_action(
        self,
        now: datetime,
        region: str,
        target: str,
        kind: str,
        *,
        ok: bool,
        detail: str,
        dry_run: bool,
    ) -> None: ...

    def last_told(self, kind: str, *, dry_run: bool) -> dict[str, datetime]:
        """When each target was last warned (``kind="warn"``) or noticed."""
        ...

    def told(self) -> set[str]:
        """The keys of every message already told."""
        ...

    def mark_told(self, key: str, at: datetime, title: str) -> None: ...
