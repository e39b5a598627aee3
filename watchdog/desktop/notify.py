"""Desktop notifications: what the person hears, with buttons that act.

A ``Message`` is pure data (built by ``watchdog.events``); a ``Notifier``
shows it. Backends, chosen automatically or forced by ``[notify] backend``:

- ``desktop``: desktop-notifier (D-Bus ``org.freedesktop.Notifications`` on
  Linux, the native centres on macOS and Windows), with buttons;
- ``notify-send``: libnotify's command with ``-A`` actions, on Linux without
  desktop-notifier;
- ``log``: one structured log line per message, where no desktop session
  exists (a server, CI).

Button presses call ``on_action(action_id)`` on the scheduler's asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from watchdog.scheduler.notifier import Message, Notifier, OnAction

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus
    from desktop_notifier import DesktopNotifier

log = structlog.get_logger("watchdog.desktop.notify")

APP_NAME = "idle-watchdog"
#: The D-Bus name every freedesktop notification server owns (or can be started as).
NOTIFICATIONS_NAME = "org.freedesktop.Notifications"
#: How long ``choose`` waits on the session bus before deciding nobody is there.
PROBE_TIMEOUT = 2.0

NO_BUS = "no desktop session bus"
NO_SERVICE = "no notification service on the session bus"
TO_LOG = "notifications go to the log"


def _call_quietly(on_action: OnAction | None, action: str, key: str) -> None:
    """Runs a button's action inside a transport's callback, where an error must not escape."""
    if on_action is None:
        return
    try:
        on_action(action)
    except Exception:
        log.exception("notification action failed", key=key, action=action)


class LogBackend:
    """No desktop: one log line per message, so a server or CI still has the record."""

    name = "log"

    async def send(self, message: Message, on_action: OnAction | None = None) -> bool:
        """Writing the line is the delivery: there is nowhere else to show it."""
        log.info(
            "notification",
            key=message.key,
            title=message.title,
            body=message.body,
            buttons={b.action: b.label for b in message.buttons},
            urgent=message.urgent,
        )
        return True

    async def aclose(self) -> None:
        """Nothing to release."""


# desktop-notifier logs a failed send (with its exception) instead of raising; while
# ``DesktopBackend.send`` runs, those records are collected here for its own log line.
_failures: ContextVar[list[BaseException | str] | None] = ContextVar(
    "watchdog_notify_failures", default=None
)


class _CollectSendFailures(logging.Filter):
    """Takes desktop-notifier's "Notification failed" warning back from the stdlib log."""

    def filter(self, record: logging.LogRecord) -> bool:
        sink = _failures.get()
        if sink is None or record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        sink.append(exc if exc is not None else record.getMessage())
        return False


def _collect_send_failures() -> None:
    # The logger ``DesktopNotifierBackend.send`` warns on: logger filters do not
    # apply to child loggers' records, so it has to be this exact one.
    base = logging.getLogger("desktop_notifier.backends.base")
    if not any(isinstance(f, _CollectSendFailures) for f in base.filters):
        base.addFilter(_CollectSendFailures())


class DesktopBackend:
    """desktop-notifier: D-Bus on Linux, the native centres on macOS and Windows.

    Create it on the loop that runs the scheduler: presses arrive as D-Bus
    signals read on that loop, and the buttons call back there.
    """

    name = "desktop"

    def __init__(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("DesktopBackend needs a running asyncio loop") from None
        _collect_send_failures()
        self._notifier = self._new_notifier()

    @staticmethod
    def _new_notifier() -> DesktopNotifier:
        from desktop_notifier import DesktopNotifier

        # app_icon=None: desktop-notifier's default icon is the Python logo.
        return DesktopNotifier(app_name=APP_NAME, app_icon=None)

    async def send(self, message: Message, on_action: OnAction | None = None) -> bool:
        """True once the notification server took it (desktop-notifier's "dispatched")."""
        from desktop_notifier import Button as DNButton
        from desktop_notifier import Urgency

        buttons = [
            # The action is the button's identifier too, so the server sees "keep:1h"
            # and "stop" as action keys (as with notify-send) instead of UUIDs.
            DNButton(
                title=b.label,
                identifier=b.action,
                on_pressed=functools.partial(_call_quietly, on_action, b.action, message.key),
            )
            for b in message.buttons
        ]
        dispatched = False

        def on_dispatched() -> None:
            nonlocal dispatched
            dispatched = True

        failures: list[BaseException | str] = []
        token = _failures.set(failures)
        try:
            await self._notifier.send(
                message.title,
                message.body,
                urgency=Urgency.Critical if message.urgent else Urgency.Normal,
                buttons=buttons,
                on_dispatched=on_dispatched,
            )
        except Exception as exc:  # it promises not to raise; a stop must never depend on that
            failures.append(exc)
        finally:
            _failures.reset(token)
        if dispatched:
            return True
        error = failures[-1] if failures else "not dispatched"
        log.warning(
            "notification not shown",
            backend=self.name,
            key=message.key,
            title=message.title,
            error=str(error) or repr(error),
        )
        await self._renew_if_broken()
        return False

    def _bus(self) -> MessageBus | None:
        """desktop-notifier's D-Bus connection (Linux); it offers no public handle or close."""
        from dbus_fast.aio import MessageBus

        bus = getattr(self._notifier._backend, "bus", None)
        return bus if isinstance(bus, MessageBus) else None

    async def _renew_if_broken(self) -> None:
        """After a failure, start afresh when the connection cannot recover.

        desktop-notifier connects once and keeps that connection for good: after
        the bus went away, or when the server was missing at its first message,
        every later send would fail too. A fresh notifier connects again on the
        next message. Nothing pending is lost: a dead connection delivers no
        presses, and a half-made one never showed anything.
        """
        bus = self._bus()
        if bus is None:
            return
        if bus.connected and getattr(self._notifier._backend, "interface", None) is not None:
            return  # the server refused this one message; the connection is fine
        await _disconnect(bus)
        self._notifier = self._new_notifier()

    async def aclose(self) -> None:
        bus = self._bus()
        if bus is not None:
            await _disconnect(bus)


async def _disconnect(bus: MessageBus) -> None:
    if bus.connected:
        bus.disconnect()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(bus.wait_for_disconnect(), PROBE_TIMEOUT)  # type: ignore[no-untyped-call]


class NotifySendBackend:
    """libnotify's ``notify-send`` with ``-A`` actions, for Linux without desktop-notifier.

    With actions, notify-send runs until the notification is answered or closed
    and then prints the chosen action: ``send`` only starts it, and a background
    task waits for the answer.
    """

    name = "notify-send"

    def __init__(self, command: str = "notify-send") -> None:
        found = shutil.which(command)
        if found is None:
            raise FileNotFoundError(f"{command} not found on PATH")
        self.command = found
        self._tasks: set[asyncio.Task[None]] = set()  # referenced, or the GC may drop them

    def argv(self, message: Message) -> list[str]:
        argv = [self.command, f"--app-name={APP_NAME}"]
        if message.urgent:
            argv += ["-u", "critical"]
        for b in message.buttons:
            argv += ["-A", f"{b.action}={b.label}"]
        return [*argv, "--", message.title, message.body]  # "--": a title may start with "-"

    async def send(self, message: Message, on_action: OnAction | None = None) -> bool:
        """True once notify-send runs: with actions it only exits when answered, so a
        failure it reports later is logged, not taken back."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(message),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning(
                "notification not shown",
                backend=self.name,
                key=message.key,
                title=message.title,
                error=str(exc),
            )
            return False
        task = asyncio.create_task(self._answer(proc, message, on_action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _answer(
        self, proc: asyncio.subprocess.Process, message: Message, on_action: OnAction | None
    ) -> None:
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            log.warning(
                "notification not shown",
                backend=self.name,
                key=message.key,
                title=message.title,
                error=err.decode(errors="replace").strip() or f"exit status {proc.returncode}",
            )
            return
        action = out.decode(errors="replace").strip()
        # Closed without a button: nothing printed. Act only on what was offered.
        if action in {b.action for b in message.buttons}:
            _call_quietly(on_action, action, message.key)

    async def aclose(self) -> None:
        """Ends the notify-send processes still waiting for an answer."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def choose(setting: str = "auto") -> Notifier:
    """The backend for ``[notify] backend``. It always returns one: the log works anywhere.

    ``auto`` takes the desktop where something can show the message, and says
    once, in the log, why it fell back to the log otherwise. A forced backend
    that cannot work falls back to the log with a warning instead of losing
    every message. Call it on the loop that will send (``DesktopBackend``).
    """
    if setting not in ("auto", "desktop", "notify-send", "log"):
        raise ValueError(f"unknown notification backend {setting!r}")
    if setting == "log":
        return LogBackend()
    if setting != "notify-send" and sys.platform in ("darwin", "win32"):
        if _desktop_notifier_importable():
            return DesktopBackend()
        return _fall_back(setting, "desktop-notifier is not installed")

    problem = await _session_problem()
    if problem is not None:
        return _fall_back(setting, *problem)
    if setting != "notify-send" and _desktop_notifier_importable():
        return DesktopBackend()
    if setting == "desktop":
        return _fall_back(setting, "desktop-notifier is not installed")
    if shutil.which("notify-send"):
        return NotifySendBackend()
    if setting == "notify-send":
        return _fall_back(setting, "notify-send is not on PATH")
    return _fall_back(setting, "neither desktop-notifier nor notify-send is installed")


def _fall_back(setting: str, why: str, detail: dict[str, str] | None = None) -> LogBackend:
    event = f"{why}: {TO_LOG}"
    if setting == "auto":
        log.info(event, **(detail or {}))
    else:
        log.warning(event, requested=setting, **(detail or {}))
    return LogBackend()


def _desktop_notifier_importable() -> bool:
    try:
        import desktop_notifier  # noqa: F401
    except ImportError:
        return False
    return True


def _session_address() -> str | None:
    """``DBUS_SESSION_BUS_ADDRESS``, else the per-user bus systemd and dbus-broker provide."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    if sys.platform == "win32":
        return None
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    socket = Path(runtime) / "bus"
    return f"unix:path={socket}" if socket.is_socket() else None


async def _session_problem() -> tuple[str, dict[str, str]] | None:
    """Why nothing on this session could show a notification, or None if something can."""
    address = _session_address()
    if address is None:
        return NO_BUS, {"reason": "DBUS_SESSION_BUS_ADDRESS is unset and no user bus socket"}
    try:
        from dbus_fast.aio import MessageBus
    except ImportError:  # desktop-notifier brings dbus-fast; notify-send will report for itself
        return None
    try:
        bus = await asyncio.wait_for(MessageBus(bus_address=address).connect(), PROBE_TIMEOUT)
    except Exception as exc:  # refused, missing socket, bad address, auth, timeout
        return NO_BUS, {"address": address, "error": str(exc) or type(exc).__name__}
    try:
        found = await asyncio.wait_for(_has_notifications(bus), PROBE_TIMEOUT)
    except Exception as exc:
        return NO_SERVICE, {"address": address, "error": str(exc) or type(exc).__name__}
    finally:
        await _disconnect(bus)
    if not found:
        return NO_SERVICE, {"address": address}
    # desktop-notifier's dbus-fast only reads the variable (libnotify would find the socket).
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
    return None


async def _has_notifications(bus: MessageBus) -> bool:
    """Someone owns the name now, or the bus can start it on the first message (activation)."""
    if await _ask_bus(bus, "NameHasOwner", "s", [NOTIFICATIONS_NAME]):
        return True
    return NOTIFICATIONS_NAME in await _ask_bus(bus, "ListActivatableNames", "", [])


async def _ask_bus(bus: MessageBus, member: str, signature: str, body: list[Any]) -> Any:
    from dbus_fast import Message as DBusMessage
    from dbus_fast import MessageType

    reply = await bus.call(
        DBusMessage(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member=member,
            signature=signature,
            body=body,
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"{member} failed: {reply.error_name if reply else 'no reply'}")
    return reply.body[0]
