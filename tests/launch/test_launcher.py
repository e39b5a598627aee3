"""The launcher: pure planning and error wording, then the commands against a moto server.

AWS errors moto cannot produce are injected at the HTTP layer with botocore's
``before-send`` hook on the session the commands use; ssh and scp are a fake
executable on PATH that records its argv. Nothing here reaches the internet:
the caller's address comes from ``EDGES.caller_ip``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
import yaml
from botocore.awsrequest import AWSResponse, HTTPHeaders

import watchdog.config
from tests.helpers import AMI, ec2, state, tags_of
from watchdog.aws.fake import MOTO_ACCOUNT
from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED
from watchdog.launch import commands as launch_cli
from watchdog.launch import launcher as L
from watchdog.launch.commands import add_commands

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install-agent.sh"
UNIT = ROOT / "systemd" / "idle-watchdog-agent.service"
POLICY = ROOT / "deploy" / "iam" / "instance-role-policy.json"
REGION = "us-east-1"
CALLER = "203.0.113.7"
DLAMI = L.DLAMI_PARAMETERS[0].format(arch="x86_64")
TEMPLATES = L.Templates.load()


def options(**changes: Any) -> L.LaunchOptions:
    base = L.LaunchOptions(region=REGION, instance_type="g5.xlarge", ssh_cidr=CALLER)
    return replace(base, **changes)


def user_data_of(text: str) -> dict[str, Any]:
    assert text.startswith("#cloud-config\n")
    parsed = yaml.safe_load(text)
    assert isinstance(parsed, dict)
    return parsed


def install_argv(user_data: dict[str, Any]) -> list[str]:
    [command] = [c for c in user_data["runcmd"] if "install-agent.sh" in " ".join(map(str, c))]
    return [str(word) for word in command]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- the plan (pure) -------------------------------------------------------------------


def test_plan_names_tags_and_renders_the_cloud_init_with_every_placeholder_filled() -> None:
    plan = L.plan_launch(
        options(name="box", idle_minutes=45, source="idle-watchdog==0.1.0"), TEMPLATES
    )
    assert plan.key_name == "idle-watchdog-us-east-1"
    assert plan.key_file == "idle-watchdog-us-east-1.pem"
    assert plan.ssh_cidr == f"{CALLER}/32"
    assert dict(plan.tags) == {"Name": "box", TAG_MANAGED: "true", TAG_IDLE_MINUTES: "45"}
    assert "$" not in plan.user_data
    data = user_data_of(plan.user_data)
    argv = install_argv(data)
    assert option(argv, "--source") == "idle-watchdog==0.1.0"
    assert option(argv, "--idle-minutes") == "45"
    files = {f["path"]: f for f in data["write_files"]}
    for path, original in ((argv[1], INSTALL), (option(argv, "--unit"), UNIT)):
        assert gzip.decompress(base64.b64decode(files[path]["content"])) == original.read_bytes()
    assert len(plan.user_data.encode()) <= L.USER_DATA_LIMIT
    # Same inputs, same user-data: nothing random or time-stamped in it.
    assert (
        L.plan_launch(
            options(name="box", idle_minutes=45, source="idle-watchdog==0.1.0"), TEMPLATES
        )
        == plan
    )


def test_the_files_that_travel_ship_inside_the_package() -> None:
    """A pipx install has no checkout: the launcher reads what the package carries,
    and the checkout's deploy/ and systemd/ are the same files."""
    script, unit = L.agent_files()
    assert script.parent == unit.parent == L.DEPLOY
    assert L.DEPLOY.parent == Path(L.__file__).parents[1]
    assert script.read_bytes() == INSTALL.read_bytes()
    assert unit.read_bytes() == UNIT.read_bytes()
    assert TEMPLATES.role_policy == POLICY.read_text()


def test_plan_default_name_comes_from_the_type() -> None:
    assert L.plan_launch(options(), TEMPLATES).name == "g5-xlarge"


@pytest.mark.parametrize(
    ("spot", "persistent", "expected"),
    [
        (False, False, None),
        (
            True,
            False,
            {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        ),
        (True, True, {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}),
    ],
)
def test_plan_market_options_and_tagged_spot_request(
    spot: bool, persistent: bool, expected: dict[str, str] | None
) -> None:
    plan = L.plan_launch(options(spot=spot, persistent=persistent), TEMPLATES)
    market = plan.market_options()
    assert (market["SpotOptions"] if market else None) == expected
    kinds = {spec["ResourceType"] for spec in plan.tag_specifications()}
    assert kinds == (
        {"instance", "volume", "spot-instances-request"} if spot else {"instance", "volume"}
    )
    for spec in plan.tag_specifications():
        assert {"Key": TAG_MANAGED, "Value": "true"} in spec["Tags"]


def test_run_instances_args_require_imdsv2_and_size_the_root_volume() -> None:
    plan = L.plan_launch(options(disk_gb=200), TEMPLATES)
    args = plan.run_instances_args(
        image_id=AMI,
        subnet_id="subnet-1",
        root_device="/dev/sda1",
        group_id="sg-1",
        key_name=None,
        profile_name="idle-watchdog-agent",
    )
    assert args["MetadataOptions"]["HttpTokens"] == "required"
    assert args["SecurityGroupIds"] == ["sg-1"]
    assert "KeyName" not in args  # a dry run without the key pair yet
    assert args["IamInstanceProfile"] == {"Name": "idle-watchdog-agent"}
    assert args["BlockDeviceMappings"][0]["DeviceName"] == "/dev/sda1"
    assert args["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 200
    assert "InstanceMarketOptions" not in args


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"persistent": True}, "--spot"),
        ({"ssh_cidr": "0.0.0.0/0"}, "whole internet"),
        ({"ssh_cidr": "::/0"}, "whole internet"),
        ({"ssh_cidr": "my laptop"}, "not an IP"),
        ({"name": "two words"}, "ssh host name"),
        ({"idle_minutes": 0}, "--idle-minutes"),
        ({"disk_gb": 4}, "--disk-gb"),
        ({"source": 'x"; rm -rf /'}, "--source"),
        ({"instance_type": "G5 XL"}, "--type"),
        ({"ami": "ubuntu"}, "--ami"),
    ],
)
def test_plan_refuses_what_cannot_work(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(L.UsageError, match=words):
        L.plan_launch(options(**changes), TEMPLATES)


def test_disk_smaller_than_the_ami_is_refused() -> None:
    L.check_disk(None, 75)
    L.check_disk(100, 75)
    with pytest.raises(L.UsageError, match="smaller than the AMI"):
        L.check_disk(50, 75)


def test_caller_address_becomes_a_single_host_network() -> None:
    assert L.caller_cidr(lambda: "203.0.113.7\n") == "203.0.113.7/32"
    assert L.caller_cidr(lambda: "2001:db8::1") == "2001:db8::1/128"
    with pytest.raises(L.LaunchError, match="--allow-cidr"):
        L.caller_cidr(lambda: "<html>captive portal</html>")

    def offline() -> str:
        raise OSError("network unreachable")

    with pytest.raises(L.LaunchError, match="--allow-cidr"):
        L.caller_cidr(offline)


# --- AWS errors in plain words (pure) --------------------------------------------------


@pytest.mark.parametrize(
    ("itype", "spot", "name", "code"),
    [
        ("g5.xlarge", False, "Running On-Demand G and VT instances", "L-DB2E81BA"),
        ("g4dn.12xlarge", True, "All G and VT Spot Instance Requests", "L-3819A6DF"),
        ("vt1.3xlarge", False, "Running On-Demand G and VT instances", "L-DB2E81BA"),
        ("p4d.24xlarge", False, "Running On-Demand P instances", "L-417A185B"),
        ("p3.2xlarge", True, "All P4, P3 and P2 Spot Instance Requests", "L-7212CCBC"),
        ("p5.48xlarge", True, "All P5 Spot Instance Requests", ""),
        ("inf2.xlarge", False, "Running On-Demand Inf instances", ""),
        ("trn1.2xlarge", True, "All Trn Spot Instance Requests", ""),
        ("dl1.24xlarge", False, "Running On-Demand DL instances", ""),
        ("x2iedn.xlarge", False, "Running On-Demand X instances", ""),
        (
            "m5.large",
            False,
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "L-1216C47A",
        ),
        (
            "t3.micro",
            True,
            "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
            "L-34B43A08",
        ),
        (
            "im4gn.large",
            False,
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "L-1216C47A",
        ),
    ],
)
def test_quota_names_the_one_to_request(itype: str, spot: bool, name: str, code: str) -> None:
    assert L.quota_for(itype, spot=spot) == (name, code)


CTX = L.ErrorContext(region=REGION, instance_type="g5.xlarge", vcpus=4)


@pytest.mark.parametrize(
    ("code", "message", "ctx", "words"),
    [
        (
            "VcpuLimitExceeded",
            "You have requested more vCPU capacity than your current vCPU limit of 0",
            CTX,
            [
                '"Running On-Demand G and VT instances"',
                "https://us-east-1.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-DB2E81BA",
                "needs 4 vCPUs",
            ],
        ),
        (
            "VcpuLimitExceeded",
            "limit of 0",
            replace(CTX, spot=True),
            ['"All G and VT Spot Instance Requests"', "quotas/L-3819A6DF"],
        ),
        ("InstanceLimitExceeded", "limit", CTX, ["Running On-Demand G and VT instances"]),
        (
            "MaxSpotInstanceCountExceeded",
            "Max spot instance count exceeded",
            replace(CTX, spot=True),
            ["All G and VT Spot Instance Requests"],
        ),
        (
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient g5.xlarge capacity",
            replace(CTX, zones_tried=("us-east-1a",), zones_offered=("us-east-1a", "us-east-1b")),
            [
                "no spare g5.xlarge capacity",
                "us-east-1a",
                "zones not tried: us-east-1b",
                "--region",
            ],
        ),
        (
            "Unsupported",
            "Your requested instance type (g5.xlarge) is not supported in your requested AZ",
            replace(CTX, zones_tried=("us-east-1e",)),
            ["g5.xlarge is not available in us-east-1e", "describe-instance-type-offerings"],
        ),
        (
            "InvalidParameterValue",
            "Invalid value 'g5.huge' for InstanceType.",
            replace(CTX, instance_type="g5.huge"),
            ["'g5.huge' is not an instance type EC2 offers in us-east-1"],
        ),
        ("InvalidInstanceType", "", CTX, ["not an instance type"]),
        ("Unsupported", "", CTX, ["g5.xlarge is not available in any zone in us-east-1."]),
        (
            "ExpiredToken",
            "The security token included in the request is expired",
            CTX,
            ["aws sso login"],
        ),
        ("ExpiredTokenException", "expired", CTX, ["aws sso login"]),
        ("RequestExpired", "Request has expired.", CTX, ["aws sso login", "clock"]),
        (
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
            CTX,
            ["aws sso login", "get-caller-identity"],
        ),
        (
            "NoCredentialsError",
            "Unable to locate credentials",
            CTX,
            ["aws configure", "AWS_PROFILE"],
        ),
        (
            "UnauthorizedOperation",
            "You are not authorized",
            CTX,
            ["not allowed", "decode-authorization-message"],
        ),
        (
            "InvalidAMIID.NotFound",
            "The image id '[ami-1]' does not exist",
            replace(CTX, ami="ami-1"),
            ["ami-1 does not exist in us-east-1"],
        ),
        (
            "UnsupportedOperation",
            "You can't stop the Spot Instance 'i-1' because it is associated with a one-time "
            "Spot Instance request.",
            CTX,
            ["cannot be stopped", "--persistent"],
        ),
        ("SomethingNew", "odd", CTX, ["AWS said SomethingNew: odd"]),
    ],
)
def test_errors_people_hit_get_plain_answers(
    code: str, message: str, ctx: L.ErrorContext, words: list[str]
) -> None:
    answer = L.explain(code, message, ctx)
    for word in words:
        assert word in answer


# --- ssh, scp, ~/.ssh/config (pure) ------------------------------------------------------


def test_ssh_and_tunnel_argv_key_known_hosts_by_instance() -> None:
    key = Path("/home/me/.ssh/idle-watchdog-us-east-1.pem")
    argv = L.ssh_argv(
        "198.51.100.4", user="ubuntu", instance_id="i-0123456789abcdef0", key_path=key
    )
    assert argv[0] == "ssh"
    assert argv[-1] == "ubuntu@198.51.100.4"
    assert ["-i", str(key)] == argv[1:3]
    assert "HostKeyAlias=i-0123456789abcdef0" in argv
    assert "StrictHostKeyChecking=accept-new" in argv
    tunnel = L.tunnel_argv(
        "198.51.100.4", user="ubuntu", instance_id="i-0123456789abcdef0", key_path=None
    )
    assert "-i" not in tunnel
    assert tunnel[-4:] == ["-N", "-L", "8888:localhost:8888", "ubuntu@198.51.100.4"]


def test_ssh_config_block_is_added_first_then_replaced_in_place() -> None:
    existing = "Host *\n    User someone-else\n"
    key = Path("/k.pem")
    first = L.ssh_config_block(
        "box", "198.51.100.4", user="ubuntu", key_path=key, instance_id="i-1"
    )
    text = L.update_ssh_config(existing, "box", first)
    assert text.startswith(first)  # ahead of Host *, whose User would win otherwise
    assert text.endswith(existing)
    second = L.ssh_config_block(
        "box", "198.51.100.9", user="ubuntu", key_path=key, instance_id="i-1"
    )
    again = L.update_ssh_config(text, "box", second)
    assert again.count("Host box") == 1
    assert "HostName 198.51.100.9" in again
    assert "198.51.100.4" not in again
    assert again.endswith(existing)
    assert L.ssh_config_entry(again, "box")["IdentityFile"] == "/k.pem"
    assert L.ssh_config_entry(again, "other") == {}


# --- audit (pure) ------------------------------------------------------------------------


def rule(protocol: str, low: int, high: int, *cidrs: str) -> dict[str, Any]:
    return {
        "IpProtocol": protocol,
        "FromPort": low,
        "ToPort": high,
        "IpRanges": [{"CidrIp": c} for c in cidrs if ":" not in c],
        "Ipv6Ranges": [{"CidrIpv6": c} for c in cidrs if ":" in c],
    }


def test_audit_puts_world_open_jupyter_first_and_ignores_narrow_rules() -> None:
    groups = {
        "sg-a": {
            "GroupId": "sg-a",
            "GroupName": "notebook",
            "IpPermissions": [
                rule("tcp", 22, 22, "0.0.0.0/0"),
                rule("tcp", 8888, 8888, "::/0"),
                rule("tcp", 443, 443, "198.51.100.0/24"),
                rule("icmp", -1, -1, "0.0.0.0/0"),
            ],
        },
        "sg-b": {
            "GroupId": "sg-b",
            "GroupName": "all",
            "IpPermissions": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        },
    }
    instances: list[dict[str, Any]] = [
        {
            "InstanceId": "i-1",
            "SecurityGroups": [{"GroupId": "sg-a"}],
            "MetadataOptions": {"HttpTokens": "required"},
        },
        {
            "InstanceId": "i-2",
            "SecurityGroups": [{"GroupId": "sg-b"}],
            "MetadataOptions": {"HttpTokens": "optional"},
        },
        {
            "InstanceId": "i-3",
            "SecurityGroups": [],
            "MetadataOptions": {"HttpTokens": "optional", "HttpEndpoint": "disabled"},
        },
    ]
    findings = L.audit(REGION, instances, groups)
    details = [f.detail for f in findings]
    assert [f.severity_name for f in findings[:2]] == ["critical", "critical"]
    assert {f.resource for f in findings[:2]} == {"sg-a", "sg-b"}
    assert any("port 8888 to ::/0" in d and "Jupyter" in d for d in details)
    assert any("all ports to 0.0.0.0/0" in d for d in details)
    assert any("port 22 to 0.0.0.0/0" in d for d in details)
    assert not any("443" in d or "icmp" in d for d in details)
    imds = [f for f in findings if f.kind == "imdsv1"]
    assert [f.resource for f in imds] == ["i-2"]  # i-3 has no metadata service at all
    assert "--http-tokens required" in imds[0].fix


# --- against moto ------------------------------------------------------------------------


def publish_dlami(region: str = REGION, ami: str = AMI) -> None:
    """Play AWS's part: publish the DLAMI's public SSM parameter.

    moto refuses PutParameter under /aws/ ("reserved parameter name", as AWS
    does), so this reaches into moto's SSM backend (the threaded server shares
    it). It is the only such reach in this file; it lives here rather than in
    watchdog/aws/fake.py, which this change does not touch.
    """
    from moto.ssm.models import Parameter, ssm_backends

    ssm_backends[MOTO_ACCOUNT][region]._parameters[DLAMI].append(
        Parameter(  # type: ignore[abstract]
            account_id=MOTO_ACCOUNT,
            name=DLAMI,
            value=ami,
            parameter_type="String",
            description=None,
            allowed_pattern=None,
            keyid=None,
            last_modified_date=datetime.now(timezone.utc),
            version=1,
            data_type="text",
        )
    )


@dataclass
class Run:
    code: int
    out: str
    err: str


Hook = Callable[..., Any]


@dataclass
class World:
    """The edges of the commands, controlled: caller address, session hooks, ssh dir."""

    ssh_dir: Path
    capsys: pytest.CaptureFixture[str]
    hooks: list[tuple[str, Hook]]
    sent: list[dict[str, Any]]
    caller: str = CALLER

    def cli(self, *argv: str) -> Run:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        add_commands(sub, argparse.ArgumentParser(add_help=False))
        args = parser.parse_args(list(argv))
        self.capsys.readouterr()
        code = args.func(args, watchdog.config.Config())
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)

    def launch(self, *argv: str) -> Run:
        return self.cli("launch", "--type", "g5.xlarge", "--ssh-dir", str(self.ssh_dir), *argv)

    def inject(self, event: str, hook: Hook) -> None:
        self.hooks.append((event, hook))

    def actions(self) -> list[str]:
        return [s["Action"] for s in self.sent]


@pytest.fixture
def world(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[World]:
    ssh_dir = tmp_path / "ssh"
    state = World(ssh_dir=ssh_dir, capsys=capsys, hooks=[], sent=[])

    def record(request: Any, **_: Any) -> None:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        state.sent.append({k: v[0] for k, v in parse_qs(body).items()})

    def session(cfg: watchdog.config.Config) -> boto3.Session:
        made = boto3.Session()
        made.events.register("before-send.ec2", record)
        for event, hook in state.hooks:
            made.events.register(event, hook)
        return made

    monkeypatch.setattr(launch_cli.EDGES, "caller_ip", lambda: state.caller + "\n")
    monkeypatch.setattr(launch_cli.EDGES, "session", session)
    monkeypatch.setattr(launch_cli.EDGES, "sleep", lambda _: None)
    yield state


class _Raw:
    """Just enough of urllib3's response for botocore to read a canned body."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, *_: object, **__: object) -> Iterator[bytes]:
        yield self._body


def ec2_error(code: str, message: str, *, when: Callable[[str], bool] = lambda _: True) -> Hook:
    """A before-send hook answering matching EC2 calls with AWS's error document."""

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        if not when(body):
            return None
        xml = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            "</Error></Errors><RequestID>test</RequestID></Response>"
        ).encode()
        status = 401 if code in ("AuthFailure", "RequestExpired") else 400
        return AWSResponse(request.url, status, HTTPHeaders(), _Raw(xml))

    return answer


def named(name: str) -> list[dict[str, Any]]:
    answer = ec2().describe_instances(
        Filters=[
            {"Name": "tag:Name", "Values": [name]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]},
        ]
    )
    return [i for r in answer["Reservations"] for i in r["Instances"]]  # type: ignore[misc]


def launcher_groups() -> list[dict[str, Any]]:
    answer = ec2().describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [L.GROUP_NAME]}]
    )
    return list(answer["SecurityGroups"])  # type: ignore[arg-type]


def world_rules(group: dict[str, Any]) -> list[str]:
    return [
        r.get("CidrIp") or r.get("CidrIpv6")
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])
    ]


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
    role = iam.get_role(RoleName=L.ROLE_NAME)["Role"]
    trust = role["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert iam.list_role_policies(RoleName=L.ROLE_NAME)["PolicyNames"] == [L.ROLE_NAME]
    document = iam.get_role_policy(RoleName=L.ROLE_NAME, PolicyName=L.ROLE_NAME)["PolicyDocument"]
    assert document == json.loads(POLICY.read_text())
    assert iam.list_attached_role_policies(RoleName=L.ROLE_NAME)["AttachedPolicies"] == []
    profile = iam.get_instance_profile(InstanceProfileName=L.ROLE_NAME)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [L.ROLE_NAME]

    # Exactly one instance, from the DLAMI, tagged, IMDSv2 only, with the profile and group.
    [instance] = named("box1")
    assert instance["ImageId"] == AMI
    assert instance["InstanceType"] == "g5.xlarge"
    assert instance["KeyName"] == "idle-watchdog-us-east-1"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{L.ROLE_NAME}")
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
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == [L.ROLE_NAME]
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

FAKE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
sys.exit(int(os.environ.get("FAKE_" + os.path.basename(sys.argv[0]).upper() + "_EXIT", "0")))
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[list[str]]]:
    """``ssh`` and ``scp`` on PATH that record their argv, one JSON list per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ssh", "scp"):
        path = bin_dir / name
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return calls


def address(name: str) -> str:
    [instance] = named(name)
    return str(instance["PublicIpAddress"])


def test_ssh_and_tunnel_look_up_the_current_address(
    world: World, fake_ssh: Callable[[], list[list[str]]]
) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    [instance] = named("box")
    key = str(world.ssh_dir / "idle-watchdog-us-east-1.pem")
    ssh_dir = ["--ssh-dir", str(world.ssh_dir)]

    assert world.cli("ssh", *ssh_dir, "box", "nvidia-smi", "-L").code == 0
    tunnel = world.cli("tunnel", instance["InstanceId"], *ssh_dir)
    assert tunnel.code == 0
    assert "http://localhost:8888/" in tunnel.err
    ip = address("box")
    ssh, forward = fake_ssh()
    assert ssh[0] == "ssh"
    assert ssh[1:3] == ["-i", key]
    assert f"HostKeyAlias={instance['InstanceId']}" in ssh
    assert ssh[-3:] == [f"ubuntu@{ip}", "nvidia-smi", "-L"]
    assert forward[0] == "ssh"
    assert forward[-4:] == ["-N", "-L", "8888:localhost:8888", f"ubuntu@{ip}"]

    # Stopped: no address to go to, and the answer says what to do.
    assert world.cli("stop", "box").code == 0
    refused = world.cli("ssh", *ssh_dir, "box")
    assert refused.code == 1
    assert "is stopped" in refused.err
    assert "idle-watchdog start box" in refused.err
    assert len(fake_ssh()) == 2

    # Started again: a new address, printed, and used by the next ssh.
    started = world.cli("start", "box", *ssh_dir)
    assert started.code == 0, started.err
    new_ip = address("box")
    assert new_ip != ip
    assert new_ip in started.out
    assert world.cli("ssh", *ssh_dir, "box").code == 0
    assert fake_ssh()[-1][-1] == f"ubuntu@{new_ip}"


def test_ssh_passes_on_ssh_exit_code_and_finds_nothing_plainly(
    world: World, fake_ssh: Callable[[], list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    monkeypatch.setenv("FAKE_SSH_EXIT", "255")
    assert world.cli("ssh", "box").code == 255
    missing = world.cli("ssh", "nobody")
    assert missing.code == 1
    assert "no instance 'nobody'" in missing.err


def test_ssh_config_is_written_only_when_asked_and_follows_the_address(world: World) -> None:
    publish_dlami()
    config = world.ssh_dir / "config"
    assert world.launch("--name", "plain").code == 0
    assert not config.exists()
    assert world.launch("--name", "box", "--ssh-config").code == 0
    text = config.read_text()
    assert "Host box\n" in text
    assert f"HostName {address('box')}\n" in text
    assert f"IdentityFile {world.ssh_dir / 'idle-watchdog-us-east-1.pem'}\n" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert world.cli("stop", "box").code == 0
    assert world.cli("start", "box", "--ssh-dir", str(world.ssh_dir)).code == 0
    text = config.read_text()
    assert text.count("Host box\n") == 1
    assert f"HostName {address('box')}\n" in text
    assert f"IdentityFile {world.ssh_dir / 'idle-watchdog-us-east-1.pem'}\n" in text


def test_stop_only_stops(world: World) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    [instance] = named("box")
    run = world.cli("stop", "box")
    assert run.code == 0
    assert "not terminated" in run.out
    assert state(REGION, instance["InstanceId"]) == "stopped"
    assert "StopInstances" in world.actions()
    assert "TerminateInstances" not in world.actions()
    assert world.cli("stop", "box").out.strip().endswith("is already stopped")


def test_a_one_time_spot_instance_that_cannot_stop_says_why(world: World) -> None:
    """moto stops one-time spot instances; AWS refuses (UnsupportedOperation)."""
    publish_dlami()
    assert world.launch("--name", "box", "--spot").code == 0
    world.inject(
        "before-send.ec2.StopInstances",
        ec2_error(
            "UnsupportedOperation",
            "You can't stop the Spot Instance because it is associated with a one-time "
            "Spot Instance request.",
        ),
    )
    run = world.cli("stop", "box")
    assert run.code == 1
    assert "cannot be stopped" in run.err
    assert "TerminateInstances" not in world.actions()


def test_install_agent_copies_the_script_runs_it_with_sudo_and_tags_managed(
    world: World, fake_ssh: Callable[[], list[list[str]]]
) -> None:
    from tests.helpers import launch

    [instance_id] = launch(REGION, tags={"Name": "old-box"})
    run = world.cli(
        "install-agent", "old-box", "--source", "idle-watchdog==0.1.0", "--idle-minutes", "45"
    )
    assert run.code == 0, run.err
    mkdir, scp, install = fake_ssh()
    host = f"ubuntu@{address('old-box')}"
    assert mkdir[0] == "ssh"
    assert mkdir[-4:] == [host, "mkdir", "-p", L.REMOTE_INSTALL_DIR]
    assert scp[0] == "scp"
    script, unit = L.agent_files()  # the files the package carries
    assert scp[-3:] == [str(script), str(unit), f"{host}:{L.REMOTE_INSTALL_DIR}/"]
    assert install[0] == "ssh"
    assert install[-2] == host
    assert install[-1] == (
        f"sudo bash {L.REMOTE_INSTALL_DIR}/install-agent.sh --source idle-watchdog==0.1.0 "
        f"--idle-minutes 45 --unit {L.REMOTE_INSTALL_DIR}/idle-watchdog-agent.service "
        "--python /usr/bin/python3"
    )
    tags = tags_of(REGION, instance_id)
    assert tags[TAG_MANAGED] == "true"
    assert tags[TAG_IDLE_MINUTES] == "45"
    assert "no instance profile" in run.err  # the agent could not publish without one


def test_install_agent_that_fails_tags_nothing(
    world: World, fake_ssh: Callable[[], list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import launch

    [instance_id] = launch(REGION, tags={"Name": "old-box"})
    monkeypatch.setenv("FAKE_SCP_EXIT", "1")
    run = world.cli("install-agent", instance_id)
    assert run.code == 1
    assert "step 2 (scp) failed" in run.err
    assert [c[0] for c in fake_ssh()] == ["ssh", "scp"]  # the script never ran
    assert TAG_MANAGED not in tags_of(REGION, instance_id)


# --- audit against moto ---------------------------------------------------------------------


def test_audit_finds_world_open_jupyter_and_missing_imdsv2(world: World) -> None:
    client = ec2()
    group_id = client.create_security_group(GroupName="notebook", Description="oops")["GroupId"]
    client.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8888,
                "ToPort": 8888,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    reservation = client.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge", SecurityGroupIds=[group_id]
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    run = world.cli("audit")
    assert run.code == 1
    first = run.out.splitlines()[0]
    assert first.startswith(
        f"[critical] {REGION} {group_id}: notebook opens port 8888 to 0.0.0.0/0"
    )
    assert instance_id in first
    assert f"[medium] {REGION} {instance_id}" in run.out
    assert "IMDSv1" in run.out

    document = json.loads(world.cli("audit", "--json").out)
    kinds = {(f["kind"], f["resource"]) for f in document["findings"]}
    assert kinds == {("world-open", group_id), ("imdsv1", instance_id)}


def test_audit_passes_what_the_launcher_creates(world: World) -> None:
    publish_dlami()
    assert world.launch("--name", "box").code == 0
    run = world.cli("audit")
    assert run.code == 0, run.out
    assert "no findings" in run.out
