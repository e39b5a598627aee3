"""A desktop daemon and the cloud workers watching the same instances never repeat each other:
a delivered warning is tagged on the instance, and both read the tag as their own warning."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.cloud import world
from tests.helpers import MANAGED, beat, config, launch, launch_time, state, tags_of
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.cloud.history import DynamoHistory
from watchdog.core import coexist
from watchdog.core.fleet import TAG_IDLE_MINUTES, Instance
from watchdog.core.settings import Config
from watchdog.core.timeutil import iso
from watchdog.desktop.store import Store
from watchdog.scheduler import run_pass
from watchdog.scheduler.coexist import tag_warned
from watchdog.scheduler.history import History
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.outbox import deliver

T0 = datetime(2026, 11, 30, 17, 0, tzinfo=timezone.utc)
REGION = "us-east-1"
CFG = config(aws={"regions": (REGION,)}, idle={"minutes": 30, "warn_minutes": 10})


def inst(tags: dict[str, str]) -> Instance:
    return Instance(REGION, "i-0123456789abcdef0", "g5.xlarge", "running", T0, tags)


# -- the tag, pure -----------------------------------------------------------------


def test_the_tag_round_trips_and_never_rounds_a_time_earlier() -> None:
    value = coexist.encode(T0 + timedelta(microseconds=1), T0 + timedelta(minutes=10))
    assert value == "2026-11-30T17:00:01Z/2026-11-30T17:10:00Z"
    assert coexist.decode(value, T0) == (T0 + timedelta(seconds=1), T0 + timedelta(minutes=10))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "2026-11-30T17:00:00Z",  # no stop time
        "2026-11-30T17:00:00Z/soon",
        "2026-11-30T17:10:00Z/2026-11-30T17:00:00Z",  # stop before the warning
        "2026-11-30T17:05:00Z/2026-11-30T17:15:00Z",  # a warning from our future
        "2026-11-30T17:00:00Z/2026-12-02T17:00:00Z",  # a stop days ahead: not a warning
    ],
)
def test_a_tag_that_is_not_a_believable_warning_is_ignored(value: str) -> None:
    assert coexist.decode(value, T0) is None
    assert (
        coexist.merged(
            {}, [inst({coexist.TAG_WARNED: value})], T0, warn_minutes=10, idle_minutes=30
        )
        == {}
    )


def test_the_later_warning_wins_and_a_later_tagged_stop_moves_it_later() -> None:
    mine = {"i-0123456789abcdef0": T0 + timedelta(minutes=3)}
    earlier = inst({coexist.TAG_WARNED: coexist.encode(T0, T0 + timedelta(minutes=10))})
    assert (
        coexist.merged(mine, [earlier], T0 + timedelta(minutes=4), warn_minutes=10, idle_minutes=30)
        == mine
    )
    # the other side announced its stop 20 minutes out (its warn_minutes is 20): ours is 10,
    # so the warning counts as given at stop - 10 min and the stop waits for the tagged time
    longer = inst({coexist.TAG_WARNED: coexist.encode(T0, T0 + timedelta(minutes=20))})
    assert coexist.merged({}, [longer], T0, warn_minutes=10, idle_minutes=30) == {
        longer.id: T0 + timedelta(minutes=10)
    }
    short = inst({coexist.TAG_WARNED: longer.tags[coexist.TAG_WARNED], TAG_IDLE_MINUTES: "5"})
    assert coexist.merged({}, [short], T0, warn_minutes=10, idle_minutes=30) == {
        short.id: T0 + timedelta(minutes=15)
    }


# -- both directions, on moto --------------------------------------------------------

Pass = Callable[[datetime], list[Message]]


def shell(api: Boto3Ec2, history: History, cfg: Config) -> Pass:
    """A pass then its delivery, tagging as both shells do; returns what was told."""

    def run(now: datetime) -> list[Message]:
        run_pass(api, history, cfg, now)
        return deliver(history, lambda _m: True, lambda: now, on_sent=tag_warned(api)).sent

    return run


@pytest.fixture
def shells(aws: str, tmp_path: Path) -> tuple[Pass, Pass]:
    """(desktop, cloud) over the same account: SQLite and DynamoDB histories."""
    world.make_hub()
    api = Boto3Ec2()
    table = DynamoHistory(world.hub().client("dynamodb"), world.TABLE, world.HUB, REGION)
    return shell(api, Store(tmp_path / "history.sqlite3"), CFG), shell(api, table, CFG)


def idle_instance(minutes: float) -> tuple[str, datetime]:
    iid = launch(REGION, tags=MANAGED)[0]
    start = launch_time(REGION, iid)
    idle_beat(iid, start, minutes)
    return iid, start


def idle_beat(iid: str, start: datetime, minutes: float) -> None:
    """The agent's heartbeat ``minutes`` after launch: idle since minute 1."""
    at = start + timedelta(minutes=minutes)
    beat(REGION, iid, at, active=False, last_active=start + timedelta(minutes=1))


def stopped(iid: str) -> bool:
    return state(REGION, iid) in ("stopping", "stopped")


@pytest.mark.parametrize("first", ["desktop", "cloud"])
def test_one_warns_and_tags_the_other_neither_warns_again_nor_stops_before_the_tagged_time(
    shells: tuple[Pass, Pass], first: str
) -> None:
    warner, other = shells if first == "desktop" else shells[::-1]
    iid, start = idle_instance(25)
    told = warner(start + timedelta(minutes=25))
    assert [m.key for m in told] == [f"warn:{iid}"]
    warned_at, stop_at = coexist.decode(
        tags_of(REGION, iid)[coexist.TAG_WARNED], start + timedelta(minutes=25)
    ) or (None, None)
    assert (warned_at, stop_at) == (start + timedelta(minutes=25), start + timedelta(minutes=35))

    for minutes in (26, 34):
        idle_beat(iid, start, minutes)
        assert other(start + timedelta(minutes=minutes)) == [], "no second warning, no early stop"
        assert not stopped(iid)
    idle_beat(iid, start, 35)
    told = other(start + timedelta(minutes=35))
    assert [m.key for m in told] == [f"stopped:{iid}"] and stopped(iid)
    assert warner(start + timedelta(minutes=36)) == []  # and the first does not stop it again


def test_without_the_tag_the_other_scheduler_would_have_warned_again(
    shells: tuple[Pass, Pass],
) -> None:
    """The control: the tag is what carries the warning across (not a shared history)."""
    desktop, cloud = shells
    iid, start = idle_instance(25)
    desktop(start + timedelta(minutes=25))
    world.hub().client("ec2", region_name=REGION).delete_tags(
        Resources=[iid], Tags=[{"Key": coexist.TAG_WARNED}]
    )
    idle_beat(iid, start, 26)
    assert [m.key for m in cloud(start + timedelta(minutes=26))] == [f"warn:{iid}"]


def test_a_warning_not_delivered_is_not_tagged(aws: str, tmp_path: Path) -> None:
    api = Boto3Ec2()
    store = Store(tmp_path / "history.sqlite3")
    iid, start = idle_instance(25)
    run_pass(api, store, CFG, start + timedelta(minutes=25))
    failed = deliver(store, lambda _m: False, lambda: start, on_sent=tag_warned(api))
    assert [m.key for m in failed.failed] == [f"warn:{iid}"]
    assert coexist.TAG_WARNED not in tags_of(REGION, iid)
    deliver(store, lambda _m: True, lambda: start + timedelta(minutes=26), on_sent=tag_warned(api))
    assert tags_of(REGION, iid)[coexist.TAG_WARNED].startswith(iso(start + timedelta(minutes=26)))
