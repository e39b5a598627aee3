"""The boto3 adapter against a real moto server: pagination, call counts, bad records."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers import MANAGED, ec2, launch
from watchdog.aws.ec2 import AwsError, Boto3Ec2, _instance, _parse_all, scan_regions

pytestmark = pytest.mark.usefixtures("aws")


def test_scan_pages_through_more_than_a_thousand_instances_in_few_calls() -> None:
    # moto pages by reservation where AWS pages by instance: 101 reservations of up to
    # ten instances, read 40 reservations a page, make three pages.
    for count in [10] * 100 + [1]:
        launch("us-east-1", "g4dn.xlarge", count=count, tags=MANAGED)
    launch("us-west-2", "g5.xlarge", count=3)
    scans = scan_regions(Boto3Ec2(page_size=40), ["us-east-1", "us-west-2"])
    east, west = scans
    assert len(east.instances) == 1001 and len(west.instances) == 3
    assert len({i.id for i in east.instances}) == 1001
    assert all(i.managed and i.type == "g4dn.xlarge" for i in east.instances)
    assert east.api_calls == 4  # three DescribeInstances pages + one DescribeSpotInstanceRequests
    assert west.api_calls == 2


def test_spot_instances_are_tied_to_their_requests() -> None:
    answer = ec2("us-east-1").request_spot_instances(
        SpotPrice="0.5",
        Type="persistent",
        LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
    )["SpotInstanceRequests"][0]
    scan = Boto3Ec2().scan("us-east-1")
    (inst,) = scan.instances
    (req,) = scan.spot_requests
    assert inst.lifecycle == "spot" and inst.spot_request_id == req.id
    assert req.type == "persistent" and req.instance_id == answer["InstanceId"]
    assert req.instance_type == "g5.xlarge"


def test_terminated_instances_are_not_scanned() -> None:
    keep, gone = launch("us-east-1", count=2)
    ec2("us-east-1").terminate_instances(InstanceIds=[gone])
    assert [i.id for i in Boto3Ec2().scan("us-east-1").instances] == [keep]


def test_one_malformed_record_is_logged_and_skipped() -> None:
    good: dict[str, Any] = {
        "InstanceId": "i-1",
        "State": {"Name": "running"},
        "LaunchTime": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    broken: dict[str, Any] = {"InstanceId": "i-2"}  # no State
    with capture_logs() as logs:
        parsed = list(_parse_all(_instance, "us-east-1", [broken, good], {}))
    assert [i.id for i in parsed] == ["i-1"]
    assert parsed[0].type == "unknown" and parsed[0].platform == ""
    assert logs[0]["event"] == "malformed EC2 record skipped"


def test_errors_from_actions_carry_the_aws_code() -> None:
    with pytest.raises(AwsError) as caught:
        Boto3Ec2().stop("us-east-1", "i-0123456789abcdef0")
    assert caught.value.code == "InvalidInstanceID.NotFound"


def test_a_scan_carries_what_the_ledger_bills_zone_stop_time_address_and_volumes() -> None:
    (iid,) = launch("us-east-1")
    ec2("us-east-1").stop_instances(InstanceIds=[iid])
    (inst,) = Boto3Ec2().scan("us-east-1").instances
    answer = ec2("us-east-1").describe_instances(InstanceIds=[iid])
    item = answer["Reservations"][0]["Instances"][0]
    assert inst.zone == item["Placement"]["AvailabilityZone"] and inst.zone.startswith("us-east-1")
    assert inst.state_reason.startswith("User initiated (")  # with the time of the stop
    root = [m["Ebs"]["VolumeId"] for m in item["BlockDeviceMappings"]]
    assert inst.volume_ids == tuple(root) and root
    assert inst.public_ip == item.get("PublicIpAddress", "")
