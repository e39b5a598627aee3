"""History in SQLite (WAL): what was seen, decided and done, across restarts.

The history is also memory the policy needs: when the person was last warned
about an instance, and how long it has been running across starts
(``LaunchTime`` resets at every start, so cumulative uptime is ours to count).
A database that is corrupt is moved aside and recreated with a warning, so a
bad file never becomes a crash loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from watchdog.core.fleet import Instance
from watchdog.core.policy import Decision

log = structlog.get_logger("watchdog.desktop.store")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS passes (
    started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
    regions_ok INTEGER NOT NULL, regions_failed INTEGER NOT NULL, dry_run INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    region TEXT NOT NULL, id TEXT NOT NULL, name TEXT, type TEXT, lifecycle TEXT,
    state TEXT, launch_time TEXT, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    running_seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (region, id));
CREATE TABLE IF NOT EXISTS observations (
    at TEXT NOT NULL, region TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL,
    launch_time TEXT);
CREATE TABLE IF NOT EXISTS decisions (
    at TEXT NOT NULL, region TEXT NOT NULL, target TEXT NOT NULL, action TEXT NOT NULL,
    reason TEXT NOT NULL, stop_at TEXT, dry_run INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_target ON decisions (target, at);
CREATE TABLE IF NOT EXISTS actions (
    at TEXT NOT NULL, region TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
    ok INTEGER NOT NULL, detail TEXT NOT NULL, dry_run INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS actions_target ON actions (target, kind, at);
CREATE TABLE IF NOT EXISTS notifications (
    key TEXT PRIMARY KEY, at TEXT NOT NULL, title TEXT NOT NULL);
"""


@dataclass(frozen=True)
class InstanceHistory:
    first_seen: datetime
    running_seconds: float


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if self.path == ":memory:" or not _corrupt(exc):
                raise  # locked or busy is not corrupt: never move a live history aside
            aside = f"{self.path}.corrupt-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
            log.warning(
                "history database unreadable; moved aside and recreated",
                path=self.path,
                moved_to=aside,
                error=str(exc),
            )
            Path(self.path).replace(aside)
            for suffix in ("-wal", "-shm"):
                Path(self.path + suffix).unlink(missing_ok=True)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            db.execute("PRAGMA busy_timeout=5000")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise _Corrupt("quick_check failed")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise _Corrupt(f"unknown schema version {version}")
            if version == 0:  # a new file; an existing one is not written on open
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record_pass(
        self, started: datetime, finished: datetime, ok: int, failed: int, *, dry_run: bool
    ) -> None:
        self._db.execute(
            "INSERT INTO passes VALUES (?, ?, ?, ?, ?)",
            (_t(started), _t(finished), ok, failed, int(dry_run)),
        )

    def observe(self, now: datetime, instances: Iterable[Instance]) -> None:
        """Upsert what the pass saw; count running time; log state changes."""
        for inst in instances:
            row = self._db.execute(
                "SELECT state, launch_time, last_seen FROM instances WHERE region=? AND id=?",
                (inst.region, inst.id),
            ).fetchone()
            launch = _t(inst.launch_time) if inst.launch_time else None
            gained = 0.0
            if row is None:
                self._db.execute(
                    "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                    (
                        inst.region,
                        inst.id,
                        inst.name,
                        inst.type,
                        inst.lifecycle,
                        inst.state,
                        launch,
                        _t(now),
                        _t(now),
                    ),
                )
            else:
                _, old_launch, last_seen = row
                if inst.state == "running" and inst.launch_time:
                    since = _parse(last_seen) if old_launch == launch else inst.launch_time
                    gained = max(0.0, (now - max(since, inst.launch_time)).total_seconds())
                self._db.execute(
                    "UPDATE instances SET name=?, type=?, lifecycle=?, state=?, launch_time=?, "
                    "last_seen=?, running_seconds=running_seconds+? WHERE region=? AND id=?",
                    (
                        inst.name,
                        inst.type,
                        inst.lifecycle,
                        inst.state,
                        launch,
                        _t(now),
                        gained,
                        inst.region,
                        inst.id,
                    ),
                )
            if row is None or row[0] != inst.state or row[1] != launch:
                self._db.execute(
                    "INSERT INTO observations VALUES (?, ?, ?, ?, ?)",
                    (_t(now), inst.region, inst.id, inst.state, launch),
                )

    def history(self, region: str, instance_id: str) -> InstanceHistory | None:
        row = self._db.execute(
            "SELECT first_seen, running_seconds FROM instances WHERE region=? AND id=?",
            (region, instance_id),
        ).fetchone()
        return InstanceHistory(_parse(row[0]), row[1]) if row else None

    def record_decision(self, now: datetime, decision: Decision, *, dry_run: bool) -> None:
        self._db.execute(
            "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _t(now),
                decision.region,
                decision.target,
                decision.action.value,
                decision.reason,
                _t(decision.stop_at) if decision.stop_at else None,
                int(dry_run),
            ),
        )

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
    ) -> None:
        self._db.execute(
            "INSERT INTO actions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_t(now), region, target, kind, int(ok), detail, int(dry_run)),
        )

    def last_told(self, kind: str, *, dry_run: bool) -> dict[str, datetime]:
        """The last successful ``warn`` or ``notice`` per target, from runs of the same mode."""
        rows = self._db.execute(
            "SELECT target, MAX(at) FROM actions WHERE kind=? AND ok=1 AND dry_run=? "
            "GROUP BY target",
            (kind, int(dry_run)),
        )
        return {target: _parse(at) for target, at in rows}

    def told(self) -> set[str]:
        """Keys of every notification already given (so each event is told once)."""
        return {key for (key,) in self._db.execute("SELECT key FROM notifications")}

    def mark_told(self, key: str, at: datetime, title: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO notifications VALUES (?, ?, ?)", (key, _t(at), title)
        )

    def actions(self, target: str | None = None) -> list[tuple[datetime, str, str, bool, str]]:
        """(at, target, kind, ok, detail), oldest first."""
        query = "SELECT at, target, kind, ok, detail FROM actions"
        rows = self._db.execute(
            query + (" WHERE target=? ORDER BY rowid" if target else " ORDER BY rowid"),
            (target,) if target else (),
        )
        return [(_parse(at), tgt, kind, bool(ok), detail) for at, tgt, kind, ok, detail in rows]

    def prune(self, now: datetime, keep: timedelta = timedelta(days=14)) -> None:
        """Routine "nothing to do" decisions age out; actions and changes are kept."""
        self._db.execute("DELETE FROM decisions WHERE action='none' AND at < ?", (_t(now - keep),))


class _Corrupt(sqlite3.DatabaseError):
    """The file is not a history this version can read."""


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return (
        isinstance(exc, _Corrupt)
        or name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or ("not a database" in str(exc))
    )


def _t(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
