"""``cloud deploy`` on moto: a change set created, printed, executed; updates, no-ops and
refusals said in a sentence; the code, config and link secret put where the stack reads them."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from tests.cloud.test_template import TEAM, code_bucket, moto_supported
from watchdog.cloud import template
from watchdog.cloud.deploy import Deployer, DeployError, ensure_secret, put_config, upload
from watchdog.cloud.package import Package


def _deployer(lines: list[str]) -> Deployer:
    return Deployer(boto3.Session(region_name="us-east-1"), say=lines.append, delay=1, attempts=5)


def _body(data: template.Json) -> str:
    return json.dumps(moto_supported(data))


def test_a_first_deploy_creates_the_stack_and_prints_each_resource_added(aws: str) -> None:
    lines: list[str] = []
    outputs = _deployer(lines).stack("hub", _body(template.hub(TEAM)), code_bucket())
    added = moto_supported(template.hub(TEAM))["Resources"]
    assert lines[0] == f"hub: {len(added)} changes (create)"
    assert "  Add Table AWS::DynamoDB::Table" in lines
    assert "  Add WorkQueueMapping AWS::Lambda::EventSourceMapping" in lines
    assert {line.split()[1] for line in lines[1:-1]} == set(added)
    assert lines[-1] == "hub: create complete"
    cf = boto3.client("cloudformation", region_name="us-east-1")
    assert cf.describe_stacks(StackName="hub")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert outputs == {}  # moto sets no outputs on a stack made by a change set; AWS does


def test_a_second_deploy_updates_and_prints_only_what_changed(aws: str) -> None:
    params = code_bucket()
    _deployer([]).stack("hub", _body(template.hub(TEAM)), params)
    changed = template.hub(TEAM)
    changed["Resources"]["Topic"]["Properties"]["DisplayName"] = "lab GPUs"
    changed["Resources"]["ExtraQueue"] = {"Type": "AWS::SQS::Queue"}
    lines: list[str] = []
    _deployer(lines).stack("hub", _body(changed), params)
    assert lines[0] == "hub: 2 changes (update)"
    assert sorted(lines[1:3]) == [
        "  Add ExtraQueue AWS::SQS::Queue",
        "  Modify Topic AWS::SNS::Topic",
    ]
    assert lines[-1] == "hub: update complete"


def test_a_redeploy_without_the_alarm_e_mail_keeps_the_one_given_before(aws: str) -> None:
    params = code_bucket()
    body = _body(template.hub(TEAM))
    _deployer([]).stack("hub", body, {**params, "AlarmEmail": "ops@example.com"})
    changed = template.hub(TEAM)
    changed["Resources"]["Topic"]["Properties"]["DisplayName"] = "lab GPUs"
    _deployer([]).stack("hub", _body(changed), params, keep_previous=("AlarmEmail",))
    cf = boto3.client("cloudformation", region_name="us-east-1")
    stack = cf.describe_stacks(StackName="hub")["Stacks"][0]
    values = {p["ParameterKey"]: p.get("ParameterValue") for p in stack["Parameters"]}
    assert values["AlarmEmail"] == "ops@example.com"


def test_an_unchanged_template_says_so_and_leaves_no_change_set(aws: str) -> None:
    params = code_bucket()
    body = _body(template.hub(TEAM))
    _deployer([]).stack("hub", body, params)
    lines: list[str] = []
    _deployer(lines).stack("hub", body, params)
    assert lines == ["hub: no changes"]
    cf = boto3.client("cloudformation", region_name="us-east-1")
    left = cf.list_change_sets(StackName="hub")["Summaries"]
    assert [c for c in left if c.get("Status") == "FAILED"] == []  # the empty one is deleted


def test_a_resource_that_cannot_be_made_is_a_sentence_not_a_traceback(aws: str) -> None:
    """AWS's reason for the failed create comes back in a DeployError."""
    broken = {
        "Resources": {
            "WorkQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "RedrivePolicy": {
                        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:gone",
                        "maxReceiveCount": 3,
                    }
                },
            }
        }
    }
    with pytest.raises(DeployError, match=r"hub: create failed: .*NonExistentQueue"):
        _deployer([]).stack("hub", json.dumps(broken), {})


def test_the_code_goes_to_a_key_named_by_its_hash_once(aws: str, tmp_path: Path) -> None:
    """An unchanged zip is not uploaded again; a changed one gets a new key (Lambda updates)."""
    session = boto3.Session(region_name="us-east-1")
    session.client("s3").create_bucket(Bucket="code")
    zip_path = tmp_path / "a.zip"
    zip_path.write_bytes(b"PK-one")
    one = Package(zip_path, "ab" * 32, 1, 6)
    key = upload(session, "code", one)
    assert key == f"idle-watchdog/{'ab' * 8}.zip"
    zip_path.write_bytes(b"PK-changed-but-same-hash")
    assert upload(session, "code", one) == key
    got = session.client("s3").get_object(Bucket="code", Key=key)["Body"].read()
    assert got == b"PK-one"
    with pytest.raises(DeployError, match="cannot upload to s3://nope/"):
        upload(session, "nope", Package(zip_path, "cd" * 32, 1, 6))


def test_the_config_is_stored_and_the_link_secret_made_once(aws: str) -> None:
    session = boto3.Session(region_name="us-east-1")
    ssm = session.client("ssm")
    put_config(session, "/idle-watchdog/config", "[idle]\nminutes = 45\n")
    put_config(session, "/idle-watchdog/config", "[idle]\nminutes = 50\n")
    stored = ssm.get_parameter(Name="/idle-watchdog/config")["Parameter"]
    assert (stored["Type"], stored["Value"]) == ("String", "[idle]\nminutes = 50\n")
    assert ensure_secret(session, "/idle-watchdog/link-secret") is True
    first = ssm.get_parameter(Name="/idle-watchdog/link-secret", WithDecryption=True)["Parameter"]
    assert first["Type"] == "SecureString" and len(first["Value"]) >= 40
    assert ensure_secret(session, "/idle-watchdog/link-secret") is False
    again = ssm.get_parameter(Name="/idle-watchdog/link-secret", WithDecryption=True)["Parameter"]
    assert again["Value"] == first["Value"]  # links already sent stay valid
