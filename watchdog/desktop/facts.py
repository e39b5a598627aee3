"""The ledger's facts in the SQLite history: what a pass saw that money depends on.

Kept apart from the ``History`` protocol (which another shell implements in its
own store): only the desktop records these, after each pass. Every table grows
only when something changed (a volume attached, an address moved, a spot price
changed, an idle spell went on), so 90 days of a fleet stay small.

- ``price_cache``: the Price List API's answer per type, region and platform,
  with when it was read (the price book asks again after 7 days).
- ``spot_prices``: DescribeSpotPriceHistory's points per zone, type and platform.
- ``volumes``: each attachment of a volume to an instance, open or closed.
- ``addresses``: an instance's public IPv4 each time it changed: auto-assigned
  ones counted, Elastic IPs by allocation id.
- ``idle_spans``: idle spells as the heartbeat tags reported them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from watchdog.core.costs import Addresses, Price, Volume
from watchdog.core.ledger import Span, SpotPoint, VolumeSpan

FACTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS price_cache (
    region TEXT NOT NULL, type TEXT NOT NULL, platform TEXT NOT NULL, usd REAL,
    source TEXT NOT NULL, as_of TEXT NOT NULL, fetched_at TEXT NOT NULL,
    PRIMARY KEY (region, type, platform));
CREATE TABLE IF NOT EXISTS spot_prices (
    region TEXT NOT NULL, zone TEXT NOT NULL, type TEXT NOT NULL, platform TEXT NOT NULL,
    at TEXT NOT NULL, usd REAL NOT NULL, PRIMARY KEY (region, zone, type, platform, at));
CREATE TABLE IF NOT EXISTS volumes (
    region TEXT NOT NULL, instance_id TEXT NOT NULL, volume_id TEXT NOT NULL,
    type TEXT NOT NULL, size_gb INTEGER NOT NULL, iops INTEGER, throughput INTEGER,
    attached_at TEXT NOT NULL, detached_at TEXT,
    PRIMARY KEY (region, instance_id, volume_id, attached_at));
CREATE TABLE IF NOT EXISTS addresses (
    at TEXT NOT NULL, region TEXT NOT NULL, id TEXT NOT NULL, public_ip TEXT NOT NULL,
    public_ipv4 INTEGER NOT NULL, elastic_ips TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS addresses_instance ON addresses (region, id, at);
CREATE TABLE IF NOT EXISTS idle_spans (
    region TEXT NOT NULL, id TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL,
    PRIMARY KEY (region, id, start));
"""


class Facts:
    """The ledger's tables; mixed into ``Store``, whose connection it shares."""

    _db: sqlite3.Connection

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read (the ledger reads whole tables at once: 90 days in a few queries)."""
        return list(self._db.execute(sql, tuple(params)))

    # --- prices ---------------------------------------------------------------------

    def cached_price(self, region: str, itype: str, platform: str) -> tuple[Price, datetime] | None:
        """The Price List's last answer for this SKU, and when it was read."""
        row = self._db.execute(
            "SELECT usd, source, as_of, fetched_at FROM price_cache "
            "WHERE region=? AND type=? AND platform=?",
            (region, itype, platform),
        ).fetchone()
        if row is None:
            return None
        usd, source, as_of, fetched = row
        return Price(usd, source, as_of), _parse(fetched)

    def cache_price(
        self, region: str, itype: str, platform: str, price: Price, at: datetime
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO price_cache VALUES (?, ?, ?, ?, ?, ?, ?)",
            (region, itype, platform, price.usd_per_hour, price.source, price.as_of, _t(at)),
        )

    def record_spot(
        self, region: str, zone: str, itype: str, platform: str, points: Iterable[SpotPoint]
    ) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO spot_prices VALUES (?, ?, ?, ?, ?, ?)",
            [(region, zone, itype, platform, _t(p.at), p.usd_per_hour) for p in points],
        )

    def spot_points(
        self, region: str, zone: str, itype: str, platform: str
    ) -> tuple[SpotPoint, ...]:
        rows = self._db.execute(
            "SELECT at, usd FROM spot_prices WHERE region=? AND zone=? AND type=? AND "
            "platform=? ORDER BY at",
            (region, zone, itype, platform),
        )
        return tuple(SpotPoint(_parse(at), usd) for at, usd in rows)

    # --- volumes and addresses --------------------------------------------------------

    def open_volumes(self, region: str) -> dict[str, tuple[VolumeSpan, ...]]:
        """Each instance's volumes attached now, as last recorded."""
        out: dict[str, list[VolumeSpan]] = {}
        for instance_id, *row in self._db.execute(
            "SELECT instance_id, volume_id, type, size_gb, iops, throughput, attached_at, "
            "detached_at FROM volumes WHERE region=? AND detached_at IS NULL",
            (region,),
        ):
            out.setdefault(instance_id, []).append(volume_span(row))
        return {k: tuple(v) for k, v in out.items()}

    def update_volumes(
        self, region: str, instance_id: str, attached: Sequence[VolumeSpan], now: datetime
    ) -> None:
        """Close the attachments no longer there (at ``now``); open the new ones."""
        wanted = {v.volume.id: v for v in attached}
        is_open = self.open_volumes(region).get(instance_id, ())
        for span in is_open:
            if span.volume.id not in wanted or wanted[span.volume.id].volume != span.volume:
                self._db.execute(
                    "UPDATE volumes SET detached_at=? WHERE region=? AND instance_id=? AND "
                    "volume_id=? AND detached_at IS NULL",
                    (_t(now), region, instance_id, span.volume.id),
                )
        kept = {s.volume for s in is_open}
        known_ids = {s.volume.id for s in is_open}
        for span in attached:
            if span.volume in kept:
                continue
            v = span.volume
            # a resized volume (same id, new size) is billed at its new size from now
            start = now if v.id in known_ids else span.span.start
            self._db.execute(
                "INSERT OR REPLACE INTO volumes VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    region,
                    instance_id,
                    v.id,
                    v.type,
                    v.size_gb,
                    v.iops,
                    v.throughput_mibps,
                    _t(start),
                ),
            )

    def last_addresses(self, region: str) -> dict[str, tuple[str, Addresses]]:
        """Each instance's latest recorded public IP, and what it was found to be."""
        rows = self._db.execute(
            "SELECT id, public_ip, public_ipv4, elastic_ips FROM addresses a WHERE region=? "
            "AND rowid = (SELECT MAX(rowid) FROM addresses b WHERE b.region=a.region "
            "AND b.id=a.id)",
            (region,),
        )
        return {i: (ip, Addresses(n, tuple(json.loads(e)))) for i, ip, n, e in rows}

    def record_addresses(
        self, region: str, instance_id: str, at: datetime, public_ip: str, found: Addresses
    ) -> None:
        self._db.execute(
            "INSERT INTO addresses VALUES (?, ?, ?, ?, ?, ?)",
            (
                _t(at),
                region,
                instance_id,
                public_ip,
                found.public_ipv4,
                json.dumps(list(found.elastic_ips)),
            ),
        )

    # --- idle spells ------------------------------------------------------------------

    def extend_idle(self, region: str, instance_id: str, start: datetime, end: datetime) -> None:
        """An idle spell from ``start`` (the last activity) on, known to last until ``end``."""
        self._db.execute(
            "INSERT INTO idle_spans VALUES (?, ?, ?, ?) ON CONFLICT (region, id, start) "
            "DO UPDATE SET end = MAX(end, excluded.end)",
            (region, instance_id, _t(start), _t(max(start, end))),
        )


def volume_span(row: Sequence[Any]) -> VolumeSpan:
    """(volume_id, type, size_gb, iops, throughput, attached_at, detached_at) -> a span."""
    volume_id, vtype, size, iops, throughput, attached, detached = row
    volume = Volume(volume_id, vtype, int(size), iops, throughput)
    return VolumeSpan(volume, Span(_parse(attached), _parse(detached) if detached else None))


def _t(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
