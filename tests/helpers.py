"""Helpers for tests that talk to the moto server: launch, tag, heartbeat, read back."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from watchdog.config import Config
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_MANAGED

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

AMI = "ami-12c6146b"
ROOT = Path(__file__).resolve().parents[1]


def ec2(region: str = "us-east-1") -> EC2Client:
    return boto3.client("ec2", region_name=region)


def launch(
    region: str = "us-east-1",
    itype: str = "g5.xlarge",
    *,
    count: int = 1,
    tags: Mapping[str, str] | None = None,
) -> list[str]:
    """Launch ``count`` instances carrying ``tags``; returns their ids."""
    tags = tags or {}
    spec: list[Any] = (
        [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        if tags
        else []
    )
    reservation = ec2(region).run_instances(
        ImageId=AMI,
        MinCount=count,
        MaxCount=count,
        InstanceType=itype,  # type: ignore[arg-type]
        TagSpecifications=spec,
    )
    return [i["InstanceId"] for i in reservation["Instances"]]


def tag(region: str, instance_id: str, tags: dict[str, str]) -> None:
    ec2(region).create_tags(
        Resources=[instance_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
    )


def beat(
    region: str,
    instance_id: str,
    at: datetime,
    *,
    active: bool | None,
    last_active: datetime | None = None,
    reasons: tuple[str, ...] = (),
) -> None:
    """Write the heartbeat an agent would have written at ``at``."""
    value = hb.encode(hb.Heartbeat(at, active, last_active or at, reasons))
    tag(region, instance_id, {TAG_HEARTBEAT: value})


def state(region: str, instance_id: str) -> str:
    answer = ec2(region).describe_instances(InstanceIds=[instance_id])
    return answer["Reservations"][0]["Instances"][0]["State"]["Name"]


def tags_of(region: str, instance_id: str) -> dict[str, str]:
    answer = ec2(region).describe_instances(InstanceIds=[instance_id])
    found = answer["Reservations"][0]["Instances"][0].get("Tags", [])
    return {t["Key"]: t["Value"] for t in found}


def launch_time(region: str, instance_id: str) -> datetime:
    answer = ec2(region).describe_instances(InstanceIds=[instance_id])
    return answer["Reservations"][0]["Instances"][0]["LaunchTime"]


MANAGED = {TAG_MANAGED: "true"}


def config(**sections: dict[str, Any]) -> Config:
    """Defaults with some keys replaced: ``config(idle={"minutes": 10})``."""
    cfg = Config()
    for name, values in sections.items():
        cfg = replace(cfg, **{name: replace(getattr(cfg, name), **values)})
    return cfg


@dataclass
class Clock:
    """A test's ``now``: starts just after the fixture's instances launch; moves on demand."""

    now: datetime

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def source_copy(tmp_path: Path) -> Path:
    """The repository's package sources, so that pip builds outside the working tree."""
    dest = tmp_path / "src"
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".*", "__pycache__", "build", "dist", "*.egg-info", "tests", "benchmarks", "docs"
        ),
    )
    return dest
