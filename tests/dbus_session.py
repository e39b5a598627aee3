"""A private D-Bus session bus and a scriptable notification server, as pytest fixtures.

Import the fixtures into a test module explicitly, all three (they depend on
each other); the functions carry a ``_fixture`` suffix so that a test's
``notification_server`` argument does not shadow an import (ruff F811)::

    from tests.dbus_session import (  # noqa: F401
        dbus_session_fixture,
        notification_server_fixture,
        session_bus_fixture,
    )

- ``dbus_session`` (session scope): the address of a private ``dbus-daemon``.
  Its config lists no service directories, so nothing on the machine (a real
  notification daemon installed for D-Bus activation) can answer in place of
  the fake. Skips when dbus-daemon is missing.
- ``session_bus``: that address, also set as ``DBUS_SESSION_BUS_ADDRESS``.
- ``notification_server``: ``tests/fake_notifications.py`` running on that bus
  for one test, seen through a ``FakeNotificationServer``.

``run_bus`` and ``run_fake_notifications`` are the same as context managers, for
tests that need a bus of their own (one they can take down).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from dbus_fast import DBusError, Message, MessageType
from dbus_fast.aio import MessageBus

FAKE = Path(__file__).with_name("fake_notifications.py")
NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
CONTROL = "org.idlewatchdog.Test"
START_TIMEOUT = 10.0

_T = TypeVar("_T")

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={directory}</listen>
  <auth>EXTERNAL</auth>{servicedir}
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _first_line(proc: subprocess.Popen[str], stream: IO[str], what: str) -> str:
    """The first line a child prints, or a clear error if it dies or hangs instead."""
    ready, _, _ = select.select([stream], [], [], START_TIMEOUT)
    line = stream.readline().strip() if ready else ""
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} did not start (exit status {proc.returncode})")
    return line


def _end(proc: subprocess.Popen[str], grace: float = 0.0) -> None:
    """Waits ``grace`` seconds for it to leave by itself, then asks, then insists."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


@contextmanager
def run_bus(
    directory: Path, activatable: Mapping[str, Sequence[str]] | None = None
) -> Iterator[str]:
    """A ``dbus-daemon`` with a socket in ``directory``; yields its address.

    ``activatable`` maps names to the command the bus runs, by D-Bus
    activation, when a message for that name arrives and nobody owns it.
    """
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed")
    servicedir = ""
    if activatable:
        services = directory / "services"
        services.mkdir()
        for name, argv in activatable.items():
            (services / f"{name}.service").write_text(
                f"[D-BUS Service]\nName={name}\nExec={shlex.join(argv)}\n"
            )
        servicedir = f"\n  <servicedir>{services}</servicedir>"
    config = directory / "session.conf"
    config.write_text(_BUS_CONFIG.format(directory=directory, servicedir=servicedir))
    proc = subprocess.Popen(
        [daemon, f"--config-file={config}", "--nofork", "--print-address=1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # as root it complains it cannot raise its fd limit
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield _first_line(proc, proc.stdout, "dbus-daemon")
    finally:
        _end(proc)


class FakeNotificationServer:
    """The test's handle on ``fake_notifications.py``: read what it was sent, click buttons.

    It talks to the fake over its own bus connection on a private loop in a
    thread, so its methods are plain calls that work from sync tests and from
    inside ``asyncio.run`` alike (they block that loop briefly, like any I/O).
    """

    def __init__(self, address: str, peer: str = NAME) -> None:
        self.address = address
        self.peer = peer  # best the fake's unique name: that process, whoever owns NAME later
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-notifications-client", daemon=True
        )
        self._thread.start()
        self._bus = self._run(self._connect())

    async def _connect(self) -> MessageBus:
        return await MessageBus(bus_address=self.address).connect()  # on its loop

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float = 5.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _call(
        self, member: str, signature: str = "", body: list[Any] | None = None, **to: str
    ) -> list[Any]:
        reply = await self._bus.call(
            Message(
                destination=to.get("destination", self.peer),
                path=to.get("path", PATH),
                interface=to.get("interface", CONTROL),
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            raise DBusError(reply.error_name or "", reply.body[0] if reply.body else "")
        return list(reply.body)

    def calls(self) -> list[dict[str, Any]]:
        """Every Notify call so far: id, app_name, summary, body, actions, buttons, urgency..."""
        (text,) = self._run(self._call("Calls"))
        calls: list[dict[str, Any]] = json.loads(text)
        return calls

    def wait_for_calls(self, n: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """At least ``n`` calls, for senders that return before the server has them."""
        deadline = time.monotonic() + timeout
        while len(calls := self.calls()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(calls)} Notify calls after {timeout} s, wanted {n}")
            time.sleep(0.02)
        return calls

    def press(self, notification_id: int, action_key: str) -> None:
        """Clicks a button: ``ActionInvoked(id, key)``, then ``NotificationClosed(id, 2)``."""
        self._run(self._call("Press", "us", [notification_id, action_key]))

    def dismiss(self, notification_id: int) -> None:
        """Closes it without a button: ``NotificationClosed(id, 2)``."""
        self._run(self._call("Dismiss", "u", [notification_id]))

    def fail_next(
        self,
        error_name: str = "org.freedesktop.Notifications.Error.Failed",
        text: str = "injected failure",
    ) -> None:
        """The next Notify answers with this D-Bus error instead of an id."""
        self._run(self._call("FailNext", "ss", [error_name, text]))

    def name_owned(self) -> bool:
        (owned,) = self._run(
            self._call(
                "NameHasOwner",
                "s",
                [NAME],
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
            )
        )
        return bool(owned)

    def close(self) -> None:
        async def disconnect() -> None:
            self._bus.disconnect()
            await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

        try:
            self._run(disconnect())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


@contextmanager
def run_fake_notifications(address: str) -> Iterator[FakeNotificationServer]:
    """The fake server on the bus at ``address`` until the block ends.

    On the way out it waits until the bus no longer lists the name, so the next
    test never finds a server that is on its way out.
    """
    proc = subprocess.Popen(
        [sys.executable, str(FAKE)],
        stdin=subprocess.PIPE,  # closing it ends the fake, even if we die first
        stdout=subprocess.PIPE,
        env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": address},
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = _first_line(proc, proc.stdout, "fake notification server")
        status, _, peer = line.partition(" ")
        assert status == "ready", line
        server = FakeNotificationServer(address, peer)
    except BaseException:
        _end(proc)
        raise
    try:
        yield server
    finally:
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # the fake releases the name, then exits
            _end(proc, grace=5.0)
            deadline = time.monotonic() + 5
            while server.name_owned() and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            server.close()


@pytest.fixture(scope="session", name="dbus_session")
def dbus_session_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private session bus for the whole run; its address."""
    with run_bus(tmp_path_factory.mktemp("dbus")) as address:
        yield address


@pytest.fixture(name="session_bus")
def session_bus_fixture(dbus_session: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The private bus as this test's ``DBUS_SESSION_BUS_ADDRESS`` (children inherit it)."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", dbus_session)
    return dbus_session


@pytest.fixture(name="notification_server")
def notification_server_fixture(session_bus: str) -> Iterator[FakeNotificationServer]:
    """A fresh fake notification server on the session bus, for this test only."""
    with run_fake_notifications(session_bus) as server:
        yield server
