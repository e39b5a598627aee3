"""Two schedulers, one fleet: a warning delivered by either is written on the instance.

The desktop daemon and the cloud workers keep separate histories, so neither
knows what the other told. After a warning is *delivered*, its sender tags
the instance ``idle-watchdog:warned = "<warned>/<stop>"`` (ISO-8601 UTC);
both read it back here as a delivered warning at that time, so one never
warns again what the other warned, and neither stops before the stop time
the person was told. A tag that does not parse, or claims a warning in the
future, is ignored: this scheduler then warns by itself (never a stop).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_PREFIX, Instance
from watchdog.core.timeutil import iso, parse_iso

TAG_WARNED = TAG_PREFIX + "warned"
#: A warning never announces a stop further ahead than this (warn_minutes is far less).
MAX_NOTICE = timedelta(days=1)
#: How far ahead of our clock a warning time may be (another machine's clock).
CLOCK_SKEW = timedelta(minutes=2)


def encode(warned: datetime, stop: datetime) -> str:
    """The tag's value. Both rounded *up* to the second: never earlier than the truth."""
    return f"{iso(_ceil(warned))}/{iso(_ceil(stop))}"


def decode(value: str, now: datetime) -> tuple[datetime, datetime] | None:
    """(warned, stop), or None when the value is not a warning this clock can believe."""
    first, sep, second = value.strip().partition("/")
    if not sep:
        return None
    try:
        warned, stop = parse_iso(first), parse_iso(second)
    except (ValueError, OverflowError):
        return None
    if warned > now + CLOCK_SKEW or stop < warned or stop - warned > MAX_NOTICE:
        return None
    return warned, stop


def merged(
    warned: Mapping[str, datetime],
    instances: Iterable[Instance],
    now: datetime,
    *,
    warn_minutes: int,
    idle_minutes: int,
) -> dict[str, datetime]:
    """``warned`` (this scheduler's history) with the instances' warned tags folded in.

    The policy stops at ``warned + lead`` (lead = min(warn_minutes, the
    instance's idle minutes)); a tagged stop later than that moves the
    warning time later by the difference, so the stop waits for the tagged
    time. The later of the history's and the tag's warning wins.
    """
    out = dict(warned)
    for inst in instances:
        found = decode(inst.tags.get(TAG_WARNED, ""), now)
        if found is None:
            continue
        at, stop = found
        lead = timedelta(minutes=min(warn_minutes, _idle_minutes(inst, idle_minutes)))
        at = max(at, stop - lead)
        if inst.id not in out or out[inst.id] < at:
            out[inst.id] = at
    return out


def _idle_minutes(inst: Instance, default: int) -> int:
    """The instance's threshold; a tag that is not a whole number counts as the shortest
    (1 minute: the smallest lead, so the warning time moves latest)."""
    text = inst.tags.get(TAG_IDLE_MINUTES)
    if text is None:
        return default
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) >= 1 else 1


def _ceil(moment: datetime) -> datetime:
    trimmed = moment.replace(microsecond=0)
    return trimmed if trimmed == moment else trimmed + timedelta(seconds=1)
