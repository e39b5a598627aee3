"""A launch against moto: what it creates, reuses and refuses, and its errors in plain words."""

from __future__ import annotations

import base64
import gzip
import json
import stat
from typing import Any

import boto3
import pytest

from tests.helpers import AMI, ec2, tags_of
from tests.launch.world import (
    CALLER,
    DLAMI,
    INSTALL,
    POLICY,
    REGION,
    World,
    ec2_error,
    install_argv,
    launcher_groups,
    named,
    option,
    publish_dlami,
    user_data_of,
    world_rules,
)
from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED
from watchdog.launch import commands as launch_cli
from watchdog.launch.plan import ROLE_NAME


def test_launch_creates_one_of_each_with_the_right_settings_and_a_second_reuses_them(
    world: World,
) -> None:
    publish_dlami()
    run = world.launch("--name", "box1", "--idle-minutes", "45")
    assert run.code == 0, run.err

    # Exactly one key pair, saved where ssh expects it, readable by its owner only.
    pairs = ec2().describe_key_pairs()["KeyPairs"]
    assert [p["KeyName"] for p in pairs] == ["idle-watchdog-us-east-1"]
    key = world.ssh_dir / "idle-watchdog-us-east-1.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert "PRIVATE KEY" in key.read_text()
    material = key.read_bytes()

    # Exactly one group: SSH from the caller's address only, nothing else, no 8888.
    [group] = launcher_groups()
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in group["IpPermissions"]] == [
        ("tcp", 22, 22)
    ]
    assert world_rules(group) == [f"{CALLER}/32"]

    # The role and its profile, with only the agent's policy.
    iam: Any = boto3.client("iam", region_name=REGION)  # typed stubs optional here
    role = iam.get_role(RoleName=ROLE_NAME)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert iam.list_role_policies(RoleName=ROLE_NAME)["PolicyNames"] == [ROLE_NAME]
    document = iam.get_role_policy(RoleName=ROLE_NAME, PolicyName=ROLE_NAME)["PolicyDocument"]
    assert document == json.loads(POLICY.read_text())
    assert iam.list_attached_role_policies(RoleName=ROLE_NAME)["AttachedPolicies"] == []
    profile = iam.get_instance_profile(InstanceProfileName=ROLE_NAME)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [ROLE_NAME]

    # Exactly one instance, from the DLAMI, tagged, IMDSv2 only, with the profile and group.
    [instance] = named("box1")
    assert instance["ImageId"] == AMI
    assert instance["InstanceType"] == "g5.xlarge"
    assert instance["KeyName"] == "idle-watchdog-us-east-1"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{ROLE_NAME}")
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group["GroupId"]]
    assert tags_of(REGION, instance["InstanceId"]) == {
        "Name": "box1",
        TAG_MANAGED: "true",
        TAG_IDLE_MINUTES: "45",
    }
    assert "InstanceLifecycle" not in instance  # on-demand

    # The user-data is the rendered cloud-init: YAML, running install-agent.sh with our values.
    encoded = ec2().describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )
    text = base64.b64decode(encoded["UserData"]["Value"]).decode()
    assert "$" not in text
    data = user_data_of(text)
    argv = install_argv(data)
    assert argv[:2] == ["bash", "/usr/local/share/idle-watchdog/install-agent.sh"]
    assert option(argv, "--source") == "idle-watchdog"
    assert option(argv, "--idle-minutes") == "45"
    files = {f["path"]: f for f in data["write_files"]}
    assert gzip.decompress(base64.b64decode(files[argv[1]]["content"])) == INSTALL.read_bytes()

    # What to type next.
    ip = instance["PublicIpAddress"]
    assert f"ssh -i {key}" in run.out
    assert f"ubuntu@{ip}" in run.out
    assert f"-N -L 8888:localhost:8888 ubuntu@{ip}" in run.out
    assert "http://localhost:8888/" in run.out
    assert not (world.ssh_dir / "config").exists()  # only with --ssh-config

    # A second launch reuses the key pair, the group and the role.
    again = world.launch("--name", "box2")
    assert again.code == 0, again.err
    assert len(ec2().describe_key_pairs()["KeyPairs"]) == 1
    assert key.read_bytes() == material
    assert [g["GroupId"] for g in launcher_groups()] == [group["GroupId"]]
    assert len(iam.list_instance_profiles()["InstanceProfiles"]) == 1
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == [ROLE_NAME]
    assert "reused" in again.err
    [second] = named("box2")
    assert second["KeyName"] == instance["KeyName"]
    assert tags_of(REGION, second["InstanceId"])[TAG_IDLE_MINUTES] == "30"  # the config's default


def test_a_launch_from_a_new_address_adds_only_that_address(world: World) -> None:
    publish_dlami()
    assert world.launch("--name", "a").code == 0
    world.caller = "198.51.100.20"
    assert world.launch("--name", "b").code == 0
    [group] = launcher_groups()
    assert sorted(world_rules(group)) == ["198.51.100.20/32", f"{CALLER}/32"]
    assert world.launch("--name", "c", "--allow-cidr", "192.0.2.0/28").code == 0
    [group] = launcher_groups()
    assert "192.0.2.0/28" in world_rules(group)
    assert not set(world_rules(group)) & {"0.0.0.0/0", "::/0"}


def test_the_whole_internet_is_refused_for_ssh(world: World) -> None:
    publish_dlami()
    run = world.launch("--allow-cidr", "0.0.0.0/0")
    assert run.code == 2
    assert "whole internet" in run.err
    assert world.sent == []  # refused before any AWS call


def test_bad_options_fail_before_asking_for_the_callers_address(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network() -> str:
        raise AssertionError("checkip must not be asked")

    monkeypatch.setattr(launch_cli.EDGES, "caller_ip", no_network)
    run = world.launch("--persistent")
    assert run.code == 2
    assert "add --spot" in run.err


def test_dry_run_asks_ec2_dry_run_and_creates_nothing(world: World) -> None:
    publish_dlami()
    run = world.launch("--name", "box", "--dry-run", "--spot", "--persistent")
    assert run.code == 0, run.err
    assert "would have succeeded" in run.err
    sent = {s["Action"]: s for s in world.sent}
    assert sent["RunInstances"]["DryRun"] == "true"
    assert sent["CreateKeyPair"]["DryRun"] == "true"
    assert sent["CreateSecurityGroup"]["DryRun"] == "true"
    assert ec2().describe_key_pairs()["KeyPairs"] == []
    assert launcher_groups() == []
    assert named("box") == []
    assert ec2().describe_instances()["Reservations"] == []
    iam: Any = boto3.client("iam", region_name=REGION)  # typed stubs optional here
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    assert not world.ssh_dir.exists() or not any(world.ssh_dir.iterdir())


def test_dry_run_reports_missing_permissions_plainly(world: World) -> None:
    publish_dlami()
    world.inject(
        "before-send.ec2.RunInstances",
        ec2_error("UnauthorizedOperation", "You are not authorized to perform this operation."),
    )
    run = world.launch("--dry-run")
    assert run.code == 1
    assert "not allowed" in run.err
    assert ec2().describe_instances()["Reservations"] == []


@pytest.mark.parametrize("persistent", [False, True])
def test_spot_launch_requests_spot_and_tags_the_request(world: World, persistent: bool) -> None:
    extra = ["--persistent"] if persistent else []
    run = world.launch("--name", "spotty", "--spot", "--ami", AMI, *extra)  # --ami: no SSM needed
    assert run.code == 0, run.err
    [call] = [s for s in world.sent if s["Action"] == "RunInstances"]
    assert call["InstanceMarketOptions.MarketType"] == "spot"
    assert call["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == (
        "persistent" if persistent else "one-time"
    )
    assert call["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == (
        "stop" if persistent else "terminate"
    )
    assert call["MetadataOptions.HttpTokens"] == "required"
    kinds = {v: k.rsplit(".", 1)[0] for k, v in call.items() if k.endswith(".ResourceType")}
    request = kinds["spot-instances-request"]
    request_tags = {
        call[f"{request}.Tag.{n}.Key"]: call[f"{request}.Tag.{n}.Value"] for n in range(1, 4)
    }
    assert request_tags == {"Name": "spotty", TAG_MANAGED: "true", TAG_IDLE_MINUTES: "30"}
    [instance] = named("spotty")
    assert instance["InstanceLifecycle"] == "spot"
    assert ("cannot be stopped" in run.out) is not persistent


def test_a_freshly_created_instance_profile_is_waited_for(world: World) -> None:
    """IAM is eventually consistent: right after CreateInstanceProfile, RunInstances can
    call the profile invalid. The launcher retries instead of failing the first launch."""
    publish_dlami()
    refused: list[int] = []

    def not_yet(body: str) -> bool:
        if "Action=RunInstances" in body and len(refused) < 2:
            refused.append(1)
            return True
        return False

    message = (
        "Value (idle-watchdog-agent) for parameter iamInstanceProfile.name is invalid. "
        "Invalid IAM Instance Profile name"
    )
    world.inject(
        "before-send.ec2.RunInstances", ec2_error("InvalidParameterValue", message, when=not_yet)
    )
    run = world.launch("--name", "box")
    assert run.code == 0, run.err
    assert len(refused) == 2
    assert len(named("box")) == 1


@pytest.mark.parametrize(
    ("code", "message", "extra", "words"),
    [
        (
            "VcpuLimitExceeded",
            "You have requested more vCPU capacity than your current vCPU limit of 0 allows",
            [],
            [
                '"Running On-Demand G and VT instances"',
                "servicequotas/home/services/ec2/quotas/L-DB2E81BA",
                "4 vCPUs",
            ],
        ),
        (
            "VcpuLimitExceeded",
            "limit of 0",
            ["--spot"],
            ['"All G and VT Spot Instance Requests"', "quotas/L-3819A6DF"],
        ),
        (
            "InstanceLimitExceeded",
            "You have requested more instances (1) than your current instance limit of 0 allows",
            [],
            ["Running On-Demand G and VT instances"],
        ),
        (
            "InvalidParameterValue",
            "Invalid value 'g5.xlarge' for InstanceType.",
            [],
            ["'g5.xlarge' is not an instance type EC2 offers in us-east-1"],
        ),
    ],
)
def test_launch_errors_are_turned_into_what_to_do(
    world: World, code: str, message: str, extra: list[str], words: list[str]
) -> None:
    publish_dlami()
    world.inject("before-send.ec2.RunInstances", ec2_error(code, message))
    run = world.launch("--name", "box", *extra)
    assert run.code == 1
    for word in words:
        assert word in run.err
    assert "Traceback" not in run.err
    assert named("box") == []


@pytest.mark.parametrize("code", ["ExpiredToken", "RequestExpired", "AuthFailure"])
def test_expired_credentials_say_sign_in_again(world: World, code: str) -> None:
    world.inject(
        "before-send.ec2", ec2_error(code, "The security token included in the request is expired")
    )
    run = world.launch("--name", "box")
    assert run.code == 1
    assert "aws sso login" in run.err
    for command in (["ssh", "box"], ["stop", "box"], ["audit"]):
        assert world.cli(*command).code == 1
    assert "aws sso login" in world.cli("audit").err


def test_no_capacity_in_one_zone_moves_on_to_the_next(world: World) -> None:
    publish_dlami()
    subnet_a = ec2().describe_subnets(
        Filters=[
            {"Name": "availability-zone", "Values": ["us-east-1a"]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    )["Subnets"][0]["SubnetId"]
    hook = ec2_error(
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient g5.xlarge capacity in the Availability Zone "
        "you requested (us-east-1a).",
        when=lambda body: f"SubnetId={subnet_a}" in body,
    )
    world.inject("before-send.ec2.RunInstances", hook)
    run = world.launch("--name", "box")
    assert run.code == 0, run.err
    assert "us-east-1a: InsufficientInstanceCapacity; trying the next zone" in run.err
    [instance] = named("box")
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1b"


def test_no_capacity_anywhere_names_the_zones_tried(world: World) -> None:
    publish_dlami()
    world.inject(
        "before-send.ec2.RunInstances",
        ec2_error("InsufficientInstanceCapacity", "We currently do not have sufficient capacity"),
    )
    run = world.launch("--name", "box")
    assert run.code == 1
    # moto offers g5.xlarge in a, b, c, d and f: each was tried, e (not offered) was not.
    assert "in us-east-1a, us-east-1b, us-east-1c, us-east-1d, us-east-1f" in run.err
    assert "another region" in run.err
    launched = [s for s in world.sent if s["Action"] == "RunInstances"]
    assert len(launched) == 5


def test_a_type_missing_from_every_zone_is_unsupported_in_the_region(world: World) -> None:
    publish_dlami()
    world.inject(
        "before-send.ec2.RunInstances",
        ec2_error(
            "Unsupported",
            "Your requested instance type (g5.xlarge) is not supported in your requested "
            "Availability Zone",
        ),
    )
    run = world.launch("--name", "box")
    assert run.code == 1
    assert "g5.xlarge is not available in us-east-1a" in run.err
    assert "describe-instance-type-offerings" in run.err


def test_an_unknown_type_is_named_before_anything_is_created(world: World) -> None:
    run = world.launch("--name", "box", "--type", "g5.enormous")  # the later --type wins
    assert run.code == 1
    assert "'g5.enormous' is not an instance type EC2 offers in us-east-1" in run.err
    assert ec2().describe_key_pairs()["KeyPairs"] == []


def test_a_region_without_the_dlami_parameter_is_a_clear_error(world: World) -> None:
    run = world.launch("--name", "box")
    assert run.code == 1
    assert DLAMI in run.err
    assert "--ami" in run.err
    assert ec2().describe_instances()["Reservations"] == []


def test_a_name_already_in_use_is_refused(world: World) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    run = world.launch("--name", "box")
    assert run.code == 2
    assert "already exists" in run.err
    assert len(named("box")) == 1


# --- ssh, tunnel, start, stop, install-agent ----------------------------------------------
