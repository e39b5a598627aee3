"""Rates that are not the instance's own: EBS volumes and public IPv4 addresses.

Each rate says where it came from and as of when, because a rate nobody can
trace is a guess. EBS list prices differ by region; this table holds only
the regions whose figures we have from a source, and any other region's EBS
is ``unknown`` (its amounts ``None``), never borrowed from a neighbour.

Sources (read for this table in 2026-01; AWS has not changed these list
prices since gp3 launched in 2020-12 and io2's IOPS tiers in 2023):

- EBS: the Amazon EBS pricing page, https://aws.amazon.com/ebs/pricing/,
  "US East (N. Virginia)", which lists the same rates for US East (Ohio) and
  US West (Oregon). gp3: $0.08 per GB-month, 3,000 IOPS and 125 MB/s free,
  then $0.005 per provisioned IOPS-month and $0.040 per provisioned
  MB/s-month. gp2 $0.10, io1 and io2 $0.125 per GB-month; io1 $0.065 per
  provisioned IOPS-month; io2 $0.065 up to 32,000 IOPS, $0.0455 from 32,001
  to 64,000, $0.032 above. st1 $0.045, sc1 $0.015, standard (magnetic)
  $0.05 per GB-month plus $0.05 per million I/O requests, which no API tells
  us, so a ``standard`` volume's amount is flagged partial.
- EBS bills per second, prorated over the calendar month: the pricing page's
  example divides by (86,400 s x 30 days) "in a 30 day month".
- Public IPv4: $0.005 per address-hour since 2024-02-01, in use or idle,
  Elastic IPs included, in every commercial region (AWS News Blog, "New - AWS
  Public IPv4 Address Charge + Public IP Insights", 2023-07-28). The first
  year's free tier (750 h a month) is not modelled.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from watchdog.core import billing

#: Where a price came from, most trusted first.
SOURCES = ("config", "price-list", "spot-history", "bundled", "unknown")

IPV4_USD_PER_HOUR = 0.005
IPV4_SOURCE = "AWS News Blog 2023-07-28: $0.005 per public IPv4 address-hour from 2024-02-01"
EBS_SOURCE = "https://aws.amazon.com/ebs/pricing/ (US East (N. Virginia), as of 2026-01)"


@dataclass(frozen=True)
class Price:
    """USD per hour for an instance, and where that figure came from."""

    usd_per_hour: float | None
    source: str  # one of SOURCES
    as_of: str = ""  # when the figure was read, ISO-8601, where known

    @staticmethod
    def unknown() -> Price:
        return Price(None, "unknown")


@dataclass(frozen=True)
class Volume:
    """An EBS volume as DescribeVolumes lists it (sizes in GiB, as AWS bills)."""

    id: str
    type: str  # gp2 | gp3 | io1 | io2 | st1 | sc1 | standard
    size_gb: int
    iops: int | None = None
    throughput_mibps: int | None = None


@dataclass(frozen=True)
class Addresses:
    """An instance's public IPv4: auto-assigned ones bill while it runs (and go when it
    stops); its Elastic IPs bill for as long as they stay allocated."""

    public_ipv4: int = 0
    elastic_ips: tuple[str, ...] = ()  # allocation ids


@dataclass(frozen=True)
class VolumeRate:
    """One volume type's monthly list prices."""

    gb_month: float
    #: (up to IOPS, USD per provisioned IOPS-month); ``None`` = no upper bound.
    iops_tiers: tuple[tuple[int | None, float], ...] = ()
    iops_free: int = 0
    throughput_mibps_month: float = 0.0
    throughput_free: int = 0
    per_io_request: bool = False  # billed per I/O request too, which we cannot count


_US = {
    "gp3": VolumeRate(0.08, ((None, 0.005),), 3000, 0.040, 125),
    "gp2": VolumeRate(0.10),
    "io1": VolumeRate(0.125, ((None, 0.065),)),
    "io2": VolumeRate(0.125, ((32_000, 0.065), (64_000, 0.0455), (None, 0.032))),
    "st1": VolumeRate(0.045),
    "sc1": VolumeRate(0.015),
    "standard": VolumeRate(0.05, per_io_request=True),
}
EBS_RATES: Mapping[str, Mapping[str, VolumeRate]] = {
    "us-east-1": _US,
    "us-east-2": _US,
    "us-west-2": _US,
}


@dataclass(frozen=True)
class MonthlyAmount:
    """A volume's monthly price: ``usd`` None when unknown; ``partial`` when a part is missing."""

    usd: float | None
    source: str
    partial: bool = False


def _tiered(quantity: int, tiers: tuple[tuple[int | None, float], ...]) -> float:
    total, floor = 0.0, 0
    for ceiling, rate in tiers:
        top = quantity if ceiling is None else min(quantity, ceiling)
        if top > floor:
            total += (top - floor) * rate
        if ceiling is None or quantity <= ceiling:
            break
        floor = ceiling
    return total


def volume_month_usd(volume: Volume, region: str) -> MonthlyAmount:
    """What ``volume`` costs for a whole month in ``region``: storage, IOPS, throughput."""
    rate = EBS_RATES.get(region, {}).get(volume.type)
    if rate is None:
        return MonthlyAmount(None, "unknown", partial=True)
    usd = volume.size_gb * rate.gb_month
    if rate.iops_tiers and volume.iops:
        usd += _tiered(max(0, volume.iops - rate.iops_free), rate.iops_tiers)
    if rate.throughput_mibps_month and volume.throughput_mibps:
        extra = max(0, volume.throughput_mibps - rate.throughput_free)
        usd += extra * rate.throughput_mibps_month
    return MonthlyAmount(usd, "bundled", partial=rate.per_io_request)


def month_seconds(moment: datetime) -> int:
    """Seconds in the calendar month of ``moment`` (UTC), over which EBS is prorated."""
    return calendar.monthrange(moment.year, moment.month)[1] * 86_400


def on_demand_price(
    instance_type: str,
    region: str,
    overrides: Mapping[str, float] | None = None,
    price_list: Price | None = None,
) -> Price:
    """The on-demand price by precedence: config, then the Price List API, then the table.

    ``price_list`` is the caller's (cached) Price List answer, or None when it
    has none; keeping freshness (7 days) is the caller's job, not this one's.
    """
    overrides = overrides or {}
    if any(key in overrides for key in (f"{region}/{instance_type}", instance_type)):
        return Price(billing.hourly_price(instance_type, region, overrides), "config")
    if price_list is not None and price_list.usd_per_hour is not None:
        return price_list
    bundled = billing.hourly_price(instance_type, region)
    if bundled is None:
        return Price.unknown()
    return Price(bundled, "bundled", billing.bundled_as_of())
