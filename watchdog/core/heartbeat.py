"""The ``idle-watchdog:heartbeat`` tag: the agent's ActivityReport squeezed into one tag.

Format, version 1 (at most 256 characters of letters, digits, space and
``+ - = . _ : / @ ?``)::

    v1 s=<sampled_at> a=<1|0|?> l=<last_active_at> r=<reason>+<reason>...

- ``s``: when the agent sampled, Unix seconds UTC.
- ``a``: ``1`` active, ``0`` idle, ``?`` unknown (a probe could not read; never idle).
- ``l``: the last moment anything counted as activity, Unix seconds UTC.
- ``r``: short reasons (``gpu:0``, ``kernel:1a2b3c4d``, ``tty:pts/0``); optional,
  ``+``-separated; any character but letters, digits and ``- . _ : / @``
  becomes ``_`` (so a reason can never add a field).
  Reasons are cut from the end to keep the tag within 256 characters.

Example: ``v1 s=1795440000 a=1 l=1795439990 r=gpu:0+kernel:1a2b3c4d``.
Unknown ``k=v`` fields are ignored, so version 1 can grow; another version is
refused. A field given twice is refused (which one the agent meant cannot be
known). Anything that does not parse is *no heartbeat* (the agent is treated
as silent), never an idle report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

VERSION = "v1"
MAX_LENGTH = 256
_UNSAFE = re.compile(r"[^A-Za-z0-9\-._:/@]")
_UNIX = re.compile(r"[0-9]{1,11}")
_STATES = {"1": True, "0": False, "?": None}
_CODES = {True: "1", False: "0", None: "?"}


class HeartbeatError(ValueError):
    """The tag is present but not a heartbeat this version understands."""


@dataclass(frozen=True)
class Heartbeat:
    sampled_at: datetime
    active: bool | None  # None: the agent could not tell (a probe failed)
    last_active_at: datetime
    reasons: tuple[str, ...] = ()


def encode(beat: Heartbeat) -> str:
    head = (
        f"{VERSION} s={_unix(beat.sampled_at)} a={_CODES[beat.active]} "
        f"l={_unix(beat.last_active_at)}"
    )
    reasons = [_UNSAFE.sub("_", r)[:64] for r in beat.reasons if r]
    while reasons:
        text = f"{head} r={'+'.join(reasons)}"
        if len(text) <= MAX_LENGTH:
            return text
        reasons.pop()
    return head


def decode(text: str) -> Heartbeat:
    tokens = text.strip().split(" ")
    if not tokens or tokens[0] != VERSION:
        raise HeartbeatError(f"unsupported heartbeat version {tokens[0][:16]!r}")
    if len(text) > MAX_LENGTH:
        raise HeartbeatError("longer than 256 characters")
    fields: dict[str, str] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise HeartbeatError(f"malformed field {token[:32]!r}")
        if key in fields:
            raise HeartbeatError(f"field {key[:16]!r} given twice")
        fields[key] = value
    try:
        active = _STATES[fields["a"]]
        sampled = _from_unix(fields["s"])
        last = _from_unix(fields["l"])
    except KeyError as exc:
        raise HeartbeatError(f"missing or bad field {exc.args[0]!r}") from exc
    if last > sampled:
        raise HeartbeatError("last activity after the sample time")
    reasons = tuple(r for r in fields.get("r", "").split("+") if r)
    return Heartbeat(sampled_at=sampled, active=active, last_active_at=last, reasons=reasons)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _from_unix(text: str) -> datetime:
    if not _UNIX.fullmatch(text):
        raise KeyError(text[:16])
    return datetime.fromtimestamp(int(text), tz=timezone.utc)
