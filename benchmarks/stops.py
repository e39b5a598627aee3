"""Stopping many instances: one at a time (as the pass does today) versus batched.

On a moto server on loopback, N managed instances (500 by default) are
stopped twice over, side by side in one run, each time from a fresh set:

- one at a time: per instance a DescribeInstances re-read, a StopInstances
  and a CreateTags (the "stopped" tag), i.e. 3 calls per instance;
- batched: one DescribeInstances for all, one StopInstances and one
  CreateTags per 1,000 ids (``describe_many``, ``stop_many``, ``tag_many``).

Both must leave every instance stopping/stopped and tagged; the script checks.
Figures are wall time and HTTP requests (retries included) per strategy.

    python benchmarks/stops.py              # the table in docs/benchmarks.md
    python benchmarks/stops.py --count 50   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import boto3
import requests

from watchdog import log
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.aws.fake import moto_server
from watchdog.core.fleet import TAG_MANAGED, TAG_STOPPED

REGION = "us-east-1"
RESERVATION = 100  # instances per RunInstances call
STOPPED = {TAG_STOPPED: "2026-11-30T12:00:00Z by idle-watchdog: idle for 31m (threshold 30m)"}


def launch(count: int) -> list[str]:
    ec2 = boto3.client("ec2", region_name=REGION)
    ids: list[str] = []
    while len(ids) < count:
        n = min(RESERVATION, count - len(ids))
        answer = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=n,
            MaxCount=n,
            InstanceType="g5.xlarge",
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": TAG_MANAGED, "Value": "true"}]}
            ],
        )
        ids += [i["InstanceId"] for i in answer["Instances"]]
    return ids


def one_at_a_time(api: Boto3Ec2, ids: list[str]) -> None:
    for instance_id in ids:
        fresh = api.describe(REGION, instance_id)
        assert fresh is not None and fresh.state == "running"
        api.stop(REGION, instance_id, hibernate=False)
        api.tag(REGION, instance_id, STOPPED)


def batched(api: Boto3Ec2, ids: list[str]) -> None:
    fresh = api.describe_many(REGION, ids)
    assert len(fresh) == len(ids) and all(i.state == "running" for i in fresh.values())
    assert not any(api.stop_many(REGION, ids, hibernate=False).values())
    assert not any(api.tag_many(REGION, ids, STOPPED).values())


def check_all_stopped_and_tagged(ids: list[str]) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    seen = 0
    for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=ids):
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                assert inst["State"]["Name"] in ("stopping", "stopped"), inst["InstanceId"]
                assert tags.get(TAG_STOPPED) == STOPPED[TAG_STOPPED], inst["InstanceId"]
                seen += 1
    assert seen == len(ids)


def measure(
    endpoint: str, count: int, strategy: Callable[[Boto3Ec2, list[str]], None]
) -> tuple[float, int]:
    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
    ids = launch(count)
    api = Boto3Ec2()
    api.client(REGION).describe_availability_zones()  # warm the client (not counted below)
    before = api.calls(REGION)
    started = time.perf_counter()
    strategy(api, ids)
    elapsed = time.perf_counter() - started
    calls = api.calls(REGION) - before
    check_all_stopped_and_tagged(ids)
    return elapsed, calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="managed instances to stop")
    parser.add_argument("--repeats", type=int, default=3, help="runs per strategy (median)")
    args = parser.parse_args()
    log.configure(level=40)
    strategies = {"one at a time": one_at_a_time, "batched": batched}
    times: dict[str, list[float]] = {name: [] for name in strategies}
    calls: dict[str, int] = {}
    with moto_server() as endpoint:
        for _ in range(args.repeats):  # interleaved, so a busy spell hits both
            for name, strategy in strategies.items():
                elapsed, calls[name] = measure(endpoint, args.count, strategy)
                times[name].append(elapsed)
    base = statistics.median(times["one at a time"])
    print(f"{args.count} instances, median of {args.repeats}")
    print("| strategy | API calls | time (s) | speed-up |")
    print("|---|---:|---:|---:|")
    for name in strategies:
        median = statistics.median(times[name])
        print(f"| {name} | {calls[name]:,} | {median:.2f} | {base / median:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
