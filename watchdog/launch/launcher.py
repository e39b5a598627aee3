"""Launch GPU instances with the agent on board; reach, start, stop and audit them.

Two halves. The pure half decides: ``plan_launch`` turns the options into
names, tags and the rendered cloud-init user-data; ``explain`` turns an AWS
error code into what to do about it; the ssh/scp argv and the ``~/.ssh/config``
block are built from data; ``audit`` reads describe output and reports
world-open rules and IMDSv1. The AWS half takes boto3 clients (or a session)
and explicit parameters, and reports progress through callbacks, so the CLI
stays a thin shell and the tests run it against moto.

Security choices, on purpose: SSH (22) is opened to one address only (the
caller's, or ``--allow-cidr``) and never to the world; Jupyter is never opened
at all, it is reached through an SSH tunnel; IMDSv2 is required; the instance
role carries only the agent's policy (deploy/iam/instance-role-policy.json).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import ipaddress
import json
import os
import re
import shlex
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import IpPermissionTypeDef
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_ssm import SSMClient

# --- names and constants -------------------------------------------------------------

SSH_USER = "ubuntu"  # the Deep Learning AMIs are Ubuntu
JUPYTER_PORT = 8888
GROUP_NAME = "idle-watchdog-ssh"
ROLE_NAME = "idle-watchdog-agent"  # also the instance profile's and the inline policy's name
DEFAULT_SOURCE = "idle-watchdog"  # what pip installs on the instance (PyPI)
CHECKIP_URL = "https://checkip.amazonaws.com"
REMOTE_INSTALL_DIR = ".idle-watchdog-install"  # in the login user's home, for install-agent
USER_DATA_LIMIT = 16 * 1024  # EC2's limit, before base64
ACTIVE_STATES = ("pending", "running", "stopping", "stopped")

# The current Deep Learning AMI, from its public SSM parameter. AWS documents the
# format as /aws/service/deeplearning/ami/$architecture/$ami_type/latest/ami-id,
# where ami_type is the DLAMI's name without "deep", "learning" and "ami"
# (https://docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html). For
# "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)" that gives the
# first name below, the one its release notes and most public scripts query; the
# second is the example printed on that docs page, asked in the same call in
# case a region only publishes that one.
DLAMI_PARAMETERS = (
    "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-ubuntu-22.04/latest/ami-id",
)
DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)"

#: The files that travel to instances, shipped inside the package (deploy/ and
#: systemd/ in a checkout link here).
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
_TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
_BOTO_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    user_agent_extra="idle-watchdog-launcher",
)


class LaunchError(Exception):
    """Something failed; the message says what to do, in plain words. ``code`` is AWS's."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class UsageError(LaunchError):
    """The options themselves are wrong (exit code 2)."""


# --- pure: the files that travel -----------------------------------------------------


@dataclass(frozen=True)
class Templates:
    """The deploy files the launcher sends: read once at the edge, then only data."""

    cloud_init: str
    install_script: bytes
    agent_unit: bytes
    role_policy: str

    @classmethod
    def load(cls, root: Path = DEPLOY) -> Templates:
        script, unit = agent_files(root)
        return cls(
            cloud_init=(root / "cloud-init.yaml").read_text(encoding="utf-8"),
            install_script=script.read_bytes(),
            agent_unit=unit.read_bytes(),
            role_policy=(root / "instance-role-policy.json").read_text(encoding="utf-8"),
        )


def agent_files(root: Path = DEPLOY) -> tuple[Path, Path]:
    """install-agent.sh and the agent's unit, which install-agent copies over scp."""
    return root / "install-agent.sh", root / "idle-watchdog-agent.service"


def _blob(data: bytes) -> str:
    # mtime=0: the same files render to the same user-data, launch after launch.
    return base64.b64encode(gzip.compress(data, mtime=0)).decode()


def render_user_data(templates: Templates, source: str, idle_minutes: int) -> str:
    """deploy/cloud-init.yaml with its four placeholders filled (see its header)."""
    if any(c in source for c in '"\\\n\r') or not source.strip():
        raise UsageError(f"--source {source!r}: must be non-empty, without quotes or backslashes")
    rendered = string.Template(templates.cloud_init).substitute(
        IDLE_WATCHDOG_SOURCE=source,
        IDLE_MINUTES=str(idle_minutes),
        INSTALL_AGENT_SH=_blob(templates.install_script),
        AGENT_UNIT=_blob(templates.agent_unit),
    )
    if len(rendered.encode()) > USER_DATA_LIMIT:
        raise LaunchError(f"user-data is {len(rendered.encode())} bytes; EC2 allows 16 KB")
    return rendered


# --- pure: the launch plan -----------------------------------------------------------


@dataclass(frozen=True)
class LaunchOptions:
    """What the person asked for; ``ssh_cidr`` is already decided (flag or checkip)."""

    region: str
    instance_type: str
    ssh_cidr: str
    name: str = ""
    idle_minutes: int = 30
    disk_gb: int | None = None
    spot: bool = False
    persistent: bool = False
    ami: str = ""
    source: str = DEFAULT_SOURCE


@dataclass(frozen=True)
class LaunchPlan:
    """Every name, tag and setting of one launch, decided before any AWS call."""

    region: str
    instance_type: str
    name: str
    key_name: str
    group_name: str
    role_name: str
    ssh_cidr: str
    idle_minutes: int
    disk_gb: int | None
    spot: bool
    persistent: bool
    ami: str
    user_data: str
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def key_file(self) -> str:
        """Where ssh expects it, relative to the ssh directory."""
        return f"{self.key_name}.pem"

    @property
    def lifecycle(self) -> str:
        if not self.spot:
            return "on-demand"
        return "persistent spot" if self.persistent else "one-time spot"

    def market_options(self) -> dict[str, Any] | None:
        """Spot: one-time by default; persistent only with stop (RunInstances requires it)."""
        if not self.spot:
            return None
        options: dict[str, Any] = {
            "SpotInstanceType": "persistent" if self.persistent else "one-time",
            "InstanceInterruptionBehavior": "stop" if self.persistent else "terminate",
        }
        return {"MarketType": "spot", "SpotOptions": options}

    def tag_specifications(self) -> list[dict[str, Any]]:
        """Instance and volumes carry the tags; a spot request too, so the scheduler can
        tie it to the instance (EC2 copies no tags between the two)."""
        tags = [{"Key": k, "Value": v} for k, v in self.tags.items()]
        kinds = ["instance", "volume"] + (["spot-instances-request"] if self.spot else [])
        return [{"ResourceType": kind, "Tags": tags} for kind in kinds]

    def run_instances_args(
        self,
        *,
        image_id: str,
        subnet_id: str,
        root_device: str,
        group_id: str | None,
        key_name: str | None,
        profile_name: str | None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """RunInstances' parameters for one attempt in one subnet (one zone)."""
        args: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": self.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": subnet_id,
            "UserData": self.user_data,
            # IMDSv2 only. Hop limit 2 so that containers (Docker is on the DLAMI)
            # can still reach IMDS with a token; v1 stays off either way.
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 2,
            },
            "TagSpecifications": self.tag_specifications(),
            "DryRun": dry_run,
        }
        if group_id:
            args["SecurityGroupIds"] = [group_id]
        if key_name:
            args["KeyName"] = key_name
        if profile_name:
            args["IamInstanceProfile"] = {"Name": profile_name}
        market = self.market_options()
        if market:
            args["InstanceMarketOptions"] = market
        if self.disk_gb:
            args["BlockDeviceMappings"] = [
                {
                    "DeviceName": root_device,
                    "Ebs": {
                        "VolumeSize": self.disk_gb,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ]
        return args


def default_name(instance_type: str) -> str:
    return instance_type.replace(".", "-")


def key_name_for(region: str) -> str:
    """One key pair per region (key pairs are regional), named as the file ssh reads."""
    return f"idle-watchdog-{region}"


def parse_cidr(text: str) -> str:
    """A single address becomes /32 (or /128); the whole internet is refused."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise UsageError(f"{text.strip()!r} is not an IP address or CIDR block") from exc
    if network.prefixlen == 0:
        raise UsageError(
            f"{network} would open SSH to the whole internet; name your own address or network"
        )
    return str(network)


def plan_launch(options: LaunchOptions, templates: Templates) -> LaunchPlan:
    """Decide names, tags and user-data from the options; refuse what cannot work."""
    if not _TYPE.match(options.instance_type):
        raise UsageError(f"--type {options.instance_type!r}: expected a type such as g5.xlarge")
    if options.persistent and not options.spot:
        raise UsageError("--persistent is a kind of spot request: add --spot")
    if not 1 <= options.idle_minutes <= 7 * 24 * 60:
        raise UsageError("--idle-minutes must be from 1 to 10080")
    if options.disk_gb is not None and not 8 <= options.disk_gb <= 16384:
        raise UsageError("--disk-gb must be from 8 to 16384")
    name = options.name or default_name(options.instance_type)
    if not _NAME.match(name):
        raise UsageError(
            f"--name {name!r}: letters, digits, '.', '_' and '-' only (it becomes an ssh host name)"
        )
    if options.ami and not re.match(r"^ami-[0-9a-f]{8,17}$", options.ami):
        raise UsageError(f"--ami {options.ami!r}: expected an AMI id such as ami-0123456789abcdef0")
    cidr = parse_cidr(options.ssh_cidr)
    return LaunchPlan(
        region=options.region,
        instance_type=options.instance_type,
        name=name,
        key_name=key_name_for(options.region),
        group_name=GROUP_NAME,
        role_name=ROLE_NAME,
        ssh_cidr=cidr,
        idle_minutes=options.idle_minutes,
        disk_gb=options.disk_gb,
        spot=options.spot,
        persistent=options.persistent,
        ami=options.ami,
        user_data=render_user_data(templates, options.source, options.idle_minutes),
        tags={
            "Name": name,
            TAG_MANAGED: "true",
            TAG_IDLE_MINUTES: str(options.idle_minutes),
        },
    )


def check_disk(disk_gb: int | None, image_gb: int) -> None:
    if disk_gb is not None and disk_gb < image_gb:
        raise UsageError(f"--disk-gb {disk_gb} is smaller than the AMI's own disk ({image_gb} GB)")


# --- pure: AWS errors in plain words ----------------------------------------------------

_STANDARD = (
    "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    "L-1216C47A",
    "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    "L-34B43A08",
)
# Family letters -> (on-demand quota, code, spot quota, code). Names as the Service
# Quotas console shows them (docs: "Spot Instance quotas", "On-Demand Instance
# quotas"); a code is given only where it is known, else the link opens the list.
_QUOTAS: dict[str, tuple[str, str, str, str]] = {
    "g": (
        "Running On-Demand G and VT instances",
        "L-DB2E81BA",
        "All G and VT Spot Instance Requests",
        "L-3819A6DF",
    ),
    "p": ("Running On-Demand P instances", "L-417A185B", "All P Spot Instance Requests", ""),
    "inf": ("Running On-Demand Inf instances", "", "All Inf Spot Instance Requests", ""),
    "trn": ("Running On-Demand Trn instances", "", "All Trn Spot Instance Requests", ""),
    "dl": ("Running On-Demand DL instances", "", "All DL Spot Instance Requests", ""),
    "f": ("Running On-Demand F instances", "", "All F Spot Instance Requests", ""),
    "x": ("Running On-Demand X instances", "", "All X Spot Instance Requests", ""),
    "hpc": ("Running On-Demand HPC instances", "", "", ""),
    "u": ("Running On-Demand High Memory instances", "", "", ""),
}
_QUOTAS["vt"] = _QUOTAS["g"]


def quota_for(instance_type: str, *, spot: bool) -> tuple[str, str]:
    """The vCPU quota that limits ``instance_type``: (name as in the console, code or "")."""
    family = instance_type.split(".", 1)[0]
    letters = re.match(r"[a-z]+", family)
    prefix = letters.group(0) if letters else ""
    on_demand, od_code, spot_name, spot_code = _QUOTAS.get(prefix, _STANDARD)
    if spot and prefix == "p":
        if re.match(r"p[234]", family):
            spot_name, spot_code = "All P4, P3 and P2 Spot Instance Requests", "L-7212CCBC"
        elif family.startswith("p5"):
            spot_name = "All P5 Spot Instance Requests"
    if spot and spot_name:
        return spot_name, spot_code
    return on_demand, od_code


def quota_url(region: str, code: str = "") -> str:
    base = f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas"
    return f"{base}/{code}" if code else base


@dataclass(frozen=True)
class ErrorContext:
    """What the launcher was doing, so the message can name the type, quota and zones."""

    region: str = ""
    instance_type: str = ""
    spot: bool = False
    vcpus: int = 0
    zones_tried: tuple[str, ...] = ()
    zones_offered: tuple[str, ...] = ()
    ami: str = ""


_EXPIRED = {
    "ExpiredToken",
    "ExpiredTokenException",
    "TokenRetrievalError",
    "SSOTokenLoadError",
    "UnauthorizedSSOTokenError",
}
_REJECTED = {
    "AuthFailure",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
}
_CAPACITY = {"InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported"}


def explain(code: str, message: str, ctx: ErrorContext | None = None) -> str:
    """AWS's error code and message -> what happened and what to do, in plain words."""
    ctx = ctx or ErrorContext()
    where = f" in {ctx.region}" if ctx.region else ""
    itype = ctx.instance_type or "this instance type"
    if code in _EXPIRED:
        return (
            "your AWS session has expired: sign in again with `aws sso login` (add "
            "--profile NAME if you use a profile), or refresh the temporary keys in "
            f"~/.aws/credentials or AWS_SESSION_TOKEN ({code})"
        )
    if code == "RequestExpired":
        return (
            "AWS refused the request as expired (RequestExpired): your temporary credentials "
            "have run out (run `aws sso login`, or refresh them), or this computer's clock is "
            "more than 5 minutes off (check the time and NTP)"
        )
    if code in _REJECTED:
        return (
            f"AWS did not accept your credentials ({code}): they are wrong, revoked or "
            "expired. Check with `aws sts get-caller-identity`; with SSO run `aws sso "
            "login`, otherwise `aws configure`"
        )
    if code in ("NoCredentialsError", "PartialCredentialsError"):
        return (
            "no AWS credentials found: run `aws configure` or `aws sso login`, or set "
            "AWS_PROFILE (or [aws] profile in the idle-watchdog config)"
        )
    if code in ("VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"):
        name, qcode = quota_for(ctx.instance_type, spot=ctx.spot)
        need = f" ({itype} needs {ctx.vcpus} vCPUs)" if ctx.vcpus else ""
        kind = "spot" if ctx.spot else "on-demand"
        return (
            f"your account's {kind} vCPU quota for {itype}{where} is used up or 0 (new "
            f"accounts start at 0 for GPU types){need}. Request an increase of the quota "
            f'"{name}" at {quota_url(ctx.region or "us-east-1", qcode)}; '
            f"increases take minutes to days. AWS said: {message}"
        )
    if code in ("InsufficientInstanceCapacity", "InsufficientCapacity"):
        tried = ", ".join(ctx.zones_tried) or "the zone asked"
        untried = [z for z in ctx.zones_offered if z not in ctx.zones_tried]
        other = f"; zones not tried: {', '.join(untried)}" if untried else ""
        alt = "on-demand (drop --spot)" if ctx.spot else "--spot"
        return (
            f"AWS has no spare {itype} capacity right now in {tried}{other}. Try again in a "
            f"few minutes, another region (--region), {alt}, or a similar type"
        )
    if code == "Unsupported":
        tried = ", ".join(ctx.zones_tried) or "any zone"
        return (
            f"{itype} is not available in {tried}{where}. To see the regions that offer it: "
            "aws ec2 describe-instance-type-offerings --location-type region "
            f"--filters Name=instance-type,Values={itype} --region REGION"
        )
    if code == "InvalidInstanceType" or (
        code == "InvalidParameterValue" and re.search(r"instance ?type", message, re.I)
    ):
        return (
            f"{itype!r} is not an instance type EC2 offers{where} (check the spelling: "
            "g5.xlarge, g4dn.xlarge, g6.xlarge, p4d.24xlarge ...)"
        )
    if code.startswith("InvalidAMIID"):
        ami = f" {ctx.ami}" if ctx.ami else ""
        return f"the AMI{ami} does not exist{where} (AMI ids differ per region): {message}"
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        return (
            f"your AWS identity is not allowed to do this ({code}): {message}. The launcher "
            "needs EC2 (RunInstances, CreateKeyPair, CreateSecurityGroup, "
            "AuthorizeSecurityGroupIngress, CreateTags, Describe*), IAM (CreateRole, "
            "PutRolePolicy, CreateInstanceProfile, AddRoleToInstanceProfile, PassRole) and "
            "ssm:GetParameters; an encoded message reads with `aws sts "
            "decode-authorization-message --encoded-message ...`"
        )
    if code == "OptInRequired":
        return (
            f"the account is not subscribed to this{where}: the region may need enabling "
            f"(Account settings) or the AMI a Marketplace subscription. AWS said: {message}"
        )
    if code == "UnsupportedOperation" and "spot" in message.lower():
        return (
            "a one-time spot instance cannot be stopped (AWS's rule); the watchdog never "
            "terminates, so terminate it yourself when done, or launch with --spot "
            f"--persistent next time. AWS said: {message}"
        )
    if code in ("IncorrectInstanceState", "IncorrectState"):
        return f"the instance is not in a state that allows this: {message}"
    return f"AWS said {code}: {message}"


def _code_of(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code", "Unknown")), str(error.get("Message", str(exc)))
    return type(exc).__name__, str(exc)


@contextlib.contextmanager
def translated(ctx: ErrorContext | None = None) -> Iterator[None]:
    """botocore's exceptions -> ``LaunchError`` with the plain message."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        code, message = _code_of(exc)
        raise LaunchError(explain(code, message, ctx), code) from exc


# --- pure: ssh, scp and ~/.ssh/config -----------------------------------------------------


def ssh_options(key_path: Path | None, instance_id: str) -> list[str]:
    """Known-hosts entries keyed by the instance, not its address: the address changes at
    every start and AWS reuses addresses, so keying by IP would prompt or collide."""
    options = ["-o", f"HostKeyAlias={instance_id}", "-o", "StrictHostKeyChecking=accept-new"]
    if key_path is not None:
        options = ["-i", str(key_path), "-o", "IdentitiesOnly=yes", *options]
    return options


def ssh_argv(
    host: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
    command: Sequence[str] = (),
) -> list[str]:
    return ["ssh", *ssh_options(key_path, instance_id), f"{user}@{host}", *command]


def tunnel_argv(
    host: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
    local_port: int = JUPYTER_PORT,
    remote_port: int = JUPYTER_PORT,
) -> list[str]:
    forward = f"{local_port}:localhost:{remote_port}"
    return ["ssh", *ssh_options(key_path, instance_id), "-N", "-L", forward, f"{user}@{host}"]


def scp_argv(
    files: Sequence[Path],
    host: str,
    remote_dir: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
) -> list[str]:
    return [
        "scp",
        *ssh_options(key_path, instance_id),
        *map(str, files),
        f"{user}@{host}:{remote_dir}/",
    ]


def install_commands(
    host: str,
    *,
    user: str,
    instance_id: str,
    key_path: Path | None,
    script: Path,
    unit: Path,
    source: str,
    idle_minutes: int,
) -> list[list[str]]:
    """The three steps of install-agent: make a directory, copy the files, run the script."""
    remote = REMOTE_INSTALL_DIR
    run = shlex.join(
        [
            "sudo",
            "bash",
            f"{remote}/{script.name}",
            "--source",
            source,
            "--idle-minutes",
            str(idle_minutes),
            "--unit",
            f"{remote}/{unit.name}",
            "--python",
            "/usr/bin/python3",  # not a conda python first on PATH (DLAMI)
        ]
    )
    mkdir = ["mkdir", "-p", remote]
    return [
        ssh_argv(host, user=user, instance_id=instance_id, key_path=key_path, command=mkdir),
        scp_argv(
            [script, unit], host, remote, user=user, instance_id=instance_id, key_path=key_path
        ),
        ssh_argv(host, user=user, instance_id=instance_id, key_path=key_path, command=[run]),
    ]


def _markers(name: str) -> tuple[str, str]:
    return f"# >>> idle-watchdog {name} >>>", f"# <<< idle-watchdog {name} <<<"


def ssh_config_block(name: str, host: str, *, user: str, key_path: Path, instance_id: str) -> str:
    begin, end = _markers(name)
    lines = [
        begin,
        f"# {instance_id}; `idle-watchdog start {name}` rewrites HostName when the address changes",
        f"Host {name}",
        f"    HostName {host}",
        f"    User {user}",
        f"    IdentityFile {key_path}",
        "    IdentitiesOnly yes",
        f"    HostKeyAlias {instance_id}",
        "    StrictHostKeyChecking accept-new",
        end,
    ]
    return "\n".join(lines) + "\n"


def update_ssh_config(text: str, name: str, block: str) -> str:
    """Replace this name's block, or put it first (ssh takes the first value it finds, so
    a ``Host *`` further down cannot override it)."""
    begin, end = _markers(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return block + ("\n" + text if text else "")


def ssh_config_entry(text: str, name: str) -> dict[str, str]:
    """The settings of this name's block (empty if there is none), e.g. to keep its
    User and IdentityFile when only the address changes."""
    begin, end = _markers(name)
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return {}
    entry: dict[str, str] = {}
    for line in text[start:stop].splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            entry[parts[0]] = parts[1]
    return entry


def connection_help(launched: Launched) -> str:
    """What to type next: ssh, the Jupyter tunnel and its URL."""
    host = launched.public_ip or launched.public_dns
    ssh = shlex.join(
        ssh_argv(
            host, user=launched.user, instance_id=launched.instance_id, key_path=launched.key_path
        )
    )
    tunnel = shlex.join(
        tunnel_argv(
            host, user=launched.user, instance_id=launched.instance_id, key_path=launched.key_path
        )
    )
    lines = [
        f"{launched.name} ({launched.instance_id}) is running in {launched.zone}: {host}",
        f"  ssh:      {ssh}",
        f"            (or: idle-watchdog ssh {launched.name})",
        f"  jupyter:  {tunnel}",
        f"            (or: idle-watchdog tunnel {launched.name}), then open "
        f"http://localhost:{JUPYTER_PORT}/",
        "  the agent installs itself during the first minutes (log: "
        "/var/log/cloud-init-output.log); the address changes at every start",
    ]
    if launched.spot and not launched.persistent:
        lines.append(
            "  note: a one-time spot instance cannot be stopped, only terminated; the "
            "watchdog will warn about it instead of stopping it (use --persistent to allow stop)"
        )
    return "\n".join(lines)


# --- pure: audit ------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    region: str
    kind: str  # world-open | imdsv1
    resource: str  # sg-... or i-...
    instances: tuple[str, ...]
    detail: str
    fix: str
    severity: int  # 0 most severe

    @property
    def severity_name(self) -> str:
        return ("critical", "high", "medium")[min(self.severity, 2)]

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity_name,
            "region": self.region,
            "kind": self.kind,
            "resource": self.resource,
            "instances": list(self.instances),
            "detail": self.detail,
            "fix": self.fix,
        }


_WORLD = ("0.0.0.0/0", "::/0")


def _ports(permission: Mapping[str, Any]) -> tuple[int, int] | None:
    """(from, to) of a TCP/UDP/all rule; None for ICMP, which has no ports."""
    protocol = str(permission.get("IpProtocol", ""))
    if protocol in ("-1", "all"):
        return 0, 65535
    if protocol in ("tcp", "udp", "6", "17"):
        return int(permission.get("FromPort", 0)), int(permission.get("ToPort", 65535))
    return None


def world_open(group: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """The group's ingress open to the internet: (ports in words, CIDR, covers Jupyter)."""
    found: list[tuple[str, str, bool]] = []
    for permission in group.get("IpPermissions") or []:
        ports = _ports(permission)
        if ports is None:
            continue
        cidrs = [r.get("CidrIp") for r in permission.get("IpRanges") or []]
        cidrs += [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges") or []]
        low, high = ports
        if (low, high) == (0, 65535):
            span = "all ports"
        else:
            span = f"port {low}" if low == high else f"ports {low}-{high}"
        found.extend((span, c, low <= JUPYTER_PORT <= high) for c in cidrs if c in _WORLD)
    return found


def audit(
    region: str, instances: Sequence[Mapping[str, Any]], groups: Mapping[str, Mapping[str, Any]]
) -> list[Finding]:
    """World-open ingress on the groups of these instances, and instances allowing IMDSv1.

    ``instances`` and ``groups`` (by id) are DescribeInstances /
    DescribeSecurityGroups records. Jupyter's 8888 open to the world comes first.
    """
    attached: dict[str, list[str]] = {}
    for item in instances:
        for group in item.get("SecurityGroups") or []:
            attached.setdefault(group["GroupId"], []).append(item["InstanceId"])
    findings: list[Finding] = []
    for group_id, users in sorted(attached.items()):
        group = groups.get(group_id)
        if group is None:
            continue
        for span, cidr, jupyter in world_open(group):
            what = " (Jupyter: anyone who finds it can run code there)" if jupyter else ""
            findings.append(
                Finding(
                    region=region,
                    kind="world-open",
                    resource=group_id,
                    instances=tuple(sorted(set(users))),
                    detail=f"{group.get('GroupName', group_id)} opens {span} to {cidr}{what}",
                    fix=f"remove the rule (aws ec2 revoke-security-group-ingress --group-id "
                    f"{group_id} ...); reach Jupyter with `idle-watchdog tunnel NAME`",
                    severity=0 if jupyter else 1,
                )
            )
    for item in instances:
        options = item.get("MetadataOptions") or {}
        if options.get("HttpEndpoint", "enabled") == "disabled":
            continue
        if options.get("HttpTokens") != "required":
            instance_id = item["InstanceId"]
            findings.append(
                Finding(
                    region=region,
                    kind="imdsv1",
                    resource=instance_id,
                    instances=(instance_id,),
                    detail=f"{_name_of(item) or instance_id} allows IMDSv1 "
                    f"(HttpTokens={options.get('HttpTokens', 'unknown')})",
                    fix=f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} "
                    f"--http-tokens required --http-endpoint enabled --region {region}",
                    severity=2,
                )
            )
    return sorted(findings, key=lambda f: (f.severity, f.region, f.resource))


def _name_of(item: Mapping[str, Any]) -> str:
    return next((t.get("Value", "") for t in item.get("Tags") or [] if t.get("Key") == "Name"), "")


# --- the AWS edge -----------------------------------------------------------------------


@dataclass(frozen=True)
class Clients:
    """The three services a launch talks to, for one region."""

    ec2: EC2Client
    iam: IAMClient
    ssm: SSMClient

    @classmethod
    def from_session(cls, session: boto3.Session, region: str) -> Clients:
        return cls(
            ec2=session.client("ec2", region_name=region, config=_BOTO_CONFIG),
            iam=session.client("iam", region_name=region, config=_BOTO_CONFIG),
            ssm=session.client("ssm", region_name=region, config=_BOTO_CONFIG),
        )


@dataclass(frozen=True)
class Found:
    """One instance as the ssh/start/stop commands need it."""

    region: str
    id: str
    name: str
    state: str
    zone: str
    public_ip: str
    public_dns: str
    key_name: str
    lifecycle: str
    tags: Mapping[str, str]
    profile_arn: str = ""

    @property
    def host(self) -> str:
        return self.public_ip or self.public_dns

    @classmethod
    def parse(cls, region: str, item: Mapping[str, Any]) -> Found:
        return cls(
            region=region,
            id=item["InstanceId"],
            name=_name_of(item),
            state=item["State"]["Name"],
            zone=(item.get("Placement") or {}).get("AvailabilityZone", ""),
            public_ip=item.get("PublicIpAddress", ""),
            public_dns=item.get("PublicDnsName", ""),
            key_name=item.get("KeyName", ""),
            lifecycle=item.get("InstanceLifecycle") or "on-demand",
            tags={t["Key"]: t.get("Value", "") for t in item.get("Tags") or []},
            profile_arn=(item.get("IamInstanceProfile") or {}).get("Arn", ""),
        )


@dataclass(frozen=True)
class Launched:
    region: str
    instance_id: str
    name: str
    zone: str
    public_ip: str
    public_dns: str
    key_path: Path
    spot: bool = False
    persistent: bool = False
    user: str = SSH_USER


Say = Callable[[str], None]
Progress = Callable[[str, float], None]


def _quiet(_: str) -> None:
    return None


def _quiet_progress(_: str, __: float) -> None:
    return None


def _instances(ec2: EC2Client, filters: list[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            found.extend(reservation.get("Instances", []))  # type: ignore[arg-type]
    return found


def find_instances(
    ec2_for: Callable[[str], EC2Client], regions: Sequence[str], ref: str
) -> list[Found]:
    """Instances (not terminated) whose id, Name tag, public IP or DNS name is ``ref``."""
    if _INSTANCE_ID.match(ref):
        key = "instance-id"
    elif re.match(r"^[0-9.]+$|^[0-9a-f:]+:[0-9a-f:]*$", ref):
        key = "ip-address"
    elif ref.endswith(".amazonaws.com"):
        key = "dns-name"
    else:
        key = "tag:Name"
    filters = [
        {"Name": key, "Values": [ref]},
        {"Name": "instance-state-name", "Values": list(ACTIVE_STATES)},
    ]
    found: list[Found] = []
    for region in regions:
        with translated(ErrorContext(region=region)):
            found.extend(Found.parse(region, i) for i in _instances(ec2_for(region), filters))
    return found


def instance_type_info(ec2: EC2Client, instance_type: str, ctx: ErrorContext) -> tuple[str, int]:
    """(architecture for the AMI, vCPUs for the quota message); unknown types fail here."""
    with translated(ctx):
        answer = ec2.describe_instance_types(InstanceTypes=[instance_type])  # type: ignore[list-item]
    types = answer.get("InstanceTypes", [])
    if not types:
        raise LaunchError(explain("InvalidInstanceType", "", ctx), "InvalidInstanceType")
    info = types[0]
    arches = info.get("ProcessorInfo", {}).get("SupportedArchitectures", ["x86_64"])
    arch = "arm64" if "arm64" in arches and "x86_64" not in arches else "x86_64"
    return arch, int(info.get("VCpuInfo", {}).get("DefaultVCpus", 0))


def offered_zones(ec2: EC2Client, instance_type: str, ctx: ErrorContext) -> list[str]:
    with translated(ctx):
        answer = ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [instance_type]}],
        )
    return sorted(o["Location"] for o in answer.get("InstanceTypeOfferings", []))


def default_subnets(ec2: EC2Client, ctx: ErrorContext) -> tuple[str, list[tuple[str, str]]]:
    """The default VPC and its per-zone default subnets, as [(zone, subnet id)]."""
    with translated(ctx):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise LaunchError(
                f"{ctx.region} has no default VPC: create one with `aws ec2 create-default-vpc "
                f"--region {ctx.region}` (the launcher uses its public subnets)"
            )
        vpc_id = vpcs[0]["VpcId"]
        subnets = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "default-for-az", "Values": ["true"]},
            ]
        )["Subnets"]
    return vpc_id, sorted((s["AvailabilityZone"], s["SubnetId"]) for s in subnets)


def find_dlami(ssm: SSMClient, arch: str, ctx: ErrorContext) -> str:
    """The current Deep Learning AMI of the region, from its public SSM parameter."""
    names = [template.format(arch=arch) for template in DLAMI_PARAMETERS]
    with translated(ctx):
        answer = ssm.get_parameters(Names=names)
    values = {p["Name"]: p.get("Value", "") for p in answer.get("Parameters", [])}
    for name in names:
        if values.get(name, "").startswith("ami-"):
            return values[name]
    raise LaunchError(
        f"no current {DLAMI_NAME} ({arch}) is published in {ctx.region} (SSM parameter "
        f"{names[0]} not found): pass --ami AMI_ID, e.g. from `aws ec2 describe-images "
        f"--owners amazon --region {ctx.region} --filters "
        f"'Name=name,Values=Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*'`"
    )


def image_root(ec2: EC2Client, image_id: str, ctx: ErrorContext) -> tuple[str, int]:
    """(root device name, its size in GB) of the AMI, for --disk-gb."""
    with translated(replace(ctx, ami=image_id)):
        images = ec2.describe_images(ImageIds=[image_id]).get("Images", [])
    if not images:
        raise LaunchError(explain("InvalidAMIID.NotFound", image_id, replace(ctx, ami=image_id)))
    image = images[0]
    root = image.get("RootDeviceName", "/dev/sda1")
    size = next(
        (
            int(m.get("Ebs", {}).get("VolumeSize", 0))
            for m in image.get("BlockDeviceMappings", [])
            if m.get("DeviceName") == root
        ),
        0,
    )
    return root, size


def _exists(call: Callable[[], Any], missing: Sequence[str]) -> bool:
    try:
        call()
    except ClientError as exc:
        if _code_of(exc)[0] in missing:
            return False
        raise
    return True


def _dry(call: Callable[[], Any]) -> None:
    """Make a DryRun call: DryRunOperation means it would have succeeded."""
    try:
        call()
    except ClientError as exc:
        if _code_of(exc)[0] != "DryRunOperation":
            raise


def write_private_file(path: Path, data: str, mode: int = 0o400) -> None:
    """Create ``path`` with ``mode`` from the start (never briefly world-readable)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)


def ensure_key_pair(
    ec2: EC2Client, name: str, path: Path, *, dry_run: bool, ctx: ErrorContext, say: Say = _quiet
) -> bool:
    """Reuse the region's key pair or create it, saving the private key at ``path`` (0400).

    Returns whether it exists (in a dry run a missing one stays missing).
    """
    with translated(ctx):
        known = _exists(
            lambda: ec2.describe_key_pairs(KeyNames=[name]), ["InvalidKeyPair.NotFound"]
        )
        if known and path.exists():
            say(f"key pair {name}: reused ({path})")
            return True
        if known:
            raise LaunchError(
                f"key pair {name} exists in {ctx.region} but its private key {path} is not "
                f"here. Restore the file, or delete the key pair (aws ec2 delete-key-pair "
                f"--key-name {name} --region {ctx.region}) to let the launcher make a new one"
            )
        if path.exists():
            raise LaunchError(
                f"{path} exists but {ctx.region} has no key pair {name}: move the file "
                "away (the launcher will not overwrite a private key), then launch again"
            )
        if dry_run:
            _dry(lambda: ec2.create_key_pair(KeyName=name, KeyType="ed25519", DryRun=True))
            say(f"key pair {name}: would be created and saved to {path}")
            return False
        answer = ec2.create_key_pair(
            KeyName=name,
            KeyType="ed25519",
            TagSpecifications=[
                {"ResourceType": "key-pair", "Tags": [{"Key": "Name", "Value": name}]}
            ],
        )
    try:
        write_private_file(path, answer["KeyMaterial"])
    except OSError as exc:
        with contextlib.suppress(ClientError, BotoCoreError):
            ec2.delete_key_pair(KeyName=name)  # unusable without its private key
        raise LaunchError(f"cannot save the private key to {path}: {exc}") from exc
    say(f"key pair {name}: created, private key saved to {path} (mode 0400)")
    return True


def _ingress(cidr: str) -> IpPermissionTypeDef:
    why = "SSH from idle-watchdog launch"
    rule: IpPermissionTypeDef = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    if ipaddress.ip_network(cidr).version == 4:
        rule["IpRanges"] = [{"CidrIp": cidr, "Description": why}]
    else:
        rule["Ipv6Ranges"] = [{"CidrIpv6": cidr, "Description": why}]
    return rule


def _allows(group: Mapping[str, Any], cidr: str) -> bool:
    for permission in group.get("IpPermissions") or []:
        if permission.get("IpProtocol") != "tcp":
            continue
        if not permission.get("FromPort", 0) <= 22 <= permission.get("ToPort", 0):
            continue
        ranges = [r.get("CidrIp") for r in permission.get("IpRanges") or []]
        ranges += [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges") or []]
        if cidr in ranges:
            return True
    return False


def ensure_security_group(
    ec2: EC2Client,
    vpc_id: str,
    name: str,
    cidr: str,
    *,
    dry_run: bool,
    ctx: ErrorContext,
    say: Say = _quiet,
) -> str | None:
    """Reuse or create the group that opens SSH to ``cidr`` only; its id (None: dry run, new).

    Only port 22 is ever opened, and only to the one network: Jupyter goes through
    an SSH tunnel. A reused group gets the current address added if it lacks it.
    """
    with translated(ctx):
        groups = ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]
        if not groups:
            if dry_run:
                _dry(
                    lambda: ec2.create_security_group(
                        GroupName=name, Description="idle-watchdog", VpcId=vpc_id, DryRun=True
                    )
                )
                say(f"security group {name}: would be created, SSH (22) from {cidr} only")
                return None
            group_id = ec2.create_security_group(
                GroupName=name,
                Description="idle-watchdog: SSH from the launching address only; "
                "Jupyter through an SSH tunnel",
                VpcId=vpc_id,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": name}]}
                ],
            )["GroupId"]
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_ingress(cidr)])
            say(f"security group {name}: created ({group_id}), SSH (22) from {cidr} only")
            return group_id
        group = groups[0]
        group_id = group["GroupId"]
        for span, world, _ in world_open(group):
            say(f"warning: {name} ({group_id}) opens {span} to {world}: remove that rule")
        if _allows(group, cidr):
            say(f"security group {name}: reused ({group_id}), SSH from {cidr}")
        elif dry_run:
            _dry(
                lambda: ec2.authorize_security_group_ingress(
                    GroupId=group_id, IpPermissions=[_ingress(cidr)], DryRun=True
                )
            )
            say(f"security group {name}: reused ({group_id}); would add SSH from {cidr}")
        else:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[_ingress(cidr)])
            say(f"security group {name}: reused ({group_id}), SSH from {cidr} added")
    return group_id


def ensure_instance_profile(
    iam: IAMClient,
    name: str,
    policy: str,
    *,
    dry_run: bool,
    ctx: ErrorContext,
    say: Say = _quiet,
) -> tuple[str | None, bool]:
    """Reuse or create the agent's role and instance profile (same name).

    The role's inline policy is (re)written every launch so it always matches
    deploy/iam/instance-role-policy.json. Returns (profile name or None when a
    dry run finds it missing, whether anything was created just now).
    """
    created = False
    with translated(ctx):
        role = _exists(lambda: iam.get_role(RoleName=name), ["NoSuchEntity"])
        profile_roles: list[str] = []
        profile = True
        try:
            answer = iam.get_instance_profile(InstanceProfileName=name)
            profile_roles = [r["RoleName"] for r in answer["InstanceProfile"].get("Roles", [])]
        except ClientError as exc:
            if _code_of(exc)[0] != "NoSuchEntity":
                raise
            profile = False
        if dry_run:
            state = "reused" if role and profile and name in profile_roles else "would be created"
            say(f"instance role and profile {name}: {state} (IAM has no dry run)")
            return (name if role and profile and name in profile_roles else None), False
        if not role:
            iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=_TRUST_POLICY,
                Description="idle-watchdog agent: heartbeat tag, self-stop when managed",
                Tags=[{"Key": "Name", "Value": name}],
            )
            created = True
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=policy)
        if not profile:
            iam.create_instance_profile(InstanceProfileName=name)
            created = True
        if name not in profile_roles:
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
            created = True
    say(f"instance role and profile {name}: {'created' if created else 'reused'}")
    return name, created


def _profile_not_ready(code: str, message: str) -> bool:
    """A just-created instance profile takes seconds to reach EC2 (IAM is eventually
    consistent): RunInstances then says the profile name is invalid."""
    return code in ("InvalidParameterValue", "NoSuchEntity") and "rofile" in message


def run_in_zones(
    ec2: EC2Client,
    args_for: Callable[[str, str], dict[str, Any]],
    subnets: Sequence[tuple[str, str]],
    ctx: ErrorContext,
    *,
    profile_fresh: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    say: Say = _quiet,
) -> dict[str, Any]:
    """RunInstances in each zone's subnet in turn until one has capacity.

    ``args_for(zone, subnet)`` gives the parameters. No capacity
    (InsufficientInstanceCapacity) or the type missing in a zone (Unsupported)
    moves on to the next zone; anything else stops with its plain message.
    Returns the instance record, or {} for a successful dry run.
    """
    tried: list[str] = []
    last: tuple[str, str] = ("Unsupported", "no zone offers the type")
    for zone, subnet in subnets:
        tried.append(zone)
        for attempt in range(12):
            args = args_for(zone, subnet)
            try:
                answer = ec2.run_instances(**args)
            except ClientError as exc:
                code, message = _code_of(exc)
                if code == "DryRunOperation":
                    return {}
                if profile_fresh and attempt < 11 and _profile_not_ready(code, message):
                    sleep(5)
                    continue
                if code in _CAPACITY:
                    last = (code, message)
                    say(f"{zone}: {code}; trying the next zone")
                    break
                raise LaunchError(
                    explain(code, message, replace(ctx, zones_tried=tuple(tried))), code
                ) from exc
            except BotoCoreError as exc:
                code, message = _code_of(exc)
                raise LaunchError(explain(code, message, ctx), code) from exc
            return dict(answer["Instances"][0])
    code, message = last
    raise LaunchError(explain(code, message, replace(ctx, zones_tried=tuple(tried))), code)


def wait_for_state(
    ec2: EC2Client,
    instance_id: str,
    want: str,
    ctx: ErrorContext,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = _quiet_progress,
    timeout: float = 600,
    poll: float = 5,
) -> dict[str, Any]:
    """Poll until the instance is ``want``; report each poll; fail if it dies on the way."""
    start = clock()
    while True:
        with translated(ctx):
            found = _instances(ec2, [{"Name": "instance-id", "Values": [instance_id]}])
        item = found[0] if found else {}
        state = item.get("State", {}).get("Name", "pending") if item else "pending"
        elapsed = clock() - start
        progress(state, elapsed)
        if state == want:
            return item
        if state in ("shutting-down", "terminated") and want != state:
            reason = (item.get("StateReason") or {}).get("Message", "no reason given")
            raise LaunchError(f"{instance_id} went {state} instead of {want}: {reason}")
        if elapsed >= timeout:
            raise LaunchError(
                f"{instance_id} is still {state} after {int(elapsed)} s; check the EC2 console"
            )
        sleep(poll)


def launch(
    clients: Clients,
    options: LaunchOptions,
    templates: Templates,
    *,
    ssh_dir: Path,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    say: Say = _quiet,
    progress: Progress = _quiet_progress,
) -> Launched | None:
    """The whole launch; None after a successful dry run (which creates nothing)."""
    plan = plan_launch(options, templates)
    ec2 = clients.ec2
    ctx = ErrorContext(region=plan.region, instance_type=plan.instance_type, spot=plan.spot)
    arch, vcpus = instance_type_info(ec2, plan.instance_type, ctx)
    ctx = replace(ctx, vcpus=vcpus)
    zones = offered_zones(ec2, plan.instance_type, ctx)
    if not zones:
        raise LaunchError(explain("Unsupported", "no zone offers it", ctx), "Unsupported")
    ctx = replace(ctx, zones_offered=tuple(zones))
    image_id = plan.ami or find_dlami(clients.ssm, arch, ctx)
    ctx = replace(ctx, ami=image_id)
    root_device, image_gb = image_root(ec2, image_id, ctx)
    check_disk(plan.disk_gb, image_gb)
    vpc_id, subnets = default_subnets(ec2, ctx)
    usable = [(zone, subnet) for zone, subnet in subnets if zone in zones]
    if not usable:
        raise LaunchError(
            f"the default VPC of {plan.region} has no subnet in a zone offering "
            f"{plan.instance_type} ({', '.join(zones)})"
        )
    same_name = find_instances(lambda _: ec2, [plan.region], plan.name)
    if same_name:
        raise UsageError(
            f"an instance named {plan.name} already exists in {plan.region} "
            f"({', '.join(i.id for i in same_name)}): pass another --name"
        )
    say(f"{plan.instance_type} ({plan.lifecycle}, {vcpus} vCPUs) from {image_id} in {plan.region}")
    key_path = ssh_dir / plan.key_file
    has_key = ensure_key_pair(ec2, plan.key_name, key_path, dry_run=dry_run, ctx=ctx, say=say)
    group_id = ensure_security_group(
        ec2, vpc_id, plan.group_name, plan.ssh_cidr, dry_run=dry_run, ctx=ctx, say=say
    )
    profile, fresh = ensure_instance_profile(
        clients.iam, plan.role_name, templates.role_policy, dry_run=dry_run, ctx=ctx, say=say
    )

    def args_for(zone: str, subnet: str) -> dict[str, Any]:
        return plan.run_instances_args(
            image_id=image_id,
            subnet_id=subnet,
            root_device=root_device,
            group_id=group_id,
            key_name=plan.key_name if has_key else None,
            profile_name=profile,
            dry_run=dry_run,
        )

    if dry_run:
        run_in_zones(ec2, args_for, usable[:1], ctx, say=say)
        say(
            f"dry run: RunInstances would have succeeded in {usable[0][0]} (permissions and "
            "parameters checked; nothing was created)"
        )
        return None
    item = run_in_zones(ec2, args_for, usable, ctx, profile_fresh=fresh, sleep=sleep, say=say)
    instance_id = item["InstanceId"]
    say(f"{instance_id}: launched in {item.get('Placement', {}).get('AvailabilityZone', '?')}")
    running = wait_for_state(
        ec2, instance_id, "running", ctx, sleep=sleep, clock=clock, progress=progress
    )
    found = Found.parse(plan.region, running)
    return Launched(
        region=plan.region,
        instance_id=instance_id,
        name=plan.name,
        zone=found.zone,
        public_ip=found.public_ip,
        public_dns=found.public_dns,
        key_path=key_path,
        spot=plan.spot,
        persistent=plan.persistent,
    )


def start(
    ec2: EC2Client,
    found: Found,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    progress: Progress = _quiet_progress,
) -> Found:
    """Start (if needed), wait for running, return it with its new address."""
    ctx = ErrorContext(region=found.region)
    if found.state != "running":
        with translated(ctx):
            ec2.start_instances(InstanceIds=[found.id])
    item = wait_for_state(
        ec2, found.id, "running", ctx, sleep=sleep, clock=clock, progress=progress
    )
    return Found.parse(found.region, item)


def stop(ec2: EC2Client, found: Found) -> str:
    """Stop, never terminate. Returns the state EC2 reports."""
    with translated(ErrorContext(region=found.region)):
        answer = ec2.stop_instances(InstanceIds=[found.id])
    changes = answer.get("StoppingInstances", [])
    return changes[0]["CurrentState"]["Name"] if changes else "stopping"


def audit_region(ec2: EC2Client, region: str) -> list[Finding]:
    """Every instance that is not terminated (managed or not: an open Jupyter is as
    dangerous on an unwatched machine) and the groups attached to them."""
    with translated(ErrorContext(region=region)):
        instances = _instances(
            ec2, [{"Name": "instance-state-name", "Values": list(ACTIVE_STATES)}]
        )
        ids = sorted({g["GroupId"] for i in instances for g in i.get("SecurityGroups") or []})
        groups: dict[str, Any] = {}
        if ids:
            for page in ec2.get_paginator("describe_security_groups").paginate(GroupIds=ids):
                groups.update({g["GroupId"]: g for g in page.get("SecurityGroups", [])})
    return audit(region, instances, groups)


def caller_cidr(fetch: Callable[[], str]) -> str:
    """The caller's public address as a /32 (or /128), from checkip's answer."""
    try:
        text = fetch().strip()
    except OSError as exc:  # requests' errors are OSErrors too
        raise LaunchError(
            f"cannot learn your public address from {CHECKIP_URL} ({exc}): pass --allow-cidr "
            "with your address (or network) to open SSH to"
        ) from exc
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise LaunchError(
            f"{CHECKIP_URL} answered {text[:60]!r}, not an address: pass --allow-cidr"
        ) from exc
    return str(ipaddress.ip_network(address))


def update_ssh_config_file(path: Path, name: str, block: str) -> None:
    """Rewrite ~/.ssh/config with the block, atomically, keeping it private (0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    updated = update_ssh_config(text, name, block)
    tmp = path.with_name(f".{path.name}.idle-watchdog.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(updated)
    tmp.replace(path)
