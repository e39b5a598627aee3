"""Errors and hints: what failed, in plain words, and what the person can do about it.

``LaunchError`` carries the message the commands print (exit 1); ``UsageError``
is for options that cannot work (exit 2). ``explain`` turns an AWS error code
into that message, naming the instance type, its vCPU quota and the zones
tried, so that a new account's "quota 0" or an expired SSO session reads as the
next step to take rather than as AWS's error.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from watchdog.aws.errors import AwsError


class LaunchError(Exception):
    """Something failed; the message says what to do, in plain words. ``code`` is AWS's."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class UsageError(LaunchError):
    """The options themselves are wrong (exit code 2)."""


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
CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientCapacity", "Unsupported"}


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
    if code == "ProfileNotFound":
        return (
            f"{message}: check its name ([aws] profile in the idle-watchdog config, or "
            "AWS_PROFILE) against `aws configure list-profiles`"
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
            "ssm:GetParameters: deploy/iam/launcher-policy.json grants them. An encoded "
            "message reads with `aws sts "
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


@contextlib.contextmanager
def translated(ctx: ErrorContext | None = None) -> Iterator[None]:
    """The AWS edge's errors -> ``LaunchError`` with the plain message."""
    try:
        yield
    except AwsError as exc:
        raise LaunchError(explain(exc.code, exc.message, ctx), exc.code) from exc
