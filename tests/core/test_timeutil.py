"""Durations and instants as people type and read them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from watchdog.core.timeutil import human, iso, parse_duration, parse_iso, utcnow


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", timedelta(hours=2)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("45s", timedelta(seconds=45)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("30", timedelta(minutes=30)),  # a bare number means minutes
        (" 2H ", timedelta(hours=2)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("0", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "h", "2x", "1.5h", "-5m", "2h junk", "m30", "2h30", "forever", "1w"]
)
def test_parse_duration_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(seconds=59.9), "59s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(minutes=12, seconds=30), "12m"),
        (timedelta(minutes=59, seconds=59), "59m"),
        (timedelta(hours=1), "1h00m"),
        (timedelta(hours=3, minutes=5), "3h05m"),
        (timedelta(hours=47, minutes=59), "47h59m"),
        (timedelta(hours=48), "2d00h"),
        (timedelta(days=2, hours=4, minutes=59), "2d04h"),
        (timedelta(days=400), "400d00h"),
        (timedelta(minutes=-5), "0s"),  # a negative span never reads as time left
    ],
)
def test_human(delta: timedelta, expected: str) -> None:
    assert human(delta) == expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc), "2025-06-01T12:00:00Z"),
        (datetime(2025, 6, 1, 12, 0, 7, 999_999, tzinfo=timezone.utc), "2025-06-01T12:00:07Z"),
        (
            datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            "2025-06-01T12:00:00Z",
        ),
        (
            datetime(2025, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-01T04:30:00Z",
        ),
    ],
)
def test_iso_is_utc_with_z_to_the_second(moment: datetime, expected: str) -> None:
    assert iso(moment) == expected


NOON = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01T12:00:00Z", NOON),
        ("2025-06-01T12:00:00z", NOON),
        ("2025-06-01T12:00:00+00:00", NOON),
        ("2025-06-01T14:00:00+02:00", NOON),
        ("2025-06-01T07:00:00-05:00", NOON),
        ("2025-06-01T12:00:00", NOON),  # naive means UTC
        ("2025-06-01T12:00:00.250Z", NOON + timedelta(milliseconds=250)),
        ("2025-06-01T12:00:00.123456Z", NOON + timedelta(microseconds=123456)),
        ("  2025-06-01T12:00:00Z\n", NOON),
    ],
)
def test_parse_iso(text: str, expected: datetime) -> None:
    parsed = parse_iso(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "2025-13-01T00:00:00Z", "2025-06-01T25:00:00Z", "1717243200"]
)
def test_parse_iso_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso(text)


def test_iso_and_parse_iso_round_trip() -> None:
    moment = datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert parse_iso(iso(moment)) == moment


def test_durations_up_to_ten_years_and_not_a_second_more() -> None:
    assert parse_duration("3650d") == timedelta(days=3650)
    with pytest.raises(ValueError) as caught:
        parse_duration("3650d1s")
    assert str(caught.value) == "too long: '3650d1s' (at most 3650 days)"


def test_iso_is_utc_whatever_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop in Berlin writes the same tags as a server in UTC."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        moment = datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=5)))
        assert iso(moment) == "2025-06-01T09:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_utcnow_is_aware_utc() -> None:
    before = datetime.now(timezone.utc)
    now = utcnow()
    assert now.tzinfo is timezone.utc
    assert before <= now <= datetime.now(timezone.utc)
