"""Billable seconds since the last start, and what they cost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from watchdog.core.billing import billable_seconds, cost, hourly_price, per_second

START = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
PER_SECOND = ["Linux/UNIX", "Windows", "Windows with SQL Server Web", "Red Hat Enterprise Linux"]
PER_SECOND += ["Ubuntu Pro", "linux/unix"]
HOURLY = ["", "SUSE Linux", "Something New", "unknown"]


@pytest.mark.parametrize("platform", PER_SECOND)
@pytest.mark.parametrize(
    ("elapsed", "billed"),
    [(0, 60), (1, 60), (59, 60), (60, 60), (61, 61), (3601, 3601), (90_000, 90_000)],
)
def test_per_second_with_a_minute_minimum(platform: str, elapsed: int, billed: int) -> None:
    assert per_second(platform)
    now = START + timedelta(seconds=elapsed)
    assert billable_seconds("running", START, now, platform) == billed


@pytest.mark.parametrize("platform", HOURLY)
@pytest.mark.parametrize(
    ("elapsed", "billed"),
    [(0, 3600), (1, 3600), (3599, 3600), (3600, 3600), (3601, 7200), (36_000, 36_000)],
)
def test_other_platforms_bill_per_started_hour(platform: str, elapsed: int, billed: int) -> None:
    assert not per_second(platform)
    now = START + timedelta(seconds=elapsed)
    assert billable_seconds("running", START, now, platform) == billed


@pytest.mark.parametrize(
    "state", ["stopped", "pending", "shutting-down", "terminated", "stopping-nonsense"]
)
@pytest.mark.parametrize("platform", ["Linux/UNIX", ""])
def test_not_running_is_not_billed(state: str, platform: str) -> None:
    assert billable_seconds(state, START, START + timedelta(hours=5), platform) == 0


def test_no_launch_time_is_not_billed() -> None:
    assert billable_seconds("running", None, START, "Linux/UNIX") == 0


def test_clock_before_launch_bills_the_minimum() -> None:
    assert billable_seconds("running", START, START - timedelta(minutes=5), "Linux/UNIX") == 60


@pytest.mark.parametrize(
    ("instance_type", "region", "overrides", "expected"),
    [
        ("g5.xlarge", "us-east-1", None, 1.006),
        ("g4dn.xlarge", "us-west-2", {}, 0.526),
        ("p5.48xlarge", "us-east-2", None, 55.04),  # after AWS's 2025 cut, not 2024's 98.32
        ("g5.xlarge", "eu-west-1", None, 1.123),  # each region its own price
        ("p4d.24xlarge", "us-east-1", None, 21.957642),
        ("trn1.32xlarge", "us-west-2", None, 21.5),
        ("inf2.xlarge", "eu-west-1", None, 0.94775),
        ("g5.xlarge", "us-east-1", {"g5.xlarge": 0.9}, 0.9),
        ("g5.xlarge", "eu-west-1", {"g5.xlarge": 1.2}, 1.2),  # a type override holds everywhere
        ("g5.xlarge", "eu-west-1", {"eu-west-1/g5.xlarge": 1.3}, 1.3),
        ("g5.xlarge", "us-east-1", {"g5.xlarge": 0.9, "us-east-1/g5.xlarge": 0.8}, 0.8),
        ("g5.xlarge", "us-west-2", {"us-east-1/g5.xlarge": 0.8}, 1.006),
        ("x9.huge", "us-east-1", {"x9.huge": 4.0}, 4.0),
        ("g5.xlarge", "us-east-1", {"g5.xlarge": 0.0}, 0.0),
        ("x9.huge", "us-east-1", None, None),  # unknown type
        ("g5.xlarge", "ap-southeast-4", None, None),  # a region that does not sell it
        ("g5.xlarge", "ap-southeast-4", {"us-east-1/g5.xlarge": 0.8}, None),
        ("p4de.24xlarge", "us-east-2", None, None),  # never a neighbour's price
        ("g5.xlarge", "", None, None),
    ],
)
def test_hourly_price(
    instance_type: str, region: str, overrides: dict[str, float] | None, expected: float | None
) -> None:
    assert hourly_price(instance_type, region, overrides) == expected


@pytest.mark.parametrize(
    ("seconds", "price", "expected"),
    [
        (3600, 1.006, 1.006),
        (60, 3.06, 0.051),
        (7200, 98.32, 196.64),
        (0, 1.0, 0.0),
        (1, 1.0, 0.0003),
        (3600, None, None),
        (0, None, None),
    ],
)
def test_cost(seconds: int, price: float | None, expected: float | None) -> None:
    assert cost(seconds, price) == expected


def test_cost_of_a_forgotten_weekend_on_a_g5() -> None:
    friday, monday = START, START + timedelta(days=3)
    seconds = billable_seconds("running", friday, monday, "Linux/UNIX")
    assert cost(seconds, hourly_price("g5.xlarge", "us-east-1")) == pytest.approx(72 * 1.006)


def test_stopping_is_billed_only_while_hibernating() -> None:
    start = datetime(2025, 6, 1, tzinfo=timezone.utc)
    later = start + timedelta(hours=5)
    assert billable_seconds("stopping", start, later, "Linux/UNIX") == 0
    assert billable_seconds("stopping", start, later, "Linux/UNIX", hibernating=True) == 5 * 3600
