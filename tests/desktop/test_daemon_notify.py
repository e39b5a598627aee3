"""The daemon end to end: a real D-Bus session, a notification server, moto, buttons pressed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.dbus_session import (  # noqa: F401 - fixtures, used by name
    FakeNotificationServer,
    dbus_session_fixture,
    notification_server_fixture,
    session_bus_fixture,
)
from tests.helpers import MANAGED, beat, config, launch, state, tags_of
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.aws.fake import set_launch_time
from watchdog.core.fleet import TAG_KEEP_UNTIL
from watchdog.core.timeutil import parse_iso, utcnow
from watchdog.desktop.daemon import Daemon
from watchdog.desktop.store import Store

pytestmark = pytest.mark.usefixtures("aws", "session_bus")
T = TypeVar("T")


def idle_instance(name: str) -> str:
    """Managed, started 2 h ago, its agent saying idle for 25 min: due for a warning now."""
    iid = launch("us-east-1", tags={**MANAGED, "Name": name})[0]
    now = utcnow()
    set_launch_time("us-east-1", iid, now - timedelta(hours=2))
    beat("us-east-1", iid, now, active=False, last_active=now - timedelta(minutes=25))
    return iid


def until(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def with_daemon(tmp_path: Path, scenario: Callable[[Daemon], Coroutine[Any, Any, None]]) -> Store:
    """Run the real daemon (first pass at start) on a loop while ``scenario`` plays."""
    cfg = config(
        aws={"regions": ("us-east-1",)},
        idle={"minutes": 30, "warn_minutes": 10},
        scheduler={"poll_seconds": 3600},
        notify={"backend": "auto", "keep_durations": ("1h", "4h")},
    )
    store = Store(tmp_path / "history.sqlite3")

    async def main() -> None:
        daemon = Daemon(Boto3Ec2(), store, cfg)
        stop = asyncio.Event()
        serving = asyncio.create_task(daemon.serve(stop))
        try:
            await scenario(daemon)
        finally:
            stop.set()
            await serving

    asyncio.run(main())
    return store


def in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_the_warning_arrives_and_keep_1h_snoozes_the_instance(
    tmp_path: Path, notification_server: FakeNotificationServer
) -> None:
    iid = idle_instance("forgotten-notebook")

    async def scenario(daemon: Daemon) -> None:
        (call,) = await in_thread(notification_server.wait_for_calls, 1, 15.0)
        assert call["app_name"] == "idle-watchdog"
        assert call["summary"] == "forgotten-notebook stops in 10m"
        assert "Idle since " in call["body"] and "$1.01/h" in call["body"]
        buttons = [tuple(b) for b in call["buttons"] if b[0] != "default"]  # a body click
        assert buttons == [("keep:1h", "Keep 1h"), ("keep:4h", "Keep 4h"), ("stop", "Stop now")]
        assert call["urgency"] == 2
        await in_thread(notification_server.press, call["id"], "keep:1h")
        tags = await in_thread(
            until,
            lambda: TAG_KEEP_UNTIL in tags_of("us-east-1", iid) and tags_of("us-east-1", iid),
            "the keep-until tag",
        )
        left = parse_iso(tags[TAG_KEEP_UNTIL]) - utcnow()
        assert timedelta(minutes=59) < left <= timedelta(hours=1)
        await in_thread(daemon.tick)  # the next pass honours it

    store = with_daemon(tmp_path, scenario)
    assert state("us-east-1", iid) == "running"
    kinds = [(kind, ok) for _, target, kind, ok, _ in store.actions(iid)]
    assert kinds == [("warn", True), ("keep", True)]


def test_stop_now_stops_it(tmp_path: Path, notification_server: FakeNotificationServer) -> None:
    iid = idle_instance("nb")

    async def scenario(daemon: Daemon) -> None:
        (call,) = await in_thread(notification_server.wait_for_calls, 1, 15.0)
        await in_thread(notification_server.press, call["id"], "stop")
        await in_thread(
            until, lambda: state("us-east-1", iid) in ("stopping", "stopped"), "the stop"
        )

    with_daemon(tmp_path, scenario)
    assert "stop pressed" in tags_of("us-east-1", iid)["idle-watchdog:stopped"]


def test_ten_passes_over_the_same_idle_instance_send_one_warning(
    tmp_path: Path, notification_server: FakeNotificationServer
) -> None:
    idle_instance("nb")

    async def scenario(daemon: Daemon) -> None:
        await in_thread(notification_server.wait_for_calls, 1, 15.0)
        for _ in range(9):
            await in_thread(daemon.tick)
        await asyncio.sleep(0.5)  # anything sent would have arrived by now

    with_daemon(tmp_path, scenario)
    assert len(notification_server.calls()) == 1
