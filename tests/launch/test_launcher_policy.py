"""deploy/iam/launcher-policy.json allows every call the launcher makes, and little else.

Three views of "every call": the static list beside the AWS edge
(``watchdog.aws.launching.OPERATIONS``), the client methods that module's
source actually calls, and the operations botocore sent while the commands ran
against moto. They must agree, and the policy must allow each one.
"""

from __future__ import annotations

import ast
import fnmatch
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore import xform_name

from tests.helpers import AMI
from tests.launch.world import World, publish_dlami
from watchdog.aws import launching
from watchdog.aws.launching import IMPLIED, OPERATIONS
from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED
from watchdog.launch import plan as P

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = P.DEPLOY / "launcher-policy.json"
POLICY: dict[str, Any] = json.loads(PACKAGED.read_text())
STATEMENTS: list[dict[str, Any]] = POLICY["Statement"]


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowing(action: str) -> list[dict[str, Any]]:
    """The statements that allow ``action`` (IAM matches actions case-insensitively)."""
    return [
        s
        for s in STATEMENTS
        if s["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listed(s["Action"]))
    ]


def called_by_the_edge() -> set[str]:
    """service:Operation for each client method launching.py calls (``self.ec2.x(...)``,
    ``get_paginator("x")``), named as botocore's service model names them."""
    models = botocore.session.get_session()
    names = {
        service: {xform_name(op): op for op in models.get_service_model(service).operation_names}
        for service in ("ec2", "iam", "ssm")
    }
    tree = ast.parse(Path(launching.__file__).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        client = node.func.value
        if not (isinstance(client, ast.Attribute) and client.attr in names):
            continue
        method = node.func.attr
        if method == "get_paginator":
            first = node.args[0]
            assert isinstance(first, ast.Constant)
            method = str(first.value)
        found.add(f"{client.attr}:{names[client.attr][method]}")
    return found


def test_the_list_beside_the_edge_is_what_the_edge_calls() -> None:
    assert called_by_the_edge() == set(OPERATIONS)


def test_every_operation_and_what_aws_checks_with_it_is_allowed() -> None:
    for action in sorted(OPERATIONS | IMPLIED):
        assert allowing(action), f"{action} is not allowed by {PACKAGED.name}"


def test_the_commands_send_only_listed_operations(
    world: World, fake_ssh: Callable[[], list[list[str]]]
) -> None:
    """Every command, each path that calls AWS: botocore's own record of what was sent."""
    publish_dlami()
    ssh_dir = ["--ssh-dir", str(world.ssh_dir)]
    assert world.launch("--name", "dry", "--dry-run").code == 0
    assert world.launch("--name", "box", "--spot", "--persistent").code == 0
    assert world.launch("--name", "two", "--allow-cidr", "192.0.2.0/28").code == 0
    assert world.cli("ssh", "box", *ssh_dir).code == 0
    assert world.cli("stop", "box").code == 0
    assert world.cli("start", "box", *ssh_dir).code == 0
    other = boto3.client("ec2").run_instances(ImageId=AMI, MinCount=1, MaxCount=1)
    bare = other["Instances"][0]["InstanceId"]
    assert world.cli("install-agent", bare, *ssh_dir).code == 0
    audit = world.cli("audit")
    assert audit.code == 1  # the bare instance allows IMDSv1
    assert f"{bare} allows IMDSv1" in audit.out
    assert world.operations <= OPERATIONS, world.operations - OPERATIONS
    # Only the clean-up of a key pair whose private key could not be saved is not run.
    assert OPERATIONS - world.operations == {"ec2:DeleteKeyPair"}


def test_least_privilege() -> None:
    actions = [a for s in STATEMENTS for a in listed(s["Action"])]
    assert all("*" not in a for a in actions), "no wildcard actions"
    assert not allowing("ec2:TerminateInstances"), "the launcher never terminates"
    for kind in ("ec2:DeleteSecurityGroup", "iam:DeleteRole", "iam:AttachRolePolicy"):
        assert not allowing(kind)
    for statement in STATEMENTS:
        if "*" in listed(statement["Resource"]):
            assert all(a.startswith("ec2:Describe") for a in listed(statement["Action"]))

    [start_stop] = {
        id(s): s for a in ("ec2:StartInstances", "ec2:StopInstances") for s in allowing(a)
    }.values()
    assert start_stop["Condition"] == {"StringEquals": {f"aws:ResourceTag/{TAG_MANAGED}": "true"}}

    [passing] = allowing("iam:PassRole")
    assert listed(passing["Resource"]) == [f"arn:aws:iam::*:role/{P.ROLE_NAME}"]
    for statement in allowing("iam:CreateRole") + allowing("iam:PutRolePolicy"):
        assert listed(statement["Resource"]) == [f"arn:aws:iam::*:role/{P.ROLE_NAME}"]

    runs = allowing("ec2:RunInstances")
    [instances] = [s for s in runs if "arn:aws:ec2:*:*:instance/*" in listed(s["Resource"])]
    assert instances["Condition"]["StringEquals"] == {
        f"aws:RequestTag/{TAG_MANAGED}": "true",
        "ec2:MetadataHttpTokens": "required",
    }
    for statement in allowing("ec2:CreateTags"):
        condition = statement["Condition"]
        if "ec2:CreateAction" not in condition.get("StringEquals", {}):
            keys = condition["ForAllValues:StringEquals"]["aws:TagKeys"]
            assert sorted(keys) == sorted([TAG_MANAGED, TAG_IDLE_MINUTES])

    [ingress] = allowing("ec2:AuthorizeSecurityGroupIngress")
    assert ingress["Condition"] == {"StringEquals": {"aws:ResourceTag/Name": P.GROUP_NAME}}
    [keys] = allowing("ec2:CreateKeyPair")
    assert listed(keys["Resource"]) == [
        f"arn:aws:ec2:*:*:key-pair/{P.key_name_for('REGION').removesuffix('REGION')}*"
    ]
    [parameters] = allowing("ssm:GetParameters")
    prefix = parameters["Resource"].split(":parameter", 1)[1].removesuffix("*")
    assert all(p.startswith(prefix) for p in P.DLAMI_PARAMETERS)


def test_what_the_launch_sends_meets_the_policys_conditions() -> None:
    """The conditions above hold for what the plan actually asks: RunInstances is
    tagged managed and requires IMDSv2, on every resource type it tags."""
    plan = P.plan_launch(
        P.LaunchOptions(
            region="us-east-1", instance_type="g5.xlarge", ssh_cidr="203.0.113.7", spot=True
        ),
        P.Templates.load(),
    )
    args = plan.run_instances_args(
        image_id=AMI,
        subnet_id="subnet-1",
        root_device="/dev/sda1",
        group_id="sg-1",
        key_name=plan.key_name,
        profile_name=plan.role_name,
    )
    assert args["MetadataOptions"]["HttpTokens"] == "required"
    [tagging] = [s for s in allowing("ec2:CreateTags") if "ec2:CreateAction" in str(s)]
    tagged = {r.split(":")[-1].split("/")[0] for r in listed(tagging["Resource"])}
    for spec in args["TagSpecifications"]:
        assert {"Key": TAG_MANAGED, "Value": "true"} in spec["Tags"]
        assert spec["ResourceType"] in tagged


@pytest.mark.usefixtures("aws")
def test_iam_accepts_the_policy_document() -> None:
    iam: Any = boto3.client("iam")
    iam.create_policy(PolicyName="idle-watchdog-launcher", PolicyDocument=PACKAGED.read_text())


def test_the_policy_ships_in_the_package_and_the_checkout_links_to_it() -> None:
    link = ROOT / "deploy" / "iam" / "launcher-policy.json"
    assert link.is_symlink()
    assert link.resolve() == PACKAGED.resolve()
    assert PACKAGED.parent == ROOT / "watchdog" / "deploy"  # package-data: deploy/*
