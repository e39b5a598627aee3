"""Budget messages through a real SQLite history: once per threshold per month, across
restarts; unknown never told, partial said."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.helpers import config
from watchdog.desktop.store import Store
from watchdog.scheduler.budget import tell_budget
from watchdog.scheduler.notifier import Message

NOV = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
CFG = config(billing={"monthly_budget_usd": 200.0})


def pending(store: Store) -> list[Message]:
    return [m for _, m in store.pending()]


def deliver(store: Store) -> list[Message]:
    out = []
    for outbox_id, message in store.pending():
        with store.transaction():
            store.mark_sent(outbox_id, NOV)
        out.append(message)
    return out


def test_each_threshold_is_told_once_a_month_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = Store(path)
    tell_budget(store, CFG, NOV, 99.99, False)
    assert pending(store) == []
    tell_budget(store, CFG, NOV, 100.0, False)
    (half,) = deliver(store)
    assert half.key == "budget:2026-11:50"
    assert half.title == "AWS spend passed 50 % of this month's budget"
    assert half.body == (
        "November 2026 so far: $100.00 of $200.00 (50 %) on the instances idle-watchdog "
        "watches.\n`idle-watchdog report` shows where it went."
    )
    assert not half.urgent
    tell_budget(store, CFG, NOV + timedelta(hours=1), 120.0, False)
    assert pending(store) == []

    store = Store(path)  # a restart: the history remembers
    tell_budget(store, CFG, NOV + timedelta(hours=2), 150.0, False)
    assert pending(store) == []
    tell_budget(store, CFG, NOV + timedelta(hours=3), 160.0, False)
    (eighty,) = deliver(store)
    assert eighty.key == "budget:2026-11:80" and "80 %" in eighty.title
    tell_budget(store, CFG, NOV + timedelta(hours=4), 200.0, False)
    (full,) = deliver(store)
    assert full.key == "budget:2026-11:100" and full.urgent
    assert full.title == "AWS spend reached this month's budget ($200.00)"
    tell_budget(store, CFG, NOV + timedelta(hours=5), 900.0, False)
    assert pending(store) == []


def test_a_new_month_starts_again_and_a_jump_tells_only_the_highest(tmp_path: Path) -> None:
    store = Store(tmp_path / "history.sqlite3")
    tell_budget(store, CFG, NOV, 170.0, False)
    (first,) = deliver(store)
    assert first.key == "budget:2026-11:80"  # not 50 and then 80
    december = datetime(2026, 12, 1, 0, 5, tzinfo=timezone.utc)
    tell_budget(store, CFG, december, 100.0, False)
    (again,) = deliver(store)
    assert again.key == "budget:2026-12:50" and again.body.startswith("December 2026 so far")


def test_a_partial_figure_says_at_least_and_an_unknown_one_says_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "history.sqlite3")
    tell_budget(store, CFG, NOV, None, True)
    assert pending(store) == []
    tell_budget(store, CFG, NOV, 101.5, True)
    (msg,) = deliver(store)
    assert msg.body.startswith("November 2026 so far: at least $101.50 of $200.00 (50 %)")
    assert "Some prices are unknown, so the real figure is higher." in msg.body


def test_no_budget_tells_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "history.sqlite3")
    tell_budget(store, config(), NOV, 10_000.0, False)
    assert pending(store) == [] and store.told() == set()


def test_a_key_of_another_kind_or_month_is_not_counted(tmp_path: Path) -> None:
    store = Store(tmp_path / "history.sqlite3")
    with store.transaction():
        store.enqueue(Message("budget:2026-10:100", "old", "old"), NOV)
        store.enqueue(Message("budget:2026-11:x", "odd", "odd"), NOV)
    deliver(store)
    tell_budget(store, CFG, NOV, 100.0, False)
    assert [m.key for m in pending(store)] == ["budget:2026-11:50"]
