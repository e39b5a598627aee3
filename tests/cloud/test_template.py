"""The templates: valid by AWS's schemas (cfn-lint), created by moto's CloudFormation as far
as moto goes, least privilege in every role, and the member role's permissions exactly the
desktop scheduler's policy."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cfnlint.api import ManualArgs, lint  # type: ignore[import-untyped]

from watchdog.cloud import handler, history, template
from watchdog.config import DEFAULT, Config, parse

ROOT = Path(__file__).resolve().parents[2]
TEAM = parse(
    """
[scheduler]
poll_seconds = 150
[cloud]
accounts = ["111111111111", "222222222222"]
role_name = "watchdog-member"
external_id = "lab-7f3a"
slack_webhook_parameter = "/idle-watchdog/slack"
""",
    source="team.toml",
)

#: moto's CloudFormation has no Lambda function URLs, no EventBridge Scheduler schedules
#: and no CloudWatch alarms: those resources are taken out (and references to them
#: replaced by a placeholder) before ``create_stack``; cfn-lint checks them instead.
MOTO_LACKS = {"AWS::Lambda::Url", "AWS::Scheduler::Schedule", "AWS::CloudWatch::Alarm"}


def moto_supported(full: template.Json) -> template.Json:
    """The template without what moto cannot create."""
    gone = {k for k, r in full["Resources"].items() if r["Type"] in MOTO_LACKS}

    def swap(x: Any) -> Any:
        if isinstance(x, dict):
            getatt = x.get("Fn::GetAtt")
            if x.get("Ref") in gone or (isinstance(getatt, list) and getatt[0] in gone):
                return "not-in-moto"
            return {k: swap(v) for k, v in x.items()}
        return [swap(v) for v in x] if isinstance(x, list) else x

    out = dict(full)
    out["Resources"] = {k: swap(r) for k, r in full["Resources"].items() if k not in gone}
    out["Outputs"] = swap(full["Outputs"])
    return out


def code_bucket(bucket: str = "code", key: str = "idle-watchdog.zip") -> dict[str, str]:
    """An S3 object for the functions' code (moto's Lambda checks it exists)."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as archive:
        archive.writestr("watchdog/__init__.py", "")
    s3.put_object(Bucket=bucket, Key=key, Body=body.getvalue())
    return {"CodeBucket": bucket, "CodeKey": key}


def _lint(data: template.Json) -> list[str]:
    return [str(m) for m in lint(template.render(data), config=ManualArgs(regions=["us-east-1"]))]


@pytest.mark.parametrize("cfg", [DEFAULT, TEAM], ids=["defaults", "team"])
def test_both_templates_pass_cfn_lint(cfg: Config) -> None:
    """AWS's resource specification, as cfn-lint checks it: no error, no warning."""
    assert _lint(template.hub(cfg)) == []
    assert _lint(template.member(cfg)) == []


def test_cfn_lint_catches_a_broken_template() -> None:
    """The check above can fail: a wrong runtime is reported."""
    broken = template.hub(DEFAULT)
    broken["Resources"]["TickFunction"]["Properties"]["Runtime"] = "python2.5"
    assert any("E3030" in m for m in _lint(broken))


def test_moto_creates_every_resource_it_supports(aws: str) -> None:
    """Table, queues, topics, roles, functions, log groups, mapping and permissions."""
    cf = boto3.client("cloudformation", region_name="us-east-1")
    params = code_bucket()
    cf.create_stack(
        StackName="hub",
        TemplateBody=json.dumps(moto_supported(template.hub(TEAM))),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cf.describe_stacks(StackName="hub")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    made = {
        r["LogicalResourceId"]: r["ResourceType"]
        for r in cf.list_stack_resources(StackName="hub")["StackResourceSummaries"]
        if r["LogicalResourceId"] and r["ResourceStatus"] == "CREATE_COMPLETE"
    }
    expected = {
        k: r["Type"]
        for k, r in template.hub(TEAM)["Resources"].items()
        if r["Type"] not in MOTO_LACKS and "Condition" not in r
    }
    assert made == expected
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    table = boto3.client("dynamodb", region_name="us-east-1").describe_table(
        TableName=outputs["TableName"]
    )["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        ("pk", "HASH"),
        ("sk", "RANGE"),
    ]
    sqs = boto3.client("sqs", region_name="us-east-1")
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])
    redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == template.MAX_RECEIVES
    assert redrive["deadLetterTargetArn"].split(":")[-1].startswith("hub-DeadLetterQueue")

    lam = boto3.client("lambda", region_name="us-east-1")
    functions = {f["Handler"]: f for f in lam.list_functions()["Functions"]}
    assert set(functions) == set(template.HANDLERS.values())
    assert {f["Runtime"] for f in functions.values()} == {"python3.12"}
    work = functions["watchdog.cloud.handler.work"]
    assert work["Environment"]["Variables"]["IDLE_WATCHDOG_TABLE"] == outputs["TableName"]
    [mapping] = lam.list_event_source_mappings()["EventSourceMappings"]
    assert mapping["FunctionArn"] == work["FunctionArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_member_role_is_created_by_moto(aws: str) -> None:
    cf = boto3.client("cloudformation", region_name="us-east-1")
    hub_roles = {
        "WorkRoleArn": "arn:aws:iam::123456789012:role/hub-WorkRole-1",
        "KeepRoleArn": "arn:aws:iam::123456789012:role/hub-KeepRole-1",
    }
    cf.create_stack(
        StackName="member",
        TemplateBody=template.render(template.member(TEAM)),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in hub_roles.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    role: Any = boto3.client("iam").get_role(RoleName="watchdog-member")["Role"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert sorted(trust["Principal"]["AWS"]) == sorted(hub_roles.values())
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": "lab-7f3a"}}


def test_the_member_role_may_do_exactly_what_the_desktop_policy_allows() -> None:
    """Read from the same file, so the two cannot drift; less the desktop's cost reads
    (Price List, Cost Explorer, volumes), which the team's pass never makes."""
    desktop = json.loads((ROOT / "watchdog/deploy/scheduler-policy.json").read_text("utf-8"))
    [policy] = template.member(TEAM)["Resources"]["MemberRole"]["Properties"]["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    assert statements == [s for s in desktop["Statement"] if s["Sid"] not in template.DESKTOP_ONLY]
    actions = {a for s in statements for a in _actions(s)}
    assert {"ec2:StopInstances", "ec2:CreateTags", "ec2:DescribeInstances"} <= actions
    assert not any(a.startswith(("ce:", "pricing:")) for a in actions)


def _statements(role: str, cfg: Config = TEAM) -> list[dict[str, Any]]:
    [policy] = template.hub(cfg)["Resources"][role]["Properties"]["Policies"]
    statements: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


@pytest.mark.parametrize("role", ["TickRole", "WorkRole", "KeepRole", "SchedulerRole"])
def test_no_role_has_a_wildcard_action_or_an_unconditioned_wildcard_resource(role: str) -> None:
    """Wide resources only where AWS has no narrower one: describes, listing accounts, and
    decrypting through SSM with the account's default key."""
    allowed_wide = {
        "ec2:DescribeInstances",
        "ec2:DescribeSpotInstanceRequests",
        "organizations:ListAccounts",
        "kms:Decrypt",
    }
    for statement in _statements(role):
        assert not any("*" in a for a in _actions(statement)), statement
        if statement["Resource"] == "*":
            assert set(_actions(statement)) <= allowed_wide, statement
        if "kms:Decrypt" in _actions(statement):
            aliases = statement["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"]
            assert aliases == "alias/aws/ssm"


def test_the_worker_assumes_only_the_member_role_and_touches_only_its_own_resources() -> None:
    by_action = {a: s["Resource"] for s in _statements("WorkRole") for a in _actions(s)}
    assert by_action["sts:AssumeRole"] == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"
    }
    assert by_action["dynamodb:PutItem"] == {"Fn::GetAtt": ["Table", "Arn"]}
    assert by_action["sqs:DeleteMessage"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert by_action["sns:Publish"] == {"Ref": "Topic"}
    assert "sqs:SendMessage" not in by_action and "organizations:ListAccounts" not in by_action
    tick = {a for s in _statements("TickRole") for a in _actions(s)}
    assert tick == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "organizations:ListAccounts",
        "ssm:GetParameter",
    }


def test_the_schedule_runs_every_poll_interval_in_whole_minutes() -> None:
    """poll_seconds 150 -> every 3 minutes; anything under a minute -> every minute."""
    assert template.hub(TEAM)["Parameters"]["ScheduleMinutes"]["Default"] == 3
    assert template.hub(DEFAULT)["Parameters"]["ScheduleMinutes"]["Default"] == 1
    fast = parse("[scheduler]\npoll_seconds = 10\n")
    assert template.schedule_minutes(fast) == 1
    schedule = template.hub(TEAM)["Resources"]["TickSchedule"]["Properties"]
    assert schedule["Target"]["Input"] == handler.TICK_INPUT
    assert schedule["ScheduleExpression"]["Fn::If"][1] == "rate(1 minute)"


def test_the_table_expires_old_rows_and_the_url_needs_no_aws_credentials() -> None:
    resources = template.hub(DEFAULT)["Resources"]
    ttl = resources["Table"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}
    assert resources["KeepUrl"]["Properties"]["AuthType"] == "NONE"
    alarms = [k for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert sorted(alarms) == [
        "DeadLetterAlarm",
        "KeepErrorsAlarm",
        "TickErrorsAlarm",
        "WorkErrorsAlarm",
    ]


def test_yaml_says_the_same_as_json() -> None:
    data = template.hub(TEAM)
    assert yaml.safe_load(template.render(data, "yaml")) == data


def test_the_template_matches_what_the_handlers_read() -> None:
    """Every environment variable the handlers read is set, and the worker's timeout
    is the one its lease outlives (the names and keys are the handlers' own)."""
    work = template.hub(DEFAULT)["Resources"]["WorkFunction"]["Properties"]
    assert set(handler.ENVIRONMENT) <= set(work["Environment"]["Variables"])
    assert work["Timeout"] == history.WORKER_TIMEOUT_SECONDS < history.LEASE_SECONDS
