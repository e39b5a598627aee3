"""Every policy over every trace, side by side in one run: false stops and waste.

    python benchmarks/policy.py                       # the shared traces and ours (tests/traces)
    python benchmarks/policy.py path/to/*.jsonl       # any idle-trace/1 files
    python benchmarks/policy.py --speed               # also: 100 traces of 24 h, timed

Waste is billed idle time beyond each trace's threshold, as
``tests/traces/shared/`` README defines it; a false stop is a stop during
work (lost work). The ratio column is each policy's waste over
idle-watchdog's (infinite where ours is zero and theirs is not).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from watchdog.sim.simulate import POLICIES, Result, simulate
from watchdog.sim.trace import Trace, load

ROOT = Path(__file__).resolve().parent.parent


def table(results: dict[str, list[Result]]) -> str:
    ours = sum(r.waste_seconds or 0.0 for r in results["idle-watchdog"])
    lines = [
        "| policy | traces | false stops | waste (min) | waste ($) | waste vs idle-watchdog |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for policy, rows in results.items():
        waste = sum(r.waste_seconds or 0.0 for r in rows)
        dollars = sum(r.waste_usd or 0.0 for r in rows)
        falses = sum(1 for r in rows if r.false_stop)
        if policy == "idle-watchdog":
            ratio = "1x"
        elif ours:
            ratio = f"{waste / ours:.1f}x"
        else:
            ratio = "∞" if waste else "0"
        lines.append(
            f"| {policy} | {len(rows)} | {falses} | {waste / 60:.1f} | {dollars:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def per_trace(results: dict[str, list[Result]]) -> str:
    policies = list(results)
    lines = ["| trace | " + " | ".join(policies) + " |", "|---|" + "---:|" * len(policies)]
    for i, first in enumerate(results[policies[0]]):
        cells = []
        for policy in policies:
            r = results[policy][i]
            mark = "**FALSE STOP**" if r.false_stop else f"{(r.waste_seconds or 0) / 60:.0f} min"
            cells.append(mark)
        lines.append(f"| {first.trace} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def synthetic_day(seed: int) -> Trace:
    """24 h of one-minute samples: random work spells (GPU, CPU, typing) and idle gaps."""
    rng = random.Random(seed)
    raw: list[dict[str, Any]] = []
    work: list[bool | None] = []
    t, busy = 0, True
    while t < 24 * 3600:
        span = rng.randint(10, 240) * 60
        for s in range(t, min(t + span, 24 * 3600), 60):
            line: dict[str, Any] = {
                "gpus": [
                    {"util": rng.randint(60, 99) if busy else 0, "mem_used_mib": 9000, "procs": 1}
                ],
                "cpu_percent": 25.0 if busy else 0.8,
                "processes": [{"name": "python", "user": "ubuntu", "cpu_percent": 100.0}]
                if busy
                else [],
                "kernels": [
                    {
                        "id": "k1",
                        "execution_state": "busy" if busy else "idle",
                        "last_activity": s if busy else max(0, t - 60),
                        "connections": 1,
                    }
                ],
                "terminals": [],
                "ssh": [{"tty": "pts/0", "user": "ubuntu", "idle_seconds": 5 if busy else 900}],
                "net_bytes_per_s": {"rx": 900.0, "tx": 700.0},
                "disk_bytes_per_s": {"read": 0.0, "write": 4096.0},
            }
            raw.append(line)
            work.append(busy)
        t += span
        busy = not busy
    name = f"synthetic-{seed}"
    header: dict[str, Any] = {
        "format": "idle-trace/1",
        "name": name,
        "idle_minutes": 30,
        "sample_seconds": 60,
        "instance": {"type": "g5.xlarge", "lifecycle": "on-demand", "price_per_hour": 1.006},
    }
    return Trace(name, header, tuple(range(0, len(raw) * 60, 60)), tuple(raw), tuple(work))


def speed(count: int = 100) -> None:
    traces = [synthetic_day(seed) for seed in range(count)]
    samples = sum(len(t.times) for t in traces)
    started = time.perf_counter()
    for trace in traces:
        simulate(trace, "idle-watchdog")
    elapsed = time.perf_counter() - started
    print(
        f"\nsimulate (idle-watchdog) over {count} traces of 24 h ({samples:,} samples): "
        f"{elapsed:.2f} s, {elapsed / samples * 1e6:.1f} µs per sample"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="*", type=Path)
    parser.add_argument("--speed", action="store_true", help="also time 100 traces of 24 h")
    args = parser.parse_args()
    paths = args.traces or sorted((ROOT / "tests" / "traces").rglob("*.jsonl"))
    traces = [load(p) for p in paths]
    results = {policy: [simulate(t, policy) for t in traces] for policy in POLICIES}
    print(table(results))
    print()
    print(per_trace(results))
    if args.speed:
        speed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
