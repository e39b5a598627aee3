"""A stand-in desktop notification server: ``org.freedesktop.Notifications`` over dbus-fast.

It runs as its own process (``python tests/fake_notifications.py``, on the bus
named by ``DBUS_SESSION_BUS_ADDRESS``), not as a thread of the test process:
like a real daemon it is a separate peer with its own connection, so
desktop-notifier and notify-send reach it exactly as on a desktop; it shares no
event loop or state with the code under test; and a test can take it off the
bus by ending it. It also runs by hand under ``dbus-run-session``.

Besides the spec's methods it serves ``org.idlewatchdog.Test`` on the same
object, through which ``tests.dbus_session.FakeNotificationServer`` reads the
recorded calls and plays the person: ``Press`` emits ``ActionInvoked(id, key)``
then ``NotificationClosed(id, 2)``, as a server does when a button is clicked.

Prints ``ready <unique name>`` once it owns the name; exits, releasing the
name first, on SIGTERM, SIGINT or when its stdin, if a pipe, closes (the test run
ended), and when its bus goes away (started by D-Bus activation, it has no pipe).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from typing import Annotated, Any

from dbus_fast import DBusError, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusInt32, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
CONTROL = "org.idlewatchdog.Test"
CAPABILITIES = ["actions", "body", "persistence"]

# Reasons in NotificationClosed, from the specification.
DISMISSED = 2
CLOSED_BY_CALL = 3

StrList = Annotated[list[str], DBusSignature("as")]
#: dbus-fast reads a bare ``-> None`` as "no annotation" and refuses the method.
NoReply = Annotated[None, DBusSignature("")]


def _plain(value: Variant) -> Any:
    """A hint as JSON can carry it (urgency is a byte, i.e. an int)."""
    inner = value.value
    if isinstance(inner, (str, int, float, bool)):
        return inner
    return repr(inner)


class Notifications(ServiceInterface):
    """The part of the notification spec that clients of a server with actions use."""

    def __init__(self) -> None:
        super().__init__(NAME)
        self.calls: list[dict[str, Any]] = []
        self.open: dict[int, list[str]] = {}  # id -> action keys offered
        self.fail_next: tuple[str, str] | None = None
        self._last_id = 0

    @dbus_method()
    def GetCapabilities(self) -> StrList:
        return CAPABILITIES

    @dbus_method()
    def GetServerInformation(self) -> Annotated[tuple[str, str, str, str], DBusSignature("ssss")]:
        return ("fake-notifications", "idle-watchdog tests", "1.0", "1.2")

    @dbus_method()
    def Notify(  # noqa: PLR0917 (the specification's signature)
        self,
        app_name: DBusStr,
        replaces_id: DBusUInt32,
        app_icon: DBusStr,
        summary: DBusStr,
        body: DBusStr,
        actions: StrList,
        hints: DBusDict,
        expire_timeout: DBusInt32,
    ) -> DBusUInt32:
        if self.fail_next is not None:
            name, text = self.fail_next
            self.fail_next = None
            raise DBusError(name, text)
        if replaces_id in self.open:
            nid = replaces_id
        else:
            self._last_id += 1
            nid = self._last_id
        pairs = list(zip(actions[::2], actions[1::2], strict=False))
        self.open[nid] = [key for key, _ in pairs]
        self.calls.append(
            {
                "id": nid,
                "app_name": app_name,
                "replaces_id": replaces_id,
                "app_icon": app_icon,
                "summary": summary,
                "body": body,
                "actions": list(actions),
                "buttons": [list(p) for p in pairs],
                "hints": {k: _plain(v) for k, v in hints.items()},
                "urgency": _plain(hints["urgency"]) if "urgency" in hints else None,
                "expire_timeout": expire_timeout,
            }
        )
        return nid

    @dbus_method()
    def CloseNotification(self, nid: DBusUInt32) -> NoReply:
        if self.open.pop(nid, None) is not None:
            self.NotificationClosed(nid, CLOSED_BY_CALL)

    @dbus_signal()
    def NotificationClosed(
        self, nid: int, reason: int
    ) -> Annotated[tuple[int, int], DBusSignature("uu")]:
        return (nid, reason)

    @dbus_signal()
    def ActionInvoked(self, nid: int, key: str) -> Annotated[tuple[int, str], DBusSignature("us")]:
        return (nid, key)


class Control(ServiceInterface):
    """What a test needs besides the spec: the record, and a hand to click with."""

    def __init__(self, server: Notifications) -> None:
        super().__init__(CONTROL)
        self.server = server

    @dbus_method()
    def Calls(self) -> DBusStr:
        return json.dumps(self.server.calls)

    @dbus_method()
    def Press(self, nid: DBusUInt32, key: DBusStr) -> NoReply:
        offered = self.server.open.pop(nid, None)
        if offered is None:
            raise DBusError(f"{CONTROL}.Error.UnknownId", f"no open notification {nid}")
        if key not in offered:
            self.server.open[nid] = offered
            raise DBusError(f"{CONTROL}.Error.UnknownAction", f"{nid} offers {offered}, not {key}")
        self.server.ActionInvoked(nid, key)
        self.server.NotificationClosed(nid, DISMISSED)

    @dbus_method()
    def Dismiss(self, nid: DBusUInt32) -> NoReply:
        if self.server.open.pop(nid, None) is None:
            raise DBusError(f"{CONTROL}.Error.UnknownId", f"no open notification {nid}")
        self.server.NotificationClosed(nid, DISMISSED)

    @dbus_method()
    def FailNext(self, error_name: DBusStr, text: DBusStr) -> NoReply:
        self.server.fail_next = (error_name, text)


async def serve() -> int:
    bus = await MessageBus().connect()
    server = Notifications()
    bus.export(PATH, server)
    bus.export(PATH, Control(server))
    reply = await bus.request_name(NAME, NameFlag.DO_NOT_QUEUE)
    if reply is not RequestNameReply.PRIMARY_OWNER:
        print(f"{NAME} is taken ({reply.name})", file=sys.stderr)
        bus.disconnect()
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    stdin = sys.stdin.fileno()
    watch_stdin = stat.S_ISFIFO(os.fstat(stdin).st_mode)  # a pipe from the test run

    def stdin_readable() -> None:
        if not os.read(stdin, 4096):
            stop.set()

    if watch_stdin:
        loop.add_reader(stdin, stdin_readable)
    print(f"ready {bus.unique_name}", flush=True)
    bus_gone = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([bus_gone, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if watch_stdin:
        loop.remove_reader(stdin)
    if bus.connected:
        # Release first: once we exit, the next test may look for the name at once.
        await bus.release_name(NAME)
        bus.disconnect()
    await asyncio.gather(bus_gone, return_exceptions=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))
