"""The ledger at its edges: the exact second a run, an address or a volume begins and
ends, and scans that disagree with each other."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

import pytest

from watchdog.core.costs import Price, Volume
from watchdog.core.ledger import (
    Costs,
    InstanceRecord,
    Observation,
    Span,
    SpotPoint,
    StateChange,
    VolumeSpan,
    add,
    build,
    hourly_rates,
    instance_ledger,
    state_changes,
)

T = datetime(2026, 6, 1, tzinfo=timezone.utc)  # June: 720 hours
H = timedelta(hours=1)
GP3 = Volume("vol-1", "gp3", 720, 3000, 125)  # $57.60 a month: $0.08 an hour in June


def record(**kw: object) -> InstanceRecord:
    """Running from T with one public IPv4, stopped at T+2h, running from T+3h with two."""
    base: dict[str, object] = {
        "region": "us-east-1",
        "id": "i-1",
        "type": "g5.xlarge",
        "platform": "Linux/UNIX",
        "changes": (
            StateChange(T, "running", public_ipv4=1),
            StateChange(T + 2 * H, "stopped"),
            StateChange(T + 3 * H, "running", public_ipv4=2),
        ),
        "on_demand": Price(1.0, "config"),
    }
    return InstanceRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_the_public_addresses_are_those_of_the_run_in_effect() -> None:
    before = hourly_rates(record(), T - H)
    assert before.ipv4_usd == 0.0  # not started yet: no address
    assert before.stop_saves_usd == 1.0
    assert hourly_rates(record(), T + H).ipv4_usd == pytest.approx(0.005)
    assert hourly_rates(record(), T + 3 * H).ipv4_usd == pytest.approx(0.010)  # to the second
    second = T + 3 * H - timedelta(seconds=1)
    assert hourly_rates(record(), second).ipv4_usd == pytest.approx(0.005)


def test_an_elastic_ip_counts_from_the_second_it_is_allocated_until_it_is_released() -> None:
    eip = record(elastic_ips=(Span(T + H, T + 2 * H),))
    assert hourly_rates(eip, T + H).ipv4_usd == pytest.approx(0.010)
    assert hourly_rates(eip, T + H - timedelta(seconds=1)).ipv4_usd == pytest.approx(0.005)
    assert hourly_rates(eip, T + 2 * H).stop_saves_usd == pytest.approx(1.005)
    assert hourly_rates(eip, T + 2 * H - timedelta(seconds=1)).ipv4_usd == pytest.approx(0.010)
    assert hourly_rates(eip, T + 2 * H).ipv4_usd == pytest.approx(0.005)


def test_a_volume_counts_from_the_second_it_is_attached_until_it_is_detached() -> None:
    vol = record(volumes=(VolumeSpan(GP3, Span(T + H, T + 2 * H)),))
    assert hourly_rates(vol, T + H).ebs_usd == pytest.approx(0.08)
    assert hourly_rates(vol, T + H - timedelta(seconds=1)).ebs_usd == 0.0
    assert hourly_rates(vol, T + 2 * H - timedelta(seconds=1)).ebs_usd == pytest.approx(0.08)
    assert hourly_rates(vol, T + 2 * H).ebs_usd == 0.0


def test_the_savings_horizon_reaches_the_ledger() -> None:
    stopped = record(
        changes=(StateChange(T, "running"), StateChange(T + H, "stopped")),
        watchdog_stops=(T + H,),
    )
    now = T + 48 * H
    assert build([stopped], T, now, now).instances[0].total.saved_usd == pytest.approx(24.0)
    one_hour = build([stopped], T, now, now, savings_horizon_hours=1.0)
    assert one_hour.instances[0].total.saved_usd == pytest.approx(1.0)


def test_a_stop_records_only_what_a_stop_has() -> None:
    """A stopped instance has no auto-assigned address; a hibernating stop is billed."""
    seen = [
        Observation(T, "running", launch_time=T, public_ipv4=1),
        Observation(T + H, "stopping", public_ipv4=1, hibernating=True),
        Observation(T + 2 * H, "stopped", public_ipv4=1),
    ]
    assert state_changes(seen) == (
        StateChange(T, "running", 1),
        StateChange(T + H, "stopping", 0, hibernating=True),
        StateChange(T + 2 * H, "stopped", 0),
    )


def test_the_same_launch_time_seen_twice_is_one_run() -> None:
    seen = [
        Observation(T + H, "running", launch_time=T),
        Observation(T + 2 * H, "running", launch_time=T),
    ]
    assert state_changes(seen) == (StateChange(T, "running"),)


def test_a_scan_without_a_launch_time_neither_breaks_nor_restarts_a_run() -> None:
    seen = [
        Observation(T + H, "running"),
        Observation(T + 2 * H, "running", launch_time=T + H),
        Observation(T + 3 * H, "running"),
    ]
    assert state_changes(seen) == (StateChange(T + H, "running"),)


def test_an_address_change_counts_from_the_scan_that_saw_it() -> None:
    seen = [
        Observation(T + H, "running", launch_time=T, public_ipv4=1),
        Observation(T + 2 * H, "running", launch_time=T, public_ipv4=2),
    ]
    assert state_changes(seen) == (
        StateChange(T, "running", 1),
        StateChange(T + 2 * H, "running", 2),
    )


def test_per_started_hour_each_hour_is_billed_on_the_day_it_began() -> None:
    """SUSE across midnight: 23:30-01:30:01 is three started hours, one on June 1."""
    late = T + 23.5 * H
    suse = record(
        platform="SUSE Linux",
        changes=(
            StateChange(late, "running"),
            StateChange(late + 2 * H + timedelta(seconds=1), "stopped"),
        ),
    )
    ledger = instance_ledger(suse, T, T + 3 * 24 * H, T + 3 * 24 * H)
    june1, june2, _ = ledger.days
    assert (june1.billed_seconds, june2.billed_seconds) == (3600, 7200)
    assert (june1.compute_usd, june2.compute_usd) == (1.0, 2.0)


def test_a_stopping_instance_is_billed_only_while_hibernating() -> None:
    changes = (
        StateChange(T, "running"),
        StateChange(T + H, "stopping"),
        StateChange(T + 2 * H, "stopped"),
    )
    plain = instance_ledger(record(changes=changes), T, T + 3 * H, T + 3 * H)
    assert plain.total.billed_seconds == 3600
    asleep = (changes[0], StateChange(T + H, "stopping", hibernating=True), changes[2])
    hibernating = instance_ledger(record(changes=asleep), T, T + 3 * H, T + 3 * H)
    assert hibernating.total.billed_seconds == 7200


def test_adding_costs_keeps_unknown_amounts_unknown_or_partial() -> None:
    known = Costs(compute_usd=2.0, partial=False)
    unknown = Costs(compute_usd=None)
    assert add(Costs(partial=True), known).partial is True
    assert add(known, Costs(partial=True)).partial is True
    assert add(known, unknown).compute_usd is None
    fleet = add(known, unknown, known_only=True)
    assert (fleet.compute_usd, fleet.partial) == (2.0, True)
    assert add(unknown, known, known_only=True).compute_usd == 2.0
    day = date(2026, 6, 1)
    assert add(Costs(day=day), Costs(day=day)).day == day
    assert add(Costs(day=day), Costs(day=date(2026, 6, 2))).day is None


def test_days_and_months_are_utc_whatever_the_machine_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A desktop in New York sees the same per-day figures as one in UTC."""
    july = datetime(2026, 7, 1, tzinfo=timezone.utc)
    rec = record(
        changes=(StateChange(july - H, "running"), StateChange(july + H, "stopped")),
        volumes=(VolumeSpan(GP3, Span(july - H, july + H)),),
    )
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    spot = record(lifecycle="spot", spot_prices=(SpotPoint(T, 0.5),))
    try:
        ledger = instance_ledger(rec, july - H, july + H, july + H)
        as_of = hourly_rates(spot, T + H).price.as_of
    finally:
        monkeypatch.undo()
        time.tzset()
    june30, july1 = ledger.days
    assert (june30.day, july1.day) == (date(2026, 6, 30), date(2026, 7, 1))
    assert (june30.billed_seconds, july1.billed_seconds) == (3600, 3600)
    # an hour of $57.60/month is $0.08 in June (720 h) and $57.60/744 in July
    assert june30.ebs_usd == pytest.approx(0.08)
    assert july1.ebs_usd == pytest.approx(57.6 / 744)
    assert as_of == "2026-06-01T00:00:00Z"  # the spot price's time, in UTC


def test_each_start_after_a_stop_is_billed_on_its_own() -> None:
    """Per started hour, a stopped gap is not billed; per second, each start pays its minimum."""
    changes = (
        StateChange(T, "running"),
        StateChange(T + timedelta(seconds=20), "stopped"),
        StateChange(T + 5 * H, "running"),
        StateChange(T + 5 * H + timedelta(seconds=20), "stopped"),
    )
    now = T + 6 * H
    linux = instance_ledger(record(changes=changes), T, now, now)
    assert linux.total.billed_seconds == 120  # two starts, 60 s each
    assert linux.total.running_seconds == 40
    suse = instance_ledger(record(changes=changes, platform="SUSE Linux"), T, now, now)
    assert suse.total.billed_seconds == 7200  # two started hours, not six


def test_a_spot_instance_without_price_history_has_an_unknown_price() -> None:
    spot = record(lifecycle="spot", spot_prices=())
    ledger = instance_ledger(spot, T, T + H, T + H)
    assert ledger.price == Price(None, "unknown")
    assert ledger.total.compute_usd is None and ledger.total.partial


def test_spot_time_before_the_first_known_price_is_unknown_not_the_latest_price() -> None:
    spot = record(
        lifecycle="spot",
        changes=(StateChange(T, "running"), StateChange(T + 2 * H, "stopped")),
        spot_prices=(SpotPoint(T + H, 0.5),),
    )
    assert hourly_rates(spot, T + H / 2).compute_usd is None
    assert hourly_rates(spot, T + H).compute_usd == 0.5
    total = instance_ledger(spot, T, T + 2 * H, T + 2 * H).total
    assert total.compute_usd is None and total.partial
