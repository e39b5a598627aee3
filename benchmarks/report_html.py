"""Time and size of the ``report --html`` page over a synthetic fleet history.

The history is ``benchmarks/ledger.py``'s (each instance works four days in
five, idle spells, watchdog stops, spot price changes, two volumes); the
ledger is built once and not timed. Timed: ``report_html.render`` (all three
charts, the table, the notes), median of ``--repeat`` runs, once with the
shipped timeline limit (the costliest 20), once with a timeline for every
instance, and once with the SVG as matplotlib writes it (no path-data
compaction), side by side in the same run. matplotlib's import is timed apart,
in a fresh interpreter, since ``render`` pays it once per process.

    python benchmarks/report_html.py                    # 200 instances, 90 days
    python benchmarks/report_html.py --instances 20 --days 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta

from ledger import END, history

from watchdog.core import ledger
from watchdog.core.ledger import InstanceRecord, Ledger
from watchdog.desktop import charts, report_html


def timed(built: Ledger, records: list[InstanceRecord], repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        page = report_html.render(built, records, END)
        times.append(time.perf_counter() - began)
        size = len(page.encode("utf-8"))
    return statistics.median(times), size


def import_seconds() -> float:
    code = (
        "import time; t = time.perf_counter(); import matplotlib.figure, matplotlib.dates; "
        "print(time.perf_counter() - t)"
    )
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(3)
    ]  # fmt: skip
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(12)
    records = [history(n, args.days, rng) for n in range(args.instances)]
    built = ledger.build(records, END - timedelta(days=args.days), END, END)
    report_html.render(built, records[:1], END)  # warm: matplotlib imported, fonts cached
    shipped = report_html.TIMELINE_LIMIT
    print(f"matplotlib import (fresh interpreter, median of 3): {import_seconds():.2f} s\n")
    print("| instances | days | timelines drawn | SVG path data | render (s) | page size (KiB) |")
    print("|---:|---:|---:|---|---:|---:|")
    limits = (shipped, args.instances) if args.instances > shipped else (shipped,)
    compact = charts._compact
    for limit, raw in [(n, False) for n in limits] + [(shipped, True)]:
        report_html.TIMELINE_LIMIT = limit
        if raw:  # the page as matplotlib writes its SVG (six decimals, spaces)
            charts._compact = lambda attribute: attribute
        seconds, size = timed(built, records, args.repeat)
        charts._compact = compact
        drawn = min(limit, args.instances)
        how = "as matplotlib writes it" if raw else "cut to 0.1 pt (shipped)"
        print(
            f"| {args.instances} | {args.days} | {drawn} | {how} | {seconds:.2f} "
            f"| {size / 1024:,.0f} |"
        )
    report_html.TIMELINE_LIMIT = shipped
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
