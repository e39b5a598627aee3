"""The plan: every name, tag, setting and the user-data of a launch, decided before AWS.

Pure: ``plan_launch`` turns what the person asked for (``LaunchOptions``) and
the deploy files (``Templates``, read once at the edge) into a ``LaunchPlan``,
or refuses what cannot work with a ``UsageError`` before any network call.

Security choices, on purpose: SSH (22) is opened to one address only (the
caller's, or ``--allow-cidr``) and never to the world; Jupyter is never opened
at all, it is reached through an SSH tunnel; IMDSv2 is required; the instance
role carries only the agent's policy (deploy/iam/instance-role-policy.json).
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.core.fleet import TAG_IDLE_MINUTES, TAG_MANAGED
from watchdog.launch.errors import LaunchError, UsageError

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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")


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


def caller_cidr(fetch: Callable[[], str]) -> str:
    """The caller's public address as a /32 (or /128), from checkip's answer.

    ``fetch`` raises ``OSError`` with a short reason when checkip cannot be asked.
    """
    try:
        text = fetch().strip()
    except OSError as exc:
        raise LaunchError(
            f"cannot learn your public address ({exc}): pass --allow-cidr with your address "
            "(or network) to open SSH to, e.g. --allow-cidr 203.0.113.7"
        ) from exc
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise LaunchError(
            f"{CHECKIP_URL} answered {text[:60]!r}, not an address: pass --allow-cidr"
        ) from exc
    return str(ipaddress.ip_network(address))
