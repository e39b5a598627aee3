"""EBS and IPv4 rates, each from a named source, and the on-demand price's precedence."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from watchdog.core.costs import (
    EBS_RATES,
    SOURCES,
    Price,
    Volume,
    month_seconds,
    on_demand_price,
    volume_month_usd,
)


@pytest.mark.parametrize(
    ("volume", "usd"),
    [
        (Volume("v", "gp3", 500, 3000, 125), 40.0),  # the baseline is free
        (Volume("v", "gp3", 500), 40.0),  # DescribeVolumes always gives both; absent = base
        (Volume("v", "gp3", 500, 6000, 250), 40.0 + 3000 * 0.005 + 125 * 0.04),
        (Volume("v", "gp2", 100, 300), 10.0),  # gp2 IOPS come with the size
        (Volume("v", "io1", 100, 1000), 12.5 + 1000 * 0.065),
        (Volume("v", "io2", 100, 20_000), 12.5 + 20_000 * 0.065),
        (
            Volume("v", "io2", 100, 80_000),
            12.5 + 32_000 * 0.065 + 32_000 * 0.0455 + 16_000 * 0.032,
        ),
        (Volume("v", "st1", 1000), 45.0),
        (Volume("v", "sc1", 1000), 15.0),
    ],
)
def test_a_month_of_each_volume_type_in_us_east_1(volume: Volume, usd: float) -> None:
    amount = volume_month_usd(volume, "us-east-1")
    assert amount.usd == pytest.approx(usd)
    assert amount.source == "bundled" and not amount.partial


def test_ohio_and_oregon_list_the_same_rates_as_virginia() -> None:
    volume = Volume("v", "gp3", 500, 4000, 200)
    assert {volume_month_usd(volume, r).usd for r in ("us-east-1", "us-east-2", "us-west-2")} == {
        40.0 + 1000 * 0.005 + 75 * 0.04
    }


def test_a_region_without_figures_is_unknown_not_borrowed() -> None:
    amount = volume_month_usd(Volume("v", "gp3", 500), "ap-southeast-4")
    assert amount.usd is None and amount.source == "unknown" and amount.partial
    assert "ap-southeast-4" not in EBS_RATES


def test_an_unknown_volume_type_is_unknown() -> None:
    assert volume_month_usd(Volume("v", "gp9", 10), "us-east-1").usd is None


def test_magnetic_volumes_bill_io_requests_nobody_counts_so_they_are_partial() -> None:
    amount = volume_month_usd(Volume("v", "standard", 100), "us-east-1")
    assert amount.usd == pytest.approx(5.0) and amount.partial


def test_months_are_prorated_by_their_own_length() -> None:
    assert month_seconds(datetime(2026, 2, 10, tzinfo=timezone.utc)) == 28 * 86_400
    assert month_seconds(datetime(2028, 2, 10, tzinfo=timezone.utc)) == 29 * 86_400
    assert month_seconds(datetime(2026, 6, 30, 23, tzinfo=timezone.utc)) == 30 * 86_400
    assert month_seconds(datetime(2026, 7, 1, tzinfo=timezone.utc)) == 31 * 86_400


def test_config_beats_the_price_list_which_beats_the_table() -> None:
    listed = Price(0.95, "price-list", "2026-11-30T10:00:00Z")
    assert on_demand_price("g5.xlarge", "us-east-1", {"g5.xlarge": 0.9}, listed) == Price(
        0.9, "config"
    )
    assert on_demand_price("g5.xlarge", "us-east-1", {}, listed) == listed
    assert on_demand_price("g5.xlarge", "us-east-1") == Price(1.006, "bundled", "2026-01-21")
    assert on_demand_price("g5.xlarge", "ap-southeast-4") == Price(None, "unknown")
    assert on_demand_price(
        "g5.xlarge", "ap-southeast-4", {"ap-southeast-4/g5.xlarge": 1.2}
    ) == Price(1.2, "config")
    # a Price List answer without a price does not hide the table
    assert on_demand_price("g5.xlarge", "us-east-1", None, Price.unknown()).source == "bundled"


def test_sources_are_the_five_the_report_names() -> None:
    assert SOURCES == ("config", "price-list", "spot-history", "bundled", "unknown")
