"""What a pass tells the person (pure): the text, the buttons, once per event."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import config
from watchdog.core.costs import Price
from watchdog.core.fleet import TAG_MANAGED, TAG_STOPPED, Instance, SpotRequest
from watchdog.core.ledger import HourlyRates
from watchdog.core.policy import Action, Decision, Planned
from watchdog.scheduler.events import messages
from watchdog.scheduler.rates import TableRates

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)
CFG = config(notify={"keep_durations": ("1h", "3h"), "long_running_hours": 12.0})


def inst(**kw: object) -> Instance:
    base: dict[str, object] = {
        "region": "us-east-1",
        "id": "i-0abc",
        "type": "g5.xlarge",
        "state": "running",
        "launch_time": NOW - timedelta(hours=2),
        "tags": {TAG_MANAGED: "true", "Name": "nb"},
        "platform": "Linux/UNIX",
    }
    base.update(kw)
    return Instance(**base)  # type: ignore[arg-type]


def planned(
    subject: Instance | SpotRequest,
    action: Action,
    reason: str,
    rates: HourlyRates | None = None,
    **kw: object,
) -> Planned:
    """As a pass plans it: an instance with the default price table's rates."""
    if rates is None and isinstance(subject, Instance):
        rates = TableRates(CFG).hourly(subject, NOW)
    decision = Decision(subject.region, subject.id, action, reason, **kw)  # type: ignore[arg-type]
    return Planned(subject, decision, rates)


def lines(item: Planned, kind: str) -> list[str]:
    (msg,) = messages([item], [(item.decision.target, kind, True, "")], NOW, CFG)
    return msg.body.splitlines()


BUNDLED = Price(1.006, "bundled")


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This computer's clock is in Berlin (UTC+1 in November): times shown are local."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("berlin")
def test_the_warning_says_what_when_and_why_with_buttons() -> None:
    item = planned(
        inst(),
        Action.WARN,
        "idle for 20m",
        idle_since=NOW - timedelta(minutes=22),
        stop_at=NOW + timedelta(minutes=10),
        idle_usd=0.3689,
    )
    (msg,) = messages([item], [("i-0abc", "warn", True, "")], NOW, CFG)
    assert msg.title == "nb stops in 10m"
    assert msg.body.splitlines() == [
        "Idle since 15:38 (22m, $0.37 so far): no GPU, notebook, terminal, process or "
        "transfer activity.",
        "Costs $1.01/h; stops at 16:10 unless you keep it.",
    ]
    assert [(b.label, b.action) for b in msg.buttons] == [
        ("Keep 1h", "keep:1h"),
        ("Keep 3h", "keep:3h"),
        ("Stop now", "stop"),
    ]
    assert msg.urgent and msg.target == "i-0abc" and msg.region == "us-east-1"


@pytest.mark.usefixtures("berlin")
def test_the_warning_names_the_day_when_it_is_not_today_and_uses_the_id_without_a_name() -> None:
    late = NOW.replace(hour=22, minute=50)  # 23:50 in Berlin
    item = planned(
        inst(tags={TAG_MANAGED: "true"}, type="p9.unknown"),
        Action.WARN,
        "idle",
        idle_since=late - timedelta(days=1, minutes=30),
        stop_at=late + timedelta(minutes=20),
    )
    (msg,) = messages([item], [("i-0abc", "warn", True, "")], late, CFG)
    assert msg.title == "i-0abc stops in 20m"
    assert msg.body.startswith("Idle since 22 Nov 23:20 (24h30m): ")  # no cost: price unknown
    assert msg.body.splitlines()[1] == (
        "Its price is unknown; stops at 24 Nov 00:10 unless you keep it."
    )


def test_a_warning_under_a_money_limit_says_how_much_of_it_is_spent() -> None:
    item = planned(
        inst(type="p5.48xlarge"),
        Action.WARN,
        "idle",
        idle_since=NOW - timedelta(minutes=3),
        stop_at=NOW + timedelta(minutes=2, seconds=27),
        idle_usd=2.7519,
        max_idle_usd=5.0,
    )
    first, second = lines(item, "warn")
    assert first.startswith("Idle since ") and "(3m, $2.75 of $5.00 so far): no GPU" in first
    assert second.startswith("Costs $") and "unless you keep it." in second


def test_a_warning_with_a_money_limit_but_no_price_says_the_limit_does_not_apply() -> None:
    item = planned(
        inst(type="x9.nothing"),
        Action.WARN,
        "idle",
        idle_since=NOW - timedelta(minutes=25),
        stop_at=NOW + timedelta(minutes=5),
        max_idle_usd=5.0,
    )
    first, second = lines(item, "warn")
    assert "(25m): no GPU" in first and "$" not in first  # nothing guessed
    assert second.startswith("Its price is unknown, so $5.00 does not apply; stops at ")


def test_the_warning_stays_short_enough_for_a_notification_bubble() -> None:
    """Two lines, under 160 characters: it used to wrap to ten lines in a notification daemon."""
    item = planned(
        inst(id="i-0123456789abcdef0", tags={TAG_MANAGED: "true", "Name": "x" * 40}),
        Action.WARN,
        "idle",
        idle_since=NOW - timedelta(days=3),
        stop_at=NOW + timedelta(minutes=10),
        idle_usd=72.43,
    )
    (msg,) = messages([item], [("i-0123456789abcdef0", "warn", True, "")], NOW, CFG)
    assert "$72.43 so far" in msg.body
    assert len(msg.body.splitlines()) == 2 and len(msg.body) <= 160
    assert not re.search(r"\d{4}-\d\d-\d\dT", msg.body)  # no ISO stamps
    assert len(msg.title) <= 60


def test_stop_cancel_notice_and_failure_each_say_what_happened() -> None:
    req = SpotRequest(
        "us-west-2",
        "sir-1",
        "open",
        "persistent",
        "instance-terminated-by-user",
        NOW,
        NOW,
        instance_type="p3.2xlarge",
    )
    items = [
        planned(inst(), Action.STOP, "idle for 30m (threshold 30m)"),
        planned(
            req, Action.CANCEL, "orphaned: persistent request reopened; would launch a p3.2xlarge"
        ),
        planned(
            inst(id="i-2", tags={TAG_MANAGED: "true"}),
            Action.NOTICE,
            "agent silent for 20m; not stopping",
        ),
        planned(inst(id="i-3", tags={}), Action.STOP, "idle"),
    ]
    done = [
        ("i-0abc", "stop", True, ""),
        ("sir-1", "cancel", True, ""),
        ("i-2", "notice", True, ""),
        ("i-3", "stop", False, "UnauthorizedOperation: no"),
    ]
    stop, cancel, notice, failed = messages(items, done, NOW, CFG)
    assert stop.title == "Stopped nb"
    assert stop.body.splitlines() == [
        "Idle for 30m (threshold 30m). Saves $1.01/h (compute $1.006).",
        "Its disks are kept (what they cost while stopped is unknown): start it again when "
        "you need it.",
    ]
    assert cancel.title == "Cancelled spot request sir-1"
    assert (
        "would launch a p3.2xlarge" in cancel.body and "No instance was terminated" in cancel.body
    )
    assert notice.title == "i-2: not stopping" and "agent silent" in notice.body
    assert failed.title == "Could not stop i-3" and "UnauthorizedOperation" in failed.body
    assert all(not m.buttons for m in (stop, cancel, notice, failed))


def test_a_stop_says_what_it_saves_with_public_ipv4_and_what_the_disks_still_cost() -> None:
    rates = HourlyRates(1.006, 0.005, 0.0548, 1.011, BUNDLED)  # a 500 GB gp3 volume
    item = planned(inst(), Action.STOP, "idle for 30m (threshold 30m)", rates)
    assert lines(item, "stop") == [
        "Idle for 30m (threshold 30m). Saves $1.01/h (compute $1.006, public IPv4 $0.005).",
        "Its disks are kept, still costing $0.055/h: start it again when you need it.",
    ]


def test_a_stop_counts_an_elastic_ip_with_what_keeps_costing() -> None:
    rates = HourlyRates(1.006, 0.010, 0.04, 1.011, BUNDLED)  # one auto-assigned, one Elastic
    item = planned(inst(), Action.STOP, "idle", rates)
    assert lines(item, "stop")[1] == (
        "Its disks and Elastic IP are kept, still costing $0.045/h: start it again when you "
        "need it."
    )
    bare = HourlyRates(1.006, 0.0, 0.0, 1.006, BUNDLED)  # no volume, no address
    assert lines(planned(inst(), Action.STOP, "idle", bare), "stop") == [
        "Idle. Saves $1.01/h (compute $1.006).",
        "Its disks are kept: start it again when you need it.",
    ]


def test_a_stop_with_an_unknown_price_says_so_and_guesses_nothing() -> None:
    spot = inst(lifecycle="spot", public_ip="3.3.3.3")  # the table does not price spot
    first, second = lines(planned(spot, Action.STOP, "idle"), "stop")
    assert first == "Idle. What it saves per hour is unknown: its price is unknown."
    assert "$" not in second and "unknown" in second
    no_rates = Planned(spot, Decision(spot.region, spot.id, Action.STOP, "idle"))
    assert "unknown" in lines(no_rates, "stop")[0]


def test_a_long_run_is_told_once_per_start_managed_or_not() -> None:
    old = inst(id="i-old", tags={"Name": "colleague"}, launch_time=NOW - timedelta(hours=31))
    (msg,) = messages([planned(old, Action.NONE, "unmanaged")], [], NOW, CFG)
    assert msg.title == "colleague (i-old) has run for 31h00m"
    assert "$31.19 so far" in msg.body and "not managed" in msg.body
    assert messages([planned(old, Action.NONE, "unmanaged")], [], NOW, CFG, {msg.key}) == []
    spot = inst(id="i-spot", lifecycle="spot", launch_time=NOW - timedelta(hours=31))
    (unpriced,) = messages([planned(spot, Action.NONE, "active")], [], NOW, CFG)
    assert "cost unknown" in unpriced.body and "$" not in unpriced.body
    restarted = inst(id="i-old", launch_time=NOW - timedelta(hours=13))
    again = messages([planned(restarted, Action.NONE, "active")], [], NOW, CFG, {msg.key})
    assert len(again) == 1 and again[0].key != msg.key


def test_a_backstop_stop_made_while_away_is_told_once() -> None:
    stamp = "2026-11-23T03:00:00Z by idle-watchdog agent backstop: idle for 2h00m"
    gone = inst(state="stopped", tags={TAG_MANAGED: "true", TAG_STOPPED: stamp})
    (msg,) = messages([planned(gone, Action.NONE, "stopped")], [], NOW, CFG)
    assert "stopped while you were away" in msg.title and stamp in msg.body
    assert messages([planned(gone, Action.NONE, "stopped")], [], NOW, CFG, {msg.key}) == []
    ours = inst(state="stopped", tags={TAG_STOPPED: "2026-11-23T03:00:00Z by idle-watchdog: x"})
    assert messages([planned(ours, Action.NONE, "stopped")], [], NOW, CFG) == []


def test_stop_now_hibernates_where_the_auto_stop_would() -> None:
    item = planned(
        inst(),
        Action.WARN,
        "idle for 20m",
        idle_since=NOW - timedelta(minutes=20),
        stop_at=NOW + timedelta(minutes=10),
        hibernate=True,
    )
    (msg,) = messages([item], [("i-0abc", "warn", True, "")], NOW, CFG)
    assert msg.extra == {"hibernate": "1"}
