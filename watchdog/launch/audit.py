"""The audit: world-open security group rules and IMDSv1, read from describe records.

Pure: ``audit`` takes DescribeInstances and DescribeSecurityGroups records and
reports what anyone on the internet could reach, Jupyter's port first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.launch.plan import JUPYTER_PORT


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
                    detail=f"{name_of(item) or instance_id} allows IMDSv1 "
                    f"(HttpTokens={options.get('HttpTokens', 'unknown')})",
                    fix=f"aws ec2 modify-instance-metadata-options --instance-id {instance_id} "
                    f"--http-tokens required --http-endpoint enabled --region {region}",
                    severity=2,
                )
            )
    return sorted(findings, key=lambda f: (f.severity, f.region, f.resource))


def name_of(item: Mapping[str, Any]) -> str:
    return next((t.get("Value", "") for t in item.get("Tags") or [] if t.get("Key") == "Name"), "")
