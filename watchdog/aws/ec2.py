"""The EC2 edge: one interface, one boto3 implementation.

A pass costs, per region, one paginated DescribeInstances and one
DescribeSpotInstanceRequests, never a call per instance. Regions are scanned
concurrently; a region that fails comes back as a ``RegionScan`` with
``error`` set so the others proceed. Throttling is botocore's job (adaptive
retry mode). Endpoints follow the standard boto3 chain, so
``AWS_ENDPOINT_URL`` points everything at a moto server in tests and the demo.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import structlog
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from watchdog.core.fleet import Instance, RegionScan, SpotRequest

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

log = structlog.get_logger("watchdog.aws")

SCANNED_STATES = ("pending", "running", "stopping", "stopped")
_BOTO_CONFIG = BotoConfig(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=30,
    user_agent_extra="idle-watchdog",
)


class AwsError(Exception):
    """An EC2 call failed; ``code`` is AWS's error code where it gave one."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class Ec2Api(Protocol):
    """What the scheduler needs from EC2. ``Boto3Ec2`` is the real one."""

    def scan(self, region: str) -> RegionScan: ...
    def describe(self, region: str, instance_id: str) -> Instance | None: ...
    def spot_request(self, region: str, instance_id: str) -> SpotRequest | None: ...
    def stop(self, region: str, instance_id: str, *, hibernate: bool = False) -> None: ...
    def cancel_spot_requests(self, region: str, request_ids: Sequence[str]) -> None: ...
    def tag(self, region: str, resource_id: str, tags: Mapping[str, str]) -> None: ...
    def untag(self, region: str, resource_id: str, keys: Sequence[str]) -> None: ...


class Boto3Ec2:
    """``Ec2Api`` over boto3, one cached client per region, counting HTTP requests."""

    def __init__(
        self,
        session: boto3.Session | None = None,
        *,
        profile: str = "",
        boto_config: BotoConfig | None = None,
        page_size: int = 1000,
    ):
        self._page_size = page_size  # DescribeInstances' maximum; tests page sooner
        self._session = session or boto3.Session(profile_name=profile or None)
        self._boto_config = _BOTO_CONFIG.merge(boto_config) if boto_config else _BOTO_CONFIG
        self._clients: dict[str, EC2Client] = {}
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}

    def client(self, region: str) -> EC2Client:
        with self._lock:
            if region not in self._clients:
                client = self._session.client("ec2", region_name=region, config=self._boto_config)
                client.meta.events.register("before-send.ec2", self._counter(region))
                self._clients[region] = client
            return self._clients[region]

    def _counter(self, region: str) -> Any:
        def count(**_: Any) -> None:
            with self._lock:
                self._calls[region] = self._calls.get(region, 0) + 1

        return count

    def calls(self, region: str) -> int:
        """HTTP requests sent to ``region`` so far, retries included."""
        with self._lock:
            return self._calls.get(region, 0)

    def scan(self, region: str) -> RegionScan:
        before = self.calls(region)
        try:
            client = self.client(region)
            instances: list[dict[str, Any]] = []
            pages = client.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": list(SCANNED_STATES)}],
                PaginationConfig={"PageSize": self._page_size},
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    instances.extend(reservation.get("Instances", []))  # type: ignore[arg-type]
            requests: list[dict[str, Any]] = []
            for spot_page in client.get_paginator("describe_spot_instance_requests").paginate():
                requests.extend(spot_page.get("SpotInstanceRequests", []))  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            return RegionScan(region, error=_describe(exc), api_calls=self.calls(region) - before)
        spot = tuple(_parse_all(_spot_request, region, requests))
        by_instance = {r.instance_id: r.id for r in spot if r.instance_id}
        found = tuple(_parse_all(_instance, region, instances, by_instance))
        return RegionScan(region, found, spot, api_calls=self.calls(region) - before)

    def describe(self, region: str, instance_id: str) -> Instance | None:
        """One instance (the agent's view of itself); None if EC2 does not know it."""
        with _translated():
            try:
                answer = self.client(region).describe_instances(InstanceIds=[instance_id])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
                    return None
                raise
        found = [i for r in answer.get("Reservations", []) for i in r.get("Instances", [])]
        parsed = list(_parse_all(_instance, region, found, {}))  # type: ignore[arg-type]
        return parsed[0] if parsed else None

    def spot_request(self, region: str, instance_id: str) -> SpotRequest | None:
        """The spot request behind one instance (the agent asks about itself)."""
        with _translated():
            answer = self.client(region).describe_spot_instance_requests(
                Filters=[{"Name": "instance-id", "Values": [instance_id]}]
            )
        found = answer.get("SpotInstanceRequests", [])
        parsed = list(_parse_all(_spot_request, region, found))  # type: ignore[arg-type]
        return next((r for r in parsed if r.instance_id == instance_id), None)

    def stop(self, region: str, instance_id: str, *, hibernate: bool = False) -> None:
        with _translated():
            self.client(region).stop_instances(InstanceIds=[instance_id], Hibernate=hibernate)

    def cancel_spot_requests(self, region: str, request_ids: Sequence[str]) -> None:
        with _translated():
            self.client(region).cancel_spot_instance_requests(
                SpotInstanceRequestIds=list(request_ids)
            )

    def tag(self, region: str, resource_id: str, tags: Mapping[str, str]) -> None:
        with _translated():
            self.client(region).create_tags(
                Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )

    def untag(self, region: str, resource_id: str, keys: Sequence[str]) -> None:
        with _translated():
            self.client(region).delete_tags(
                Resources=[resource_id], Tags=[{"Key": k} for k in keys]
            )


def scan_regions(api: Ec2Api, regions: Iterable[str], max_workers: int = 8) -> list[RegionScan]:
    """Scan every region at once; one region's failure is its own ``RegionScan.error``."""
    regions = list(regions)

    def safe(region: str) -> RegionScan:
        try:
            return api.scan(region)
        except Exception as exc:
            return RegionScan(region, error=f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(regions)))) as pool:
        return list(pool.map(safe, regions))


class _translated:
    """Turns botocore's exceptions into ``AwsError`` so callers catch one thing."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            raise AwsError(error.get("Code", "Unknown"), error.get("Message", str(exc))) from exc
        if isinstance(exc, BotoCoreError):
            raise AwsError(type(exc).__name__, str(exc)) from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Unknown')}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"


def _parse_all(parse: Any, region: str, items: list[dict[str, Any]], *extra: Any) -> Any:
    """Parse each item; one malformed answer is logged and skipped, never fatal."""
    for item in items:
        try:
            yield parse(region, item, *extra)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning(
                "malformed EC2 record skipped",
                region=region,
                error=repr(exc),
                record=str(item)[:200],
            )


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: str(t.get("Value", "")) for t in item.get("Tags") or [] if "Key" in t}


def _time(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _instance(region: str, item: dict[str, Any], by_instance: Mapping[str, str]) -> Instance:
    instance_id = item["InstanceId"]
    return Instance(
        region=region,
        id=instance_id,
        type=item.get("InstanceType", "unknown"),
        state=item["State"]["Name"],
        launch_time=_time(item.get("LaunchTime")),
        tags=_tags(item),
        lifecycle=item.get("InstanceLifecycle") or "on-demand",
        platform=item.get("PlatformDetails", ""),
        spot_request_id=item.get("SpotInstanceRequestId") or by_instance.get(instance_id, ""),
        hibernation_configured=bool((item.get("HibernationOptions") or {}).get("Configured")),
    )


def _spot_request(region: str, item: dict[str, Any]) -> SpotRequest:
    status = item.get("Status") or {}
    return SpotRequest(
        region=region,
        id=item["SpotInstanceRequestId"],
        state=item["State"],
        type=item.get("Type", "one-time"),
        status_code=status.get("Code", ""),
        create_time=_time(item.get("CreateTime")),
        status_time=_time(status.get("UpdateTime")),
        instance_id=item.get("InstanceId", ""),
        instance_type=(item.get("LaunchSpecification") or {}).get("InstanceType", ""),
        tags=_tags(item),
    )
