"""The DynamoDB history keeps the protocol's promises (as the SQLite one does), on moto."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.cloud import world
from tests.helpers import MANAGED, beat, config, launch
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.cloud.history import LEASE_SECONDS, TTL_ATTRIBUTE, DynamoHistory
from watchdog.core.fleet import Instance
from watchdog.core.policy import Action, Decision
from watchdog.scheduler import run_pass
from watchdog.scheduler.history import HistoryUnwritable
from watchdog.scheduler.notifier import Message

T0 = datetime(2026, 11, 30, 17, 0, tzinfo=timezone.utc)
pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def history() -> DynamoHistory:
    world.make_hub()
    return table()


def table(account: str = world.HUB, region: str = "us-east-1") -> DynamoHistory:
    return DynamoHistory(world.hub().client("dynamodb"), world.TABLE, account, region)


def warn(iid: str, body: str = "stops soon") -> Message:
    return Message(f"warn:{iid}", "idle", body, target=iid, region="us-east-1")


def test_a_message_is_pending_until_delivered_and_then_counts_as_told(
    history: DynamoHistory,
) -> None:
    history.enqueue(warn("i-1"), T0)
    history.enqueue(warn("i-2"), T0 + timedelta(seconds=1))
    history.enqueue(warn("i-1", "updated"), T0 + timedelta(seconds=2))  # replaces the pending one
    pending = history.pending()
    assert [m.body for _, m in pending] == ["stops soon", "updated"]  # oldest first
    assert history.last_told("warn", dry_run=False) == {}
    with history.transaction():
        history.mark_sent(pending[0][0], T0 + timedelta(seconds=3, microseconds=5))
    assert history.last_told("warn", dry_run=False) == {
        "i-2": T0 + timedelta(seconds=3, microseconds=5)
    }
    assert [m.key for _, m in history.pending()] == ["warn:i-1"]
    assert history.told() == {"warn:i-1", "warn:i-2"}


def test_a_new_warning_on_a_told_key_keeps_the_last_delivery_time(history: DynamoHistory) -> None:
    history.enqueue(warn("i-1"), T0)
    (first,) = history.pending()
    history.mark_sent(first[0], T0)
    history.enqueue(warn("i-1", "again"), T0 + timedelta(hours=2))
    assert history.last_told("warn", dry_run=False) == {"i-1": T0}
    assert [m.body for _, m in history.pending()] == ["again"]


def test_discarded_and_failed_messages(history: DynamoHistory) -> None:
    history.enqueue(warn("i-1"), T0)
    history.enqueue(warn("i-2"), T0)
    history.discard_pending("warn:i-1")
    (only,) = history.pending()
    history.mark_failed(only[0], T0, "webhook 500")
    assert [m.key for _, m in history.pending()] == ["warn:i-2"]  # failed: still pending
    assert "warn:i-1" in history.told()


def test_a_delivery_is_never_marked_twice(history: DynamoHistory) -> None:
    """Two workers despite the lease: the second mark fails the pass instead of moving the time."""
    history.enqueue(warn("i-1"), T0)
    other = table()
    (mine,), (theirs,) = history.pending(), other.pending()
    other.mark_sent(theirs[0], T0)
    with pytest.raises(HistoryUnwritable, match="another worker"), history.transaction():
        history.mark_sent(mine[0], T0 + timedelta(minutes=1))
    assert history.last_told("warn", dry_run=False) == {"i-1": T0}


def test_a_transaction_commits_all_or_nothing(history: DynamoHistory) -> None:
    with pytest.raises(RuntimeError), history.transaction():
        history.record_action(T0, "us-east-1", "i-1", "stop", ok=True, detail="idle", dry_run=False)
        history.enqueue(warn("i-1"), T0)
        raise RuntimeError("crash between the two")
    assert history.actions() == [] and history.pending() == []
    with history.transaction():
        history.record_action(T0, "us-east-1", "i-1", "stop", ok=True, detail="idle", dry_run=False)
        history.enqueue(warn("i-1"), T0)
    assert len(history.actions()) == 1 and len(history.pending()) == 1


def test_conditions(history: DynamoHistory) -> None:
    assert history.condition("region:us-east-1") is None
    history.set_condition("region:us-east-1", "Throttling", T0)
    assert history.condition("region:us-east-1") == "Throttling"
    history.set_condition("region:us-east-1", None, T0)
    assert history.condition("region:us-east-1") is None


def test_an_unchanged_instance_costs_no_write_and_its_running_time_still_counts(
    history: DynamoHistory,
) -> None:
    running = Instance("us-east-1", "i-1", "g5.xlarge", "running", T0, {"Owner": "ana"})
    history.observe(T0, [running])
    before = history.writes
    for minutes in (1, 2, 3):
        table().observe(T0 + timedelta(minutes=minutes), [running])  # a fresh worker each pass
    assert history.writes == before
    (row,) = table().instances(T0 + timedelta(minutes=30))
    assert row["running_seconds"] == 30 * 60 and row["owner"] == "ana"
    stopped = Instance("us-east-1", "i-1", "g5.xlarge", "stopped", T0, {})
    later = table()
    later.observe(T0 + timedelta(hours=1), [stopped])
    assert later.writes == 1
    (row,) = table().instances(T0 + timedelta(hours=5))
    assert row["running_seconds"] == 3600 and row["state"] == "stopped"


def test_only_decisions_that_act_are_stored_and_records_age_out(history: DynamoHistory) -> None:
    idle = Decision("us-east-1", "i-1", Action.NONE, "active: gpu:0")
    history.record_decision(T0, idle, dry_run=False)
    assert history.writes == 0
    history.record_decision(T0, Decision("us-east-1", "i-1", Action.WARN, "idle"), dry_run=False)
    history.record_action(T0, "us-east-1", "i-1", "warn", ok=True, detail="idle", dry_run=False)
    rows = world.hub().client("dynamodb").scan(TableName=world.TABLE)["Items"]
    records = [r for r in rows if r["sk"]["S"].startswith(("dec#", "act#"))]
    assert len(records) == 2
    expires = {int(r[TTL_ATTRIBUTE]["N"]) for r in records}
    assert expires == {int((T0 + timedelta(days=90)).timestamp())}


def test_the_lease_admits_one_holder_until_it_lapses(history: DynamoHistory) -> None:
    assert history.take_lease("worker-a", T0)
    assert not table().take_lease("worker-b", T0 + timedelta(seconds=LEASE_SECONDS - 1))
    assert history.take_lease("worker-a", T0 + timedelta(seconds=5))  # its own, renewed
    lapsed = T0 + timedelta(seconds=5 + LEASE_SECONDS + 1)
    assert table().take_lease("worker-b", lapsed)  # the holder died (Lambda timed out)
    history.release_lease("worker-a")  # not ours any more: left alone
    assert not table().take_lease("worker-c", lapsed)
    table().release_lease("worker-b")
    assert table().take_lease("worker-c", lapsed)
    assert table(region="eu-west-1").take_lease("worker-a", T0), "one lease per scope"


def test_a_tick_is_marked_done_once(history: DynamoHistory) -> None:
    assert not history.tick_done("2026-11-30T17:00:00Z")
    history.mark_tick("2026-11-30T17:00:00Z", T0)
    history.mark_tick("2026-11-30T17:00:00Z", T0)  # a repeat is only logged
    assert history.tick_done("2026-11-30T17:00:00Z")
    assert not table(region="eu-west-1").tick_done("2026-11-30T17:00:00Z")


def test_a_missing_table_is_an_unwritable_history_that_says_so(aws: str) -> None:
    history = table()
    with (
        pytest.raises(HistoryUnwritable, match="DynamoDB table idle-watchdog"),
        history.transaction(),
    ):
        history.set_condition("", None, T0)


def steady_pass_requests(count: int) -> int:
    """DynamoDB requests of the second pass over ``count`` busy managed instances."""
    region = "us-east-1"
    ids = launch(region, count=count, tags=MANAGED)
    now = datetime.now(timezone.utc) + timedelta(minutes=5)
    for iid in ids:
        beat(region, iid, now, active=True, reasons=("gpu:0",))
    client = world.hub().client("dynamodb")
    sent: list[str] = []
    client.meta.events.register("before-send.dynamodb", lambda **_: sent.append("x"))
    cfg = config(aws={"regions": (region,)})
    run_pass(Boto3Ec2(), DynamoHistory(client, world.TABLE, world.HUB, region), cfg, now)
    sent.clear()
    run_pass(Boto3Ec2(), DynamoHistory(client, world.TABLE, world.HUB, region), cfg, now)
    return len(sent)


def test_a_steady_pass_costs_the_same_dynamodb_requests_for_2_or_40_instances(aws: str) -> None:
    """Nothing changed, nothing to tell: no request per instance (there were two GetItems)."""
    world.make_hub()
    few = steady_pass_requests(2)
    requests.post(f"{aws}/moto-api/reset", timeout=10).raise_for_status()
    world.make_hub()
    assert steady_pass_requests(40) == few <= 8
