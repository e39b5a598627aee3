"""History on a real SQLite file: survives restarts, recovers from corruption."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from watchdog.core.fleet import Instance
from watchdog.core.policy import Action, Decision
from watchdog.desktop.store import Store
from watchdog.scheduler.notifier import Message

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


def _warned(store: Store, target: str, at: datetime) -> None:
    """A warning recorded and then delivered at ``at``."""
    store.enqueue(Message(f"warn:{target}", "stops soon", "body", target=target), at)
    (outbox_id, _), *_ = [p for p in store.pending() if p[1].target == target]
    store.mark_sent(outbox_id, at)


def test_warnings_count_once_delivered_and_are_remembered_per_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    warn = Decision("us-east-1", "i-1", Action.WARN, "idle")
    store.record_decision(T0, warn, dry_run=False)
    store.record_action(T0, "us-east-1", "i-1", "warn", ok=True, detail="idle", dry_run=False)
    _warned(store, "i-1", T0 + timedelta(seconds=7))  # shown 7 s after it was decided
    store.record_action(T0, "us-east-1", "i-2", "warn", ok=True, detail="x", dry_run=False)
    store.enqueue(Message("warn:i-2", "stops soon", "body", target="i-2"), T0)  # never shown
    store.record_action(T0, "us-east-1", "i-3", "warn", ok=True, detail="x", dry_run=True)
    store.close()
    again = Store(tmp_path / "h.sqlite3")
    assert again.last_told("warn", dry_run=False) == {"i-1": T0 + timedelta(seconds=7)}
    assert again.last_told("warn", dry_run=True) == {"i-3": T0}
    assert again.last_told("notice", dry_run=False) == {}
    assert [m.key for _, m in again.pending()] == ["warn:i-2"]  # survives the restart


def test_the_outbox_keeps_one_pending_message_per_key_until_it_is_delivered(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "h.sqlite3")
    store.enqueue(Message("stopped:i-1", "Stopped a", "first", target="i-1"), T0)
    store.enqueue(Message("warn:i-2", "stops in 10m", "old", target="i-2"), T0)
    store.enqueue(Message("warn:i-2", "stops in 10m", "new", target="i-2"), T0)  # refreshed
    (first, _), (second, message) = store.pending()
    assert message.body == "new"
    store.mark_failed(first, T0, "no notification server")
    store.mark_sent(second, T0)
    assert [m.key for _, m in store.pending()] == ["stopped:i-1"]  # retried next time
    store.discard_pending("stopped:i-1")
    assert store.pending() == []
    assert store.told() == {"stopped:i-1", "warn:i-2"}


def test_a_corrupt_database_is_moved_aside_and_recreated(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with capture_logs() as logs:
        store = Store(path)
    _warned(store, "i-1", T0)
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
    _warned(daemon, "i-1", T0)
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


def test_a_second_corrupt_history_never_overwrites_the_first_copy(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    now = datetime.now(timezone.utc)
    earlier = {  # copies already moved aside, named for the seconds this test runs in
        tmp_path / f"h.sqlite3.corrupt-{now + timedelta(seconds=s):%Y%m%dT%H%M%SZ}": f"copy {s}"
        for s in range(-1, 3)
    }
    for copy, text in earlier.items():
        copy.write_text(text)
    path.write_bytes(b"first bad file" * 100)
    Store(path).close()
    path.write_bytes(b"second bad file" * 100)
    Store(path).close()
    for copy, text in earlier.items():
        assert copy.read_text() == text
    aside = sorted(p.read_bytes()[:15] for p in tmp_path.glob("h.sqlite3.corrupt-*"))
    assert aside.count(b"first bad filef") == 1 and aside.count(b"second bad file") == 1
    assert len(aside) == len(earlier) + 2


def test_a_read_then_write_takes_the_write_lock_first(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: another writer waits for us instead of making our write fail."""
    import sqlite3

    path = tmp_path / "h.sqlite3"
    store = Store(path)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)  # gives up at once
    with store.transaction():
        assert store.condition("stop:i-1") is None  # read...
        try:
            other.execute("INSERT INTO conditions VALUES ('x', 'y', 'z')")
            refused = False
        except sqlite3.OperationalError as exc:
            refused = "locked" in str(exc)
        store.set_condition("stop:i-1", "UnauthorizedOperation", T0)  # ...then write
    assert refused, "the other writer got in between our read and our write"
    assert Store(path).condition("stop:i-1") == "UnauthorizedOperation"
    other.close()


def test_a_history_deleted_under_a_running_store_is_reopened(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "state" / "h.sqlite3"
    store = Store(path)
    assert store.reopen_if_replaced() is False
    shutil.rmtree(tmp_path / "state")
    with capture_logs() as logs:
        assert store.reopen_if_replaced() is True
    assert logs[0]["event"] == "history file deleted or replaced since it was opened; reopening"
    _warned(store, "i-1", T0)
    store.close()
    assert Store(path).last_told("warn", dry_run=False) == {"i-1": T0}  # on disk, not lost


def _open_after(barrier: Any, path: str) -> str:
    barrier.wait()
    try:
        Store(path).close()
    except Exception as exc:  # reported to the parent, which fails the test
        return repr(exc)
    return "ok"


def test_two_processes_creating_a_new_history_at_once_both_open_it(tmp_path: Path) -> None:
    # SQLite does not wait for the switch to WAL; this once failed one of two
    # `run --once` started together with "database is locked" (~half the trials).
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        for trial in range(12):
            path = str(tmp_path / f"h{trial}.sqlite3")
            barrier = manager.Barrier(2)
            assert pool.starmap(_open_after, [(barrier, path)] * 2) == ["ok", "ok"]
