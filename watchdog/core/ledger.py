"""The ledger: what each instance cost, per UTC day, and what the watchdog's stops saved.

Pure: a function of recorded facts and an explicit window, no clock, no I/O.
The facts are state changes (exact where ``LaunchTime`` and the time in
``StateTransitionReason`` give them, else the pass that saw them), attached
volumes, public IPv4 and Elastic IPs, the instance's price with its source,
spot price points, idle spans from heartbeats and the stops the watchdog made.

Billing follows AWS (``watchdog.core.billing``): only ``running`` is billed
(``stopping`` too while hibernating); per second with a 60 s minimum per start
on per-second platforms, else per started hour. A start's minimum, and each
started hour, belong to the day and window in which they begin. Spot compute
is the price in effect integrated over each second (an hourly platform pays
each hour at the price when it began). EBS accrues over each volume's whole
attachment, running or stopped, prorated over the calendar month; public IPv4
while running; Elastic IPs for as long as they are allocated. An unknown
price makes its amount ``None`` and the result ``partial``: never a guess.
Times are taken to the whole second, as AWS bills them.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from itertools import islice
from typing import Any

from watchdog.core import billing
from watchdog.core.costs import (
    IPV4_USD_PER_HOUR,
    Price,
    Volume,
    month_seconds,
    volume_month_usd,
)

#: ``[billing] savings_horizon_hours`` default. A saving runs from a stop until
#: the instance next starts, but nobody knows how long a forgotten machine
#: would really have run on. 24 h covers the common case, an idle machine
#: left for the night and noticed the next working day; a longer cap would
#: credit weeks to a machine simply no longer needed (whose owner would have
#: stopped it sooner), and a shorter one misses the overnight hours that are
#: the watchdog's main saving. It is an estimate, and the report says so.
DEFAULT_SAVINGS_HORIZON_HOURS = 24.0

_DAY = 86_400
_BILLED = "running"
_REASON_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


@dataclass(frozen=True)
class StateChange:
    """From ``at`` on, the instance is in ``state``.

    A change to ``running`` while already running continues the run (it may
    update ``public_ipv4``); a new start needs a non-billed change between.
    """

    at: datetime
    state: str
    public_ipv4: int = 0  # auto-assigned public IPv4 while running (Elastic IPs apart)
    hibernating: bool = False  # a hibernating ``stopping`` is billed


@dataclass(frozen=True)
class Observation:
    """What one scan saw of one instance."""

    at: datetime
    state: str
    launch_time: datetime | None = None  # LaunchTime: the start of the current run
    transition_time: datetime | None = None  # from StateTransitionReason, when it has one
    public_ipv4: int = 0
    hibernating: bool = False


@dataclass(frozen=True)
class Span:
    """A half-open time span; ``end`` None means still going."""

    start: datetime
    end: datetime | None = None


@dataclass(frozen=True)
class VolumeSpan:
    """A volume attached to the instance over ``span`` (billed whatever the state)."""

    volume: Volume
    span: Span


@dataclass(frozen=True)
class SpotPoint:
    """From ``at`` on, the spot price in the instance's zone (DescribeSpotPriceHistory)."""

    at: datetime
    usd_per_hour: float


@dataclass(frozen=True)
class InstanceRecord:
    """Everything the ledger knows about one instance."""

    region: str
    id: str
    type: str
    platform: str  # PlatformDetails; decides per-second or per-hour billing
    changes: tuple[StateChange, ...]  # sorted by time here; ties keep their given order
    on_demand: Price = field(default_factory=Price.unknown)
    lifecycle: str = "on-demand"  # on-demand | spot
    name: str = ""
    spot_prices: tuple[SpotPoint, ...] = ()  # used when lifecycle is spot
    volumes: tuple[VolumeSpan, ...] = ()
    elastic_ips: tuple[Span, ...] = ()  # each Elastic IP's allocation
    idle: tuple[Span, ...] = ()  # idle per the heartbeats
    watchdog_stops: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Costs:
    """One day's (or a whole window's) figures; ``None`` amounts are unknown."""

    day: date | None = None  # None for a total
    running_seconds: int = 0
    billed_seconds: int = 0
    idle_seconds: int = 0
    compute_usd: float | None = 0.0
    ebs_usd: float | None = 0.0
    ipv4_usd: float | None = 0.0
    idle_usd: float | None = 0.0
    saved_usd: float | None = 0.0
    stops_by_watchdog: int = 0
    partial: bool = False

    @property
    def total_usd(self) -> float | None:
        parts = (self.compute_usd, self.ebs_usd, self.ipv4_usd)
        return None if any(p is None for p in parts) else sum(p or 0.0 for p in parts)


_AMOUNTS = ("compute_usd", "ebs_usd", "ipv4_usd", "idle_usd", "saved_usd")
_COUNTS = ("running_seconds", "billed_seconds", "idle_seconds", "stops_by_watchdog")


def add(a: Costs, b: Costs, *, known_only: bool = False) -> Costs:
    """``a + b``; an unknown amount stays unknown unless ``known_only`` (then partial)."""
    values: dict[str, Any] = {k: getattr(a, k) + getattr(b, k) for k in _COUNTS}
    partial = a.partial or b.partial
    for key in _AMOUNTS:
        x, y = getattr(a, key), getattr(b, key)
        if x is None or y is None:
            partial = True
            values[key] = None if not known_only else (x or 0.0) + (y or 0.0)
        else:
            values[key] = x + y
    return Costs(a.day if a.day == b.day else None, partial=partial, **values)


@dataclass(frozen=True)
class InstanceLedger:
    region: str
    id: str
    name: str
    type: str
    lifecycle: str
    days: tuple[Costs, ...]  # one per UTC day of the window, in order
    total: Costs
    price: Price  # the compute price in effect at the window's end


@dataclass(frozen=True)
class Ledger:
    since: datetime
    until: datetime
    savings_horizon_hours: float
    instances: tuple[InstanceLedger, ...]

    def totals(self) -> Costs:
        """The fleet's sum: known amounts add up, and any unknown one makes it partial."""
        total = Costs()
        for inst in self.instances:
            total = add(total, inst.total, known_only=True)
        return total


# --- building state changes from what scans saw -------------------------------------


def parse_transition_time(reason: str) -> datetime | None:
    """The time in ``"User initiated (2026-11-30 10:00:00 GMT)"``; None when it has none."""
    found = _REASON_TIME.search(reason or "")
    if not found:
        return None
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


def state_changes(observations: Iterable[Observation]) -> tuple[StateChange, ...]:
    """Exact state changes from scans: a run starts at its ``LaunchTime``, a stop at the
    time in its ``StateTransitionReason``; without them, a change counts from the scan
    that saw it. A new ``LaunchTime`` while running means a stop nobody saw: the run
    counts as unbroken up to the new start (an upper bound), which starts afresh.
    """
    out: list[StateChange] = []
    last_launch: datetime | None = None
    for obs in sorted(observations, key=lambda o: o.at):
        running = obs.state == _BILLED
        exact = obs.launch_time if running else obs.transition_time
        at = min(exact, obs.at) if exact is not None else obs.at
        previous = out[-1] if out else None
        if previous is not None:
            at = max(at, previous.at)  # never before what is already known
        change = StateChange(at, obs.state, obs.public_ipv4 if running else 0, obs.hibernating)
        if previous is None or previous.state != obs.state:
            out.append(change)
        elif running:
            launch = obs.launch_time
            if launch is not None and last_launch is not None and launch > last_launch:
                out += [StateChange(at, "stopped"), change]
            elif previous.public_ipv4 != change.public_ipv4:
                out.append(replace(change, at=max(obs.at, previous.at)))
        if running and obs.launch_time is not None:
            last_launch = obs.launch_time
    return tuple(out)


# --- seconds and piecewise-constant prices -------------------------------------------


def _ts(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def _days(lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
    """``[lo, hi)`` cut at UTC midnights: (day start, piece start, piece end)."""
    while lo < hi:
        day = lo - lo % _DAY
        end = min(hi, day + _DAY)
        yield day, lo, end
        lo = end


class _Steps:
    """A price (USD/h) that changes at given seconds; ``None`` where unknown."""

    def __init__(self, points: Sequence[tuple[int, float | None]]):
        self.times = [t for t, _ in points]
        self.rates = [r for _, r in points]

    def at(self, t: int) -> float | None:
        i = bisect_right(self.times, t) - 1
        return self.rates[i] if i >= 0 else None

    def integral(self, lo: int, hi: int) -> float | None:
        """USD over ``[lo, hi)`` at the price in effect each second."""
        total = 0.0
        i = bisect_right(self.times, lo) - 1
        t = lo
        while t < hi:
            end = min(hi, self.times[i + 1]) if i + 1 < len(self.times) else hi
            rate = self.rates[i] if i >= 0 else None
            if rate is None:
                return None
            total += rate * (end - t) / 3600
            t, i = end, i + 1
        return total


def _compute_prices(record: InstanceRecord) -> tuple[_Steps, str]:
    if record.lifecycle == "spot":
        points = sorted((_ts(p.at), p.usd_per_hour) for p in record.spot_prices)
        return _Steps(points), ("spot-history" if points else "unknown")
    price = record.on_demand
    return _Steps([(-(2**62), price.usd_per_hour)]), price.source


def _current_price(record: InstanceRecord, steps: _Steps, source: str, at: int) -> Price:
    rate = steps.at(at)
    if rate is None:
        return Price.unknown()
    if record.lifecycle == "spot":
        i = bisect_right(steps.times, at) - 1
        stamp = datetime.fromtimestamp(steps.times[i], timezone.utc)
        return Price(rate, source, stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return record.on_demand


# --- the ledger ---------------------------------------------------------------------

_PieceFn = Callable[[int, int], "float | None"]


class _Days:
    """Per-day accumulators over the window: figures, and which amounts went unknown."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi
        self.values: dict[int, dict[str, float]] = {}
        self.unknown: dict[int, set[str]] = {}
        self.partial: set[int] = set()

    def put(self, at: int, key: str, value: float | None) -> None:
        """Add to the day of second ``at``, if it falls in the window."""
        if not self.lo <= at < self.hi:
            return
        day = at - at % _DAY
        if value is None:
            self.unknown.setdefault(day, set()).add(key)
        else:
            row = self.values.setdefault(day, {})
            row[key] = row.get(key, 0.0) + value

    def spread(self, lo: int, hi: int, key: str, per_piece: _PieceFn) -> None:
        """Add ``per_piece`` of each day's share of ``[lo, hi)`` within the window."""
        for _, a, b in _days(max(lo, self.lo), min(hi, self.hi)):
            self.put(a, key, per_piece(a, b))

    def result(self) -> tuple[Costs, ...]:
        out = []
        for day, _, _ in _days(self.lo, self.hi):
            row, unknown = self.values.get(day, {}), self.unknown.get(day, set())
            values: dict[str, Any] = {k: round(row.get(k, 0)) for k in _COUNTS}
            for key in _AMOUNTS:
                values[key] = None if key in unknown else row.get(key, 0.0)
            partial = bool(unknown) or day in self.partial
            stamp = datetime.fromtimestamp(day, timezone.utc).date()
            out.append(Costs(stamp, partial=partial, **values))
        return tuple(out)


def _seconds(lo: int, hi: int) -> float:
    return float(hi - lo)


def _per_address(count: int) -> Callable[[int, int], float]:
    return lambda lo, hi: count * (hi - lo) * IPV4_USD_PER_HOUR / 3600


def _avoidable(steps: _Steps, count: int) -> _PieceFn:
    """What a running second costs that a stop avoids: compute and public IPv4."""

    def piece(lo: int, hi: int) -> float | None:
        compute = steps.integral(lo, hi)
        return None if compute is None else compute + _per_address(count)(lo, hi)

    return piece


def _ebs(month_usd: float | None) -> _PieceFn:
    def piece(lo: int, hi: int) -> float | None:
        if month_usd is None:
            return None
        return month_usd * (hi - lo) / month_seconds(datetime.fromtimestamp(lo, timezone.utc))

    return piece


def _billed(change: StateChange) -> bool:
    return change.state == _BILLED or (change.state == "stopping" and change.hibernating)


_Run = list[tuple[int, int, int]]  # (start, end, public IPv4) segments of one billed run


def _runs(changes: Sequence[StateChange], now: int) -> list[_Run]:
    """Billed runs up to ``now``, whole (not cut at the window: minimums need the run)."""
    runs: list[_Run] = []
    changes = sorted(changes, key=lambda c: c.at)  # stable: ties keep their order
    for i, change in enumerate(changes):
        start = _ts(change.at)
        if start >= now:
            break
        if not _billed(change):
            continue
        end = min(now, _ts(changes[i + 1].at)) if i + 1 < len(changes) else now
        if i == 0 or not _billed(changes[i - 1]) or not runs:
            runs.append([])
        runs[-1].append((start, max(start, end), change.public_ipv4))
    return runs


def _gaps(
    running: list[tuple[int, int]], first: int, lo: int, hi: int
) -> Iterator[tuple[int, int]]:
    """The not-billed parts of ``[lo, hi)``; ``running`` is sorted and disjoint, and
    ``running[first]`` the first span ending after ``lo``."""
    t = lo
    for a, b in islice(running, first, None):
        if a >= hi:
            break
        if a > t:
            yield t, a
        t = max(t, b)
    if t < hi:
        yield t, hi


def _end(span: Span, now: int) -> int:
    return min(now, _ts(span.end)) if span.end is not None else now


def instance_ledger(
    record: InstanceRecord,
    since: datetime,
    until: datetime,
    now: datetime,
    *,
    savings_horizon_hours: float = DEFAULT_SAVINGS_HORIZON_HOURS,
) -> InstanceLedger:
    """One instance's costs per UTC day over ``[since, until)``, as known at ``now``."""
    end = _ts(now)
    lo, hi = min(_ts(since), end), min(_ts(until), end)
    days = _Days(lo, hi)
    steps, source = _compute_prices(record)
    runs = _runs(record.changes, end)
    segments = [seg for run in runs for seg in run]

    for run in runs:
        start, elapsed = run[0][0], run[-1][1] - run[0][0]
        if billing.per_second(record.platform):
            for a, b, _ in run:
                days.spread(a, b, "billed_seconds", _seconds)
                days.spread(a, b, "compute_usd", steps.integral)
            if elapsed < 60:  # the minimum belongs to the start's day
                days.put(start, "billed_seconds", 60 - elapsed)
                days.put(start, "compute_usd", steps.integral(start + elapsed, start + 60))
        else:  # each started hour at the price when it began
            for k in range(max(1, math.ceil(elapsed / 3600))):
                days.put(start + k * 3600, "billed_seconds", 3600)
                days.put(start + k * 3600, "compute_usd", steps.at(start + k * 3600))
    for a, b, count in segments:
        days.spread(a, b, "running_seconds", _seconds)
        days.spread(a, b, "ipv4_usd", _per_address(count))
    for eip in record.elastic_ips:
        days.spread(_ts(eip.start), _end(eip, end), "ipv4_usd", _per_address(1))
    for attached in record.volumes:
        monthly = volume_month_usd(attached.volume, record.region)
        v_lo, v_hi = _ts(attached.span.start), _end(attached.span, end)
        days.spread(v_lo, v_hi, "ebs_usd", _ebs(monthly.usd))
        if monthly.partial:
            days.partial.update(d for d, _, _ in _days(max(v_lo, lo), min(v_hi, hi)))
    ends = [b for _, b, _ in segments]
    for idle in record.idle:
        i_lo, i_hi = _ts(idle.start), _end(idle, end)
        for k in range(bisect_right(ends, i_lo), len(segments)):
            a, b, count = segments[k]
            if a >= i_hi:
                break
            if max(a, i_lo) < min(b, i_hi):
                days.spread(max(a, i_lo), min(b, i_hi), "idle_seconds", _seconds)
                days.spread(max(a, i_lo), min(b, i_hi), "idle_usd", _avoidable(steps, count))
    _savings(record, days, steps=steps, runs=runs, now=end, horizon_hours=savings_horizon_hours)

    per_day = days.result()
    total = Costs()
    for day in per_day:
        total = add(total, day)
    return InstanceLedger(
        region=record.region,
        id=record.id,
        name=record.name,
        type=record.type,
        lifecycle=record.lifecycle,
        days=per_day,
        total=total,
        price=_current_price(record, steps, source, max(lo, hi - 1)),
    )


def _savings(
    record: InstanceRecord,
    days: _Days,
    *,
    steps: _Steps,
    runs: list[_Run],
    now: int,
    horizon_hours: float,
) -> None:
    """Each watchdog stop saves what the instance would have cost running on: compute
    and public IPv4 from the stop until it next started, capped at the horizon."""
    segments = [seg for run in runs for seg in run]
    running = [(a, b) for a, b, _ in segments]
    begins, ends = [a for a, _ in running], [b for _, b in running]
    starts = [run[0][0] for run in runs]
    stops = sorted(_ts(s) for s in record.watchdog_stops)
    for n, stop in enumerate(stops):
        days.put(stop, "stops_by_watchdog", 1)
        cut = min(stop + int(horizon_hours * 3600), now)
        following = bisect_right(starts, stop)
        if following < len(starts):
            cut = min(cut, starts[following])
        if n + 1 < len(stops):
            cut = min(cut, stops[n + 1])
        last = bisect_right(begins, stop) - 1  # the last segment begun by the stop
        count = segments[last][2] if last >= 0 else 0
        for a, b in _gaps(running, bisect_right(ends, stop), stop, cut):
            days.spread(a, b, "saved_usd", _avoidable(steps, count))


def build(
    records: Iterable[InstanceRecord],
    since: datetime,
    until: datetime,
    now: datetime,
    *,
    savings_horizon_hours: float = DEFAULT_SAVINGS_HORIZON_HOURS,
) -> Ledger:
    """The ledger of every instance over ``[since, min(until, now))``."""
    end = min(until, now)
    start = min(since, end)
    instances = tuple(
        instance_ledger(r, start, end, now, savings_horizon_hours=savings_horizon_hours)
        for r in records
    )
    return Ledger(start, end, savings_horizon_hours, instances)


@dataclass(frozen=True)
class HourlyRates:
    """What an hour costs at one moment; ``stop_saves_usd`` is what stopping avoids."""

    compute_usd: float | None
    ipv4_usd: float  # auto-assigned addresses while running, plus Elastic IPs
    ebs_usd: float | None  # billed running or stopped
    stop_saves_usd: float | None  # compute and auto-assigned IPv4: what a stop avoids
    price: Price


def hourly_rates(record: InstanceRecord, at: datetime) -> HourlyRates:
    """The instance's cost per hour at ``at`` (for ``status`` and the stop notification),
    as if running; EBS at the rate of ``at``'s month."""
    t = _ts(at)
    steps, source = _compute_prices(record)
    compute = steps.at(t)
    runs = [c for c in record.changes if _ts(c.at) <= t and _billed(c)]
    public = runs[-1].public_ipv4 if runs else 0  # as of its latest run
    held = sum(1 for e in record.elastic_ips if _ts(e.start) <= t < _end(e, t + 1))
    ebs: float | None = 0.0
    for attached in record.volumes:
        if _ts(attached.span.start) <= t < _end(attached.span, t + 1):
            monthly = volume_month_usd(attached.volume, record.region).usd
            ebs = (
                None if monthly is None or ebs is None else ebs + monthly * 3600 / month_seconds(at)
            )
    ipv4 = (public + held) * IPV4_USD_PER_HOUR
    saves = None if compute is None else compute + public * IPV4_USD_PER_HOUR
    return HourlyRates(compute, ipv4, ebs, saves, _current_price(record, steps, source, t))
