"""Time and peak memory of the ledger and its JSON report over a synthetic fleet history.

Each instance works most days: started in the morning, idle spells from its
heartbeats, stopped in the evening (by the watchdog one day in three), with a
root volume and a data volume; a third are spot, their price changing every
three hours; one in ten holds an Elastic IP. Input building is not timed:
only ``ledger.build`` and ``ledger_report.report_json`` are, and tracemalloc's peak
is taken over the same calls in a separate run (it slows what it watches).

    python benchmarks/ledger.py                    # 200 instances, 90 days
    python benchmarks/ledger.py --instances 20 --days 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

from watchdog.core import ledger, ledger_report
from watchdog.core.costs import Price, Volume
from watchdog.core.ledger import InstanceRecord, Span, SpotPoint, StateChange, VolumeSpan

END = datetime(2026, 11, 30, tzinfo=timezone.utc)


def history(n: int, days: int, rng: random.Random) -> InstanceRecord:
    start = END - timedelta(days=days)
    spot = n % 3 == 0
    changes: list[StateChange] = [StateChange(start, "stopped")]
    idle: list[Span] = []
    stops: list[datetime] = []
    for d in range(days):
        if rng.random() < 0.2:
            continue  # a day off
        day = start + timedelta(days=d)
        up = day + timedelta(hours=rng.uniform(7, 10))
        down = day + timedelta(hours=rng.uniform(17, 23))
        changes.append(StateChange(up, "running", public_ipv4=1))
        for _ in range(rng.randint(1, 4)):
            begin = up + timedelta(seconds=rng.uniform(0, (down - up).total_seconds() - 1800))
            idle.append(Span(begin, begin + timedelta(minutes=rng.uniform(5, 30))))
        changes.append(StateChange(down, "stopped"))
        if d % 3 == 0:
            stops.append(down)
    points = tuple(
        SpotPoint(start + timedelta(hours=3 * k), round(rng.uniform(0.3, 0.6), 4))
        for k in range(days * 8)
    )
    volumes = (
        VolumeSpan(Volume(f"vol-r{n}", "gp3", 100), Span(start - timedelta(days=30))),
        VolumeSpan(Volume(f"vol-d{n}", "gp3", 500, 6000, 250), Span(start - timedelta(days=30))),
    )
    return InstanceRecord(
        region=("us-east-1", "us-west-2", "eu-west-1")[n % 3],
        id=f"i-{n:017x}",
        type="g5.xlarge",
        platform="Linux/UNIX",
        changes=tuple(changes),
        on_demand=Price(1.006, "bundled"),
        lifecycle="spot" if spot else "on-demand",
        spot_prices=points if spot else (),
        volumes=volumes,
        elastic_ips=(Span(start),) if n % 10 == 0 else (),
        idle=tuple(sorted(idle, key=lambda s: s.start)),
        watchdog_stops=tuple(stops),
    )


def run(records: list[InstanceRecord], days: int) -> int:
    built = ledger.build(records, END - timedelta(days=days), END, END)
    return len(ledger_report.report_json(built)["instances"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(12)
    records = [history(n, args.days, rng) for n in range(args.instances)]
    changes = sum(len(r.changes) for r in records)
    spans = sum(len(r.idle) for r in records)
    points = sum(len(r.spot_prices) for r in records)
    times = []
    for _ in range(args.repeat):
        began = time.perf_counter()
        run(records, args.days)
        times.append(time.perf_counter() - began)
    tracemalloc.start()
    run(records, args.days)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    median = statistics.median(times)
    print("| instances | days | state changes | idle spans | spot points | ledger + JSON (s) "
          "| per instance-day (µs) | peak memory (MiB) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.instances} | {args.days} | {changes:,} | {spans:,} | {points:,} "
        f"| {median:.2f} | {median / (args.instances * args.days) * 1e6:.0f} "
        f"| {peak / 2**20:.1f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
