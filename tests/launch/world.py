"""The launcher's commands against a moto server, with their edges controlled.

AWS errors moto cannot produce are injected at the HTTP layer with botocore's
``before-send`` hook on the session the commands use; every operation sent is
recorded (``World.operations``) for the IAM policy test. Nothing here reaches
the internet: the caller's address comes from ``EDGES.caller_ip``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.awsrequest import AWSResponse, HTTPHeaders

import watchdog.config
from tests.helpers import AMI, ec2
from watchdog.aws.fake import MOTO_ACCOUNT
from watchdog.launch.commands import add_commands
from watchdog.launch.plan import DLAMI_PARAMETERS, GROUP_NAME

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install-agent.sh"
UNIT = ROOT / "systemd" / "idle-watchdog-agent.service"
POLICY = ROOT / "deploy" / "iam" / "instance-role-policy.json"
REGION = "us-east-1"
CALLER = "203.0.113.7"
DLAMI = DLAMI_PARAMETERS[0].format(arch="x86_64")


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


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """One launcher command, as the CLI runs it with the default config."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_commands(sub, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(list(argv))
    capsys.readouterr()
    code = args.func(args, watchdog.config.Config())
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


@dataclass
class World:
    """The edges of the commands, controlled: caller address, session hooks, ssh dir."""

    ssh_dir: Path
    capsys: pytest.CaptureFixture[str]
    hooks: list[tuple[str, Hook]]
    sent: list[dict[str, Any]]
    caller: str = CALLER
    operations: set[str] = field(default_factory=set)  # service:Action, every call sent

    def cli(self, *argv: str) -> Run:
        return cli(self.capsys, *argv)

    def launch(self, *argv: str) -> Run:
        return self.cli("launch", "--type", "g5.xlarge", "--ssh-dir", str(self.ssh_dir), *argv)

    def inject(self, event: str, hook: Hook) -> None:
        self.hooks.append((event, hook))

    def actions(self) -> list[str]:
        return [s["Action"] for s in self.sent]


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
        Filters=[{"Name": "group-name", "Values": [GROUP_NAME]}]
    )
    return list(answer["SecurityGroups"])  # type: ignore[arg-type]


def world_rules(group: dict[str, Any]) -> list[str]:
    return [
        r.get("CidrIp") or r.get("CidrIpv6")
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])
    ]
