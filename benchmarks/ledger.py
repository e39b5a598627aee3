"""Time and peak memory of the ledger and its JSON report over a synthetic fleet history.

Each instance works most days: started in the morning, idle spells from its
heartbeats, stopped in the evening (by the watchdog one day in three), with a
root volume and a data volume; a third are spot, their price changing every
three hours; one in ten holds an Elastic IP. Input building is not timed:
only ``ledger.build`` and ``ledger_report.report_json`` are, and tracemalloc's peak
is taken over the same calls in a separate run (it slows what it watches).

    python benchmarks/ledger.py                    # 200 instances, 90 days
    python benchmarks/ledger.py --instances 20 --days 30
    python benchmarks/ledger.py --history          # also from a real SQLite history

``--history`` writes the same fleet into a real SQLite history as the desktop
records it (observations a pass after each change, a new auto-assigned IPv4
at each start, volumes, idle spells, the watchdog's stops, spot points) and
times what ``idle-watchdog report`` does: read it into records and build the
ledger, then the JSON document, then the terminal table.
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


def write_history(path: str, records: list[InstanceRecord]) -> int:
    """The records as the desktop's history holds them; returns the rows written."""
    import sqlite3

    from watchdog.desktop.store import Store

    Store(path).close()  # the schema, at its current version
    seen = timedelta(minutes=2)  # a pass sees each change two minutes later

    def t(moment: datetime) -> str:
        return moment.isoformat(timespec="seconds")

    rows: dict[str, list[tuple[object, ...]]] = {k: [] for k in
        ("instances", "observations", "addresses", "volumes", "idle_spans", "actions",
         "spot_prices")}  # fmt: skip
    spot_keys: set[tuple[str, str]] = set()
    for r in records:
        first = r.changes[0].at
        zone = f"{r.region}a"
        rows["instances"].append((r.region, r.id, r.name, r.type, r.lifecycle, "stopped",
            None, t(first), t(END), 0.0, r.platform, zone, "", ""))  # fmt: skip
        for k, c in enumerate(r.changes):
            ip = f"10.{k // 250}.{k % 250}.1" if c.state == "running" else ""
            rows["observations"].append((t(c.at + seen), r.region, r.id, c.state,
                t(c.at) if ip else None, None if ip else t(c.at), ip, 0))  # fmt: skip
            rows["addresses"].append((t(c.at + seen), r.region, r.id, ip, int(bool(ip)),
                '["eipalloc-1"]' if r.elastic_ips else "[]"))  # fmt: skip
        for v in r.volumes:
            rows["volumes"].append((r.region, r.id, v.volume.id, v.volume.type,
                v.volume.size_gb, v.volume.iops, v.volume.throughput_mibps,
                t(v.span.start), None))  # fmt: skip
        rows["idle_spans"] += [(r.region, r.id, t(i.start), t(i.end or END)) for i in r.idle]
        rows["actions"] += [(t(s), r.region, r.id, "stop", 1, "idle", 0) for s in r.watchdog_stops]
        if r.lifecycle == "spot" and (r.region, zone) not in spot_keys:
            spot_keys.add((r.region, zone))
            rows["spot_prices"] += [(r.region, zone, r.type, r.platform, t(p.at),
                p.usd_per_hour) for p in r.spot_prices]  # fmt: skip
    named = {  # the columns version 3 added sit after the old ones: name them all
        "instances": "(region, id, name, type, lifecycle, state, launch_time, first_seen, "
        "last_seen, running_seconds, platform, zone, public_ip, state_reason)",
        "observations": "(at, region, id, state, launch_time, transition_time, public_ip, "
        "hibernating)",
    }
    with sqlite3.connect(path) as db:
        for table, values in rows.items():
            marks = ", ".join("?" * len(values[0]))
            sql = f"INSERT OR IGNORE INTO {table} {named.get(table, '')} VALUES ({marks})"  # noqa: S608
            db.executemany(sql, values)
    return sum(len(v) for v in rows.values())


def from_history(path: str, days: int, repeat: int) -> tuple[float, float, float, float]:
    """Median seconds of: read + ledger, JSON, table; and the peak MiB of all three."""
    from watchdog.config import Config
    from watchdog.desktop import ledger as desktop_ledger
    from watchdog.desktop import report
    from watchdog.desktop.store import Store

    store, cfg = Store(path), Config()

    def steps() -> list[float]:
        began = time.perf_counter()
        built = desktop_ledger.build_ledger(store, cfg, END - timedelta(days=days), END, END)
        read = time.perf_counter()
        ledger_report.report_json(built)
        json_done = time.perf_counter()
        report.table(built)
        return [read - began, json_done - read, time.perf_counter() - json_done]

    runs = [steps() for _ in range(repeat)]
    tracemalloc.start()
    steps()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.close()
    medians = [statistics.median(column) for column in zip(*runs, strict=True)]
    return medians[0], medians[1], medians[2], peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--history", action="store_true", help="also from a SQLite history")
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
    if args.history:
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "history.sqlite3")  # noqa: PTH118
            written = write_history(path, records)
            size = os.path.getsize(path) / 2**20  # noqa: PTH202
            read, json_s, table_s, mib = from_history(path, args.days, args.repeat)
        print()
        print("| instances | days | history rows | history (MiB) | read + ledger (s) "
              "| JSON (s) | table (s) | peak memory (MiB) |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {args.instances} | {args.days} | {written:,} | {size:.1f} | {read:.2f} "
            f"| {json_s:.3f} | {table_s:.3f} | {mib:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
