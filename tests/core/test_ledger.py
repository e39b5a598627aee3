"""The ledger against hand computation, within a cent, and the report's JSON shape."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.core.costs import Price, Volume
from watchdog.core.ledger import (
    DEFAULT_SAVINGS_HORIZON_HOURS,
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
    parse_transition_time,
    state_changes,
)
from watchdog.core.ledger_report import report_json


def at(day: int, hour: float) -> datetime:
    """A moment in June 2026 (a 30-day month, so gp3's $0.08/GB-month is $0.08/720 an hour)."""
    return datetime(2026, 6, day, tzinfo=timezone.utc) + timedelta(hours=hour)


CENT = 0.01


def spot_instance() -> InstanceRecord:
    """A g5.xlarge spot run 10:30-14:00 over two price changes (11:30 and 13:00)."""
    return InstanceRecord(
        region="us-east-1",
        id="i-spot",
        type="g5.xlarge",
        platform="Linux/UNIX",
        lifecycle="spot",
        changes=(
            StateChange(at(2, 10.5), "running", public_ipv4=1),
            StateChange(at(2, 14), "stopped"),
        ),
        spot_prices=(
            SpotPoint(at(2, 10), 0.40),
            SpotPoint(at(2, 11.5), 0.50),
            SpotPoint(at(2, 13), 0.35),
        ),
    )


def test_a_spot_run_over_two_price_changes() -> None:
    inst = instance_ledger(spot_instance(), at(2, 0), at(3, 0), at(3, 0))
    # 1 h at 0.40 + 1.5 h at 0.50 + 1 h at 0.35
    assert inst.total.compute_usd == pytest.approx(0.40 + 0.75 + 0.35, abs=CENT)
    assert inst.total.ipv4_usd == pytest.approx(3.5 * 0.005, abs=CENT)
    assert inst.total.total_usd == pytest.approx(1.5175, abs=CENT)
    assert inst.total.running_seconds == inst.total.billed_seconds == 3.5 * 3600
    assert inst.price == Price(0.35, "spot-history", "2026-06-02T13:00:00Z")
    assert not inst.total.partial


def gp3_instance(horizon_days: int = 0) -> InstanceRecord:
    """An on-demand g5.xlarge with a 500 GB gp3 volume, idle from 12:00 and stopped by the
    watchdog at 12:30 on June 1, started again June 3 09:00."""
    return InstanceRecord(
        region="us-east-1",
        id="i-od",
        name="training",
        type="g5.xlarge",
        platform="Linux/UNIX",
        on_demand=Price(1.006, "bundled"),
        changes=(
            StateChange(at(1, 8), "running", public_ipv4=1),
            StateChange(at(1, 12.5), "stopped"),
            StateChange(at(3, 9), "running", public_ipv4=1),
        ),
        volumes=(
            VolumeSpan(Volume("vol-1", "gp3", 500, 3000, 125), Span(at(1, 0) - timedelta(days=9))),
        ),
        idle=(Span(at(1, 12), at(1, 12.5)),),
        watchdog_stops=(at(1, 12.5),),
    )


def test_an_on_demand_instance_with_500_gb_gp3_stopped_by_the_watchdog() -> None:
    now = at(3, 10)
    inst = instance_ledger(gp3_instance(), at(1, 0), now, now)
    t = inst.total
    assert t.running_seconds == 5.5 * 3600
    assert t.compute_usd == pytest.approx(5.5 * 1.006, abs=CENT)  # 5.533
    assert t.ipv4_usd == pytest.approx(5.5 * 0.005, abs=CENT)
    ebs_per_hour = 500 * 0.08 / 720  # $40 a month over June's 720 hours
    assert t.ebs_usd == pytest.approx(58 * ebs_per_hour, abs=CENT)  # 3.2222, stopped or not
    assert t.total_usd == pytest.approx(5.533 + 0.0275 + 3.2222, abs=CENT)
    assert t.idle_seconds == 1800
    assert t.idle_usd == pytest.approx(0.5 * (1.006 + 0.005), abs=CENT)
    assert t.stops_by_watchdog == 1
    # the next start came 44.5 h later; the default 24 h horizon caps the estimate
    assert DEFAULT_SAVINGS_HORIZON_HOURS == 24
    assert t.saved_usd == pytest.approx(24 * (1.006 + 0.005), abs=CENT)  # 24.264
    june1, june2, june3 = inst.days
    assert june1.saved_usd == pytest.approx(11.5 * 1.011, abs=CENT)
    assert june2.saved_usd == pytest.approx(12.5 * 1.011, abs=CENT)
    assert june3.saved_usd == 0 and june2.compute_usd == 0
    assert june2.ebs_usd == pytest.approx(24 * ebs_per_hour, abs=CENT)
    assert inst.price == Price(1.006, "bundled")


def test_the_saving_stops_at_the_next_start_when_it_comes_before_the_horizon() -> None:
    now = at(3, 10)
    inst = instance_ledger(gp3_instance(), at(1, 0), now, now, savings_horizon_hours=48)
    assert inst.total.saved_usd == pytest.approx(44.5 * 1.011, abs=CENT)


def test_a_stop_still_in_effect_saves_only_up_to_now() -> None:
    now = at(1, 14.5)
    inst = instance_ledger(gp3_instance(), at(1, 0), now, now)
    assert inst.total.saved_usd == pytest.approx(2 * 1.011, abs=CENT)


def unknown_region_instance() -> InstanceRecord:
    return InstanceRecord(
        region="ap-southeast-4",
        id="i-far",
        type="g5.xlarge",
        platform="Linux/UNIX",
        changes=(
            StateChange(at(2, 9), "running", public_ipv4=1),
            StateChange(at(2, 11), "stopped"),
        ),
        volumes=(VolumeSpan(Volume("vol-2", "gp3", 100), Span(at(2, 9), at(2, 11))),),
    )


def test_an_instance_in_a_region_missing_from_the_table_is_unknown_and_partial() -> None:
    inst = instance_ledger(unknown_region_instance(), at(2, 0), at(3, 0), at(3, 0))
    t = inst.total
    assert t.compute_usd is None and t.ebs_usd is None and t.total_usd is None
    assert t.ipv4_usd == pytest.approx(0.01, abs=CENT)  # the IPv4 rate is the same everywhere
    assert t.running_seconds == 7200 and t.partial
    assert inst.price == Price(None, "unknown")


def test_unknown_prices_cost_nothing_when_nothing_ran() -> None:
    record = InstanceRecord(
        "ap-southeast-4", "i-off", "g5.xlarge", "Linux/UNIX", (StateChange(at(1, 0), "stopped"),)
    )
    t = instance_ledger(record, at(1, 0), at(2, 0), at(2, 0)).total
    assert t.compute_usd == 0 and t.ebs_usd == 0 and not t.partial


def test_report_json_has_the_promised_shape_and_hand_computed_figures() -> None:
    now = at(3, 10)
    records = [spot_instance(), gp3_instance(), unknown_region_instance()]
    doc = report_json(build(records, at(1, 0), at(30, 0), now))
    json.dumps(doc, allow_nan=False)  # plain JSON
    assert list(doc) == ["version", "since", "until", "currency", "instances", "totals", "notes"]
    assert doc["version"] == 1 and doc["currency"] == "USD"
    assert doc["since"] == "2026-06-01T00:00:00Z" and doc["until"] == "2026-06-03T10:00:00Z"
    spot, od, far = doc["instances"]
    assert list(od) == [
        "region", "id", "name", "type", "lifecycle", "running_seconds", "billed_seconds",
        "idle_seconds", "compute_usd", "ebs_usd", "ipv4_usd", "total_usd", "idle_usd",
        "stops_by_watchdog", "saved_usd", "price_per_hour", "price_source",
    ]  # fmt: skip
    assert spot["lifecycle"] == "spot" and spot["price_source"] == "spot-history"
    assert spot["total_usd"] == pytest.approx(1.5175, abs=CENT)
    assert od["lifecycle"] == "on-demand" and od["name"] == "training"
    assert od["saved_usd"] == pytest.approx(24.264, abs=CENT) and od["stops_by_watchdog"] == 1
    assert od["price_per_hour"] == 1.006 and od["price_source"] == "bundled"
    assert far["compute_usd"] is None and far["total_usd"] is None
    assert far["price_per_hour"] is None and far["price_source"] == "unknown"
    totals = doc["totals"]
    assert totals["partial"] is True
    # totals add the known amounts: both compute figures, one EBS, every IPv4
    assert totals["compute_usd"] == pytest.approx(1.5 + 5.533, abs=CENT)
    assert totals["ebs_usd"] == pytest.approx(3.2222, abs=CENT)
    assert totals["ipv4_usd"] == pytest.approx(0.0175 + 0.0275 + 0.01, abs=CENT)
    assert totals["total_usd"] == pytest.approx(1.5175 + 8.7827 + 0.01, abs=CENT)
    assert totals["saved_usd"] == pytest.approx(24.264, abs=CENT)
    text = " ".join(doc["notes"])
    assert "estimate" in text and "24 h" in text and "savings_horizon_hours" in text
    assert "Partial" in text


def test_a_window_in_the_future_is_cut_at_now() -> None:
    ledger = build([spot_instance()], at(2, 12), at(9, 0), at(2, 13))
    assert ledger.until == at(2, 13)
    (inst,) = ledger.instances
    assert inst.total.running_seconds == 3600
    assert inst.total.compute_usd == pytest.approx(0.5, abs=CENT)


@pytest.mark.parametrize(
    ("platform", "billed", "usd"),
    [("Linux/UNIX", 60, 1.0 / 60), ("SUSE Linux", 3600, 1.0)],
)
def test_a_short_run_pays_the_minimum_of_its_platform(
    platform: str, billed: int, usd: float
) -> None:
    changes = (
        StateChange(at(1, 1), "running"),
        StateChange(at(1, 1) + timedelta(seconds=20), "stopped"),
    )
    record = InstanceRecord("us-east-1", "i-1", "x", platform, changes, Price(1.0, "config"))
    t = instance_ledger(record, at(1, 0), at(2, 0), at(2, 0)).total
    assert t.running_seconds == 20 and t.billed_seconds == billed
    assert t.compute_usd == pytest.approx(usd)


def test_an_hourly_platform_pays_each_started_hour_at_its_starting_spot_price() -> None:
    record = InstanceRecord(
        "us-east-1", "i-1", "x", "SUSE Linux",
        (StateChange(at(1, 1), "running"), StateChange(at(1, 2.5), "stopped")),
        lifecycle="spot",
        spot_prices=(
            SpotPoint(at(1, 0), 0.2),
            SpotPoint(at(1, 1.5), 0.3),
            SpotPoint(at(1, 2.2), 0.9),
        ),
    )  # fmt: skip
    t = instance_ledger(record, at(1, 0), at(2, 0), at(2, 0)).total
    assert t.billed_seconds == 2 * 3600
    assert t.compute_usd == pytest.approx(0.2 + 0.3)  # hours began at 01:00 and 02:00


def test_a_hibernating_stop_is_billed_until_stopped() -> None:
    changes = (
        StateChange(at(1, 1), "running"),
        StateChange(at(1, 2), "stopping", hibernating=True),
        StateChange(at(1, 2.25), "stopped"),
    )
    record = InstanceRecord("us-east-1", "i-1", "x", "Linux/UNIX", changes, Price(1.0, "config"))
    assert instance_ledger(record, at(1, 0), at(2, 0), at(2, 0)).total.billed_seconds == 4500


def test_elastic_ips_bill_while_allocated_even_stopped() -> None:
    record = InstanceRecord(
        "us-east-1", "i-1", "x", "Linux/UNIX", (StateChange(at(1, 0), "stopped"),),
        elastic_ips=(Span(at(1, 6), at(1, 16)),),
    )  # fmt: skip
    assert instance_ledger(record, at(1, 0), at(2, 0), at(2, 0)).total.ipv4_usd == pytest.approx(
        0.05
    )


def test_hourly_rates_for_status_and_the_stop_notification() -> None:
    record = replace(gp3_instance(), elastic_ips=(Span(at(1, 0)),))
    rates = hourly_rates(record, at(1, 10))
    assert rates.compute_usd == 1.006 and rates.price == Price(1.006, "bundled")
    assert rates.ipv4_usd == pytest.approx(2 * 0.005)  # its public IPv4 and an Elastic IP
    assert rates.ebs_usd == pytest.approx(40 / 720)  # June: 720 hours
    assert rates.stop_saves_usd == pytest.approx(1.006 + 0.005)  # EBS and the EIP stay
    far = hourly_rates(unknown_region_instance(), at(2, 10))
    assert far.compute_usd is None and far.ebs_usd is None and far.stop_saves_usd is None
    spot = hourly_rates(spot_instance(), at(2, 12))
    assert spot.price == Price(0.5, "spot-history", "2026-06-02T11:30:00Z")


# --- from what scans saw -----------------------------------------------------------


def test_the_time_in_a_state_transition_reason() -> None:
    assert parse_transition_time("User initiated (2026-11-30 10:00:07 GMT)") == datetime(
        2026, 11, 30, 10, 0, 7, tzinfo=timezone.utc
    )
    assert parse_transition_time("User initiated (2026-11-30 10:00:07 UTC)") is not None
    assert parse_transition_time("Server.SpotInstanceTermination") is None
    assert parse_transition_time("") is None


def test_runs_are_exact_though_the_desktop_slept() -> None:
    # the desktop saw the instance at 12:00 and 18:00 only; EC2 said when it started and stopped
    seen = [
        Observation(at(1, 12), "running", launch_time=at(1, 9), public_ipv4=1),
        Observation(at(1, 18), "stopped", transition_time=at(1, 13.25)),
        Observation(at(1, 20), "stopped", transition_time=at(1, 13.25)),
        Observation(at(1, 22), "running", launch_time=at(1, 21)),
    ]
    assert state_changes(seen) == (
        StateChange(at(1, 9), "running", 1),
        StateChange(at(1, 13.25), "stopped"),
        StateChange(at(1, 21), "running"),
    )


def test_a_new_launch_time_means_a_restart_no_pass_saw() -> None:
    seen = [
        Observation(at(1, 10), "running", launch_time=at(1, 9)),
        Observation(at(1, 12), "running", launch_time=at(1, 11)),
    ]
    assert state_changes(seen) == (
        StateChange(at(1, 9), "running"),
        StateChange(at(1, 11), "stopped"),
        StateChange(at(1, 11), "running"),
    )


def test_without_exact_times_a_change_counts_from_the_pass_that_saw_it() -> None:
    seen = [
        Observation(at(1, 10), "running"),
        Observation(at(1, 11), "running", public_ipv4=1),
        Observation(at(1, 12), "stopped", transition_time=at(1, 9)),  # clock skew: not before
    ]
    assert state_changes(seen) == (
        StateChange(at(1, 10), "running"),
        StateChange(at(1, 11), "running", 1),
        StateChange(at(1, 11), "stopped"),
    )


# --- properties ----------------------------------------------------------------------

T0 = at(1, 0)
SPAN = 10 * 86_400  # ten days of history, crossing into July
PLATFORMS = ["Linux/UNIX", "SUSE Linux"]


def moment(offset: int) -> datetime:
    return T0 + timedelta(seconds=offset)


offsets = st.integers(0, SPAN)


@st.composite
def records(draw: st.DrawFn, *, spot: bool | None = None) -> InstanceRecord:
    """An arbitrary instance: state changes, prices, volumes, addresses, idle and stops."""
    times = sorted(draw(st.lists(offsets, min_size=1, max_size=8)))
    states = st.sampled_from(["running", "stopped", "stopping", "pending"])
    changes = tuple(
        StateChange(
            moment(t), draw(states), draw(st.integers(0, 2)), hibernating=draw(st.booleans())
        )
        for t in times
    )
    is_spot = draw(st.booleans()) if spot is None else spot
    points = sorted(draw(st.lists(st.integers(-3600, SPAN), min_size=1, max_size=6)))
    prices = st.floats(0.01, 100, allow_nan=False)
    spans = st.tuples(offsets, offsets).map(sorted)
    return InstanceRecord(
        region=draw(st.sampled_from(["us-east-1", "us-west-2"])),
        id="i-1",
        type="g5.xlarge",
        platform=draw(st.sampled_from(PLATFORMS)),
        changes=changes,
        on_demand=Price(draw(prices), "config"),
        lifecycle="spot" if is_spot else "on-demand",
        spot_prices=tuple(SpotPoint(moment(p), draw(prices)) for p in points),
        volumes=tuple(
            VolumeSpan(Volume("v", draw(st.sampled_from(["gp3", "io2", "sc1"])), size, iops),
                       Span(moment(a), moment(b)))
            for (a, b), size, iops in draw(
                st.lists(st.tuples(spans, st.integers(1, 2000), st.integers(3000, 80_000)),
                         max_size=2)
            )
        ),
        elastic_ips=tuple(Span(moment(a), moment(b)) for a, b in draw(st.lists(spans, max_size=2))),
        idle=tuple(Span(moment(a), moment(b)) for a, b in draw(st.lists(spans, max_size=3))),
        watchdog_stops=tuple(moment(t) for t in draw(st.lists(offsets, max_size=2))),
    )  # fmt: skip


def assert_same(a: Costs, b: Costs) -> None:
    for key in ("running_seconds", "billed_seconds", "idle_seconds", "stops_by_watchdog"):
        assert getattr(a, key) == getattr(b, key), key
    for key in ("compute_usd", "ebs_usd", "ipv4_usd", "idle_usd", "saved_usd"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            assert x == pytest.approx(y, rel=1e-9, abs=1e-9), key
    assert a.partial == b.partial


NOW = moment(SPAN + 3600)


@settings(deadline=None, max_examples=150)
@given(records(), st.integers(0, SPAN))
def test_splitting_a_run_at_any_moment_never_changes_its_total(
    record: InstanceRecord, split: int
) -> None:
    whole = instance_ledger(record, T0, NOW, NOW).total
    # a redundant observation: still in the same state at `split`
    current = [c for c in record.changes if c.at <= moment(split)]
    if current:
        again = replace(current[-1], at=moment(split))
        changes = sorted((*record.changes, again), key=lambda c: c.at)
        assert_same(
            whole, instance_ledger(replace(record, changes=tuple(changes)), T0, NOW, NOW).total
        )
    # and two windows that meet at `split` add up to the whole
    left = instance_ledger(record, T0, moment(split), NOW).total
    right = instance_ledger(record, moment(split), NOW, NOW).total
    assert_same(whole, replace(add(left, right), day=None))


@settings(deadline=None)
@given(
    st.integers(0, SPAN - 60),
    st.integers(60, 3 * 86_400),
    st.lists(st.tuples(st.integers(1, SPAN), st.floats(0.01, 50, allow_nan=False)), max_size=8),
    st.floats(0.01, 50, allow_nan=False),
)
def test_spot_cost_is_the_sum_over_price_intervals(
    start: int, length: int, changes: list[tuple[int, float]], first: float
) -> None:
    points = sorted({0: first, **dict(changes)}.items())
    length = min(length, SPAN - start)  # the run ends before now
    record = InstanceRecord(
        "us-east-1", "i-1", "g5.xlarge", "Linux/UNIX",
        (StateChange(moment(start), "running"), StateChange(moment(start + length), "stopped")),
        lifecycle="spot",
        spot_prices=tuple(SpotPoint(moment(t), p) for t, p in points),
    )  # fmt: skip
    expected = 0.0
    for (t, price), (t_next, _) in zip(points, [*points[1:], (10**9, 0.0)], strict=True):
        overlap = min(t_next, start + length) - max(t, start)
        expected += price * max(0, overlap) / 3600
    total = instance_ledger(record, T0, NOW, NOW).total
    assert total.compute_usd == pytest.approx(expected, rel=1e-9)
    assert total.billed_seconds == length


@settings(deadline=None)
@given(records())
def test_a_stopped_instance_accrues_only_ebs_and_elastic_ips(record: InstanceRecord) -> None:
    stopped = replace(record, changes=(StateChange(T0, "stopped"),), watchdog_stops=())
    total = instance_ledger(stopped, T0, NOW, NOW).total
    assert total.running_seconds == total.billed_seconds == total.idle_seconds == 0
    assert total.compute_usd == 0 and total.idle_usd == 0 and total.saved_usd == 0
    eip_hours = sum((s.end - s.start).total_seconds() for s in record.elastic_ips if s.end) / 3600
    assert total.ipv4_usd == pytest.approx(eip_hours * 0.005)
    alone = replace(stopped, elastic_ips=())
    assert instance_ledger(alone, T0, NOW, NOW).total.ebs_usd == pytest.approx(total.ebs_usd)
    assert instance_ledger(replace(alone, volumes=()), T0, NOW, NOW).total.total_usd == 0


@settings(deadline=None, max_examples=60)
@given(records())
def test_day_buckets_sum_to_the_total_and_each_is_its_own_day(record: InstanceRecord) -> None:
    inst = instance_ledger(record, T0, NOW, NOW)
    assert [d.day for d in inst.days] == [
        (T0 + timedelta(days=n)).date() for n in range(len(inst.days))
    ]
    summed = Costs()
    for day in inst.days:
        summed = add(summed, day)
        assert day.day is not None
        alone = datetime.combine(day.day, datetime.min.time(), timezone.utc)
        one = instance_ledger(record, alone, min(NOW, alone + timedelta(days=1)), NOW)
        assert_same(day, replace(one.total, day=day.day))
    assert_same(summed, inst.total)
