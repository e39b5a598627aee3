"""The price edge: what AWS says an instance, its volumes and its addresses cost.

- On-demand: the Price List Query API (``pricing:GetProducts``, served from
  us-east-1 whatever the instance's region), filtered to exactly one SKU:
  instance type, region code, operating system (from ``PlatformDetails``),
  shared tenancy, no pre-installed software, capacity status ``Used``, no
  bring-your-own licence. Anything but one price is ``unknown``, not a pick.
- Spot: ``DescribeSpotPriceHistory`` for the instance's zone, type and
  product description over a window. AWS includes the last change before
  the window's start, so the price in effect at the start is known.
- Volumes (``DescribeVolumes``) and public IPv4 (``DescribeNetworkInterfaces``
  and ``DescribeAddresses``), one paginated call per region and kind for a
  whole batch of instances, never one per instance.

Results are the core's types (``Price``, ``SpotPoint``, ``VolumeSpan``,
``Addresses``); errors are ``AwsError`` so the caller falls back to the bundled
table and tries again later.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from watchdog.aws.ec2 import AwsError, translated
from watchdog.core.costs import Addresses, Price, Volume
from watchdog.core.ledger import Span, SpotPoint, VolumeSpan

PRICING_REGION = "us-east-1"  # the Price List Query API's home; also ap-south-1, eu-central-1
_BOTO_CONFIG = BotoConfig(
    retries={"mode": "adaptive", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=30,
    user_agent_extra="idle-watchdog",
)
_FILTER_VALUES = 200  # EC2 accepts at most 200 values in one filter

#: ``PlatformDetails`` -> the Price List's ``operatingSystem``. Platforms with
#: pre-installed software (SQL Server) have no ``preInstalledSw=NA`` SKU, so
#: they are left out: their price is unknown rather than the bare OS's.
OPERATING_SYSTEMS = {
    "Linux/UNIX": "Linux",
    "Red Hat Enterprise Linux": "RHEL",
    "Red Hat Enterprise Linux with HA": "Red Hat Enterprise Linux with HA",
    "SUSE Linux": "SUSE",
    "Windows": "Windows",
    "Ubuntu Pro": "Ubuntu Pro",
}
#: ``PlatformDetails`` -> DescribeSpotPriceHistory's product description.
SPOT_PRODUCTS = {
    "Linux/UNIX": "Linux/UNIX",
    "Red Hat Enterprise Linux": "Red Hat Enterprise Linux",
    "SUSE Linux": "SUSE Linux",
    "Windows": "Windows",
}


def price_filters(instance_type: str, region: str, platform: str) -> list[dict[str, str]] | None:
    """GetProducts filters that match one on-demand SKU; None for a platform we cannot map."""
    system = OPERATING_SYSTEMS.get(platform.strip())
    if system is None:
        return None
    wanted = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": system,
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in wanted.items()]


def parse_price_list(items: Iterable[str]) -> tuple[float, str] | None:
    """The one OnDemand USD hourly price in GetProducts' ``PriceList`` strings, with the
    date AWS published it; None when there is none, or more than one to choose from."""
    found: dict[float, str] = {}
    for item in items:
        product = json.loads(item)
        attributes = product.get("product", {}).get("attributes", {})
        if attributes.get("marketoption", "OnDemand") != "OnDemand":
            continue  # e.g. capacity blocks share the other attributes
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if dimension.get("unit") == "Hrs" and usd is not None:
                    found[float(usd)] = product.get("publicationDate", "")
    if len(found) != 1:
        return None
    ((usd, published),) = found.items()
    return usd, published


class Boto3Prices:
    """Prices, volumes and addresses over boto3: one client per region, made once."""

    def __init__(
        self,
        session: boto3.Session | None = None,
        *,
        profile: str = "",
        pricing_endpoint: str | None = None,
        boto_config: BotoConfig | None = None,
    ):
        self._session = session or boto3.Session(profile_name=profile or None)
        self._config = _BOTO_CONFIG.merge(boto_config) if boto_config else _BOTO_CONFIG
        self._pricing_endpoint = pricing_endpoint
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            key = f"{service}/{region}"
            if key not in self._clients:
                extra = {"endpoint_url": self._pricing_endpoint} if service == "pricing" else {}
                self._clients[key] = self._session.client(
                    service,  # type: ignore[call-overload]
                    region_name=region,
                    config=self._config,
                    **extra,
                )
            return self._clients[key]

    def on_demand(self, instance_type: str, region: str, platform: str, now: datetime) -> Price:
        """The list price per hour, source ``price-list``; ``unknown`` when AWS has no single
        answer. ``as_of`` is AWS's publication date, else ``now``."""
        filters = price_filters(instance_type, region, platform)
        if filters is None:
            return Price.unknown()
        items: list[str] = []
        with translated():
            pages = self._client("pricing", PRICING_REGION).get_paginator("get_products")
            for page in pages.paginate(
                ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1"
            ):
                items.extend(page.get("PriceList", []))
        try:
            parsed = parse_price_list(items)
        except (ValueError, TypeError, AttributeError) as exc:
            raise AwsError("MalformedPriceList", str(exc)[:200]) from exc
        if parsed is None:
            return Price.unknown()
        usd, published = parsed
        return Price(usd, "price-list", published or now.strftime("%Y-%m-%dT%H:%M:%SZ"))

    def spot_history(
        self,
        region: str,
        zone: str,
        instance_type: str,
        platform: str,
        *,
        start: datetime,
        end: datetime,
    ) -> tuple[SpotPoint, ...]:
        """Spot price changes in ``zone`` over ``[start, end]``, oldest first, including the
        one in effect at ``start``. Empty for a platform spot does not sell."""
        product = SPOT_PRODUCTS.get(platform.strip())
        if product is None:
            return ()
        vpc = f"{product} (Amazon VPC)"
        series: dict[str, dict[datetime, float]] = {product: {}, vpc: {}}
        with translated():
            pages = self._client("ec2", region).get_paginator("describe_spot_price_history")
            for page in pages.paginate(
                InstanceTypes=[instance_type],
                AvailabilityZone=zone,
                ProductDescriptions=[product, vpc],
                StartTime=start,
                EndTime=end,
            ):
                for row in page.get("SpotPriceHistory", []):
                    # filtered here too: not every endpoint honours every parameter
                    wanted = row.get("AvailabilityZone") == zone
                    wanted = wanted and row.get("InstanceType") == instance_type
                    when = _utc(row.get("Timestamp"))
                    if wanted and when is not None and when <= end:
                        points = series.get(row.get("ProductDescription", ""))
                        if points is not None:
                            points[when] = float(row["SpotPrice"])
        # Both names are the same VPC-era product; prefer the plain one where AWS has it.
        chosen = series[product] or series[vpc]
        return tuple(SpotPoint(t, usd) for t, usd in sorted(chosen.items()))

    def volumes(
        self, region: str, instance_ids: Sequence[str]
    ) -> dict[str, tuple[VolumeSpan, ...]]:
        """Each instance's attached EBS volumes, attached since their ``AttachTime``."""
        out: dict[str, list[VolumeSpan]] = {i: [] for i in instance_ids}
        with translated():
            for chunk in _chunks(instance_ids):
                pages = self._client("ec2", region).get_paginator("describe_volumes")
                for page in pages.paginate(
                    Filters=[{"Name": "attachment.instance-id", "Values": chunk}]
                ):
                    for item in page.get("Volumes", []):
                        volume = Volume(
                            id=item["VolumeId"],
                            type=item.get("VolumeType", ""),
                            size_gb=int(item.get("Size", 0)),
                            iops=item.get("Iops"),
                            throughput_mibps=item.get("Throughput"),
                        )
                        for attachment in item.get("Attachments", []):
                            owner = attachment.get("InstanceId", "")
                            since = _utc(attachment.get("AttachTime")) or _utc(
                                item.get("CreateTime")
                            )
                            if owner in out and since is not None:
                                out[owner].append(VolumeSpan(volume, Span(since)))
        return {i: tuple(v) for i, v in out.items()}

    def addresses(self, region: str, instance_ids: Sequence[str]) -> dict[str, Addresses]:
        """Each instance's public IPv4: auto-assigned ones apart from its Elastic IPs."""
        with translated():
            elastic = list(self._paged(region, "describe_addresses", "Addresses"))
            by_instance: dict[str, list[str]] = {i: [] for i in instance_ids}
            eip_ips = {a.get("PublicIp") for a in elastic}
            for address in elastic:
                owner = address.get("InstanceId", "")
                if owner in by_instance and address.get("AllocationId"):
                    by_instance[owner].append(address["AllocationId"])
            public: dict[str, set[str]] = {i: set() for i in instance_ids}
            for chunk in _chunks(instance_ids):
                interfaces = self._paged(
                    region,
                    "describe_network_interfaces",
                    "NetworkInterfaces",
                    Filters=[{"Name": "attachment.instance-id", "Values": chunk}],
                )
                for eni in interfaces:
                    owner = (eni.get("Attachment") or {}).get("InstanceId", "")
                    if owner in public:
                        public[owner].update(_public_ips(eni) - eip_ips)
        return {i: Addresses(len(public[i]), tuple(sorted(by_instance[i]))) for i in instance_ids}

    def unattached_elastic_ips(self, region: str) -> tuple[str, ...]:
        """Allocation ids of Elastic IPs on no instance: billed all the same."""
        with translated():
            elastic = self._paged(region, "describe_addresses", "Addresses")
            return tuple(
                sorted(
                    a["AllocationId"]
                    for a in elastic
                    if a.get("AllocationId") and not a.get("InstanceId")
                )
            )

    def _paged(self, region: str, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
        client = self._client("ec2", region)
        if client.can_paginate(operation):
            for page in client.get_paginator(operation).paginate(**kwargs):
                yield from page.get(key, [])
        else:
            yield from getattr(client, operation)(**kwargs).get(key, [])


def _public_ips(eni: Mapping[str, Any]) -> set[str]:
    found = {(eni.get("Association") or {}).get("PublicIp")}
    for private in eni.get("PrivateIpAddresses") or []:
        found.add((private.get("Association") or {}).get("PublicIp"))
    return {ip for ip in found if ip}


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for n in range(0, len(ids), _FILTER_VALUES):
        yield list(ids[n : n + _FILTER_VALUES])


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
