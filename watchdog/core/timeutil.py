"""Durations and instants as people type and read them ("2h", "1h30m", "42m")."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_PART = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
#: Nothing here needs more than ten years; far more would overflow datetimes.
MAX_DURATION_SECONDS = 3650 * 86400


def parse_duration(text: str) -> timedelta:
    """``"2h"``, ``"90m"``, ``"1h30m"``, ``"1d"``; a bare number means minutes."""
    cleaned = text.strip().lower().replace(" ", "")
    if cleaned.isascii() and cleaned.isdigit():
        cleaned += "m"
    parts = _PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"not a duration: {text!r} (try 30m, 2h, 1h30m, 1d)")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"too long: {text!r} (at most {MAX_DURATION_SECONDS // 86400} days)")
    return timedelta(seconds=seconds)


def human(delta: timedelta) -> str:
    """Short and exact enough to act on: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, to the second: the form every tag and report uses."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Accepts ``Z`` or an offset, with or without fractions; naive means UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
