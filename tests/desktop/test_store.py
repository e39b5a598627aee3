"""History on a real SQLite file: survives restarts, recovers from corruption."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from structlog.testing import capture_logs

from watchdog.core.fleet import Instance
from watchdog.core.policy import Action, Decision
from watchdog.desktop.store import Store

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def _inst(state: str = "running", launched: datetime = T0) -> Instance:
    return Instance("us-east-1", "i-1", "g5.xlarge", state, launched)


def test_running_time_accumulates_across_passes_and_starts(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    store.observe(T0 + timedelta(minutes=1), [_inst()])
    store.observe(T0 + timedelta(minutes=11), [_inst()])
    store.observe(T0 + timedelta(minutes=21), [_inst("stopped")])
    restarted = T0 + timedelta(hours=2)
    store.close()
    store = Store(tmp_path / "h.sqlite3")  # the scheduler restarted
    store.observe(restarted + timedelta(minutes=5), [_inst(launched=restarted)])
    history = store.history("us-east-1", "i-1")
    assert history is not None
    assert history.first_seen == T0 + timedelta(minutes=1)
    assert history.running_seconds == 10 * 60 + 5 * 60


def test_warnings_are_remembered_per_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    warn = Decision("us-east-1", "i-1", Action.WARN, "idle")
    store.record_decision(T0, warn, dry_run=False)
    store.record_action(T0, "us-east-1", "i-1", "warn", ok=True, detail="idle", dry_run=False)
    store.record_action(T0, "us-east-1", "i-2", "warn", ok=False, detail="x", dry_run=False)
    store.record_action(T0, "us-east-1", "i-3", "warn", ok=True, detail="x", dry_run=True)
    store.close()
    again = Store(tmp_path / "h.sqlite3")
    assert again.last_told("warn", dry_run=False) == {"i-1": T0}
    assert again.last_told("warn", dry_run=True) == {"i-3": T0}
    assert again.last_told("notice", dry_run=False) == {}


def test_a_corrupt_database_is_moved_aside_and_recreated(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with capture_logs() as logs:
        store = Store(path)
    store.record_action(T0, "us-east-1", "i-1", "warn", ok=True, detail="", dry_run=False)
    assert store.last_told("warn", dry_run=False) == {"i-1": T0}
    assert [e["event"] for e in logs] == ["history database unreadable; moved aside and recreated"]
    aside = list(tmp_path.glob("h.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")


def test_missing_directories_are_created(tmp_path: Path) -> None:
    Store(tmp_path / "a" / "b" / "h.sqlite3").close()
    assert (tmp_path / "a" / "b" / "h.sqlite3").exists()


def test_prune_drops_old_routine_decisions_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    old = T0 - timedelta(days=30)
    store.record_decision(old, Decision("r", "i-1", Action.NONE, "active"), dry_run=False)
    store.record_decision(old, Decision("r", "i-1", Action.STOP, "idle"), dry_run=False)
    store.record_decision(T0, Decision("r", "i-1", Action.NONE, "active"), dry_run=False)
    store.prune(T0)
    rows = store._db.execute("SELECT action, at FROM decisions ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == ["stop", "none"]


def test_a_busy_database_is_waited_for_never_moved_aside(tmp_path: Path) -> None:
    """``status`` opening the history while the daemon writes must not lose it."""
    import sqlite3

    path = tmp_path / "h.sqlite3"
    daemon = Store(path)
    daemon.record_action(T0, "us-east-1", "i-1", "warn", ok=True, detail="", dry_run=False)
    writer = sqlite3.connect(path)
    writer.execute("BEGIN EXCLUSIVE")  # a long write in progress elsewhere
    try:
        reader = Store(path)
        assert reader.last_told("warn", dry_run=False) == {"i-1": T0}
    except sqlite3.OperationalError:
        pass  # waited its busy_timeout and said so: acceptable, nothing moved
    finally:
        writer.rollback()
        writer.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert Store(path).last_told("warn", dry_run=False) == {"i-1": T0}
