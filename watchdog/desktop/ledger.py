"""The desktop's ledger: record after each pass what money depends on; read it back.

``record`` runs after ``run_pass`` on the scans it made (``report.scans``: every
instance seen). It asks AWS only about what changed: one DescribeVolumes per
region for the instances whose volume ids changed or are new, one
DescribeAddresses + DescribeNetworkInterfaces per region for those whose
public IP changed; spot prices through the price book (every few minutes).
Idle spells come from the heartbeat tags in the scan (``a=0``: idle since
``l``, known until ``s``), the one source that says when idleness began even
across passes the desktop slept through. A failure in one region is logged
and never blocks another, nor the pass.

``records`` reads the history back into ``core.ledger.InstanceRecord`` objects
(a few whole-table reads, grouped here), and ``build_ledger`` prices a window.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from watchdog.aws.ec2 import AwsError
from watchdog.config import Config
from watchdog.core import heartbeat as hb
from watchdog.core.costs import Addresses, Price, on_demand_price
from watchdog.core.fleet import TAG_HEARTBEAT, Instance, RegionScan
from watchdog.core.ledger import (
    Costs,
    InstanceRecord,
    Ledger,
    Observation,
    Span,
    SpotPoint,
    VolumeSpan,
    build,
    state_changes,
)
from watchdog.desktop.facts import volume_span
from watchdog.desktop.store import Store
from watchdog.scheduler.history import HistoryUnwritable
from watchdog.scheduler.pricebook import PriceBook

if TYPE_CHECKING:
    from watchdog.aws.pricing import Boto3Prices

log = structlog.get_logger("watchdog.desktop.ledger")


class Inventory(Protocol):
    """Volumes and addresses of a batch of instances (``aws.pricing.Boto3Prices``)."""

    def volumes(
        self, region: str, instance_ids: Sequence[str]
    ) -> dict[str, tuple[VolumeSpan, ...]]: ...

    def addresses(self, region: str, instance_ids: Sequence[str]) -> dict[str, Addresses]: ...


@dataclass
class Recorded:
    """What one recording asked of AWS (for the benchmarks and the tests)."""

    volume_calls: int = 0
    address_calls: int = 0


def record(
    store: Store,
    inventory: Inventory,
    book: PriceBook,
    scans: Iterable[RegionScan],
    now: datetime,
) -> Recorded:
    """After a pass: the facts the ledger needs, asked of AWS only where they changed."""
    counted = Recorded()
    for scan in scans:
        if scan.error:
            continue
        try:
            _record_region(store, inventory, book, scan, now, counted=counted)
        except HistoryUnwritable:
            raise
        except Exception:  # one region's failure never blocks the next, nor the pass
            log.exception("ledger facts not recorded", region=scan.region)
    return counted


def _record_region(
    store: Store,
    inventory: Inventory,
    book: PriceBook,
    scan: RegionScan,
    now: datetime,
    *,
    counted: Recorded,
) -> None:
    region, instances = scan.region, scan.instances
    attached = store.open_volumes(region)
    moved = [
        i for i in instances if {v.volume.id for v in attached.get(i.id, ())} != set(i.volume_ids)
    ]
    # Only detached: what stays is known. Anything new needs DescribeVolumes.
    volumes = {
        i.id: tuple(v for v in attached.get(i.id, ()) if v.volume.id in i.volume_ids)
        for i in moved
        if set(i.volume_ids) <= {v.volume.id for v in attached.get(i.id, ())}
    }
    asking = [i.id for i in moved if i.id not in volumes]
    listed = _ask("volumes", inventory.volumes, region, asking)
    counted.volume_calls += listed is not None
    volumes.update(listed or {})
    last = store.last_addresses(region)
    readdressed = [i for i in instances if i.id not in last or last[i.id][0] != i.public_ip]
    addresses = {i.id: Addresses() for i in readdressed if not i.public_ip}
    held = _ask(
        "addresses", inventory.addresses, region, [i.id for i in readdressed if i.public_ip]
    )
    counted.address_calls += held is not None
    addresses.update(held or {})
    for inst in instances:  # AWS calls first, outside any transaction
        if inst.state == "running":
            book.refresh(inst, now)
    with store.transaction():
        for instance_id, spans in volumes.items():
            store.update_volumes(region, instance_id, spans, now)
        by_id = {i.id: i for i in instances}
        for instance_id, found in addresses.items():
            store.record_addresses(region, instance_id, now, by_id[instance_id].public_ip, found)
        for inst in instances:
            spell = _idle_spell(inst)
            if spell is not None:
                store.extend_idle(region, inst.id, *spell)


_Found = TypeVar("_Found")


def _ask(
    what: str, call: Callable[[str, Sequence[str]], dict[str, _Found]], region: str, ids: list[str]
) -> dict[str, _Found] | None:
    """One batched call for ``ids`` (none when empty); None when nothing was asked or it
    failed (what was recorded stays as it was, and the next pass asks again)."""
    if not ids:
        return None
    try:
        return call(region, ids)
    except AwsError as exc:
        log.warning(f"{what} not read", region=region, error=str(exc))
        return None


def _idle_spell(inst: Instance) -> tuple[datetime, datetime] | None:
    """(idle since, idle until at least) from a running instance's heartbeat, if idle."""
    text = inst.tags.get(TAG_HEARTBEAT)
    if inst.state != "running" or not text:
        return None
    try:
        beat = hb.decode(text)
    except hb.HeartbeatError:
        return None  # unreadable: unknown, never idle
    if beat.active is not False:
        return None
    start = beat.last_active_at
    if inst.launch_time is not None:
        start = max(start, inst.launch_time)  # idle before this run is not this run's
    return start, beat.sampled_at


def aws_prices(cfg: Config) -> Boto3Prices:
    """The price edge for the desktop: few retries, so a Price List API that cannot
    answer (AccessDenied, no network) costs a pass a fraction of a second, once an hour."""
    from botocore.config import Config as BotoConfig

    from watchdog.aws.pricing import Boto3Prices

    quick = BotoConfig(retries={"mode": "standard", "max_attempts": 2}, read_timeout=15)
    return Boto3Prices(profile=cfg.aws.profile, boto_config=quick)


# --- reading the history back ---------------------------------------------------------


def records(store: Store, cfg: Config, since: datetime, until: datetime) -> list[InstanceRecord]:
    """Every instance seen in ``[since, until)`` as the ledger's input."""
    instances = store.query(
        "SELECT region, id, name, type, lifecycle, platform, zone FROM instances "
        "WHERE last_seen >= ? AND first_seen <= ? ORDER BY region, id",
        (_t(since), _t(until)),
    )
    wanted = {(r[0], r[1]) for r in instances}
    grouped: dict[str, dict[tuple[str, str], list[Any]]] = {
        k: defaultdict(list) for k in ("obs", "vol", "addr", "idle", "stop")
    }
    tables = {
        "obs": "SELECT region, id, at, state, launch_time, transition_time, public_ip, "
        "hibernating FROM observations ORDER BY rowid",
        "vol": "SELECT region, instance_id, volume_id, type, size_gb, iops, throughput, "
        "attached_at, detached_at FROM volumes",
        "addr": "SELECT region, id, at, public_ip, public_ipv4, elastic_ips FROM addresses "
        "ORDER BY rowid",
        "idle": "SELECT region, id, start, end FROM idle_spans ORDER BY start",
        "stop": "SELECT region, target, at FROM actions WHERE kind='stop' AND ok=1 "
        "AND dry_run=0 ORDER BY rowid",
    }
    for name, sql in tables.items():
        for region, ident, *rest in store.query(sql):
            if (region, ident) in wanted:
                grouped[name][(region, ident)].append(rest)
    out = []
    for region, ident, name, itype, lifecycle, platform, zone in instances:
        key = (region, ident)
        spot = lifecycle == "spot"
        addr = grouped["addr"][key]
        out.append(
            InstanceRecord(
                region=region,
                id=ident,
                type=itype or "",
                platform=platform or "",
                changes=state_changes(
                    # A stop the watchdog made ends the run when EC2 accepted it, even
                    # when no later scan gives the stop's own time (first: on a tie,
                    # the scan that saw it stopped comes after).
                    [Observation(_p(at), "stopping") for (at,) in grouped["stop"][key]]
                    + _observations(grouped["obs"][key], addr)
                ),
                on_demand=Price.unknown()
                if spot
                else _on_demand(store, cfg, region, itype, platform),
                lifecycle="spot" if spot else "on-demand",
                name=name or "",
                spot_prices=_spot(store, (region, zone or "", itype, platform or ""), since)
                if spot
                else (),
                volumes=tuple(volume_span(row) for row in grouped["vol"][key]),
                elastic_ips=_elastic_ips(addr),
                idle=tuple(Span(_p(a), _p(b)) for a, b in grouped["idle"][key]),
                watchdog_stops=tuple(_p(at) for (at,) in grouped["stop"][key]),
            )
        )
    return out


def _observations(rows: list[Any], addresses: list[Any]) -> list[Observation]:
    """Scans as ``Observation``s; a public IP counts as billed unless it was found to be
    an Elastic IP (those bill by allocation, running or not)."""
    found: dict[str, tuple[list[str], list[int]]] = {}
    for a_at, a_ip, a_count, _ in addresses:  # oldest first
        times, counts = found.setdefault(a_ip, ([], []))
        times.append(a_at)
        counts.append(a_count)
    out = []
    for at, state, launch, transition, public_ip, hibernating in rows:
        count = int(bool(public_ip))
        times, counts = found.get(public_ip, ([], []))
        latest = bisect_right(times, at) - 1  # the latest finding at or before the scan
        if latest >= 0:
            count = counts[latest]
        out.append(
            Observation(
                at=_p(at),
                state=state,
                launch_time=_p(launch) if launch else None,
                transition_time=_p(transition) if transition else None,
                public_ipv4=count,
                hibernating=bool(hibernating),
            )
        )
    return out


def _elastic_ips(rows: list[Any]) -> tuple[Span, ...]:
    """Each Elastic IP's span on this instance: from the first finding with it to the
    first without it (a released or moved address stops billing here then)."""
    spans: list[Span] = []
    holding: dict[str, datetime] = {}
    for at, _, _, elastic in rows:
        now_held = set(json.loads(elastic))
        for allocation in list(holding):
            if allocation not in now_held:
                spans.append(Span(holding.pop(allocation), _p(at)))
        for allocation in now_held - holding.keys():
            holding[allocation] = _p(at)
    spans.extend(Span(start) for start in holding.values())
    return tuple(spans)


def _on_demand(store: Store, cfg: Config, region: str, itype: str, platform: str) -> Price:
    cached = store.cached_price(region, itype, platform or "")
    return on_demand_price(itype, region, cfg.billing.prices, cached[0] if cached else None)


def _spot(store: Store, key: tuple[str, str, str, str], since: datetime) -> tuple[SpotPoint, ...]:
    """The recorded points from the one in effect at ``since`` on."""
    points = store.spot_points(*key)
    before = [p for p in points if p.at <= since]
    return tuple(before[-1:] + [p for p in points if p.at > since])


def build_ledger(
    store: Store, cfg: Config, since: datetime, until: datetime, now: datetime
) -> Ledger:
    """The ledger over ``[since, min(until, now))`` from what the history recorded."""
    return build(
        records(store, cfg, since, min(until, now)),
        since,
        until,
        now,
        savings_horizon_hours=cfg.billing.savings_horizon_hours,
    )


def month_start(now: datetime) -> datetime:
    """00:00 UTC on the first of ``now``'s month (UTC)."""
    utc = now.astimezone(timezone.utc)
    return datetime(utc.year, utc.month, 1, tzinfo=timezone.utc)


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(timezone.utc).date(), time(), timezone.utc)


def month_to_date(store: Store, cfg: Config, now: datetime) -> Costs:
    """The watched fleet's cost this calendar month (UTC) so far, for status and budgets."""
    return build_ledger(store, cfg, month_start(now), now, now).totals()


def today(store: Store, cfg: Config, now: datetime) -> Costs:
    """The watched fleet's cost since 00:00 UTC today."""
    return build_ledger(store, cfg, day_start(now), now, now).totals()


def per_instance(
    store: Store, cfg: Config, now: datetime
) -> dict[tuple[str, str], tuple[Costs, Costs]]:
    """(today, this month) per (region, id), from one month-to-date ledger."""
    ledger = build_ledger(store, cfg, month_start(now), now, now)
    today_date = now.astimezone(timezone.utc).date()
    out = {}
    for inst in ledger.instances:
        day = next((d for d in inst.days if d.day == today_date), Costs(today_date))
        out[(inst.region, inst.id)] = (day, inst.total)
    return out


def _t(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _p(text: str) -> datetime:
    return datetime.fromisoformat(text)
