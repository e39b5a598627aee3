"""The EC2 edge: one interface, one boto3 implementation.

A pass costs, per region, one paginated DescribeInstances and one
DescribeSpotInstanceRequests, never a call per instance; acting on many
instances costs one call per 1,000 ids (``describe_many``, ``stop_many``,
``tag_many``), falling back to one call per id only when AWS refuses a batch.
Regions are scanned concurrently and streamed (``iter_scans``): a region that
fails comes back as a ``RegionScan`` with ``error`` set, and a slow one never
holds back the others. Every call is bounded by the ``[aws]`` timeouts and
attempts (``call_budget_seconds``). Endpoints follow the standard boto3
chain, so ``AWS_ENDPOINT_URL`` points everything at a moto server in tests
and the demo; ``endpoints`` overrides one region's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import structlog
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from watchdog.core.fleet import Instance, RegionScan, SpotRequest
from watchdog.core.settings import AwsConfig

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

log = structlog.get_logger("watchdog.aws")

SCANNED_STATES = ("pending", "running", "stopping", "stopped")
BATCH_LIMIT = 1000  # ids per call: CreateTags' documented maximum, and ours for the others
NOT_FOUND = "InvalidInstanceID.NotFound"
# Refusals that say nothing about any one id: retrying the batch id by id would
# only multiply the calls (and the throttling).
_REGION_WIDE = frozenset(
    {
        "AuthFailure",
        "Blocked",
        "ExpiredToken",
        "InternalError",
        "InvalidClientTokenId",
        "OptInRequired",
        "RequestExpired",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "SignatureDoesNotMatch",
        "Throttling",
        "Unavailable",
        "UnrecognizedClientException",
    }
)
_ID = re.compile(r"\bi-[0-9a-zA-Z]+\b")
# botocore's standard retry mode: a retry waits at most min(2**k, 20) s, plus up
# to 5 s more when EC2 sends a retry-after header.
_MAX_BACKOFF, _RETRY_AFTER_EXTRA = 20, 5


def client_config(aws: AwsConfig) -> BotoConfig:
    """The botocore settings for every EC2 client: the ``[aws]`` timeouts and attempts.

    "standard" retry mode, not "adaptive": adaptive adds a client-side rate
    limiter that may sleep before sending, a delay our timeouts do not cover, and our
    few calls per pass (one per 1,000 ids) do not need it.
    """
    return BotoConfig(
        # total_max_attempts counts the first try; botocore's max_attempts would not
        retries={"mode": "standard", "total_max_attempts": aws.max_attempts},
        connect_timeout=aws.connect_timeout_seconds,
        read_timeout=aws.read_timeout_seconds,
        user_agent_extra="idle-watchdog",
    )


def call_budget_seconds(aws: AwsConfig) -> float:
    """The longest one EC2 call can take before it fails, retries and backoff included."""
    per_attempt = aws.connect_timeout_seconds + aws.read_timeout_seconds
    backoff = sum(min(2**k, _MAX_BACKOFF) + _RETRY_AFTER_EXTRA for k in range(aws.max_attempts - 1))
    return float(aws.max_attempts * per_attempt + backoff)


class AwsError(Exception):
    """An EC2 call failed; ``code`` is AWS's error code where it gave one.

    ``answered`` is False when EC2 never answered (timeout, no connection):
    retrying id by id would only wait again.
    """

    def __init__(self, code: str, message: str, *, answered: bool = True):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.answered = answered


class Ec2Api(Protocol):
    """What the scheduler needs from EC2. ``Boto3Ec2`` is the real one."""

    def scan(self, region: str) -> RegionScan: ...
    def describe(self, region: str, instance_id: str) -> Instance | None: ...
    def spot_request(self, region: str, instance_id: str) -> SpotRequest | None: ...
    def stop(self, region: str, instance_id: str, *, hibernate: bool = False) -> None: ...
    def cancel_spot_requests(self, region: str, request_ids: Sequence[str]) -> None: ...
    def tag(self, region: str, resource_id: str, tags: Mapping[str, str]) -> None: ...
    def untag(self, region: str, resource_id: str, keys: Sequence[str]) -> None: ...

    # Batches: one call per 1,000 ids, a result per id.
    def describe_many(self, region: str, ids: Sequence[str]) -> dict[str, Instance]: ...
    def stop_many(
        self, region: str, ids: Sequence[str], *, hibernate: bool = False
    ) -> dict[str, AwsError | None]: ...
    def tag_many(
        self, region: str, ids: Sequence[str], tags: Mapping[str, str]
    ) -> dict[str, AwsError | None]: ...


class Boto3Ec2:
    """``Ec2Api`` over boto3, one cached client per region, counting HTTP requests."""

    def __init__(
        self,
        session: boto3.Session | None = None,
        *,
        profile: str = "",
        aws: AwsConfig | None = None,
        endpoints: Mapping[str, str] | None = None,
        boto_config: BotoConfig | None = None,
        page_size: int = 1000,
        batch_size: int = BATCH_LIMIT,
    ):
        """``aws`` gives the timeouts and attempts (the defaults if None); ``endpoints``
        maps a region to its own endpoint URL (tests, private endpoints)."""
        self._page_size = page_size  # DescribeInstances' maximum; tests page sooner
        self._batch_size = max(1, min(batch_size, BATCH_LIMIT))  # tests chunk sooner
        self._session = session or boto3.Session(profile_name=profile or None)
        base = client_config(aws or AwsConfig())
        self._boto_config = base.merge(boto_config) if boto_config else base
        self._endpoints = dict(endpoints or {})
        self._clients: dict[str, EC2Client] = {}
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}

    @classmethod
    def from_config(cls, aws: AwsConfig, **kw: Any) -> Boto3Ec2:
        """The adapter the ``[aws]`` section asks for: its profile, timeouts and attempts."""
        return cls(profile=aws.profile, aws=aws, **kw)

    def client(self, region: str) -> EC2Client:
        with self._lock:
            if region not in self._clients:
                client = self._session.client(
                    "ec2",
                    region_name=region,
                    config=self._boto_config,
                    endpoint_url=self._endpoints.get(region),
                )
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
        with translated():
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
        with translated():
            answer = self.client(region).describe_spot_instance_requests(
                Filters=[{"Name": "instance-id", "Values": [instance_id]}]
            )
        found = answer.get("SpotInstanceRequests", [])
        parsed = list(_parse_all(_spot_request, region, found))  # type: ignore[arg-type]
        return next((r for r in parsed if r.instance_id == instance_id), None)

    def stop(self, region: str, instance_id: str, *, hibernate: bool = False) -> None:
        with translated():
            self.client(region).stop_instances(InstanceIds=[instance_id], Hibernate=hibernate)

    def cancel_spot_requests(self, region: str, request_ids: Sequence[str]) -> None:
        with translated():
            self.client(region).cancel_spot_instance_requests(
                SpotInstanceRequestIds=list(request_ids)
            )

    def tag(self, region: str, resource_id: str, tags: Mapping[str, str]) -> None:
        with translated():
            self.client(region).create_tags(
                Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )

    def untag(self, region: str, resource_id: str, keys: Sequence[str]) -> None:
        with translated():
            self.client(region).delete_tags(
                Resources=[resource_id], Tags=[{"Key": k} for k in keys]
            )

    def describe_many(self, region: str, ids: Sequence[str]) -> dict[str, Instance]:
        """Fresh reads of many instances (the re-read before stopping), by id.

        An id EC2 does not know is absent from the answer. AWS fails a whole
        DescribeInstances when one id is unknown, so the ids its error names are
        dropped and the rest read again, then one at a time if that fails too:
        one gone instance never hides the others. Any other failure raises
        ``AwsError`` (nothing confirmed, nothing to stop).
        """
        found: dict[str, Instance] = {}
        for chunk in _chunks(ids, self._batch_size):
            found.update(self._describe_chunk(region, chunk))
        return found

    def _describe_chunk(self, region: str, ids: list[str]) -> dict[str, Instance]:
        try:
            return self._describe_ids(region, ids)
        except AwsError as exc:
            if exc.code != NOT_FOUND:
                raise
            named = set(_ID.findall(str(exc)))
        rest = [i for i in ids if i not in named]
        if not rest:
            return {}
        if named:
            try:
                return self._describe_ids(region, rest)
            except AwsError as exc:
                if exc.code != NOT_FOUND:
                    raise
        log.info("batch describe refused, reading one at a time", region=region, ids=len(rest))
        each = {i: self.describe(region, i) for i in rest}
        return {i: inst for i, inst in each.items() if inst is not None}

    def _describe_ids(self, region: str, ids: list[str]) -> dict[str, Instance]:
        wanted = set(ids)
        with translated():
            found: list[dict[str, Any]] = []
            # No PageSize: AWS refuses MaxResults together with InstanceIds.
            pages = (
                self.client(region).get_paginator("describe_instances").paginate(InstanceIds=ids)
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    found.extend(reservation.get("Instances", []))  # type: ignore[arg-type]
        parsed = _parse_all(_instance, region, found, {})
        return {i.id: i for i in parsed if i.id in wanted}

    def stop_many(
        self, region: str, ids: Sequence[str], *, hibernate: bool = False
    ) -> dict[str, AwsError | None]:
        """Stop many instances, one StopInstances per 1,000 ids; None = stopping.

        Hibernating and plain stops are separate calls (the flag is per call).
        A refused batch is retried one id at a time, so each instance gets its
        own result (one unstoppable instance never blocks the rest).
        """

        def batch(chunk: list[str]) -> dict[str, AwsError | None]:
            with translated():
                answer = self.client(region).stop_instances(InstanceIds=chunk, Hibernate=hibernate)
            stopping = {s.get("InstanceId") for s in answer.get("StoppingInstances", [])}
            unlisted = AwsError("Unconfirmed", "StopInstances did not list this instance")
            return {i: None if i in stopping else unlisted for i in chunk}

        return self._each_chunk(
            region, ids, batch, lambda i: self.stop(region, i, hibernate=hibernate)
        )

    def tag_many(
        self, region: str, ids: Sequence[str], tags: Mapping[str, str]
    ) -> dict[str, AwsError | None]:
        """Write the same ``tags`` on many resources, one CreateTags per 1,000 ids.

        A refused batch is retried one id at a time; None = tagged.
        """

        def batch(chunk: list[str]) -> dict[str, AwsError | None]:
            with translated():
                self.client(region).create_tags(
                    Resources=chunk, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
                )
            return dict.fromkeys(chunk)

        return self._each_chunk(region, ids, batch, lambda i: self.tag(region, i, tags))

    def _each_chunk(
        self,
        region: str,
        ids: Sequence[str],
        batch: Callable[[list[str]], dict[str, AwsError | None]],
        one: Callable[[str], None],
    ) -> dict[str, AwsError | None]:
        """Run ``batch`` per chunk; where AWS refuses a chunk, ``one`` per id in it.

        No fallback when EC2 did not answer or refused the whole region
        (throttling, credentials): every id then carries that error.
        """
        results: dict[str, AwsError | None] = {}
        for chunk in _chunks(ids, self._batch_size):
            try:
                results.update(batch(chunk))
                continue
            except AwsError as exc:
                if len(chunk) == 1 or not exc.answered or exc.code in _REGION_WIDE:
                    results.update(dict.fromkeys(chunk, exc))
                    continue
                log.info(
                    "batch refused, one at a time", region=region, ids=len(chunk), error=str(exc)
                )
            for instance_id in chunk:
                try:
                    one(instance_id)
                    results[instance_id] = None
                except AwsError as exc:
                    results[instance_id] = exc
        return results


def iter_scans(
    api: Ec2Api, regions: Iterable[str], max_workers: int = 8
) -> Generator[RegionScan, None, None]:
    """Scan every region at once, yielding each ``RegionScan`` as soon as it is in.

    Completion order, not config order: a caller acts on a fast region while
    a slow one is still waiting out its timeouts. One region's failure is its
    own ``RegionScan.error``; this never raises for a region.
    """
    regions = list(dict.fromkeys(regions))
    if not regions:
        return
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(max_workers, len(regions))), thread_name_prefix="ec2-scan"
    )
    try:
        futures = [pool.submit(_safe_scan, api, region) for region in regions]
        for future in as_completed(futures):
            yield future.result()
    finally:  # a caller that stops early leaves no scan queued
        pool.shutdown(wait=True, cancel_futures=True)


def scan_regions(api: Ec2Api, regions: Iterable[str], max_workers: int = 8) -> list[RegionScan]:
    """Every region's scan, in the order given (waits for the slowest; see ``iter_scans``)."""
    regions = list(dict.fromkeys(regions))
    scans = {s.region: s for s in iter_scans(api, regions, max_workers)}
    return [scans[r] for r in regions]


def tag_each(
    api: Ec2Api, region: str, tags_by_id: Mapping[str, Mapping[str, str]]
) -> dict[str, AwsError | None]:
    """Per-id tags in as few CreateTags as AWS allows: one batch per distinct tag set."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for resource_id, tags in tags_by_id.items():
        groups.setdefault(tuple(sorted(tags.items())), []).append(resource_id)
    results: dict[str, AwsError | None] = {}
    for tags_key, ids in groups.items():
        results.update(api.tag_many(region, ids, dict(tags_key)))
    return results


def _safe_scan(api: Ec2Api, region: str) -> RegionScan:
    try:
        return api.scan(region)
    except Exception as exc:
        return RegionScan(region, error=f"{type(exc).__name__}: {exc}")


def _chunks(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    """Distinct ids, in order, ``size`` at a time."""
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


class translated:
    """Turns botocore's exceptions into ``AwsError`` so callers catch one thing."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            raise AwsError(error.get("Code", "Unknown"), error.get("Message", str(exc))) from exc
        if isinstance(exc, BotoCoreError):
            raise AwsError(type(exc).__name__, str(exc), answered=False) from exc


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
        zone=(item.get("Placement") or {}).get("AvailabilityZone", ""),
        state_reason=item.get("StateTransitionReason") or "",
        public_ip=item.get("PublicIpAddress") or "",
        volume_ids=tuple(
            m["Ebs"]["VolumeId"]
            for m in item.get("BlockDeviceMappings") or []
            if (m.get("Ebs") or {}).get("VolumeId")
        ),
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
