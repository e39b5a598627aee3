"""A full pass against a real moto server over HTTP, with the clock moved by the test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config as BotoConfig

from tests.helpers import (
    MANAGED,
    beat,
    config,
    ec2,
    launch,
    launch_time,
    state,
    tag,
    tags_of,
)
from watchdog.aws.ec2 import AwsError, Boto3Ec2
from watchdog.aws.fake import set_spot_request_state
from watchdog.config import Config
from watchdog.core.fleet import (
    TAG_EXEMPT,
    TAG_IDLE_MINUTES,
    TAG_KEEP_UNTIL,
    TAG_STOPPED,
    RegionScan,
)
from watchdog.core.timeutil import iso
from watchdog.desktop.store import Store
from watchdog.scheduler import PassReport, run_pass, tell

pytestmark = pytest.mark.usefixtures("aws")

REGIONS = ("us-east-1", "eu-west-1")
CFG = config(aws={"regions": REGIONS}, idle={"minutes": 30, "warn_minutes": 10})


def delivered_pass(
    api: Boto3Ec2, store: Store, cfg: Config, now: datetime, *, dry_run: bool | None = None
) -> PassReport:
    """A pass, then its outbox shown at once (as a desktop would, at the pass's ``now``)."""
    report = run_pass(api, store, cfg, now, dry_run=dry_run)
    tell(report, store, cfg)
    return report


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "history.sqlite3")


class Fleet:
    """One instance of every kind the policy distinguishes, in two regions."""

    def __init__(self) -> None:
        east, west = REGIONS
        self.idle_east = launch(east, "g5.xlarge", tags=MANAGED)[0]
        self.idle_west = launch(west, "g4dn.xlarge", tags=MANAGED)[0]
        self.busy = launch(east, tags=MANAGED)[0]
        self.silent = launch(east, tags=MANAGED)[0]
        self.unmanaged = launch(west)[0]
        self.exempt = launch(west, tags={**MANAGED, TAG_EXEMPT: "true"})[0]
        self.kept = launch(east, tags=MANAGED)[0]
        self.long_threshold = launch(east, tags={**MANAGED, TAG_IDLE_MINUTES: "240"})[0]
        self.start = max(launch_time(east, self.busy), launch_time(west, self.exempt))
        self.where = {
            self.idle_east: east,
            self.idle_west: west,
            self.busy: east,
            self.silent: east,
            self.unmanaged: west,
            self.exempt: west,
            self.kept: east,
            self.long_threshold: east,
        }
        tag(east, self.kept, {TAG_KEEP_UNTIL: iso(self.start + timedelta(hours=8))})
        spot = ec2(west).request_spot_instances(
            SpotPrice="0.5",
            Type="persistent",
            LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
        )["SpotInstanceRequests"][0]
        self.orphan = spot["SpotInstanceRequestId"]
        ec2(west).terminate_instances(InstanceIds=[spot["InstanceId"]])
        set_spot_request_state(west, self.orphan, "open", "instance-terminated-by-user")
        healthy = ec2(west).request_spot_instances(
            SpotPrice="0.5",
            Type="persistent",
            LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
        )["SpotInstanceRequests"][0]
        self.healthy_request = healthy["SpotInstanceRequestId"]
        self.healthy_spot = healthy["InstanceId"]
        self.where[self.healthy_spot] = west

    def agents_at(self, minutes: float) -> None:
        """Heartbeats as the agents would write them ``minutes`` after launch."""
        now = self.start + timedelta(minutes=minutes)
        left = self.start + timedelta(minutes=1)  # everyone idle walked away after a minute
        for iid in (
            self.idle_east,
            self.idle_west,
            self.unmanaged,
            self.exempt,
            self.kept,
            self.long_threshold,
            self.healthy_spot,
        ):
            if state(self.where[iid], iid) == "running":
                beat(self.where[iid], iid, now, active=False, last_active=left)
        beat(self.where[self.busy], self.busy, now, active=True, reasons=("gpu:0",))
        silent_at = min(now, self.start + timedelta(minutes=2))
        beat(self.where[self.silent], self.silent, silent_at, active=True)

    def states(self) -> dict[str, str]:
        return {iid: state(region, iid) for iid, region in self.where.items()}

    def open_requests(self) -> set[str]:
        answer = ec2(REGIONS[1]).describe_spot_instance_requests()
        return {
            r["SpotInstanceRequestId"]
            for r in answer["SpotInstanceRequests"]
            if r["State"] in ("open", "active")
        }


def test_pass_warns_then_stops_exactly_the_idle_managed_instances(store: Store) -> None:
    fleet = Fleet()
    api = Boto3Ec2()

    fleet.agents_at(25)
    first = delivered_pass(api, store, CFG, fleet.start + timedelta(minutes=25))
    warned = {d.target for d in first.done if d.kind == "warn"}
    assert warned == {fleet.idle_east, fleet.idle_west}
    noticed = {d.target for d in first.done if d.kind == "notice"}
    assert noticed == {fleet.silent}  # silent for 23 minutes: the person hears, nothing stops
    assert all(s == "running" for s in fleet.states().values())
    assert fleet.open_requests() == {fleet.healthy_request}, "orphan cancelled at once"

    fleet.agents_at(35)
    second = delivered_pass(api, store, CFG, fleet.start + timedelta(minutes=35))
    assert {d.target for d in second.done if d.kind == "stop"} == {fleet.idle_east, fleet.idle_west}
    states = fleet.states()
    stopped = {iid for iid, s in states.items() if s in ("stopping", "stopped")}
    assert stopped == {fleet.idle_east, fleet.idle_west}
    assert fleet.healthy_request in fleet.open_requests()
    stamp = tags_of(REGIONS[0], fleet.idle_east)[TAG_STOPPED]  # when and why, on the machine
    assert stamp == f"{iso(second.now)} by idle-watchdog: idle past its threshold, after a warning"
    recorded = [a for a in store.actions(fleet.idle_east) if a[2] == "stop"]
    assert len(recorded) == 1 and "idle for 34m" in recorded[0][4]  # the full reason: history


def test_second_pass_over_the_same_state_does_nothing_new(store: Store) -> None:
    fleet = Fleet()
    api = Boto3Ec2()
    for minutes in (25, 35):
        fleet.agents_at(minutes)
        delivered_pass(api, store, CFG, fleet.start + timedelta(minutes=minutes))
    fleet.agents_at(36)
    again = delivered_pass(api, store, CFG, fleet.start + timedelta(minutes=36))
    assert again.done == []


def test_dry_run_decides_everything_and_changes_nothing(store: Store) -> None:
    fleet = Fleet()
    api = Boto3Ec2()
    kinds: set[str] = set()
    for minutes in (25, 35):
        fleet.agents_at(minutes)
        report = delivered_pass(
            api, store, CFG, fleet.start + timedelta(minutes=minutes), dry_run=True
        )
        kinds |= {d.kind for d in report.done}
    assert kinds == {"warn", "notice", "stop", "cancel"}
    assert all(s == "running" for s in fleet.states().values())
    assert fleet.orphan in fleet.open_requests()
    assert TAG_STOPPED not in tags_of(REGIONS[0], fleet.idle_east)
    # A later real run does not count the dry run's warnings as given.
    assert store.last_told("warn", dry_run=False) == {}


def test_warn_minutes_zero_stops_at_the_threshold_without_a_warning(store: Store) -> None:
    fleet = Fleet()
    cfg = config(aws={"regions": REGIONS}, idle={"minutes": 30, "warn_minutes": 0})
    fleet.agents_at(32)
    report = delivered_pass(Boto3Ec2(), store, cfg, fleet.start + timedelta(minutes=32))
    assert {d.target for d in report.done if d.kind == "stop"} == {fleet.idle_east, fleet.idle_west}
    assert not [d for d in report.done if d.kind == "warn" and d.target == fleet.idle_east]


def test_an_instance_found_long_past_its_threshold_is_warned_before_it_stops(
    store: Store,
) -> None:
    """The laptop slept for hours: the first pass warns, the stop waits for the lead time."""
    fleet = Fleet()
    fleet.agents_at(300)
    late = delivered_pass(Boto3Ec2(), store, CFG, fleet.start + timedelta(minutes=300))
    assert not [d for d in late.done if d.kind == "stop"]
    assert fleet.long_threshold in {d.target for d in late.done if d.kind == "warn"}
    fleet.agents_at(305)
    soon = delivered_pass(Boto3Ec2(), store, CFG, fleet.start + timedelta(minutes=305))
    assert not [d for d in soon.done if d.kind == "stop"]
    fleet.agents_at(310)
    after = delivered_pass(Boto3Ec2(), store, CFG, fleet.start + timedelta(minutes=310))
    assert fleet.long_threshold in {d.target for d in after.done if d.kind == "stop"}


def test_warnings_survive_a_restart_of_the_scheduler(tmp_path: Path) -> None:
    fleet = Fleet()
    fleet.agents_at(25)
    first = Store(tmp_path / "h.sqlite3")
    delivered_pass(Boto3Ec2(), first, CFG, fleet.start + timedelta(minutes=25))
    first.close()
    fleet.agents_at(35)
    report = delivered_pass(
        Boto3Ec2(), Store(tmp_path / "h.sqlite3"), CFG, fleet.start + timedelta(minutes=35)
    )
    assert fleet.idle_east in {d.target for d in report.done if d.kind == "stop"}


def test_a_region_that_fails_is_reported_and_the_others_proceed(store: Store) -> None:
    fleet = Fleet()

    class OneRegionDown(Boto3Ec2):
        def client(self, region: str):  # type: ignore[no-untyped-def]
            if region == REGIONS[1]:
                return boto3.client(
                    "ec2",
                    region_name=region,
                    endpoint_url="http://127.0.0.1:9",
                    config=BotoConfig(retries={"max_attempts": 1}),
                )
            return super().client(region)

    api = OneRegionDown()
    for minutes in (25, 35):
        fleet.agents_at(minutes)
        report = delivered_pass(api, store, CFG, fleet.start + timedelta(minutes=minutes))
    assert [s.region for s in report.failed_regions] == [REGIONS[1]]
    assert "Could not connect" in report.failed_regions[0].error
    assert state(REGIONS[0], fleet.idle_east) in ("stopping", "stopped")
    assert state(REGIONS[1], fleet.idle_west) == "running"


def test_a_failing_stop_does_not_block_the_next_instance(store: Store) -> None:
    """Fault moto cannot produce: AWS refuses one StopInstances (injected at the HTTP layer)."""
    fleet = Fleet()
    api = Boto3Ec2()
    client = api.client(REGIONS[0])

    def refuse(request, **_: object):  # type: ignore[no-untyped-def]
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        if "Action=StopInstances" in body:
            xml = (
                b"<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>"
                b"not allowed</Message></Error></Errors></Response>"
            )
            return AWSResponse(request.url, 403, HTTPHeaders(), _Raw(xml))
        return None

    client.meta.events.register("before-send.ec2", refuse)
    for minutes in (25, 35):
        fleet.agents_at(minutes)
        report = delivered_pass(api, store, CFG, fleet.start + timedelta(minutes=minutes))
    stops = {d.target: d for d in report.done if d.kind == "stop"}
    assert not stops[fleet.idle_east].ok
    assert "UnauthorizedOperation" in stops[fleet.idle_east].detail
    assert stops[fleet.idle_west].ok
    assert state(REGIONS[1], fleet.idle_west) in ("stopping", "stopped")


def test_throttling_is_retried_by_botocore(store: Store) -> None:
    """Fault moto cannot produce: the first two DescribeInstances calls are throttled."""
    launch("us-east-1", tags=MANAGED)
    api = Boto3Ec2(boto_config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}))
    client = api.client("us-east-1")
    throttled: list[int] = []

    def throttle(request, **_: object):  # type: ignore[no-untyped-def]
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        if "Action=DescribeInstances" in body and len(throttled) < 2:
            throttled.append(1)
            xml = (
                b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>"
                b"Request limit exceeded.</Message></Error></Errors></Response>"
            )
            return AWSResponse(request.url, 503, HTTPHeaders(), _Raw(xml))
        return None

    client.meta.events.register("before-send.ec2", throttle)
    scan = api.scan("us-east-1")
    assert scan.error == ""
    assert len(scan.instances) == 1
    assert scan.api_calls == 4  # two throttled tries, then one page and one spot call


class _Raw:
    """Just enough of urllib3's response for botocore to read a canned body."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, *_: object, **__: object):  # type: ignore[no-untyped-def]
        yield self._body


def test_a_keep_pressed_after_the_scan_calls_off_the_stop(store: Store) -> None:
    """The stop is decided again on a fresh read of the instance just before it is made."""
    fleet = Fleet()
    fleet.agents_at(25)
    delivered_pass(Boto3Ec2(), store, CFG, fleet.start + timedelta(minutes=25))  # the warning

    class KeptMeanwhile(Boto3Ec2):
        def scan(self, region: str) -> RegionScan:
            found = super().scan(region)  # the pass's view, then the person presses Keep
            if region == REGIONS[0]:
                tag(
                    region, fleet.idle_east, {TAG_KEEP_UNTIL: iso(fleet.start + timedelta(hours=9))}
                )
            return found

    fleet.agents_at(35)
    report = delivered_pass(KeptMeanwhile(), store, CFG, fleet.start + timedelta(minutes=35))
    assert fleet.idle_east not in {d.target for d in report.done if d.kind == "stop"}
    assert state(REGIONS[0], fleet.idle_east) == "running"
    assert state(REGIONS[1], fleet.idle_west) in ("stopping", "stopped")


def test_a_stop_that_worked_is_not_reported_failed_when_its_tag_write_fails(
    store: Store,
) -> None:
    fleet = Fleet()

    class NoTags(Boto3Ec2):
        def tag_many(
            self, region: str, ids: Sequence[str], tags: Mapping[str, str]
        ) -> dict[str, AwsError | None]:
            return {i: AwsError("RequestLimitExceeded", "slow down") for i in ids}

    for minutes in (25, 35):
        fleet.agents_at(minutes)
        report = delivered_pass(NoTags(), store, CFG, fleet.start + timedelta(minutes=minutes))
    stops = {d.target: d.ok for d in report.done if d.kind == "stop"}
    assert stops[fleet.idle_east] is True
    assert state(REGIONS[0], fleet.idle_east) in ("stopping", "stopped")
