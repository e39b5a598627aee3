"""``report --reconcile``: the ledger's cost per day beside what AWS billed, and the gap.

Only ``--reconcile`` calls these functions: each run makes one Cost Explorer query
($0.01 a page), so a plain ``report`` never does. The JSON goes under its own
top-level key, ``"reconcile"``, added to the v1 document only when the flag is
given: ``report --json`` alone stays exactly version 1.

``reconcile`` is pure (ledger + answer + now -> dict); ``reconcile_json`` and
``reconcile_text`` make the one call and never raise for AWS's sake: a refusal is
one sentence in place of AWS's column.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from watchdog.aws.costexplorer import (
    CE_REGION,
    METRIC,
    SERVICES,
    USD_PER_REQUEST,
    Boto3CostExplorer,
    CostAnswer,
    CostExplorerError,
    window,
)
from watchdog.aws.ec2 import client_config
from watchdog.core.ledger import Costs, Ledger, add
from watchdog.core.settings import Config
from watchdog.core.timeutil import iso

PARTS = ("compute", "ebs", "ipv4")
#: Cost Explorer finalises a day 8 to 24 hours after it ends.
LAG = timedelta(hours=24)


class CostSource(Protocol):
    def daily_costs(self, start: date, end: date, regions: Sequence[str]) -> CostAnswer: ...


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ledger_days(ledger: Ledger) -> dict[date, Costs]:
    days: dict[date, Costs] = {}
    for inst in ledger.instances:
        for costs in inst.days:
            if costs.day is not None:
                days[costs.day] = add(days.get(costs.day, Costs(costs.day)), costs, known_only=True)
    return days


def _notes(regions: Sequence[str]) -> list[str]:
    where = ", ".join(regions) if regions else "every region"
    return [
        f"AWS: Cost Explorer GetCostAndUsage, daily {METRIC} in {where}, grouped by service: "
        + "; ".join(f"{part} = {service!r}" for service, part in SERVICES.items())
        + ".",
        "Cost Explorer lags 8 to 24 hours: a day that ended less than 24 hours ago, or that "
        "AWS marks estimated, is not final and its difference may still change.",
        "AWS counts every instance in these regions, the ledger only the watched ones. "
        "'EC2 - Other' also holds snapshots, NAT gateways and data transfer, and the VPC "
        "service other VPC charges; credits, Savings Plans and Reserved Instances lower "
        "AWS's figure below list price.",
        f"Each request costs ${USD_PER_REQUEST:.2f}; only --reconcile makes one.",
    ]


def reconcile(
    ledger: Ledger,
    answer: CostAnswer | str,
    *,
    now: datetime,
    regions: Sequence[str] = (),
) -> dict[str, Any]:
    """Per day: the ledger's amounts, AWS's, and ledger minus AWS. ``answer`` is AWS's
    figures, or the sentence saying why there are none."""
    ours = _ledger_days(ledger)
    error = answer if isinstance(answer, str) else None
    theirs: dict[date, dict[str, float]] = {}
    estimated: set[date] = set()
    if not isinstance(answer, str):
        for cost in answer.costs:
            theirs.setdefault(cost.day, {}).setdefault(cost.part, 0.0)
            theirs[cost.day][cost.part] += cost.usd
            if cost.estimated:
                estimated.add(cost.day)
    start, end = window(ledger.since, ledger.until)
    rows = []
    for n in range((end - start).days):
        day = start + timedelta(days=n)
        mine = ours.get(day, Costs(day))
        ledger_part = {"compute": mine.compute_usd, "ebs": mine.ebs_usd, "ipv4": mine.ipv4_usd}
        ledger_usd = {f"{p}_usd": _usd(ledger_part[p]) for p in PARTS}
        ledger_usd["total_usd"] = _usd(mine.total_usd)
        aws_usd = None
        difference = None
        if error is None:
            got = theirs.get(day, {})
            aws_usd = {f"{p}_usd": _usd(got.get(p, 0.0)) for p in PARTS}
            aws_usd["total_usd"] = _usd(sum(got.values()))
            if mine.total_usd is not None:
                difference = _usd(mine.total_usd - sum(got.values()))
        ended = datetime.combine(day + timedelta(days=1), datetime.min.time(), now.tzinfo)
        rows.append(
            {
                "day": day.isoformat(),
                "ledger": ledger_usd,
                "aws": aws_usd,
                "difference_usd": difference,
                "final": error is None and day not in estimated and now - ended >= LAG,
                "partial": mine.partial,
            }
        )
    return {
        "source": f"Cost Explorer GetCostAndUsage ({CE_REGION})",
        "totals": _totals(rows),
        "requests": 0 if isinstance(answer, str) else answer.requests,
        "error": error,
        "asked_at": iso(now),
        "days": rows,
        "notes": _notes(regions),
    }


def _totals(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    ours = [r["ledger"]["total_usd"] for r in rows]
    theirs = [r["aws"]["total_usd"] for r in rows if r["aws"] is not None]
    ledger_usd = None if None in ours else _usd(sum(ours))
    aws_usd = _usd(sum(theirs)) if len(theirs) == len(rows) else None
    difference = None
    if ledger_usd is not None and aws_usd is not None:
        difference = _usd(ledger_usd - aws_usd)
    return {"ledger_usd": ledger_usd, "aws_usd": aws_usd, "difference_usd": difference}


def _ask(ledger: Ledger, cfg: Config, explorer: CostSource | None) -> CostAnswer | str:
    source = explorer or Boto3CostExplorer(
        profile=cfg.aws.profile, boto_config=client_config(cfg.aws)
    )
    start, end = window(ledger.since, ledger.until)
    try:
        return source.daily_costs(start, end, cfg.aws.regions)
    except CostExplorerError as exc:
        return str(exc)


def reconcile_json(
    ledger: Ledger, cfg: Config, *, now: datetime, explorer: CostSource | None = None
) -> dict[str, Any]:
    """``{"reconcile": {...}}``, to add to the v1 document when ``--reconcile`` is given."""
    answer = _ask(ledger, cfg, explorer)
    return {"reconcile": reconcile(ledger, answer, now=now, regions=cfg.aws.regions)}


def _money(value: float | None, *, sign: bool = False) -> str:
    if value is None:
        return "unknown"
    text = f"${abs(value):,.2f}"
    if sign:
        return ("-" if value < -0.005 else "+") + text
    return text


def render_text(doc: dict[str, Any]) -> str:
    """The reconciliation as the terminal shows it: a row per day, then the notes."""
    lines = ["Reconciled with AWS Cost Explorer"]
    if doc["error"]:
        lines.append(f"  {doc['error']}")
    else:
        cost = doc["requests"] * USD_PER_REQUEST
        lines[0] += f" ({doc['requests']} request{'s' * (doc['requests'] != 1)}, ${cost:.2f})"
    lines.append(f"  {'day':<12}{'ledger':>12}{'AWS':>12}{'difference':>13}")
    for row in doc["days"]:
        aws = "—" if row["aws"] is None else _money(row["aws"]["total_usd"])
        mark = "" if row["final"] or row["aws"] is None else "  not final"
        partial = "  partial" if row["partial"] else ""
        difference = "—" if row["aws"] is None else _money(row["difference_usd"], sign=True)
        lines.append(
            f"  {row['day']:<12}{_money(row['ledger']['total_usd']):>12}{aws:>12}"
            f"{difference:>13}{mark}{partial}"
        )
    totals = doc["totals"]
    aws = "—" if totals["aws_usd"] is None else _money(totals["aws_usd"])
    difference = "—" if totals["aws_usd"] is None else _money(totals["difference_usd"], sign=True)
    lines.append(f"  {'total':<12}{_money(totals['ledger_usd']):>12}{aws:>12}{difference:>13}")
    lines += [f"  * {note}" for note in doc["notes"]]
    return "\n".join(lines) + "\n"


def reconcile_text(
    ledger: Ledger, cfg: Config, *, now: datetime, explorer: CostSource | None = None
) -> str:
    """The terminal's reconciliation; one Cost Explorer query."""
    return render_text(reconcile_json(ledger, cfg, now=now, explorer=explorer)["reconcile"])
