"""What the scheduler tells a person, and the one interface every channel implements.

A ``Message`` is pure data (built by ``watchdog.scheduler.events``); a
``Notifier`` shows it: desktop bubbles in ``watchdog.desktop.notify``, other
channels elsewhere. Button presses call ``on_action(action_id)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

#: Called with the ``Button.action`` of the button the person pressed.
OnAction = Callable[[str], None]


@dataclass(frozen=True)
class Button:
    label: str  # "Keep 1 h"
    action: str  # "keep:1h" | "stop"


@dataclass(frozen=True)
class Message:
    key: str  # what this message is about, for the record: "warn:i-0abc", "stopped:i-0abc"
    title: str
    body: str
    buttons: tuple[Button, ...] = ()
    urgent: bool = False  # a stop is coming: shown as critical where the desktop allows
    target: str = ""  # the instance or request it concerns
    region: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Notifier(Protocol):
    """Shows messages. ``send`` returns once the message is shown, not when it is answered.

    ``send`` returns True when the message was delivered (shown by the desktop,
    or, where there is none, written to the log) and False when it was not; it
    never raises. The outbox keeps an undelivered message and tries it again:
    a stop waits for its warning to be *delivered*.
    """

    name: str

    async def send(self, message: Message, on_action: OnAction | None = None) -> bool: ...

    async def aclose(self) -> None:
        """Releases connections and processes; buttons still on screen stop acting."""
        ...
