"""What a pass remembers, as one small interface, so any shell can keep it.

The desktop keeps it in SQLite (``watchdog.desktop.store``); a test or
another shell brings its own. Writes happen in short transactions between
AWS calls, never across one.

Besides what was seen, decided and done, the history holds the *outbox*:
every message a pass means to tell, written in the same transaction as the
action that caused it, then sent, then marked sent. What the policy calls
"warned" is a warning *delivered* (``last_told``), so a crash between
recording a warning and showing it can never lead to a stop without one.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from watchdog.core.fleet import Instance
from watchdog.core.policy import Decision
from watchdog.scheduler.notifier import Message


class HistoryUnwritable(Exception):
    """The history cannot be written (read-only file or directory, full disk).

    A pass stops at once on it: acting without a record would break "never
    without a delivered warning" and "never twice". ``str()`` says what to do.
    """

    def __init__(self, path: str, error: str):
        super().__init__(
            f"the history {path} cannot be written ({error}). Make the file and its "
            f"directory writable by this user (e.g. chmod u+w {path}), or point "
            "[scheduler] database at a writable path; nothing is stopped until then."
        )
        self.path, self.error = path, error


class History(Protocol):
    """What was seen, decided, done and told, per pass."""

    def transaction(self) -> AbstractContextManager[None]:
        """Writes inside commit together, or not at all (and block other writers)."""
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
        """When each target's last ``warn`` or ``notice`` was delivered (a dry run
        delivers nothing: there, when it was decided)."""
        ...

    def told(self) -> set[str]:
        """The keys of every message ever put in the outbox (told, or being told)."""
        ...

    def enqueue(self, message: Message, at: datetime) -> None:
        """Put a message in the outbox; it replaces a still-pending one with the same key."""
        ...

    def discard_pending(self, key: str) -> None:
        """Drop a pending message no longer true (a warning about a machine back at work)."""
        ...

    def pending(self) -> list[tuple[int, Message]]:
        """Messages not yet delivered, oldest first, with their outbox ids."""
        ...

    def mark_sent(self, outbox_id: int, at: datetime) -> None: ...

    def mark_failed(self, outbox_id: int, at: datetime, error: str) -> None:
        """Delivery failed: it stays pending and is tried again."""
        ...

    def condition(self, subject: str) -> str | None:
        """The cause last told of an ongoing problem (``"stop:i-0abc"``, ``"region:us-east-1"``)."""
        ...

    def set_condition(self, subject: str, cause: str | None, at: datetime) -> None:
        """Remember the cause told (``None``: the problem is over)."""
        ...
