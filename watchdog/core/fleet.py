"""What a scan sees: plain, frozen records built from EC2's answers.

These are the inputs of the pure policy. The boto3 adapter builds them;
tests and the simulator build them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

TAG_PREFIX = "idle-watchdog:"
TAG_MANAGED = TAG_PREFIX + "managed"
TAG_EXEMPT = TAG_PREFIX + "exempt"
TAG_IDLE_MINUTES = TAG_PREFIX + "idle-minutes"
TAG_IDLE_USD = TAG_PREFIX + "idle-usd"
TAG_KEEP_UNTIL = TAG_PREFIX + "keep-until"
TAG_HEARTBEAT = TAG_PREFIX + "heartbeat"
TAG_STOPPED = TAG_PREFIX + "stopped"


@dataclass(frozen=True)
class Instance:
    region: str
    id: str
    type: str
    state: str  # pending | running | stopping | stopped | shutting-down | terminated
    launch_time: datetime | None
    tags: Mapping[str, str] = field(default_factory=dict)
    lifecycle: str = "on-demand"  # on-demand | spot | capacity-block
    platform: str = ""  # EC2 PlatformDetails, e.g. "Linux/UNIX"; "" when unknown
    spot_request_id: str = ""
    hibernation_configured: bool = False
    # What the ledger needs to bill it (DescribeInstances gives all of them):
    zone: str = ""  # Placement.AvailabilityZone: its spot price is this zone's
    state_reason: str = ""  # StateTransitionReason, e.g. "User initiated (2026-11-30 10:00:00 GMT)"
    public_ip: str = ""  # PublicIpAddress (auto-assigned or an Elastic IP)
    volume_ids: tuple[str, ...] = ()  # attached EBS volumes, billed running or stopped

    @property
    def name(self) -> str:
        return self.tags.get("Name", "")

    @property
    def managed(self) -> bool:
        return self.tags.get(TAG_MANAGED) == "true"  # exactly what the IAM condition matches


@dataclass(frozen=True)
class SpotRequest:
    region: str
    id: str
    state: str  # open | active | disabled | closed | cancelled | failed
    type: str  # one-time | persistent
    status_code: str
    create_time: datetime | None
    status_time: datetime | None  # when the request entered its current status
    instance_id: str = ""
    instance_type: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RegionScan:
    """One region's view in one pass; ``error`` set means the region was skipped."""

    region: str
    instances: tuple[Instance, ...] = ()
    spot_requests: tuple[SpotRequest, ...] = ()
    error: str = ""
    api_calls: int = 0
