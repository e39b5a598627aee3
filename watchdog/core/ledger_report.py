"""``report --json``, version 1: the ledger as other tools read it, with notes in words.

The shape is a promise: keys and their order stay put within a version, amounts
are USD rounded to 1/100 of a cent, and an unknown amount is ``null``.
"""

from __future__ import annotations

from typing import Any

from watchdog.core.costs import EBS_SOURCE, IPV4_USD_PER_HOUR
from watchdog.core.ledger import Ledger
from watchdog.core.timeutil import iso


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def notes(ledger: Ledger) -> list[str]:
    """How each figure was counted, in words the report prints beside it."""
    hours = f"{ledger.savings_horizon_hours:g}"
    out = [
        "Saved is an estimate: each stop made by idle-watchdog counts what the instance "
        "would have cost running on (compute and public IPv4, at the price in effect) from "
        f"the stop until it next started, at most {hours} h ([billing] "
        "savings_horizon_hours). EBS keeps billing while stopped, so it is not saved.",
        "Compute: only running time is billed, per second with a 60 s minimum per start "
        "(Linux, Windows, RHEL, Ubuntu Pro) or per started hour (other platforms); spot at "
        "the price in effect each second (DescribeSpotPriceHistory in the instance's zone).",
        "EBS: every attached volume by type, size, IOPS and throughput, running or stopped, "
        f"prorated over the calendar month ({EBS_SOURCE}).",
        f"Public IPv4: ${IPV4_USD_PER_HOUR}/h per address while running; Elastic IPs for as "
        "long as they are allocated.",
        "Idle: running time the instance's heartbeats reported idle, at its compute and "
        "public IPv4 cost.",
        "Start and stop times come from LaunchTime and StateTransitionReason where EC2 gives "
        "them, else from the pass that saw the change; a stop no pass saw counts as running.",
    ]
    if ledger.totals().partial:
        out.append(
            "Partial: some amounts are unknown (null) or incomplete (a magnetic volume's I/O "
            "requests), never guessed; totals add up only the known amounts."
        )
    return out


def report_json(ledger: Ledger) -> dict[str, Any]:
    """The ``report --json`` document, version 1 (its shape is a promise to other tools)."""
    instances = []
    for inst in ledger.instances:
        t = inst.total
        instances.append(
            {
                "region": inst.region,
                "id": inst.id,
                "name": inst.name,
                "type": inst.type,
                "lifecycle": inst.lifecycle,
                "running_seconds": t.running_seconds,
                "billed_seconds": t.billed_seconds,
                "idle_seconds": t.idle_seconds,
                "compute_usd": _usd(t.compute_usd),
                "ebs_usd": _usd(t.ebs_usd),
                "ipv4_usd": _usd(t.ipv4_usd),
                "total_usd": _usd(t.total_usd),
                "idle_usd": _usd(t.idle_usd),
                "stops_by_watchdog": t.stops_by_watchdog,
                "saved_usd": _usd(t.saved_usd),
                "price_per_hour": inst.price.usd_per_hour,
                "price_source": inst.price.source,
            }
        )
    totals = ledger.totals()
    return {
        "version": 1,
        "since": iso(ledger.since),
        "until": iso(ledger.until),
        "currency": "USD",
        "instances": instances,
        "totals": {
            "compute_usd": _usd(totals.compute_usd),
            "ebs_usd": _usd(totals.ebs_usd),
            "ipv4_usd": _usd(totals.ipv4_usd),
            "total_usd": _usd(totals.total_usd),
            "idle_usd": _usd(totals.idle_usd),
            "saved_usd": _usd(totals.saved_usd),
            "partial": totals.partial,
        },
        "notes": notes(ledger),
    }
