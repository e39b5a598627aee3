"""Batched reads, stops and tags against a real moto server: one result per id,
one call per chunk, and a refused batch retried id by id."""

from __future__ import annotations

import pytest

from tests.aws.faults import Hanging, form, refuse, request_ids
from tests.helpers import ec2, launch
from watchdog.aws.ec2 import BATCH_LIMIT, Boto3Ec2, tag_each
from watchdog.core.settings import AwsConfig

pytestmark = pytest.mark.usefixtures("aws")
REGION = "us-east-1"
GONE = "i-0123456789abcdef0"


def states(ids: list[str]) -> dict[str, str]:
    answer = ec2(REGION).describe_instances(InstanceIds=ids)
    return {
        i["InstanceId"]: i["State"]["Name"] for r in answer["Reservations"] for i in r["Instances"]
    }


def tags_of(instance_id: str) -> dict[str, str]:
    answer = ec2(REGION).describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])
    return {t["Key"]: t["Value"] for t in answer["Tags"]}


def test_many_instances_cost_one_call_each_for_read_stop_and_tag() -> None:
    ids = launch(REGION, count=5)
    api = Boto3Ec2()
    found = api.describe_many(REGION, ids)
    assert sorted(found) == sorted(ids) and all(i.state == "running" for i in found.values())
    assert api.stop_many(REGION, ids) == dict.fromkeys(ids)
    assert api.tag_many(REGION, ids, {"idle-watchdog:stopped": "now"}) == dict.fromkeys(ids)
    assert api.calls(REGION) == 3
    assert set(states(ids).values()) <= {"stopping", "stopped"}
    assert all(tags_of(i) == {"idle-watchdog:stopped": "now"} for i in ids)


def test_ids_are_sent_in_chunks() -> None:
    assert BATCH_LIMIT == 1000  # CreateTags' documented maximum
    ids = launch(REGION, count=5)
    api = Boto3Ec2(batch_size=2)
    assert len(api.describe_many(REGION, ids + ids[:1])) == 5  # a repeated id is read once
    assert api.calls(REGION) == 3
    assert api.stop_many(REGION, ids) == dict.fromkeys(ids)
    assert api.calls(REGION) == 6
    assert api.tag_many(REGION, ids, {"k": "v"}) == dict.fromkeys(ids)
    assert api.calls(REGION) == 9


def test_a_gone_instance_never_hides_the_others() -> None:
    ids = launch(REGION, count=3)
    api = Boto3Ec2()
    found = api.describe_many(REGION, [ids[0], GONE, *ids[1:]])
    assert sorted(found) == sorted(ids)
    assert api.calls(REGION) == 2  # the batch, then again without the id AWS named


def test_a_refused_read_that_names_no_id_falls_back_to_one_read_each() -> None:
    ids = launch(REGION, count=3)
    api = Boto3Ec2()
    refused = refuse(
        api, REGION, "DescribeInstances", "InvalidInstanceID.NotFound", lambda ids: len(ids) > 1
    )
    found = api.describe_many(REGION, ids)
    assert sorted(found) == sorted(ids)
    assert refused == [ids]
    assert api.calls(REGION) == 1 + 3


def test_one_refused_instance_gets_its_own_error_and_the_others_stop() -> None:
    # An IAM condition on one instance's tags refuses any StopInstances naming it,
    # and with it the whole batch (aws-solutions/instance-scheduler-on-aws#76).
    ids = launch(REGION, count=4)
    locked = ids[2]
    api = Boto3Ec2()
    refused = refuse(api, REGION, "StopInstances", "UnauthorizedOperation", lambda s: locked in s)
    results = api.stop_many(REGION, ids)
    assert refused == [ids, [locked]]
    assert {i: e.code if e else None for i, e in results.items()} == {
        **dict.fromkeys(ids),
        locked: "UnauthorizedOperation",
    }
    after = states(ids)
    assert after.pop(locked) == "running"
    assert set(after.values()) <= {"stopping", "stopped"}


def test_one_refused_tag_gets_its_own_error_and_the_others_are_tagged() -> None:
    ids = launch(REGION, count=3)
    locked = ids[0]
    api = Boto3Ec2()
    refuse(api, REGION, "CreateTags", "UnauthorizedOperation", lambda s: locked in s)
    results = api.tag_many(REGION, ids, {"k": "v"})
    assert {i: e.code if e else None for i, e in results.items()} == {
        **dict.fromkeys(ids),
        locked: "UnauthorizedOperation",
    }
    assert tags_of(locked) == {} and all(tags_of(i) == {"k": "v"} for i in ids[1:])


def test_hibernating_and_plain_stops_are_separate_calls() -> None:
    ids = launch(REGION, count=2)
    api = Boto3Ec2()
    seen: list[tuple[bool, list[str]]] = []

    def record(request: object, **_: object) -> None:
        seen.append((form(request).get("Hibernate") == ["true"], request_ids(request)))

    api.client(REGION).meta.events.register("before-send.ec2.StopInstances", record)
    api.stop_many(REGION, ids[:1], hibernate=True)
    api.stop_many(REGION, ids[1:])
    assert seen == [(True, ids[:1]), (False, ids[1:])]


def test_a_region_wide_refusal_is_not_retried_id_by_id() -> None:
    ids = launch(REGION, count=3)
    api = Boto3Ec2(aws=AwsConfig(max_attempts=1))
    refused = refuse(api, REGION, "StopInstances", "RequestLimitExceeded")
    results = api.stop_many(REGION, ids)
    assert len(refused) == 1
    assert {e.code for e in results.values() if e} == {"RequestLimitExceeded"}
    assert len(results) == 3


def test_a_batch_ec2_never_answers_is_not_retried_id_by_id() -> None:
    cfg = AwsConfig(connect_timeout_seconds=1, read_timeout_seconds=1, max_attempts=1)
    with Hanging() as hung:
        api = Boto3Ec2(aws=cfg, endpoints={REGION: hung.url})
        results = api.stop_many(REGION, ["i-1", "i-2", "i-3"])
        assert hung.accepted(at_least=1) == 1
    assert api.calls(REGION) == 1
    assert {e.code for e in results.values() if e} == {"ReadTimeoutError"}
    assert len(results) == 3


def test_tags_that_differ_per_instance_are_batched_per_distinct_set() -> None:
    ids = launch(REGION, count=3)
    api = Boto3Ec2()
    wanted = {ids[0]: {"k": "a"}, ids[1]: {"k": "b"}, ids[2]: {"k": "a"}}
    assert tag_each(api, REGION, wanted) == dict.fromkeys(ids)
    assert api.calls(REGION) == 2
    assert {i: tags_of(i) for i in ids} == wanted
