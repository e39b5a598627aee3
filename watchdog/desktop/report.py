"""``idle-watchdog report``: the ledger of a window, as a table a person reads.

The window is ``--since`` (``30d``, a date, or an ISO-8601 time) to ``--until``
(a date counts whole: ``--until 2026-11-30`` ends at the end of that day).
``--json`` is ``core.ledger_report.report_json`` exactly. Unknown amounts
print as ``unknown``; a total missing one says ``partial``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from watchdog.core.ledger import Costs, Ledger
from watchdog.core.ledger_report import notes
from watchdog.core.timeutil import iso, parse_duration

DEFAULT_SINCE = "30d"
FORMS = "a duration back from now (30d, 12h), a date (2026-11-01) or a UTC time (2026-11-01T08:00)"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class WindowError(ValueError):
    """A ``--since``/``--until`` nobody can read; ``str()`` names the flag and the forms."""


def moment(flag: str, text: str, now: datetime, *, end_of_day: bool = False) -> datetime:
    """``--since``/``--until``'s value as a UTC time."""
    cleaned = text.strip()
    try:
        if _DATE.fullmatch(cleaned):
            day = datetime.strptime(cleaned, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            return day + timedelta(days=1) if end_of_day else day
        if cleaned[:1].isdigit() and "-" not in cleaned and ":" not in cleaned:
            if cleaned.isdigit():
                raise ValueError("no unit")
            return now - parse_duration(cleaned)
        value = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise WindowError(f"{flag} {text!r} is not a time: give {FORMS}") from exc


def window(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """The report's ``[since, until)``; raises ``WindowError`` naming the bad flag."""
    start = moment("--since", since or DEFAULT_SINCE, now)
    end = moment("--until", until, now, end_of_day=True) if until else now
    if start >= end:
        raise WindowError(
            f"--since {iso(start)} is not before --until {iso(end)}: give an earlier --since"
        )
    return start, min(end, now)


def _usd(amount: float | None) -> str:
    return "unknown" if amount is None else f"${amount:,.2f}"


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:,.1f}"


_HEAD = (
    "region",
    "id",
    "name",
    "type",
    "lifecycle",
    "running h",
    "idle h",
    "compute",
    "EBS",
    "IPv4",
    "total",
    "idle cost",
    "stops",
    "saved",
    "price/h (source)",
)


def _cells(c: Costs) -> list[str]:
    return [
        _hours(c.running_seconds),
        _hours(c.idle_seconds),
        _usd(c.compute_usd),
        _usd(c.ebs_usd),
        _usd(c.ipv4_usd),
        _usd(c.total_usd),
        _usd(c.idle_usd),
        str(c.stops_by_watchdog),
        _usd(c.saved_usd),
    ]


def summary(ledger: Ledger) -> str:
    """The totals in one sentence (the demo's last words, the table's first)."""
    t = ledger.totals()
    total = (t.compute_usd or 0.0) + (t.ebs_usd or 0.0) + (t.ipv4_usd or 0.0)
    partial = " (partial: some prices unknown)" if t.partial else ""
    return (
        f"{len(ledger.instances)} instances, {iso(ledger.since)} to {iso(ledger.until)}: "
        f"cost ${total:,.2f}{partial} (compute {_usd(t.compute_usd)}, EBS {_usd(t.ebs_usd)}, "
        f"IPv4 {_usd(t.ipv4_usd)}); idle time cost {_usd(t.idle_usd)}; "
        f"{t.stops_by_watchdog} stop{'' if t.stops_by_watchdog == 1 else 's'} by idle-watchdog "
        f"saved an estimated {_usd(t.saved_usd)}."
    )


def table(ledger: Ledger) -> str:
    """Per instance, then the totals, then how each figure was counted."""
    lines: list[Sequence[str]] = [_HEAD]
    for inst in ledger.instances:
        price = inst.price.usd_per_hour
        shown = "unknown" if price is None else f"${price:.4g}"
        lines.append(
            [
                inst.region,
                inst.id,
                inst.name or "-",
                inst.type,
                inst.lifecycle,
                *_cells(inst.total),
                f"{shown} ({inst.price.source})",
            ]
        )
    t = ledger.totals()
    total_cells = _cells(t)
    if t.partial:  # known amounts added up; say that they miss some
        total_cells = [c + (" partial" if c.startswith("$") else "") for c in total_cells]
    lines.append(["total", "", "", "", "", *total_cells, ""])
    widths = [max(len(row[i]) for row in lines) for i in range(len(_HEAD))]
    text = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in lines
    )
    return "\n".join([summary(ledger), "", text, "", *(f"- {n}" for n in notes(ledger))])
