"""History in SQLite (WAL): what was seen, decided and done, across restarts.

The history is also memory the policy needs: when the person was last warned
about an instance, and how long it has been running across starts
(``LaunchTime`` resets at every start, so cumulative uptime is ours to count).
A database that is corrupt is moved aside (never over an earlier copy) and
recreated with a warning, so a bad file never becomes a crash loop.

It also holds the outbox (see ``watchdog.scheduler.history``) and the
problems already told (``conditions``), so both survive a crash, and the
ledger's facts (``watchdog.desktop.facts``: volumes, addresses, idle spans,
spot prices, the Price List cache) with which ``report`` prices the past. One that
cannot be written raises ``HistoryUnwritable``; one deleted or replaced under
a running daemon is noticed before the next pass and reopened.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog

from watchdog.core.fleet import Instance
from watchdog.core.ledger import parse_transition_time
from watchdog.core.policy import Decision
from watchdog.desktop.facts import FACTS_SCHEMA, Facts
from watchdog.scheduler.history import HistoryUnwritable
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.outbox import dumps, loads

log = structlog.get_logger("watchdog.desktop.store")

SCHEMA_VERSION = 3  # 2: the outbox and conditions tables; 3: the ledger's facts
#: How long a write waits for another process's transaction before it gives up.
BUSY_TIMEOUT_MS = 30_000
_SCHEMA = (
    """
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
CREATE INDEX IF NOT EXISTS observations_instance ON observations (region, id, at);
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
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, target TEXT NOT NULL,
    created_at TEXT NOT NULL, message TEXT NOT NULL, sent_at TEXT, attempts INTEGER NOT NULL
    DEFAULT 0, last_error TEXT, discarded INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (sent_at, discarded, id);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (key, sent_at);
CREATE TABLE IF NOT EXISTS conditions (
    subject TEXT PRIMARY KEY, cause TEXT NOT NULL, since TEXT NOT NULL);
"""
    + FACTS_SCHEMA
)
#: Columns version 3 added to version 2's tables: what the ledger needs of each scan.
_ADDED_COLUMNS = (
    ("instances", "platform", "TEXT NOT NULL DEFAULT ''"),
    ("instances", "zone", "TEXT NOT NULL DEFAULT ''"),
    ("instances", "public_ip", "TEXT NOT NULL DEFAULT ''"),
    ("instances", "state_reason", "TEXT NOT NULL DEFAULT ''"),
    ("observations", "transition_time", "TEXT"),
    ("observations", "public_ip", "TEXT NOT NULL DEFAULT ''"),
    ("observations", "hibernating", "INTEGER NOT NULL DEFAULT 0"),
)
#: SQLite's names for "this file cannot be written" (read-only file or directory,
#: a file deleted under us, a full disk, a path that cannot be created).
_UNWRITABLE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_PERM")


@dataclass(frozen=True)
class InstanceHistory:
    first_seen: datetime
    running_seconds: float


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch a new history to WAL, waiting out another process doing the same.

    SQLite does not call the busy handler for this switch, so two processes
    opening a new history at once saw ``database is locked`` at once."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a new, version 1 or version 2 history to this version, keeping every row.

    In one write transaction, so two processes opening an old file at once migrate it
    once (the second finds it done)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column, declaration in _ADDED_COLUMNS:
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Store(Facts):
    def __init__(self, path: str | Path):
        self.path = str(path)
        self._identity: tuple[int, int] | None = None
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryUnwritable(self.path, str(exc)) from exc
        try:
            db = self._connect()
        except sqlite3.DatabaseError as exc:
            if self.path == ":memory:" or not _corrupt(exc):
                if _unwritable(exc):
                    raise HistoryUnwritable(self.path, str(exc)) from exc
                raise  # locked or busy is not corrupt: never move a live history aside
            aside = _free_name(f"{self.path}.corrupt-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
            log.warning(
                "history database unreadable; moved aside and recreated",
                path=self.path,
                moved_to=aside,
                error=str(exc),
            )
            Path(self.path).replace(aside)
            for suffix in ("-wal", "-shm"):
                Path(self.path + suffix).unlink(missing_ok=True)
            db = self._connect()
        self._identity = self._stat()
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _use_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise _Corrupt("quick_check failed")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, SCHEMA_VERSION):
                raise _Corrupt(f"unknown schema version {version}")
            if version != SCHEMA_VERSION:  # new, or an older version; else not written
                _migrate(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _stat(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            st = Path(self.path).stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def reopen_if_replaced(self) -> bool:
        """Before a pass: reopen when the file was deleted or replaced since it was opened.

        Otherwise SQLite writes on into a deleted file and the history is gone at
        the next start. Returns True when it reopened (the caller logs nothing more).
        """
        if self.path == ":memory:":
            return False
        now = self._stat()
        if now is not None and now == self._identity:
            return False
        log.warning(
            "history file deleted or replaced since it was opened; reopening",
            path=self.path,
            exists=Path(self.path).exists(),
        )
        self.reopen()
        return True

    def reopen(self) -> None:
        """A fresh connection (after the file moved, or became writable again)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._db = self._open()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE``: the write lock is taken first, so a read-then-write
        never fails half-way because another process wrote in between."""
        with self._writing():
            self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        with self._writing():
            self._db.execute("COMMIT")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _unwritable(exc):
                raise HistoryUnwritable(self.path, str(exc)) from exc
            raise

    def _write(self, sql: str, params: tuple[object, ...] = ()) -> None:
        with self._writing():
            self._db.execute(sql, params)

    def record_pass(
        self, started: datetime, finished: datetime, ok: int, failed: int, *, dry_run: bool
    ) -> None:
        self._db.execute(
            "INSERT INTO passes VALUES (?, ?, ?, ?, ?)",
            (_t(started), _t(finished), ok, failed, int(dry_run)),
        )

    def observe(self, now: datetime, instances: Iterable[Instance]) -> None:
        """Upsert what the pass saw; count running time; log each change the ledger bills
        by (state, start, stop time, public IP), and only changes, so 90 days stay small."""
        for inst in instances:
            row = self._db.execute(
                "SELECT state, launch_time, last_seen, public_ip, state_reason FROM instances "
                "WHERE region=? AND id=?",
                (inst.region, inst.id),
            ).fetchone()
            launch = _t(inst.launch_time) if inst.launch_time else None
            gained = 0.0
            if row is None:
                self._db.execute(
                    "INSERT INTO instances (region, id, name, type, lifecycle, state, "
                    "launch_time, first_seen, last_seen, running_seconds, platform, zone, "
                    "public_ip, state_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
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
                        inst.platform,
                        inst.zone,
                        inst.public_ip,
                        inst.state_reason,
                    ),
                )
            else:
                _, old_launch, last_seen, _, _ = row
                if inst.state == "running" and inst.launch_time:
                    since = _parse(last_seen) if old_launch == launch else inst.launch_time
                    gained = max(0.0, (now - max(since, inst.launch_time)).total_seconds())
                self._db.execute(
                    "UPDATE instances SET name=?, type=?, lifecycle=?, state=?, launch_time=?, "
                    "last_seen=?, running_seconds=running_seconds+?, platform=?, zone=?, "
                    "public_ip=?, state_reason=? WHERE region=? AND id=?",
                    (
                        inst.name,
                        inst.type,
                        inst.lifecycle,
                        inst.state,
                        launch,
                        _t(now),
                        gained,
                        inst.platform,
                        inst.zone,
                        inst.public_ip,
                        inst.state_reason,
                        inst.region,
                        inst.id,
                    ),
                )
            if row is None or _changed(row, inst, launch):
                transition = parse_transition_time(inst.state_reason)
                self._db.execute(
                    "INSERT INTO observations (at, region, id, state, launch_time, "
                    "transition_time, public_ip, hibernating) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        _t(now),
                        inst.region,
                        inst.id,
                        inst.state,
                        launch,
                        _t(transition) if transition else None,
                        inst.public_ip,
                        # A hibernating stop is billed while ``stopping``; EC2 says only
                        # that hibernation is configured, so a plain stop counts too.
                        int(inst.state == "stopping" and inst.hibernation_configured),
                    ),
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
        """When each target's last ``warn`` or ``notice`` was *delivered* (outbox).

        A dry run delivers nothing; it remembers when it would have warned.
        """
        if dry_run:
            rows = self._db.execute(
                "SELECT target, MAX(at) FROM actions WHERE kind=? AND ok=1 AND dry_run=1 "
                "GROUP BY target",
                (kind,),
            )
        else:
            rows = self._db.execute(
                "SELECT target, MAX(sent_at) FROM outbox WHERE key=? || ':' || target "
                "AND sent_at IS NOT NULL GROUP BY target",
                (kind,),
            )
        return {target: _parse(at) for target, at in rows}

    def told(self) -> set[str]:
        """Keys of every message put in the outbox (and of those told before it existed)."""
        old = {key for (key,) in self._db.execute("SELECT key FROM notifications")}
        return old | {key for (key,) in self._db.execute("SELECT DISTINCT key FROM outbox")}

    def enqueue(self, message: Message, at: datetime) -> None:
        pending = self._db.execute(
            "SELECT id FROM outbox WHERE key=? AND sent_at IS NULL AND discarded=0",
            (message.key,),
        ).fetchone()
        if pending:
            self._write(
                "UPDATE outbox SET message=?, created_at=? WHERE id=?",
                (dumps(message), _t(at), pending[0]),
            )
        else:
            self._write(
                "INSERT INTO outbox (key, target, created_at, message) VALUES (?, ?, ?, ?)",
                (message.key, message.target, _t(at), dumps(message)),
            )

    def discard_pending(self, key: str) -> None:
        self._write(
            "UPDATE outbox SET discarded=1 WHERE key=? AND sent_at IS NULL AND discarded=0",
            (key,),
        )

    def pending(self) -> list[tuple[int, Message]]:
        rows = self._db.execute(
            "SELECT id, message FROM outbox WHERE sent_at IS NULL AND discarded=0 ORDER BY id"
        )
        return [(row_id, loads(text)) for row_id, text in rows]

    def mark_sent(self, outbox_id: int, at: datetime) -> None:
        """To the microsecond: a stop waits ``warn_minutes`` after this, never a second less."""
        self._write(
            "UPDATE outbox SET sent_at=?, attempts=attempts+1 WHERE id=?",
            (at.astimezone(timezone.utc).isoformat(timespec="microseconds"), outbox_id),
        )

    def mark_failed(self, outbox_id: int, at: datetime, error: str) -> None:
        self._write(
            "UPDATE outbox SET attempts=attempts+1, last_error=? WHERE id=?",
            (f"{_t(at)} {error}", outbox_id),
        )

    def outbox(self) -> list[tuple[str, datetime, datetime | None, int]]:
        """(key, created_at, sent_at, attempts) of every message, oldest first."""
        rows = self._db.execute(
            "SELECT key, created_at, sent_at, attempts FROM outbox WHERE discarded=0 ORDER BY id"
        )
        return [(k, _parse(c), _parse(s) if s else None, n) for k, c, s, n in rows]

    def condition(self, subject: str) -> str | None:
        row = self._db.execute(
            "SELECT cause FROM conditions WHERE subject=?", (subject,)
        ).fetchone()
        return str(row[0]) if row else None

    def set_condition(self, subject: str, cause: str | None, at: datetime) -> None:
        if cause is None:
            self._write("DELETE FROM conditions WHERE subject=?", (subject,))
        else:
            self._write(
                "INSERT OR REPLACE INTO conditions VALUES (?, ?, ?)", (subject, cause, _t(at))
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


def _changed(row: tuple[str, ...], inst: Instance, launch: str | None) -> bool:
    """A change the ledger bills by: state, start, public IP, or a new stop time."""
    state, old_launch, _, public_ip, reason = row
    moved = inst.state != "running" and (reason or "") != inst.state_reason
    return state != inst.state or old_launch != launch or public_ip != inst.public_ip or moved


class _Corrupt(sqlite3.DatabaseError):
    """The file is not a history this version can read."""


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return (
        isinstance(exc, _Corrupt)
        or name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or ("not a database" in str(exc))
    )


def _unwritable(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(_UNWRITABLE) or "readonly database" in str(exc)


def _free_name(base: str) -> str:
    """``base``, or ``base.1``, ``base.2``...: a moved-aside copy never replaces another."""
    candidate, n = base, 0
    while Path(candidate).exists():
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def _t(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
