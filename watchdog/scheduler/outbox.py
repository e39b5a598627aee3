"""The outbox's delivery loop: send what is pending, mark what was delivered.

A message counts as told only once its notifier said it was shown; one that
could not be shown stays pending and is tried again at the next delivery (the
next pass, or the next start after a crash). Messages go oldest first, so a
warning recorded before a crash is shown before anything recorded after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

import structlog

from watchdog.scheduler.history import History, HistoryUnwritable
from watchdog.scheduler.notifier import Button, Message

log = structlog.get_logger("watchdog.scheduler.outbox")

#: Shows one message; True once it was delivered (shown, or written where no desktop exists).
Send = Callable[[Message], bool]
#: Told after a message's delivery was committed, with its delivery time (tags the instance).
OnSent = Callable[[Message, datetime], None]


@dataclass
class Delivery:
    sent: list[Message] = field(default_factory=list)
    failed: list[Message] = field(default_factory=list)


def deliver(
    store: History,
    send: Send,
    clock: Callable[[], datetime],
    *,
    on_sent: OnSent | None = None,
) -> Delivery:
    """Send every pending message; each result is committed before the next send.

    ``on_sent`` runs after a delivery is committed (``scheduler.coexist.tag_warned``
    writes the warning on the instance); its failure is logged and changes nothing.
    """
    out = Delivery()
    for outbox_id, message in store.pending():
        try:
            ok = send(message)
            error = "" if ok else "not delivered"
        except HistoryUnwritable:
            raise
        except Exception as exc:  # a notifier that breaks its promise never stops the rest
            ok, error = False, f"{type(exc).__name__}: {exc}"
        at = clock()
        with store.transaction():
            if ok:
                store.mark_sent(outbox_id, at)
            else:
                store.mark_failed(outbox_id, at, error)
        (out.sent if ok else out.failed).append(message)
        if ok and on_sent is not None:
            try:
                on_sent(message, at)
            except Exception:  # the message was delivered; a failed follow-up loses nothing
                log.exception("after-delivery step failed", key=message.key)
        if not ok:
            log.warning("notification pending, retried next pass", key=message.key, error=error)
    return out


def dumps(message: Message) -> str:
    return json.dumps(asdict(message), sort_keys=True)


def loads(text: str) -> Message:
    data = json.loads(text)
    data["buttons"] = tuple(Button(**b) for b in data.get("buttons", ()))
    return Message(**data)
