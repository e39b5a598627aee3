"""Notifications over a real private D-Bus session, against a fake notification server.

Each test drives its own ``asyncio.run``: the backends need a running loop, and
button presses arrive on it as D-Bus signals while the test awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
from collections.abc import Coroutine, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from tests.dbus_session import (  # noqa: F401 (fixtures)
    FAKE,
    NAME,
    FakeNotificationServer,
    dbus_session_fixture,
    notification_server_fixture,
    run_bus,
    run_fake_notifications,
    session_bus_fixture,
)
from watchdog.desktop.notify import DesktopBackend, LogBackend, NotifySendBackend, choose
from watchdog.scheduler.notifier import Button, Message, Notifier

T = TypeVar("T")

WARN = Message(
    "warn:i-0abc",
    "g5.xlarge i-0abc stops in 10 min",
    "Idle for 50 min: no GPU, kernel or terminal activity.",
    (Button("Keep 1 h", "keep:1h"), Button("Stop now", "stop")),
    urgent=True,
    target="i-0abc",
    region="us-east-1",
)
STOPPED = Message(
    "stopped:i-0abc",
    "Stopped g5.xlarge i-0abc",
    "That saves $1.01 an hour; its disks are kept.",
    target="i-0abc",
    region="us-east-1",
)
NO_BUS_LINE = "no desktop session bus: notifications go to the log"
NO_SERVICE_LINE = "no notification service on the session bus: notifications go to the log"

needs_notify_send = pytest.mark.skipif(
    shutil.which("notify-send") is None, reason="notify-send (libnotify-bin) is not installed"
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """One scenario on a fresh loop, bounded so a lost signal fails instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, 15))


class Presses:
    """An ``on_action`` that remembers what was pressed, and on which loop."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.event = asyncio.Event()

    def __call__(self, action: str) -> None:
        self.actions.append(action)
        self.loops.append(asyncio.get_running_loop())
        self.event.set()

    async def wait(self, barrier: Notifier | None = None, timeout: float = 5.0) -> list[str]:
        """The presses, once one arrived. A press is followed by NotificationClosed, which
        must not act again: with a ``barrier`` (the D-Bus backend that got the press), one
        more message is sent through it, and the server's reply to it comes after that
        signal on the same connection, so a second action would be in by then. notify-send
        needs none: it acts once its process has exited."""
        await asyncio.wait_for(self.event.wait(), timeout)
        if barrier is not None:
            assert await asyncio.wait_for(barrier.send(STOPPED), timeout)
        return self.actions


LogEntries = list[MutableMapping[str, Any]]


def warnings_in(logs: LogEntries) -> LogEntries:
    return [e for e in logs if e["log_level"] == "warning"]


# log


def test_log_backend_logs_one_line_per_message_and_never_acts() -> None:
    pressed: list[str] = []

    async def scenario() -> None:
        backend = LogBackend()
        assert await backend.send(WARN, pressed.append) is True  # the line is the delivery
        await backend.aclose()

    with capture_logs() as logs:
        run(scenario())
    assert logs == [
        {
            "event": "notification",
            "log_level": "info",
            "key": "warn:i-0abc",
            "title": WARN.title,
            "body": WARN.body,
            "buttons": {"keep:1h": "Keep 1 h", "stop": "Stop now"},
            "urgent": True,
        }
    ]
    assert pressed == []


# desktop (desktop-notifier over D-Bus)


def test_desktop_backend_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        DesktopBackend()


def test_desktop_shows_the_message_and_a_press_calls_back(
    notification_server: FakeNotificationServer,
) -> None:
    async def scenario() -> None:
        presses = Presses()
        backend = DesktopBackend()
        try:
            await backend.send(WARN, presses)
            (call,) = notification_server.calls()  # send returns once the server has it
            assert call["app_name"] == "idle-watchdog"
            assert call["summary"] == WARN.title
            assert call["body"] == WARN.body
            # desktop-notifier also offers ("default", "") for a click on the body.
            assert ["keep:1h", "Keep 1 h"] in call["buttons"]
            assert ["stop", "Stop now"] in call["buttons"]
            assert call["urgency"] == 2  # critical

            notification_server.press(call["id"], "keep:1h")
            assert await presses.wait(backend) == ["keep:1h"]
            assert presses.loops == [asyncio.get_running_loop()]
        finally:
            await backend.aclose()

    run(scenario())


def test_desktop_sends_plain_messages_at_normal_urgency(
    notification_server: FakeNotificationServer,
) -> None:
    async def scenario() -> None:
        backend = DesktopBackend()
        try:
            await backend.send(STOPPED)
            await backend.send(WARN)
        finally:
            await backend.aclose()

    run(scenario())
    stopped, warn = notification_server.calls()
    assert (stopped["summary"], stopped["urgency"]) == (STOPPED.title, 1)
    assert [key for key, _ in stopped["buttons"]] in ([], ["default"])
    assert warn["id"] != stopped["id"]


def test_desktop_failure_is_logged_not_raised_and_the_next_send_works(
    notification_server: FakeNotificationServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        backend = DesktopBackend()
        try:
            notification_server.fail_next(text="server on fire")
            assert await backend.send(WARN) is False  # not shown: the outbox keeps it
            assert await backend.send(STOPPED) is True
        finally:
            await backend.aclose()

    with capture_logs() as logs, caplog.at_level(logging.DEBUG):
        run(scenario())
    (failed,) = warnings_in(logs)
    assert failed["event"] == "notification not shown"
    assert failed["key"] == WARN.key
    assert "server on fire" in failed["error"]
    # One line, ours: desktop-notifier's own warning and traceback are taken back.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [c["summary"] for c in notification_server.calls()] == [STOPPED.title]


def test_desktop_without_a_server_logs_and_recovers_when_one_appears(session_bus: str) -> None:
    async def scenario() -> list[str]:
        presses = Presses()
        backend = DesktopBackend()
        try:
            await backend.send(WARN, presses)  # nobody owns org.freedesktop.Notifications
            with run_fake_notifications(session_bus) as server:
                await backend.send(WARN, presses)
                (call,) = server.calls()
                server.press(call["id"], "stop")
                return await presses.wait(backend)
        finally:
            await backend.aclose()

    with capture_logs() as logs:
        assert run(scenario()) == ["stop"]
    (failed,) = warnings_in(logs)
    assert failed["event"] == "notification not shown"
    assert "org.freedesktop.Notifications" in failed["error"]


def test_desktop_survives_its_bus_going_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session bus dies mid-run: that message is logged, the next bus is used."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    async def scenario() -> list[str]:
        presses = Presses()
        backend = DesktopBackend()
        try:
            with run_bus(first) as address:
                monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
                with run_fake_notifications(address) as server:
                    assert await backend.send(STOPPED) is True
                    assert len(server.calls()) == 1
                    bus = backend._bus()
                    assert bus is not None
            with contextlib.suppress(Exception):  # ends with the error that closed it
                await asyncio.wait_for(bus.wait_for_disconnect(), 5)  # type: ignore[no-untyped-call]
            assert await backend.send(WARN) is False  # no bus at all now
            with run_bus(second) as address:
                monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
                with run_fake_notifications(address) as server:
                    await backend.send(WARN, presses)
                    (call,) = server.calls()
                    server.press(call["id"], "keep:1h")
                    return await presses.wait(backend)
        finally:
            await backend.aclose()

    with capture_logs() as logs:
        assert run(scenario()) == ["keep:1h"]
    assert [e["key"] for e in warnings_in(logs)] == [WARN.key]


# notify-send


@needs_notify_send
def test_notify_send_shows_the_message_and_a_press_calls_back(
    notification_server: FakeNotificationServer,
) -> None:
    async def scenario() -> None:
        presses = Presses()
        backend = NotifySendBackend()
        try:
            # Returns at once although notify-send waits for the answer.
            await asyncio.wait_for(backend.send(WARN, presses), 5)
            (call,) = await asyncio.to_thread(notification_server.wait_for_calls, 1)
            assert call["app_name"] == "idle-watchdog"
            assert (call["summary"], call["body"]) == (WARN.title, WARN.body)
            assert call["buttons"] == [["keep:1h", "Keep 1 h"], ["stop", "Stop now"]]
            assert call["urgency"] == 2

            notification_server.press(call["id"], "keep:1h")
            assert await presses.wait() == ["keep:1h"]
            assert presses.loops == [asyncio.get_running_loop()]
        finally:
            await backend.aclose()

    run(scenario())


@needs_notify_send
def test_notify_send_dismissed_acts_on_nothing(
    notification_server: FakeNotificationServer,
) -> None:
    odd = Message("notice:x", "--help: a title like an option", "-u low", WARN.buttons)

    async def scenario() -> list[str]:
        pressed: list[str] = []
        backend = NotifySendBackend()
        await backend.send(odd, pressed.append)
        (call,) = await asyncio.to_thread(notification_server.wait_for_calls, 1)
        assert (call["summary"], call["body"]) == (odd.title, odd.body)
        assert call["urgency"] == 1
        notification_server.dismiss(call["id"])
        await asyncio.wait_for(asyncio.gather(*backend._tasks), 5)
        return pressed

    with capture_logs() as logs:
        assert run(scenario()) == []
    assert logs == []


@needs_notify_send
def test_notify_send_aclose_ends_waiting_processes(
    notification_server: FakeNotificationServer,
) -> None:
    async def scenario() -> list[str]:
        pressed: list[str] = []
        backend = NotifySendBackend()
        await backend.send(WARN, pressed.append)
        await asyncio.to_thread(notification_server.wait_for_calls, 1)
        assert len(backend._tasks) == 1
        await asyncio.wait_for(backend.aclose(), 5)
        assert not backend._tasks
        return pressed

    assert run(scenario()) == []


@needs_notify_send
def test_notify_send_failure_is_logged_not_raised(session_bus: str) -> None:
    async def scenario() -> None:
        backend = NotifySendBackend()
        await backend.send(WARN, lambda action: None)  # no server on this bus
        await asyncio.wait_for(asyncio.gather(*backend._tasks), 10)

    with capture_logs() as logs:
        run(scenario())
    (failed,) = warnings_in(logs)
    assert (failed["event"], failed["backend"], failed["key"]) == (
        "notification not shown",
        "notify-send",
        WARN.key,
    )
    assert "org.freedesktop.Notifications" in failed["error"]


# choose


def choose_logged(setting: str) -> tuple[Notifier, LogEntries]:
    async def scenario() -> Notifier:
        backend = await choose(setting)
        await backend.aclose()
        return backend

    with capture_logs() as logs:
        backend = run(scenario())
    return backend, logs


def test_auto_picks_the_desktop_when_a_server_is_on_the_bus(
    notification_server: FakeNotificationServer,
) -> None:
    backend, logs = choose_logged("auto")
    assert isinstance(backend, DesktopBackend)
    assert logs == []


def test_auto_uses_the_log_when_the_bus_address_leads_nowhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    backend, logs = choose_logged("auto")
    assert isinstance(backend, LogBackend)
    assert [(e["event"], e["log_level"]) for e in logs] == [(NO_BUS_LINE, "info")]
    assert logs[0]["address"] == "unix:path=/nonexistent"


def test_auto_uses_the_log_without_any_session_bus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no "bus" socket in it
    backend, logs = choose_logged("auto")
    assert isinstance(backend, LogBackend)
    assert [(e["event"], e["log_level"]) for e in logs] == [(NO_BUS_LINE, "info")]


def test_auto_uses_the_log_when_the_bus_has_no_notification_server(session_bus: str) -> None:
    backend, logs = choose_logged("auto")
    assert isinstance(backend, LogBackend)
    assert [(e["event"], e["log_level"]) for e in logs] == [(NO_SERVICE_LINE, "info")]


def test_auto_counts_a_server_the_bus_starts_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Desktops often start their notification daemon by D-Bus activation, at the first message."""
    with run_bus(tmp_path, activatable={NAME: [sys.executable, str(FAKE)]}) as address:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)

        async def scenario() -> Notifier:
            backend = await choose("auto")
            try:
                await backend.send(STOPPED)
            finally:
                await backend.aclose()
            return backend

        assert isinstance(run(scenario()), DesktopBackend)
        server = FakeNotificationServer(address)  # the one the bus started
        try:
            assert [c["summary"] for c in server.calls()] == [STOPPED.title]
        finally:
            server.close()


def test_auto_finds_the_user_bus_socket_without_the_variable(
    notification_server: FakeNotificationServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As under a launcher that does not pass DBUS_SESSION_BUS_ADDRESS on."""
    socket = notification_server.address.removeprefix("unix:path=").split(",")[0]
    (tmp_path / "bus").symlink_to(socket)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))

    async def scenario() -> Notifier:
        backend = await choose("auto")
        try:
            await backend.send(STOPPED)  # desktop-notifier finds the bus too
        finally:
            await backend.aclose()
        return backend

    assert isinstance(run(scenario()), DesktopBackend)
    assert [c["summary"] for c in notification_server.calls()] == [STOPPED.title]


@needs_notify_send
def test_auto_uses_notify_send_without_desktop_notifier(
    notification_server: FakeNotificationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "desktop_notifier", None)  # import fails
    backend, logs = choose_logged("auto")
    assert isinstance(backend, NotifySendBackend)
    assert logs == []


def test_auto_on_macos_and_windows_takes_the_desktop_without_looking_for_a_bus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    monkeypatch.setattr(sys, "platform", "darwin")
    backend, logs = choose_logged("auto")
    assert isinstance(backend, DesktopBackend)
    assert logs == []


def test_forced_notify_send_that_is_missing_falls_back_with_a_warning(
    notification_server: FakeNotificationServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    backend, logs = choose_logged("notify-send")
    assert isinstance(backend, LogBackend)
    assert [(e["event"], e["log_level"], e["requested"]) for e in logs] == [
        ("notify-send is not on PATH: notifications go to the log", "warning", "notify-send")
    ]


def test_forced_desktop_without_a_bus_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    backend, logs = choose_logged("desktop")
    assert isinstance(backend, LogBackend)
    assert [(e["event"], e["log_level"], e["requested"]) for e in logs] == [
        (NO_BUS_LINE, "warning", "desktop")
    ]


def test_forced_log_and_unknown_settings() -> None:
    backend, logs = choose_logged("log")
    assert isinstance(backend, LogBackend)
    assert logs == []
    with pytest.raises(ValueError, match="unknown notification backend"):
        run(choose("dbus"))
