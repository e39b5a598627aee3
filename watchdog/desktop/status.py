"""``status``: one row per watched instance and spot request, as data and as a table.

``survey`` is the one edge (a scan of every region now); the rest is pure.
Each instance shows its price per hour with the price's source (from a
``Rates``: the desktop's price book, else the table), and from the ledger
what it has cost today and this month (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from watchdog.config import Config
from watchdog.core import billing
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import TAG_HEARTBEAT, Instance, SpotRequest
from watchdog.core.ledger import Costs
from watchdog.core.policy import Action, Planned, plan
from watchdog.core.timeutil import human, iso
from watchdog.scheduler.rates import Rates, TableRates

if TYPE_CHECKING:
    from watchdog.aws.ec2 import Ec2Api
    from watchdog.scheduler.history import History


def survey(
    api: Ec2Api, history: History, cfg: Config, now: datetime, *, rates: Rates | None = None
) -> tuple[list[Planned], dict[str, str]]:
    """Every region scanned now, each target decided as the next pass would decide it.

    Returns the decisions and, by region, why a region could not be scanned. What
    ``status`` shows, and what the demo shows right after a pass acted.
    """
    from watchdog.aws.ec2 import scan_regions
    from watchdog.scheduler.passes import hourly_rates, with_warned_tags

    scans = scan_regions(api, cfg.aws.regions, cfg.aws.max_workers)
    dry = cfg.scheduler.dry_run
    told = history.last_told("warn", dry_run=dry)
    noticed = history.last_told("notice", dry_run=dry)
    rates = rates or TableRates(cfg)
    planned = []
    for s in scans:  # as the pass decides: with its prices, and another scheduler's warnings
        warned = with_warned_tags(told, s.instances, now, cfg)
        hourly = hourly_rates(rates, s.instances, now)
        planned += plan(
            s.instances, s.spot_requests, now, cfg, warned=warned, noticed=noticed, rates=hourly
        )
    return planned, {s.region: s.error for s in scans if s.error}


def family(instance_type: str) -> str:
    """``g5.xlarge`` -> ``g5``."""
    return instance_type.split(".", 1)[0]


#: (today, this month) per (region, id), as ``desktop.ledger.per_instance`` gives them.
SoFar = Mapping[tuple[str, str], tuple[Costs, Costs]]


def rows(
    planned: Sequence[Planned],
    now: datetime,
    cfg: Config,
    families: Sequence[str] = (),
    *,
    rates: Rates | None = None,
    so_far: SoFar | None = None,
) -> list[dict[str, Any]]:
    rates = rates or TableRates(cfg)
    out: list[dict[str, Any]] = []
    for item in planned:
        subject, d = item.subject, item.decision
        if isinstance(subject, Instance):
            if families and family(subject.type) not in families:
                continue
            row = _instance_row(subject, item, now, cfg)
            row.update(
                _money(subject, now, rates, (so_far or {}).get((subject.region, subject.id)))
            )
            out.append(row)
        elif isinstance(subject, SpotRequest):
            if families and family(subject.instance_type) not in families:
                continue
            out.append(
                {
                    "kind": "spot-request",
                    "region": subject.region,
                    "id": subject.id,
                    "type": subject.instance_type,
                    "lifecycle": subject.type,
                    "state": f"{subject.state}/{subject.status_code}",
                    "instance_id": subject.instance_id or None,
                    "next_action": _next(d.action, d.stop_at, cancel=True),
                    "reason": d.reason,
                }
            )
    return out


def _instance_row(inst: Instance, item: Planned, now: datetime, cfg: Config) -> dict[str, Any]:
    d = item.decision
    seconds = billing.billable_seconds(inst.state, inst.launch_time, now, inst.platform)
    running = inst.state == "running" and inst.launch_time is not None
    uptime = (now - inst.launch_time).total_seconds() if running and inst.launch_time else 0
    seen: str | None = None
    idle_since = d.idle_since
    try:
        if TAG_HEARTBEAT in inst.tags:
            beat = hb.decode(inst.tags[TAG_HEARTBEAT])
            seen = iso(beat.sampled_at)
            if idle_since is None and beat.active is False and running:
                idle_since = beat.last_active_at  # unmanaged or kept: idle all the same
    except hb.HeartbeatError:
        seen = "unreadable"
    return {
        "kind": "instance",
        "region": inst.region,
        "id": inst.id,
        "name": inst.name,
        "type": inst.type,
        "lifecycle": inst.lifecycle,
        "state": inst.state,
        "managed": inst.managed,
        "uptime_seconds": int(uptime),
        "billable_seconds": seconds,
        "idle_seconds": int((now - idle_since).total_seconds()) if idle_since else None,
        "agent_last_seen": seen,
        "next_action": _next(d.action, d.stop_at),
        "reason": d.reason,
    }


def _money(
    inst: Instance, now: datetime, rates: Rates, so_far: tuple[Costs, Costs] | None
) -> dict[str, Any]:
    """The hour's price with its source, and today's and this month's cost so far."""
    hourly = rates.hourly(inst, now)
    today, month = so_far if so_far is not None else (None, None)
    return {
        "price_per_hour": hourly.compute_usd,
        "price_source": hourly.price.source,
        "ebs_per_hour": hourly.ebs_usd,
        "ipv4_per_hour": hourly.ipv4_usd,
        "cost_today": _total(today),
        "cost_month": _total(month),
        "cost_partial": bool(today and today.partial) or bool(month and month.partial),
        "cost_so_far": billing.cost(
            billing.billable_seconds(inst.state, inst.launch_time, now, inst.platform),
            hourly.compute_usd,
        ),
    }


def _total(costs: Costs | None) -> float | None:
    """A day's or month's known total (``None``: nothing recorded, or unknown)."""
    if costs is None:
        return None
    parts = (costs.compute_usd, costs.ebs_usd, costs.ipv4_usd)
    known = [p for p in parts if p is not None]
    return round(sum(known), 4) if known else None


def _next(action: Action, at: datetime | None, *, cancel: bool = False) -> str | None:
    if action is not Action.NONE:
        return f"{action.value} now"
    if at is not None:
        return f"{'cancel' if cancel else 'stop'} at {iso(at)}"
    return None


_COLUMNS = (
    "region",
    "id",
    "name",
    "type",
    "lifecycle",
    "state",
    "uptime",
    "cost",
    "price/h",
    "today",
    "month",
    "idle",
    "agent seen",
    "next action",
    "why",
)
_WHY_WIDTH = 60


def table(data: Sequence[dict[str, Any]], now: datetime) -> str:
    """A fixed-width table a person can read in a terminal."""
    lines: list[list[str]] = [list(_COLUMNS)]
    for r in data:
        if r["kind"] == "instance":
            cost = "unknown" if r["cost_so_far"] is None else f"${r['cost_so_far']:.2f}"
            if r["state"] != "running":
                cost = "-"
            idle = human(timedelta(seconds=r["idle_seconds"])) if r["idle_seconds"] else "-"
            seen = r["agent_last_seen"]
            if seen and seen != "unreadable":
                seen = human(now - datetime.fromisoformat(seen.replace("Z", "+00:00"))) + " ago"
            uptime = human(timedelta(seconds=r["uptime_seconds"])) if r["uptime_seconds"] else "-"
            lines.append(
                [
                    r["region"],
                    r["id"],
                    r["name"] or "-",
                    r["type"],
                    r["lifecycle"],
                    r["state"],
                    uptime,
                    cost,
                    _price(r),
                    _usd(r["cost_today"], r["cost_partial"]),
                    _usd(r["cost_month"], r["cost_partial"]),
                    idle,
                    seen or "never",
                    _short(r["next_action"], now),
                    _why(r["reason"]),
                ]
            )
        else:
            lines.append(
                [
                    r["region"],
                    r["id"],
                    "-",
                    r["type"] or "-",
                    f"spot {r['lifecycle']}",
                    r["state"],
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    _short(r["next_action"], now),
                    _why(r["reason"]),
                ]
            )
    widths = [max(len(row[i]) for row in lines) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in lines
    )


def _price(row: dict[str, Any]) -> str:
    price = row["price_per_hour"]
    shown = "unknown" if price is None else f"${price:.4g}"
    return f"{shown} ({row['price_source']})"


def _usd(amount: float | None, partial: bool) -> str:
    if amount is None:
        return "unknown" if partial else "-"
    return f"${amount:.2f}" + (" partial" if partial else "")


def _why(reason: str) -> str:
    return reason if len(reason) <= _WHY_WIDTH else reason[: _WHY_WIDTH - 1] + "…"


def _short(next_action: str | None, now: datetime) -> str:
    if not next_action:
        return "-"
    verb, _, rest = next_action.partition(" at ")
    if not rest:
        return next_action
    at = datetime.fromisoformat(rest.replace("Z", "+00:00"))
    return f"{verb} in {human(at - now)}"
