"""API calls and wall time of one scheduler pass, by fleet size and region count.

Runs the real pass (scan -> decide -> record; dry run, so moto's state stays
put between repeats) against a moto server on loopback, and, side by side in
the same run, the same pass over the same scans replayed from memory, which
is our own share (policy, SQLite history, one log line per decision). What
matters is that API calls grow with regions and pages, not with instances;
the scan times show what moto and botocore cost here, not what AWS would.

    python benchmarks/scan.py            # the table in docs/benchmarks.md
    python benchmarks/scan.py --quick    # 10 and 100 instances only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import requests

from watchdog import log
from watchdog.aws.ec2 import AwsError, Boto3Ec2, scan_regions
from watchdog.aws.fake import moto_server
from watchdog.config import Config
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_MANAGED, Instance, RegionScan, SpotRequest
from watchdog.desktop.store import Store
from watchdog.scheduler import run_pass

ALL_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1")
RESERVATION = 100  # instances per RunInstances call (moto pages by reservation)


def populate(regions: tuple[str, ...], per_region: int, now: datetime) -> None:
    idle = hb.encode(hb.Heartbeat(now, False, now - timedelta(minutes=5)))
    for region in regions:
        ec2 = boto3.client("ec2", region_name=region)
        left = per_region
        while left:
            count = min(RESERVATION, left)
            tags: list[Any] = [
                {"Key": TAG_MANAGED, "Value": "true"},
                {"Key": TAG_HEARTBEAT, "Value": idle},
            ]
            ec2.run_instances(
                ImageId="ami-12c6146b",
                MinCount=count,
                MaxCount=count,
                InstanceType="g5.xlarge",
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )
            left -= count


class Replay:
    """An ``Ec2Api`` double answering scans from memory: times our side of a pass alone."""

    def __init__(self, scans: list[RegionScan]):
        self.scans = {s.region: s for s in scans}

    def scan(self, region: str) -> RegionScan:
        return self.scans[region]

    def describe(self, region: str, instance_id: str) -> Instance | None:
        return next((i for i in self.scans[region].instances if i.id == instance_id), None)

    def spot_request(self, region: str, instance_id: str) -> SpotRequest | None:
        requests = self.scans[region].spot_requests
        return next((r for r in requests if r.instance_id == instance_id), None)

    def stop(self, region: str, instance_id: str, *, hibernate: bool = False) -> None:
        raise AssertionError("dry run")

    def cancel_spot_requests(self, region: str, request_ids: Sequence[str]) -> None:
        raise AssertionError("dry run")

    def tag(self, region: str, resource_id: str, tags: Mapping[str, str]) -> None:
        raise AssertionError("dry run")

    def untag(self, region: str, resource_id: str, keys: Sequence[str]) -> None:
        raise AssertionError("dry run")

    def describe_many(self, region: str, ids: Sequence[str]) -> dict[str, Instance]:
        return {i.id: i for i in self.scans[region].instances if i.id in ids}

    def stop_many(
        self, region: str, ids: Sequence[str], *, hibernate: bool = False
    ) -> dict[str, AwsError | None]:
        raise AssertionError("dry run")

    def tag_many(
        self, region: str, ids: Sequence[str], tags: Mapping[str, str]
    ) -> dict[str, AwsError | None]:
        raise AssertionError("dry run")


def measure(
    endpoint: str, regions: tuple[str, ...], per_region: int, repeats: int
) -> dict[str, float]:
    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
    now = datetime.now(timezone.utc)
    populate(regions, per_region, now)
    cfg = replace(Config(), aws=replace(Config().aws, regions=regions))
    api = Boto3Ec2()
    scan_regions(api, regions)  # warm the clients
    scan_times, pass_times, core_times, calls = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "h.sqlite3")
        for i in range(repeats):
            at = now + timedelta(minutes=2 + i)
            started = time.perf_counter()
            scans = scan_regions(api, regions)
            scan_times.append(time.perf_counter() - started)
            calls.append(sum(s.api_calls for s in scans))
            started = time.perf_counter()
            report = run_pass(api, store, cfg, at, dry_run=True)
            pass_times.append(time.perf_counter() - started)
            assert not report.failed_regions
            assert len(report.planned) == per_region * len(regions)
            started = time.perf_counter()
            run_pass(Replay(scans), store, cfg, at, dry_run=True)
            core_times.append(time.perf_counter() - started)
        store.close()
    return {
        "calls": statistics.median(calls),
        "scan": statistics.median(scan_times),
        "pass": statistics.median(pass_times),
        "core": statistics.median(core_times),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1,000-instance rows")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    log.configure(level=40)  # errors only: the pass logs one line per decision
    sizes = (10, 100) if args.quick else (10, 100, 1000)
    rows = []
    with moto_server() as endpoint:
        for n_regions in (1, 4):
            for size in sizes:
                regions = ALL_REGIONS[:n_regions]
                result = measure(endpoint, regions, size, args.repeats)
                rows.append((n_regions, size, result))
    print(
        "| regions | instances per region | API calls per pass | scan (s) "
        "| decide + record (s) | whole pass (s) | our share of the pass |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n_regions, size, r in rows:
        print(
            f"| {n_regions} | {size} | {r['calls']:.0f} | {r['scan']:.3f} | {r['core']:.3f} "
            f"| {r['pass']:.3f} | {r['core'] / r['pass']:.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
