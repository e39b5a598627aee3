"""The monthly budget's thresholds, pinned at the cent."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone

import pytest

from watchdog.core.budget import THRESHOLDS, cents, month_of, reached, share_of, to_tell


@pytest.mark.parametrize(
    ("spent", "share"),
    [
        (49.99, None),
        (50.00, 50),
        (79.99, 50),
        (80.00, 80),
        (99.99, 80),
        (100.00, 100),
        (250.00, 100),
        (0.0, None),
        (-5.0, None),
    ],
)
def test_the_highest_threshold_reached_at_the_exact_cent(spent: float, share: int | None) -> None:
    assert reached(spent, 100.0) == share


def test_amounts_compare_in_cents_not_floats() -> None:
    assert 0.29 * 100 < 29  # what floats say
    assert reached(0.29, 0.58) == 50
    assert reached(0.2949, 0.58) == 50  # rounds to $0.29
    assert reached(0.2849, 0.58) is None  # $0.28
    assert cents(0.125) == 12 and cents(1.0) == 100


@pytest.mark.parametrize("budget", [0.0, -10.0, 0.004, math.nan, math.inf])
def test_no_budget_or_a_budget_under_a_cent_reaches_nothing(budget: float) -> None:
    assert reached(1000.0, budget) is None


@pytest.mark.parametrize("spent", [math.nan, math.inf])
def test_an_amount_that_is_not_a_number_reaches_nothing(spent: float) -> None:
    assert reached(spent, 100.0) is None


def test_each_threshold_is_told_once_and_a_higher_one_covers_the_lower() -> None:
    assert to_tell(55.0, 100.0, set()) == 50
    assert to_tell(55.0, 100.0, {50}) is None
    assert to_tell(85.0, 100.0, {50}) == 80
    assert to_tell(85.0, 100.0, set()) == 80  # not 50, then 80
    assert to_tell(60.0, 100.0, {80}) is None  # 50 is covered by 80
    assert to_tell(100.0, 100.0, {50, 80}) == 100
    assert to_tell(130.0, 100.0, {100}) is None
    assert to_tell(40.0, 100.0, set()) is None
    assert THRESHOLDS == (50, 80, 100)


def test_the_share_is_rounded_down_in_whole_percent() -> None:
    assert share_of(79.99, 100.0) == 79
    assert share_of(80.0, 100.0) == 80
    assert share_of(0.01, 0.01) == 100
    assert reached(0.01, 0.01) == 100  # a budget of one cent is a budget
    assert share_of(333.33, 100.0) == 333


def test_the_month_is_the_utc_calendar_month(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # this computer's month is still November
    time.tzset()
    try:
        assert month_of(datetime(2026, 12, 1, 2, tzinfo=timezone.utc)) == "2026-12"
    finally:
        monkeypatch.undo()
        time.tzset()
    late = datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert month_of(late) == "2026-12"  # already December in UTC
    assert month_of(datetime(2026, 1, 1, tzinfo=timezone.utc)) == "2026-01"
