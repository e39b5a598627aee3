"""The AWS steps of a launch, and of finding, starting, stopping and auditing instances.

Each step takes the region's calls (``watchdog.aws.launching.RegionAws``) and
explicit parameters, reports progress through callbacks, and turns AWS's
errors into ``LaunchError`` with the plain message (``errors.translated``), so
the commands stay a thin shell and the tests run every step against moto.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog.aws.errors import AwsError
from watchdog.launch.audit import Finding, audit, name_of, world_open
from watchdog.launch.errors import (
    CAPACITY_CODES,
    ErrorContext,
    LaunchError,
    UsageError,
    explain,
    translated,
)
from watchdog.launch.plan import (
    ACTIVE_STATES,
    DLAMI_NAME,
    DLAMI_PARAMETERS,
    SSH_USER,
    LaunchOptions,
    Templates,
    check_disk,
    plan_launch,
)

if TYPE_CHECKING:
    from watchdog.aws.launching import LauncherAws, RegionAws

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
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

Say = Callable[[str], None]
Progress = Callable[[str, float], None]


def _quiet(_: str) -> None:
    return None


def _quiet_progress(_: str, __: float) -> None:
    return None


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
            name=name_of(item),
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


def find_instances(aws: LauncherAws, regions: Sequence[str], ref: str) -> list[Found]:
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
            found.extend(Found.parse(region, i) for i in aws.region(region).instances(filters))
    return found


def instance_type_info(aws: RegionAws, instance_type: str, ctx: ErrorContext) -> tuple[str, int]:
    """(architecture for the AMI, vCPUs for the quota message); unknown types fail here."""
    with translated(ctx):
        info = aws.instance_type(instance_type)
    if info is None:
        raise LaunchError(explain("InvalidInstanceType", "", ctx), "InvalidInstanceType")
    arches = info.architectures
    arch = "arm64" if "arm64" in arches and "x86_64" not in arches else "x86_64"
    return arch, info.vcpus


def default_subnets(aws: RegionAws, ctx: ErrorContext) -> tuple[str, list[tuple[str, str]]]:
    """The default VPC and its per-zone default subnets, as [(zone, subnet id)]."""
    with translated(ctx):
        vpc_id = aws.default_vpc()
        if vpc_id is None:
            raise LaunchError(
                f"{ctx.region} has no default VPC: create one with `aws ec2 create-default-vpc "
                f"--region {ctx.region}` (the launcher uses its public subnets)"
            )
        return vpc_id, aws.default_subnets(vpc_id)


def find_dlami(aws: RegionAws, arch: str, ctx: ErrorContext) -> str:
    """The current Deep Learning AMI of the region, from its public SSM parameter."""
    names = [template.format(arch=arch) for template in DLAMI_PARAMETERS]
    with translated(ctx):
        values = aws.parameters(names)
    for name in names:
        if values.get(name, "").startswith("ami-"):
            return values[name]
    raise LaunchError(
        f"no current {DLAMI_NAME} ({arch}) is published in {ctx.region} (SSM parameter "
        f"{names[0]} not found): pass --ami AMI_ID, e.g. from `aws ec2 describe-images "
        f"--owners amazon --region {ctx.region} --filters "
        f"'Name=name,Values=Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*'`"
    )


def image_root(aws: RegionAws, image_id: str, ctx: ErrorContext) -> tuple[str, int]:
    """(root device name, its size in GB) of the AMI, for --disk-gb."""
    ctx = replace(ctx, ami=image_id)
    with translated(ctx):
        root = aws.image_root(image_id)
    if root is None:
        raise LaunchError(explain("InvalidAMIID.NotFound", image_id, ctx))
    return root.device, root.size_gb


def write_private_file(path: Path, data: str, mode: int = 0o400) -> None:
    """Create ``path`` with ``mode`` from the start (never briefly world-readable)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)


def ensure_key_pair(
    aws: RegionAws, name: str, path: Path, *, dry_run: bool, ctx: ErrorContext, say: Say = _quiet
) -> bool:
    """Reuse the region's key pair or create it, saving the private key at ``path`` (0400).

    Returns whether it exists (in a dry run a missing one stays missing).
    """
    with translated(ctx):
        known = aws.key_pair_exists(name)
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
            aws.create_key_pair(name, dry_run=True)
            say(f"key pair {name}: would be created and saved to {path}")
            return False
        material = aws.create_key_pair(name)
    try:
        write_private_file(path, material)
    except OSError as exc:
        with contextlib.suppress(AwsError):
            aws.delete_key_pair(name)  # unusable without its private key
        raise LaunchError(f"cannot save the private key to {path}: {exc}") from exc
    say(f"key pair {name}: created, private key saved to {path} (mode 0400)")
    return True


def ingress(cidr: str) -> dict[str, Any]:
    """The one rule the launcher's group has: SSH from ``cidr``."""
    why = "SSH from idle-watchdog launch"
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
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
    aws: RegionAws,
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
        groups = aws.security_groups_named(name, vpc_id)
        if not groups:
            if dry_run:
                aws.create_security_group(name, "idle-watchdog", vpc_id, dry_run=True)
                say(f"security group {name}: would be created, SSH (22) from {cidr} only")
                return None
            group_id = aws.create_security_group(
                name,
                "idle-watchdog: SSH from the launching address only; Jupyter through an SSH tunnel",
                vpc_id,
            )
            aws.authorize_ingress(group_id, ingress(cidr))
            say(f"security group {name}: created ({group_id}), SSH (22) from {cidr} only")
            return group_id
        group = groups[0]
        group_id = str(group["GroupId"])
        for span, world, _ in world_open(group):
            say(f"warning: {name} ({group_id}) opens {span} to {world}: remove that rule")
        if _allows(group, cidr):
            say(f"security group {name}: reused ({group_id}), SSH from {cidr}")
        elif dry_run:
            aws.authorize_ingress(group_id, ingress(cidr), dry_run=True)
            say(f"security group {name}: reused ({group_id}); would add SSH from {cidr}")
        else:
            aws.authorize_ingress(group_id, ingress(cidr))
            say(f"security group {name}: reused ({group_id}), SSH from {cidr} added")
    return group_id


def ensure_instance_profile(
    aws: RegionAws,
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
        role = aws.role_exists(name)
        roles = aws.instance_profile_roles(name)
        if dry_run:
            ready = role and roles is not None and name in roles
            state = "reused" if ready else "would be created"
            say(f"instance role and profile {name}: {state} (IAM has no dry run)")
            return (name if ready else None), False
        if not role:
            aws.create_role(
                name, _TRUST_POLICY, "idle-watchdog agent: heartbeat tag, self-stop when managed"
            )
            created = True
        aws.put_role_policy(name, name, policy)
        if roles is None:
            aws.create_instance_profile(name)
            created = True
        if name not in (roles or []):
            aws.add_role_to_instance_profile(name, name)
            created = True
    say(f"instance role and profile {name}: {'created' if created else 'reused'}")
    return name, created


def _profile_not_ready(code: str, message: str) -> bool:
    """A just-created instance profile takes seconds to reach EC2 (IAM is eventually
    consistent): RunInstances then says the profile name is invalid."""
    return code in ("InvalidParameterValue", "NoSuchEntity") and "rofile" in message


def run_in_zones(
    aws: RegionAws,
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
            try:
                item = aws.run_instance(args_for(zone, subnet))
            except AwsError as exc:
                code, message = exc.code, exc.message
                if profile_fresh and attempt < 11 and _profile_not_ready(code, message):
                    sleep(5)
                    continue
                if code in CAPACITY_CODES:
                    last = (code, message)
                    say(f"{zone}: {code}; trying the next zone")
                    break
                raise LaunchError(
                    explain(code, message, replace(ctx, zones_tried=tuple(tried))), code
                ) from exc
            return item or {}
    code, message = last
    raise LaunchError(explain(code, message, replace(ctx, zones_tried=tuple(tried))), code)


def wait_for_state(
    aws: RegionAws,
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
            found = aws.instances([{"Name": "instance-id", "Values": [instance_id]}])
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
    aws: LauncherAws,
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
    region = aws.region(plan.region)
    ctx = ErrorContext(region=plan.region, instance_type=plan.instance_type, spot=plan.spot)
    arch, vcpus = instance_type_info(region, plan.instance_type, ctx)
    ctx = replace(ctx, vcpus=vcpus)
    with translated(ctx):
        zones = region.offered_zones(plan.instance_type)
    if not zones:
        raise LaunchError(explain("Unsupported", "no zone offers it", ctx), "Unsupported")
    ctx = replace(ctx, zones_offered=tuple(zones))
    image_id = plan.ami or find_dlami(region, arch, ctx)
    ctx = replace(ctx, ami=image_id)
    root_device, image_gb = image_root(region, image_id, ctx)
    check_disk(plan.disk_gb, image_gb)
    vpc_id, subnets = default_subnets(region, ctx)
    usable = [(zone, subnet) for zone, subnet in subnets if zone in zones]
    if not usable:
        raise LaunchError(
            f"the default VPC of {plan.region} has no subnet in a zone offering "
            f"{plan.instance_type} ({', '.join(zones)})"
        )
    same_name = find_instances(aws, [plan.region], plan.name)
    if same_name:
        raise UsageError(
            f"an instance named {plan.name} already exists in {plan.region} "
            f"({', '.join(i.id for i in same_name)}): pass another --name"
        )
    say(f"{plan.instance_type} ({plan.lifecycle}, {vcpus} vCPUs) from {image_id} in {plan.region}")
    key_path = ssh_dir / plan.key_file
    has_key = ensure_key_pair(region, plan.key_name, key_path, dry_run=dry_run, ctx=ctx, say=say)
    group_id = ensure_security_group(
        region, vpc_id, plan.group_name, plan.ssh_cidr, dry_run=dry_run, ctx=ctx, say=say
    )
    profile, fresh = ensure_instance_profile(
        region, plan.role_name, templates.role_policy, dry_run=dry_run, ctx=ctx, say=say
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
        run_in_zones(region, args_for, usable[:1], ctx, say=say)
        say(
            f"dry run: RunInstances would have succeeded in {usable[0][0]} (permissions and "
            "parameters checked; nothing was created)"
        )
        return None
    item = run_in_zones(region, args_for, usable, ctx, profile_fresh=fresh, sleep=sleep, say=say)
    instance_id = item["InstanceId"]
    say(f"{instance_id}: launched in {item.get('Placement', {}).get('AvailabilityZone', '?')}")
    running = wait_for_state(
        region, instance_id, "running", ctx, sleep=sleep, clock=clock, progress=progress
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
    aws: RegionAws,
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
            aws.start_instance(found.id)
    item = wait_for_state(
        aws, found.id, "running", ctx, sleep=sleep, clock=clock, progress=progress
    )
    return Found.parse(found.region, item)


def stop(aws: RegionAws, found: Found) -> str:
    """Stop, never terminate. Returns the state EC2 reports."""
    with translated(ErrorContext(region=found.region)):
        return aws.stop_instance(found.id)


def tag_managed(aws: RegionAws, found: Found, tags: Mapping[str, str]) -> None:
    """Tag an instance whose agent was just installed (install-agent)."""
    with translated(ErrorContext(region=found.region)):
        aws.tag_instance(found.id, tags)


def audit_region(aws: RegionAws) -> list[Finding]:
    """Every instance that is not terminated (managed or not: an open Jupyter is as
    dangerous on an unwatched machine) and the groups attached to them."""
    with translated(ErrorContext(region=aws.region)):
        instances = aws.instances([{"Name": "instance-state-name", "Values": list(ACTIVE_STATES)}])
        ids = sorted({g["GroupId"] for i in instances for g in i.get("SecurityGroups") or []})
        groups = aws.security_groups(ids)
    return audit(aws.region, instances, groups)
