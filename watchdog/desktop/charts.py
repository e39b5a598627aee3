"""The report page's charts, drawn by matplotlib to inline SVG.

Object-oriented ``Figure`` API only (no pyplot): no global figure registry, no
GUI backend, nothing left open after a chart is drawn. matplotlib is imported
lazily inside each function, so ``status`` and the daemon never pay its
import time. Each chart carries an SVG ``<title>`` and ``<desc>`` (and
``role="img"``) so a screen reader says what it shows.

Colours are the Okabe-Ito palette (readable with colour blindness), one
colour per meaning and no colour used twice on the page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from watchdog.core.ledger import Costs, InstanceRecord, Ledger

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

COMPUTE = "#0072B2"  # blue
EBS = "#E69F00"  # orange
IPV4 = "#CC79A7"  # reddish purple
RUNNING = "#56B4E9"  # sky blue
IDLE = "#D55E00"  # vermillion
STOPPED = "#DDDDDD"  # light grey: known, not billed
SPEND = "#333333"
SAVED = "#009E73"  # bluish green
STOP_MARK = "#000000"

_WIDTH_IN = 10.0
_NAMED_DAYS = 14  # up to this many daily bars, each is labelled with its date
#: About the timeline's width in pixels: a span shorter than window / PIXELS hardly
#: shows. Spans are drawn true to scale all the same (widening a 10-minute idle spell
#: to a pixel would draw a 90-day window as mostly idle); the caption says so.
PIXELS = 800
_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, searchable
    "text.parse_math": False,  # a "$" in an instance's name is a dollar, not TeX
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


_PATH_DATA = re.compile(r' (?:d|x|y)="[^"]*"')
_DECIMALS = re.compile(r"(\.\d)\d+")
_SPACES = re.compile(r"\s+")
_AROUND_COMMANDS = re.compile(r" ?([A-Za-z]) ?")


def _compact(attribute: str) -> str:
    """An SVG ``d``, ``x`` or ``y`` attribute cut to 0.1 pt (1/720 in; matplotlib writes
    1e-6) and without the spaces SVG does not need: the timelines' bytes are mostly
    path data and marker positions."""
    name, value = attribute.split("=", 1)
    value = _SPACES.sub(" ", _DECIMALS.sub(r"\1", value[1:-1]))
    value = _AROUND_COMMANDS.sub(r"\1", value).strip()
    return f'{name}="{value}"'


@dataclass(frozen=True)
class Chart:
    """One drawn chart: inline ``<svg>`` markup and the words that describe it."""

    svg: str
    title: str
    description: str


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _billed(state: str, hibernating: bool) -> bool:
    """As the ledger bills: ``running``, and ``stopping`` while hibernating."""
    return state == "running" or (state == "stopping" and hibernating)


def state_spans(
    record: InstanceRecord, since: datetime, until: datetime
) -> Iterator[tuple[datetime, datetime, bool]]:
    """(start, end, billed) spans of ``record`` within ``[since, until)``; the time
    before its first recorded change is unknown, so it has no span."""
    changes = sorted(record.changes, key=lambda c: c.at)
    for i, change in enumerate(changes):
        end = changes[i + 1].at if i + 1 < len(changes) else until
        lo, hi = max(change.at, since), min(end, until)
        if lo < hi:
            yield lo, hi, _billed(change.state, change.hibernating)


def _merge(
    spans: Iterator[tuple[datetime, datetime, bool]],
) -> list[tuple[datetime, datetime, bool]]:
    """Adjacent spans of the same kind as one (a running->running change is one run)."""
    out: list[tuple[datetime, datetime, bool]] = []
    for lo, hi, billed in spans:
        if out and out[-1][2] == billed and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi, billed)
        else:
            out.append((lo, hi, billed))
    return out


def idle_spans(
    record: InstanceRecord, running: Sequence[tuple[datetime, datetime]], until: datetime
) -> list[tuple[datetime, datetime]]:
    """Idle time the ledger counts: heartbeat idle spans within the running spans."""
    out = []
    for idle in record.idle:
        i_hi = idle.end if idle.end is not None else until
        for lo, hi in running:
            a, b = max(lo, idle.start), min(hi, i_hi)
            if a < b:
                out.append((a, b))
    return out


def _style() -> AbstractContextManager[None]:
    """The page's look, for one chart only: matplotlib's global rcParams stay as found."""
    import matplotlib

    return matplotlib.rc_context(_RC)  # type: ignore[arg-type]  # keys typed as Literal


def _svg(fig: Figure, key: str, title: str, description: str) -> str:
    """The figure as an inline ``<svg>`` element with a title and description."""
    import matplotlib

    buf = io.StringIO()
    # A salt per chart keeps the clip-path ids of several inline SVGs apart.
    with matplotlib.rc_context({"svg.hashsalt": key}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.DOTALL)
    text = _PATH_DATA.sub(lambda m: _compact(m.group()), text)
    head_end = text.index(">") + 1
    labels = (
        f'<title id="{key}-title">{escape(title)}</title>'
        f'<desc id="{key}-desc">{escape(description)}</desc>'
    )
    head = text[: head_end - 1] + (
        f' role="img" aria-labelledby="{key}-title" aria-describedby="{key}-desc">'
    )
    return head + labels + text[head_end:]


def _figure(height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(_WIDTH_IN, height_in), layout="constrained")


def _date_axis(ax: Axes, since: datetime, until: datetime) -> None:
    import matplotlib.dates as mdates

    ax.set_xlim(_days(since), _days(until))
    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _label(record: InstanceRecord, most: int = 48) -> str:
    """A row's label; a long name (tags hold 256 characters) is cut, the table has it."""
    label = f"{record.name} ({record.id})" if record.name else record.id
    return label if len(label) <= most else label[: most - 1] + "…"


def timelines(records: Sequence[InstanceRecord], ledger: Ledger) -> Chart:
    """One row per instance over the window: running, idle, stopped, and the
    watchdog's stops marked where they happened."""
    with _style():
        return _timelines(records, ledger)


def _timelines(records: Sequence[InstanceRecord], ledger: Ledger) -> Chart:
    since, until = ledger.since, ledger.until
    fig = _figure(0.9 + 0.32 * max(1, len(records)))
    ax = fig.add_subplot()
    base, origin = _days(since), _ts(since)

    def x(moment: datetime) -> float:  # matplotlib's date unit, without a call per instant
        return base + (_ts(moment) - origin) / 86_400

    # One compound path per colour: thousands of spans stay one SVG element each.
    bars: dict[str, list[tuple[float, float, float]]] = {STOPPED: [], RUNNING: [], IDLE: []}
    stops: list[tuple[float, float]] = []
    for row, record in enumerate(records):
        y = len(records) - 1 - row
        spans = _merge(state_spans(record, since, until))
        if spans:  # grey under all the known time; running and idle drawn over it
            bars[STOPPED].append((x(spans[0][0]), x(spans[-1][1]), y))
        running = [(lo, hi) for lo, hi, billed in spans if billed]
        bars[RUNNING] += [(x(lo), x(hi), y) for lo, hi in running]
        bars[IDLE] += [(x(lo), x(hi), y) for lo, hi in idle_spans(record, running, until)]
        stops += [(x(s), y) for s in record.watchdog_stops if since <= s < until]
    for color, rects in bars.items():
        if rects:
            ax.add_patch(_rectangles(rects, 0.35, color))
    if stops:  # a tick through the bar, and a triangle on its top edge
        xs, ys = [s[0] for s in stops], [s[1] for s in stops]
        ax.add_patch(_ticks(stops, 0.35, STOP_MARK))
        ax.plot(xs, [y + 0.35 for y in ys], ls="none", marker="v", ms=7, color=STOP_MARK)
    ax.set_yticks(range(len(records)), [_label(r) for r in reversed(records)])
    ax.set_ylim(-0.6, len(records) - 0.2)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    _date_axis(ax, since, until)
    _legend(
        ax,
        [
            ("Running", RUNNING, "s"),
            ("Idle (running, heartbeats idle)", IDLE, "s"),
            ("Stopped / not billed", STOPPED, "s"),
            ("Stopped by idle-watchdog", STOP_MARK, "v"),
        ],
    )
    title = "Timeline per instance"
    description = (
        f"{len(records)} instance(s) from {when(since)} to {when(until)}: when each ran, "
        f"was idle while running, or was stopped; {len(stops)} stop(s) by idle-watchdog "
        "are marked with a triangle."
    )
    return Chart(_svg(fig, "timeline", title, description), title, description)


def _rectangles(rects: Sequence[tuple[float, float, float]], half: float, color: str) -> Patch:
    """(x0, x1, row) bars of height ``2 * half`` as one filled compound path."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    vertices: list[tuple[float, float]] = []
    for x0, x1, y in rects:
        vertices += [(x0, y - half), (x1, y - half), (x1, y + half), (x0, y + half), (x0, y)]
    codes = [Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY] * len(rects)
    return PathPatch(Path(vertices, codes), facecolor=color, linewidth=0)


def _ticks(points: Sequence[tuple[float, float]], half: float, color: str) -> Patch:
    """Vertical ticks of height ``2 * half`` through (x, row) as one stroked path."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    vertices = [v for x, y in points for v in ((x, y - half), (x, y + half))]
    codes = [Path.MOVETO, Path.LINETO] * len(points)
    return PathPatch(Path(vertices, codes), fill=False, edgecolor=color, linewidth=1.2)


def _days(moment: datetime | date) -> float:
    """A date or instant in matplotlib's date unit (days since its epoch)."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(moment))  # type: ignore[no-untyped-call]


def _legend(ax: Axes, items: Sequence[tuple[str, str, str]]) -> None:
    """A legend row above the axes; a marker ``-`` or ``--`` draws a line instead."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], linestyle="--" if m == "--" else "-", linewidth=2, color=c, label=label)
        if m in ("-", "--")
        else Line2D([], [], linestyle="none", marker=m, markersize=9, color=c, label=label)
        for label, c, m in items
    ]
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncols=len(items),
        frameon=False,
        handletextpad=0.3,
        columnspacing=1.4,
    )


def when(moment: datetime) -> str:
    """An instant as the page writes it."""
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def daily_costs(ledger: Ledger) -> list[Costs]:
    """The fleet's figures per UTC day: known amounts add up, an unknown one makes the
    day partial."""
    from watchdog.core.ledger import add

    days: dict[object, Costs] = {}
    for inst in ledger.instances:
        for d in inst.days:
            days[d.day] = add(days.get(d.day, Costs(d.day)), d, known_only=True)
    return [days[k] for k in sorted(days, key=str)]


def cost_per_day(ledger: Ledger) -> Chart:
    """Bars per UTC day, stacked: compute, EBS, public IPv4."""
    with _style():
        return _cost_per_day(ledger)


def _cost_per_day(ledger: Ledger) -> Chart:
    days = daily_costs(ledger)
    x = [_days(d.day) for d in days if d.day is not None]
    compute = [d.compute_usd or 0.0 for d in days]
    ebs = [d.ebs_usd or 0.0 for d in days]
    ipv4 = [d.ipv4_usd or 0.0 for d in days]
    fig = _figure(3.0)
    ax = fig.add_subplot()
    bottom = [0.0] * len(days)
    for values, color in ((compute, COMPUTE), (ebs, EBS), (ipv4, IPV4)):
        ax.bar([d + 0.5 for d in x], values, width=0.8, bottom=bottom, color=color, linewidth=0)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    partial = [(xi, b) for xi, b, d in zip(x, bottom, days, strict=True) if d.partial]
    every_day = bool(partial) and len(partial) == len(days)
    if partial and not every_day:
        for at, top in partial:
            ax.text(at + 0.5, top, "?", ha="center", va="bottom", weight="bold", color=SPEND)
    ax.set_ylabel("USD per day")
    peak = max(bottom, default=0.0)
    ax.yaxis.set_major_formatter("${x:,.0f}" if peak >= 10 else "${x:,.2f}")
    ax.set_ylim(bottom=0)
    _date_axis(ax, ledger.since, ledger.until)
    if x:
        ax.set_xlim(x[0], x[-1] + 1.0)  # whole days, even when the window starts mid-day
    if len(x) <= _NAMED_DAYS:  # few bars: name each one's day under it
        named = [d.day for d in days if d.day is not None]
        ax.set_xticks([xi + 0.5 for xi in x], [f"{d:%a} {d:%b} {d.day}" for d in named])
        ax.tick_params(axis="x", length=0)
    items = [
        (f"Compute {fleet_amount(ledger, 'compute_usd')}", COMPUTE, "s"),
        (f"EBS {fleet_amount(ledger, 'ebs_usd')}", EBS, "s"),
        (f"Public IPv4 {fleet_amount(ledger, 'ipv4_usd')}", IPV4, "s"),
    ]
    if every_day:  # a mark on every bar says nothing: say it once
        items.append(("(every day leaves out an unknown amount)", SPEND, ""))
    elif partial:
        items.append(("(? a day that leaves out an unknown amount)", SPEND, ""))
    _legend(ax, items)
    title = "Cost per day, by compute, EBS and public IPv4"
    description = (
        f"{len(days)} UTC day(s); the costliest day came to {_usd(peak)}. Over the window: "
        f"compute {fleet_amount(ledger, 'compute_usd')}, EBS {fleet_amount(ledger, 'ebs_usd')}, "
        f"public IPv4 {fleet_amount(ledger, 'ipv4_usd')}."
        + (
            f" {len(partial)} day(s) leave out an unknown amount"
            + (" (marked ?)." if not every_day else ".")
            if partial
            else ""
        )
    )
    return Chart(_svg(fig, "perday", title, description), title, description)


def cumulative(ledger: Ledger) -> Chart:
    """Cumulative spend beside cumulative estimated savings, day by day."""
    with _style():
        return _cumulative(ledger)


def _cumulative(ledger: Ledger) -> Chart:
    days = [d for d in daily_costs(ledger) if d.day is not None]
    end = _days(ledger.until)  # each day's point at its end, the last at the window's
    x = [_days(ledger.since)] + [min(_days(d.day) + 1, end) for d in days if d.day is not None]
    spend, saved = [0.0], [0.0]
    for d in days:
        spend.append(spend[-1] + (d.total_usd or 0.0))
        saved.append(saved[-1] + (d.saved_usd or 0.0))
    fig = _figure(2.8)
    ax = fig.add_subplot()
    ax.plot(x, spend, color=SPEND, linewidth=2)
    ax.plot(x, saved, color=SAVED, linewidth=2, linestyle="--")
    ax.fill_between(x, saved, color=SAVED, alpha=0.15, linewidth=0)
    ax.set_ylabel("USD, cumulative")
    ax.yaxis.set_major_formatter("${x:,.0f}" if max(spend + saved) >= 10 else "${x:,.2f}")
    ax.set_ylim(bottom=0)
    _date_axis(ax, ledger.since, ledger.until)
    totals = ledger.totals()
    _legend(
        ax,
        [
            (f"Spent {_usd(spend[-1])}{' (known amounts)' if totals.partial else ''}", SPEND, "-"),
            (f"Saved by idle-watchdog (estimate) {_usd(saved[-1])}", SAVED, "--"),
        ],
    )
    title = "Cumulative spend beside cumulative estimated savings"
    description = (
        f"By {when(ledger.until)} the watched instances had cost {_usd(spend[-1])}"
        + (" (known amounts only)" if totals.partial else "")
        + f" and idle-watchdog's stops had saved an estimated {_usd(saved[-1])}."
    )
    return Chart(_svg(fig, "cumulative", title, description), title, description)


def fleet_amount(ledger: Ledger, key: str) -> str:
    """One amount of the whole fleet in words: "at least $x" when some instance's share
    is unknown, "unknown" when every one is."""
    values = [getattr(i.total, key) for i in ledger.instances]
    known = [v for v in values if v is not None]
    if not known and values:
        return "unknown"
    return ("at least " if len(known) < len(values) else "") + _usd(sum(known))


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"
