"""The price book: what an instance costs per hour now, each figure with its source.

It implements ``Rates`` for the pass (warnings, stops, ``max_idle_usd``) and
feeds the ledger. On-demand by precedence: the config's override, the Price
List API's answer (kept in the history for 7 days), the bundled table, else
``unknown`` (``core.costs.on_demand_price``). Spot: DescribeSpotPriceHistory
for the instance's zone, type and platform, asked at most every few minutes,
its points written to the history so the ledger integrates the price in
effect over each interval. EBS from the volumes the history recorded; IPv4
from the scan's public IP and the recorded Elastic IPs.

A Price List failure (AccessDenied, no network) falls back to the table, is
logged once per cause, and is not asked again for an hour. Only ``refresh``
asks AWS, and the desktop calls it after the pass has acted: ``hourly``, which
the pass calls, reads the history only, so it never blocks or slows a pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from watchdog.aws.ec2 import AwsError
from watchdog.core.costs import Addresses, Price, on_demand_price
from watchdog.core.fleet import Instance
from watchdog.core.ledger import (
    HourlyRates,
    InstanceRecord,
    Span,
    SpotPoint,
    StateChange,
    VolumeSpan,
    hourly_rates,
)
from watchdog.core.settings import Config

log = structlog.get_logger("watchdog.scheduler.pricebook")

#: How long a Price List answer is trusted before it is asked again.
PRICE_LIST_TTL = timedelta(days=7)
#: How long after a Price List failure before trying again (the table serves meanwhile).
PRICE_LIST_RETRY = timedelta(hours=1)
#: How long a spot price history answer serves before it is asked again.
SPOT_TTL = timedelta(minutes=5)
#: How far back the first spot history read of a run goes when its start is unknown.
SPOT_LOOKBACK = timedelta(hours=1)


class PriceSource(Protocol):
    """What AWS says (``watchdog.aws.pricing.Boto3Prices``); errors are ``AwsError``."""

    def on_demand(self, instance_type: str, region: str, platform: str, now: datetime) -> Price: ...

    def spot_history(
        self,
        region: str,
        zone: str,
        instance_type: str,
        platform: str,
        *,
        start: datetime,
        end: datetime,
    ) -> tuple[SpotPoint, ...]: ...


class PriceMemory(Protocol):
    """Where answers are kept between passes (the desktop's SQLite history)."""

    def cached_price(
        self, region: str, itype: str, platform: str
    ) -> tuple[Price, datetime] | None: ...

    def cache_price(
        self, region: str, itype: str, platform: str, price: Price, at: datetime
    ) -> None: ...

    def record_spot(
        self, region: str, zone: str, itype: str, platform: str, points: Iterable[SpotPoint]
    ) -> None: ...

    def spot_points(
        self, region: str, zone: str, itype: str, platform: str
    ) -> tuple[SpotPoint, ...]: ...

    def open_volumes(self, region: str) -> dict[str, tuple[VolumeSpan, ...]]: ...

    def last_addresses(self, region: str) -> dict[str, tuple[str, Addresses]]: ...


class PriceBook:
    """``Rates`` over the Price List, spot history and the recorded volumes and addresses."""

    def __init__(self, cfg: Config, source: PriceSource, memory: PriceMemory):
        self.overrides = cfg.billing.prices
        self.source, self.memory = source, memory
        self._failed_until: datetime | None = None
        self._told: set[str] = set()
        self._spot_asked: dict[tuple[str, str, str, str], datetime] = {}

    def refresh(self, instance: Instance, now: datetime) -> None:
        """Ask AWS what ``hourly`` will need, where the history's answer is stale: the
        Price List (weekly) or the zone's spot history (every few minutes). The desktop
        calls it after a pass has acted, so no warning or stop waits on it."""
        if instance.lifecycle == "spot":
            self.spot(instance, now, ask=True)
        else:
            self.on_demand(instance, now, ask=True)

    def on_demand(self, instance: Instance, now: datetime, *, ask: bool = False) -> Price:
        """The on-demand price by precedence; with ``ask``, the Price List is asked when
        the history's answer is a week old (or missing) and it has not just failed."""
        key = (instance.region, instance.type, instance.platform)
        listed: Price | None = None
        if not self._overridden(instance):
            cached = self.memory.cached_price(*key)
            fresh = cached is not None and now - cached[1] < PRICE_LIST_TTL
            if cached is not None and (fresh or not ask):
                listed = cached[0]  # even stale: AWS's own figure beats the table
            elif ask and (self._failed_until is None or now >= self._failed_until):
                try:
                    listed = self.source.on_demand(
                        instance.type, instance.region, instance.platform, now
                    )
                    self.memory.cache_price(*key, listed, now)
                    self._failed_until = None
                except AwsError as exc:
                    self._failed(exc, now)
                    listed = cached[0] if cached is not None else None
        return on_demand_price(instance.type, instance.region, self.overrides, listed)

    def _overridden(self, instance: Instance) -> bool:
        keys = (f"{instance.region}/{instance.type}", instance.type)
        return any(k in self.overrides for k in keys)

    def _failed(self, exc: AwsError, now: datetime) -> None:
        self._failed_until = now + PRICE_LIST_RETRY
        cause = exc.code or str(exc)
        if cause not in self._told:
            self._told.add(cause)
            log.warning(
                "Price List API not answering; using the bundled table and config prices",
                error=str(exc),
                retry_after=str(PRICE_LIST_RETRY),
            )

    def spot(
        self, instance: Instance, now: datetime, *, ask: bool = False
    ) -> tuple[SpotPoint, ...]:
        """The instance's zone's spot prices, as recorded; with ``ask``, new points are
        asked of AWS (at most every few minutes) and recorded first."""
        key = (instance.region, instance.zone, instance.type, instance.platform)
        known = self.memory.spot_points(*key)
        asked = self._spot_asked.get(key)
        if ask and instance.zone and (asked is None or now - asked >= SPOT_TTL):
            start = known[-1].at if known else (instance.launch_time or now - SPOT_LOOKBACK)
            try:
                fresh = self.source.spot_history(
                    instance.region,
                    instance.zone,
                    instance.type,
                    instance.platform,
                    start=min(start, now),
                    end=now,
                )
            except AwsError as exc:
                log.warning("spot price history not read", region=instance.region, error=str(exc))
                fresh = ()
            self._spot_asked[key] = now
            new = [p for p in fresh if p not in set(known)]
            if new:
                self.memory.record_spot(*key, new)
                known = self.memory.spot_points(*key)
        return known

    def record(self, instance: Instance, now: datetime) -> InstanceRecord:
        """What the ledger would know of the instance now: enough to price an hour."""
        ips = self.memory.last_addresses(instance.region).get(instance.id)
        found = ips[1] if ips is not None and ips[0] == instance.public_ip else None
        auto = found.public_ipv4 if found else int(bool(instance.public_ip))
        elastic = found.elastic_ips if found else ()
        since = instance.launch_time or now
        spot = instance.lifecycle == "spot"
        return InstanceRecord(
            region=instance.region,
            id=instance.id,
            type=instance.type,
            platform=instance.platform,
            changes=(StateChange(min(since, now), "running", auto),),
            on_demand=Price.unknown() if spot else self.on_demand(instance, now),
            lifecycle="spot" if spot else "on-demand",
            name=instance.name,
            spot_prices=self.spot(instance, now) if spot else (),
            volumes=self.memory.open_volumes(instance.region).get(instance.id, ()),
            elastic_ips=tuple(Span(min(since, now)) for _ in elastic),
        )

    def hourly(self, instance: Instance, now: datetime) -> HourlyRates:
        """The instance's cost per hour at ``now`` if running; unknown parts are None.

        Never calls AWS: it reads what ``refresh`` recorded (after the previous pass),
        so the pass's warnings and stops never wait on a price."""
        return hourly_rates(self.record(instance, now), now)
