"""The audit (pure): world-open rules and IMDSv1 from describe records."""

from __future__ import annotations

from typing import Any

from watchdog.launch.audit import audit

REGION = "us-east-1"


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
    findings = audit(REGION, instances, groups)
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
