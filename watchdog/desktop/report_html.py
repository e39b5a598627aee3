"""``report --html PATH``: the ledger as one self-contained page a person reads.

Everything is inline (SVG charts, CSS; no script, font or image fetched), so
the file opens offline, from a mail attachment or a CI artifact alike. The
words say all the charts say, for readers who skip charts or cannot see
them: the totals sentence, the table per instance and the notes on how each
figure was counted. Every string that came from AWS (names, tags, ids) is
escaped: a tag value ``<script>`` is shown as text, never run.

Pure apart from matplotlib drawing in memory: a function of the ledger, the
records it was built from and an explicit ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from html import escape

from watchdog.core.ledger import Costs, InstanceLedger, InstanceRecord, Ledger
from watchdog.core.ledger_report import notes
from watchdog.core.timeutil import human
from watchdog.desktop import charts
from watchdog.desktop.charts import when

#: Timelines are drawn for at most this many instances, the costliest; the table
#: lists every one. 200 timelines would make a page 60 screens long that nobody
#: reads, and its SVG several megabytes; 20 rows fit one screen and cover where
#: the money goes.
TIMELINE_LIMIT = 20

_CSS = """
:root { color-scheme: light; --ink: #1d1d1f; --muted: #5b5b60; --rule: #d8d8dc; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid var(--rule);
  padding-bottom: 4px; }
.window { color: var(--muted); margin: 0 0 16px; }
.summary { font-size: 17px; margin: 0 0 8px; max-width: 62em; }
.partial { color: #a33a00; font-weight: 600; }
figure { margin: 16px 0 24px; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 14px; margin-top: 4px; max-width: 62em; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
caption { text-align: left; color: var(--muted); font-size: 14px; padding-bottom: 6px; }
th, td { padding: 5px 6px; border-bottom: 1px solid var(--rule); vertical-align: top; }
th { text-align: left; font-weight: 600; background: #f4f4f6; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafb; }
tfoot td { font-weight: 600; border-top: 2px solid var(--ink); }
.sub { color: var(--muted); font-size: 12px; }
td span { white-space: nowrap; }
td:first-child { min-width: 12em; }
.scroll { overflow-x: auto; }
.unknown { color: #a33a00; font-style: italic; }
ul.notes { padding-left: 20px; max-width: 62em; }
ul.notes li { margin-bottom: 6px; }
footer { margin-top: 32px; color: var(--muted); font-size: 13px; }
@media print { body { padding: 0; } figure, tr { break-inside: avoid; } }
"""


def render(ledger: Ledger, records: Sequence[InstanceRecord], now: datetime) -> str:
    """The report page for ``ledger`` (the money) and ``records`` (its timelines)."""
    ranked = sorted(ledger.instances, key=_spend, reverse=True)
    by_key = {(r.region, r.id): r for r in records}
    costliest = [by_key[(i.region, i.id)] for i in ranked if (i.region, i.id) in by_key]
    drawn = costliest[:TIMELINE_LIMIT]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>idle-watchdog report, {_date(ledger.since)} to {_date(ledger.until)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>What the watched instances cost, and what idle-watchdog saved</h1>",
        f'<p class="window">{when(ledger.since)} to {when(ledger.until)} · amounts in USD</p>',
        f'<p class="summary" id="summary">{summary(ledger)}</p>',
    ]
    if ledger.instances and ledger.until > ledger.since:
        parts.append("<h2>Charts</h2>")
        for chart, caption in (
            (charts.cost_per_day(ledger), _per_day_caption()),
            (charts.cumulative(ledger), _cumulative_caption()),
            (
                charts.timelines(drawn, ledger),
                _timeline_caption(len(drawn), len(ranked), ledger.until - ledger.since),
            ),
        ):
            parts.append(
                f"<figure>{chart.svg}<figcaption><strong>{escape(chart.title)}.</strong> "
                f"{escape(chart.description)} {caption}</figcaption></figure>"
            )
    parts += [
        "<h2>Per instance</h2>",
        _table(ranked, ledger),
        "<h2>How the figures were counted</h2>",
        '<ul class="notes">',
        *(f"<li>{escape(note)}</li>" for note in notes(ledger)),
        "</ul>",
        f"<footer>Written by idle-watchdog at {when(now)}. Prices are list prices; "
        "taxes, credits, savings plans and reserved instances are not applied.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def summary(ledger: Ledger) -> str:
    """The totals in one sentence (HTML, escaped), as the page opens with."""
    totals = ledger.totals()
    n = len(ledger.instances)
    if not n:
        return f"In the {_span(ledger)} to {when(ledger.until)} no watched instance was recorded."
    stops = totals.stops_by_watchdog
    text = (
        f"In the {_span(ledger)} to {when(ledger.until)}, "
        f"{f'the {n:,} watched instances' if n > 1 else 'the 1 watched instance'} "
        f"cost {'at least ' if totals.partial else ''}{_cell(totals.total_usd)} "
        f"(compute {_sum(ledger, 'compute_usd')}, "
        f"EBS {_sum(ledger, 'ebs_usd')}, public IPv4 {_sum(ledger, 'ipv4_usd')}); "
        f"idle time cost {_sum(ledger, 'idle_usd')}; "
        + (
            f"idle-watchdog's {stops:,} stop{'' if stops == 1 else 's'} saved an estimated "
            f"{_sum(ledger, 'saved_usd')}."
            if stops
            else "idle-watchdog made no stops in it; its earlier stops saved an estimated "
            f"{_sum(ledger, 'saved_usd')} in it."
            if totals.saved_usd
            else "idle-watchdog made no stops."
        )
    )
    if totals.partial:
        unknown = sum(1 for i in ledger.instances if i.total.partial)
        text += (
            f' <span class="partial">Partial: {unknown} instance{"" if unknown == 1 else "s"} '
            "had an unknown or incomplete price or rate, so the totals add up only the known "
            "amounts "
            "(never a guess).</span>"
        )
    return text


def _table(ranked: Sequence[InstanceLedger], ledger: Ledger) -> str:
    head = (
        "<tr><th>Instance</th><th class=n>Running h</th><th class=n>Idle h</th>"
        "<th class=n>Compute</th><th class=n>EBS</th><th class=n>Public IPv4</th>"
        "<th class=n>Total</th><th class=n>Idle cost</th><th class=n>Stops</th>"
        "<th class=n>Saved (est.)</th><th class=n>Price</th><th>Price source</th></tr>"
    )
    rows = [_row(inst) for inst in ranked]
    t = ledger.totals()
    foot = (
        f"<tr><td>All {len(ranked)}</td>{_figures(t)}<td class=n></td><td></td></tr>"
        if ranked
        else ""
    )
    return (
        '<div class="scroll"><table id="instances"><caption>Costliest first. "unknown": no '
        'price or rate is known, so none is guessed; "partial": the total leaves an unknown '
        "amount out."
        f"</caption><thead>{head}</thead><tbody>{''.join(rows)}</tbody>"
        f"<tfoot>{foot}</tfoot></table></div>"
    )


def _row(inst: InstanceLedger) -> str:
    name = escape(inst.name) if inst.name else f"<span>{escape(inst.id)}</span>"
    about = (inst.id, inst.region, inst.type, inst.lifecycle)[0 if inst.name else 1 :]
    detail = " · ".join(f"<span>{escape(x)}</span>" for x in about)
    price = inst.price
    rate = (
        '<span class="unknown">unknown</span>'
        if price.usd_per_hour is None
        else f"${price.usd_per_hour:,.4f}/h"
    )
    source = escape(price.source) + (
        f'<div class="sub">as of {_stamp(price.as_of)}</div>' if price.as_of else ""
    )
    return (
        f'<tr><td>{name}<div class="sub">{detail}</div></td>{_figures(inst.total)}'
        f"<td class=n>{rate}</td><td>{source}</td></tr>"
    )


def _stamp(as_of: str) -> str:
    """``2026-11-29T06:00:00Z`` as ``2026-11-29 06:00 UTC`` (wrapping between date and
    time); anything else as given."""
    try:
        moment = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    except ValueError:
        return escape(as_of)
    if moment.tzinfo is None or "T" not in as_of:
        return escape(as_of)
    return (
        f"<span>{moment:%Y-%m-%d}</span> <span>{moment.astimezone(timezone.utc):%H:%M} UTC</span>"
    )


def _figures(t: Costs) -> str:
    total = _cell(t.total_usd)
    if t.partial and t.total_usd is not None:
        total += '<div class="sub partial">partial</div>'
    cells = [
        f"{t.running_seconds / 3600:,.1f}",
        f"{t.idle_seconds / 3600:,.1f}",
        _cell(t.compute_usd),
        _cell(t.ebs_usd),
        _cell(t.ipv4_usd),
        total,
        _cell(t.idle_usd),
        str(t.stops_by_watchdog),
        _cell(t.saved_usd),
    ]
    return "".join(f"<td class=n>{c}</td>" for c in cells)


def _cell(value: float | None) -> str:
    return '<span class="unknown">unknown</span>' if value is None else f"${value:,.2f}"


def _sum(ledger: Ledger, key: str) -> str:
    amount = charts.fleet_amount(ledger, key)
    return '<span class="unknown">unknown</span>' if amount == "unknown" else amount


def _spend(inst: InstanceLedger) -> float:
    t = inst.total
    return sum(v or 0.0 for v in (t.compute_usd, t.ebs_usd, t.ipv4_usd))


def _span(ledger: Ledger) -> str:
    """The window's length as the summary says it: "30 days", "day", "6 hours"."""
    seconds = (ledger.until - ledger.since).total_seconds()
    value, unit = (seconds / 86_400, "day") if seconds >= 86_400 else (seconds / 3600, "hour")
    if value == 1:
        return unit
    return f"{value:.1f}".removesuffix(".0") + f" {unit}s"


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _per_day_caption() -> str:
    return (
        "Each bar is one UTC day of the whole fleet, stacked: compute (blue), EBS volumes "
        "(orange; billed while stopped too) and public IPv4 addresses (purple)."
    )


def _cumulative_caption() -> str:
    return (
        "The solid line adds up what was spent; the dashed line what idle-watchdog's stops "
        "saved, an estimate counted as the notes below say."
    )


def _timeline_caption(drawn: int, total: int, window: timedelta) -> str:
    rest = (
        f" Shown: the {drawn} costliest of {total} instances; the table lists every one."
        if drawn < total
        else ""
    )
    return (
        "Light blue: running; orange-red: idle while running (from its heartbeats); grey: "
        "stopped or otherwise not billed; blank: before the first recorded state. Drawn "
        f"to scale: a span shorter than about {human(window / charts.PIXELS)} hardly shows "
        f"(the table gives every instance's idle hours).{rest}"
    )
