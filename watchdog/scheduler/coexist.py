"""The sending side of coexistence: tag an instance once its warning was delivered.

Both shells pass ``tag_warned(api)`` as ``outbox.deliver``'s ``on_sent``; the
reading side is ``watchdog.core.coexist.merged`` in the pass.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog

from watchdog.aws.ec2 import AwsError, Ec2Api
from watchdog.core import coexist
from watchdog.core.timeutil import parse_iso
from watchdog.scheduler.notifier import Message

log = structlog.get_logger("watchdog.scheduler.coexist")

#: Where a warning message carries the stop time it announced (ISO-8601 UTC).
STOP_AT = "stop_at"

OnSent = Callable[[Message, datetime], None]


def stop_time(message: Message) -> datetime | None:
    """The stop a warning announced, or None (not a warning, or an older message)."""
    if not message.key.startswith("warn:") or STOP_AT not in message.extra:
        return None
    try:
        return parse_iso(message.extra[STOP_AT])
    except (ValueError, OverflowError):
        return None


def tag_warned(api: Ec2Api) -> OnSent:
    """``on_sent`` for ``deliver``: write ``idle-watchdog:warned`` on a warned instance.

    A failed tag is logged, never raised: the warning was delivered and this
    scheduler's own history has it; only the other scheduler would miss it.
    """

    def on_sent(message: Message, at: datetime) -> None:
        stop = stop_time(message)
        if stop is None or not message.target or not message.region:
            return
        try:
            api.tag(message.region, message.target, {coexist.TAG_WARNED: coexist.encode(at, stop)})
        except AwsError as exc:
            log.warning("warned tag not written", target=message.target, error=str(exc))

    return on_sent
