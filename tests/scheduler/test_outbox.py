"""The outbox against a moto server: a stop waits for a *delivered* warning; what is
recorded is told after a crash; failures and dead regions are told once per cause."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config as BotoConfig

from tests.helpers import MANAGED, beat, config, launch, launch_time, state
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.desktop.store import Store
from watchdog.scheduler import run_pass
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.outbox import deliver

pytestmark = pytest.mark.usefixtures("aws")

REGION = "us-east-1"
CFG = config(aws={"regions": (REGION,)}, idle={"minutes": 30, "warn_minutes": 10})
NO_WARNING = config(aws={"regions": (REGION,)}, idle={"minutes": 30, "warn_minutes": 0})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "history.sqlite3")


class Idle:
    """One managed instance whose person walked away a minute after launch."""

    def __init__(self) -> None:
        self.id = launch(REGION, tags={**MANAGED, "Name": "nb"})[0]
        self.start = launch_time(REGION, self.id)

    def at(self, minutes: float, *, active: bool = False) -> datetime:
        """The agent's heartbeat written ``minutes`` after launch; that moment."""
        now = self.start + timedelta(minutes=minutes)
        left = now if active else self.start + timedelta(minutes=1)
        beat(REGION, self.id, now, active=active, last_active=left)
        return now


class Desktop:
    """A notifier as the outbox sees it: it shows, or is down (returns False)."""

    def __init__(self) -> None:
        self.up = True
        self.shown: list[Message] = []

    def __call__(self, message: Message) -> bool:
        if self.up:
            self.shown.append(message)
        return self.up

    def keys(self) -> list[str]:
        return [m.key.split(":")[0] for m in self.shown]


def at(moment: datetime) -> Callable[[], datetime]:
    """The outbox's clock, stopped at ``moment``."""
    return lambda: moment


def stopped(iid: str) -> bool:
    return state(REGION, iid) in ("stopping", "stopped")


def test_a_warning_that_was_never_delivered_never_lets_the_stop_happen(store: Store) -> None:
    idle, desktop, api = Idle(), Desktop(), Boto3Ec2()
    desktop.up = False  # no notification server: the warning cannot be shown
    for minutes in (25, 35, 45, 60):
        now = idle.at(minutes)
        run_pass(api, store, CFG, now)
        deliver(store, desktop, at(now))
    assert not stopped(idle.id)
    assert [m.key for _, m in store.pending()] == [f"warn:{idle.id}"]  # one, kept fresh
    assert store.last_told("warn", dry_run=False) == {}

    desktop.up = True  # it comes back at +61m: the warning is shown then
    now = idle.at(61)
    run_pass(api, store, CFG, now)
    deliver(store, desktop, lambda: now)
    assert desktop.keys() == ["warn"]
    assert "stops in 10m" in desktop.shown[0].title  # counted from now, not from +25m
    now = idle.at(70)
    run_pass(api, store, CFG, now)
    assert not stopped(idle.id), "9 minutes after the warning was shown"
    now = idle.at(71)
    report = run_pass(api, store, CFG, now)
    assert [d.kind for d in report.done] == ["stop"]
    assert stopped(idle.id)


def test_a_stopped_message_recorded_before_a_crash_is_told_after_the_restart(
    tmp_path: Path,
) -> None:
    idle, desktop = Idle(), Desktop()
    first = Store(tmp_path / "h.sqlite3")
    run_pass(Boto3Ec2(), first, NO_WARNING, idle.at(32))  # stops; the process dies here
    first.close()
    assert stopped(idle.id)
    again = Store(tmp_path / "h.sqlite3")
    later = idle.start + timedelta(minutes=40)
    sent = deliver(again, desktop, lambda: later)
    assert [m.key for m in sent.sent] == [f"stopped:{idle.id}"]
    assert deliver(again, desktop, lambda: later).sent == []  # told once
    assert desktop.keys() == ["stopped"]


def test_a_pending_warning_is_dropped_when_the_machine_goes_back_to_work(store: Store) -> None:
    idle, desktop = Idle(), Desktop()
    run_pass(Boto3Ec2(), store, CFG, idle.at(25))
    assert [m.key for _, m in store.pending()] == [f"warn:{idle.id}"]
    run_pass(Boto3Ec2(), store, CFG, idle.at(27, active=True))  # before it could be shown
    assert store.pending() == []
    deliver(store, desktop, lambda: idle.start)
    assert desktop.shown == []


def refuse_stops(api: Boto3Ec2, code: Callable[[], str]) -> None:
    """Fault moto cannot produce: AWS refuses StopInstances with ``code()`` (HTTP layer)."""

    def refuse(request: Any, **_: object) -> Any:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        if "Action=StopInstances" not in body or not code():
            return None
        xml = (
            f"<Response><Errors><Error><Code>{code()}</Code><Message>no</Message></Error>"
            "</Errors></Response>"
        ).encode()
        return AWSResponse(request.url, 403, HTTPHeaders(), _Raw(xml))

    api.client(REGION).meta.events.register("before-send.ec2", refuse)


def test_a_permanent_stop_failure_is_told_once_per_cause_and_again_when_it_works(
    store: Store,
) -> None:
    idle, desktop, api = Idle(), Desktop(), Boto3Ec2()
    cause = ["UnauthorizedOperation"]
    refuse_stops(api, lambda: cause[0])
    told: list[str] = []
    for minutes, now_cause in ((31, "UnauthorizedOperation"), (32, ""), (33, ""), (34, "")):
        if now_cause:
            cause[0] = now_cause
        now = idle.at(minutes)
        report = run_pass(api, store, NO_WARNING, now)
        assert [(d.kind, d.ok) for d in report.done] == [("stop", False)]  # retried each pass
        told += [m.title for m in deliver(store, desktop, at(now)).sent]
    assert told == [f"Could not stop nb ({idle.id})"]

    cause[0] = "IncorrectInstanceState"  # another cause: told again
    now = idle.at(35)
    run_pass(api, store, NO_WARNING, now)
    again = deliver(store, desktop, lambda: now).sent
    assert [m.key for m in again] == [f"failed:stop:{idle.id}"]
    assert "IncorrectInstanceState" in again[0].body

    cause[0] = ""  # the permission was granted: the stop works, and that is told
    now = idle.at(36)
    run_pass(api, store, NO_WARNING, now)
    assert [m.key for m in deliver(store, desktop, lambda: now).sent] == [f"stopped:{idle.id}"]
    assert stopped(idle.id)
    assert store.condition(f"stop:{idle.id}") is None


def test_a_region_that_cannot_be_scanned_is_told_once_and_when_it_recovers(
    store: Store,
) -> None:
    down = [True]

    class Flaky(Boto3Ec2):
        def client(self, region: str):  # type: ignore[no-untyped-def]
            if down[0]:
                return boto3.client(
                    "ec2",
                    region_name=region,
                    endpoint_url="http://127.0.0.1:9",
                    config=BotoConfig(retries={"max_attempts": 1}),
                )
            return super().client(region)

    desktop, start = Desktop(), datetime.fromisoformat("2026-11-30T12:00:00+00:00")
    for minute, is_down in enumerate((True, True, True, False, False, True)):
        down[0] = is_down
        now = start + timedelta(minutes=minute)
        run_pass(Flaky(), store, CFG, now)
        deliver(store, desktop, at(now))
    assert [m.title for m in desktop.shown] == [
        f"Cannot watch {REGION}",
        f"Watching {REGION} again",
        f"Cannot watch {REGION}",
    ]
    assert "Could not connect" in desktop.shown[0].body


def test_a_dry_run_puts_nothing_in_the_outbox(store: Store) -> None:
    idle = Idle()
    for minutes in (25, 35):
        run_pass(Boto3Ec2(), store, CFG, idle.at(minutes), dry_run=True)
    assert store.pending() == []


class _Raw:
    """Just enough of urllib3's response for botocore to read a canned body."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, *_: object, **__: object):  # type: ignore[no-untyped-def]
        yield self._body
