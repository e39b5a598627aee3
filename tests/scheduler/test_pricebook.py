"""The price book: precedence, the 7-day Price List cache in the history, a failing
Price List that never blocks a pass, and spot history asked every few minutes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
from structlog.testing import capture_logs

from tests.aws.test_pricing import PriceListServer, price_list, recorded
from tests.helpers import config
from watchdog.aws.pricing import Boto3Prices
from watchdog.core.fleet import Instance
from watchdog.core.ledger import SpotPoint
from watchdog.desktop.store import Store
from watchdog.scheduler.pricebook import PriceBook

NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
G5 = Instance(
    "us-east-1", "i-1", "g5.xlarge", "running", NOW - timedelta(hours=1), platform="Linux/UNIX"
)
__all__ = ["price_list"]  # the loopback Price List server, as a fixture
DENIED = {"__type": "AccessDeniedException", "Message": "not authorized: pricing:GetProducts"}


def _book(server: PriceListServer, tmp_path: Path, **billing: object) -> PriceBook:
    source = Boto3Prices(boto3.Session(region_name="us-east-1"), pricing_endpoint=server.url)
    return PriceBook(
        config(billing=billing) if billing else config(), source, Store(tmp_path / "h")
    )


def test_the_price_list_answer_is_kept_for_seven_days_in_the_history(
    price_list: PriceListServer, tmp_path: Path
) -> None:
    price_list.answers += [(200, recorded()), (200, recorded())]
    book = _book(price_list, tmp_path)
    assert book.hourly(G5, NOW).price.source == "bundled"  # the pass never asks AWS
    book.refresh(G5, NOW)
    assert book.hourly(G5, NOW).price.source == "price-list"
    again = PriceBook(config(), book.source, Store(tmp_path / "h"))  # a restarted daemon
    again.refresh(G5, NOW + timedelta(days=6))
    assert again.hourly(G5, NOW + timedelta(days=6)).compute_usd == 1.006
    assert len(price_list.requests) == 1  # answered from the history
    again.refresh(G5, NOW + timedelta(days=7))
    assert len(price_list.requests) == 2  # a week old: asked again


def test_a_config_price_wins_and_the_price_list_is_not_asked(
    price_list: PriceListServer, tmp_path: Path
) -> None:
    book = _book(price_list, tmp_path, prices={"g5.xlarge": 0.9})
    book.refresh(G5, NOW)
    rates = book.hourly(G5, NOW)
    assert (rates.compute_usd, rates.price.source) == (0.9, "config")
    assert price_list.requests == []


def test_a_denied_price_list_falls_back_is_told_once_and_waits_an_hour(
    price_list: PriceListServer, tmp_path: Path
) -> None:
    price_list.answers += [(400, DENIED), (400, DENIED)]
    book = _book(price_list, tmp_path)
    with capture_logs() as logs:
        book.refresh(G5, NOW)
        first = book.hourly(G5, NOW)
        book.refresh(G5, NOW + timedelta(minutes=5))
        assert len(price_list.requests) == 1  # not asked again within the hour
        book.refresh(G5, NOW + timedelta(hours=1))
    assert (first.compute_usd, first.price.source) == (1.006, "bundled")
    assert len(price_list.requests) == 2
    told = [e for e in logs if "Price List" in e["event"]]
    assert len(told) == 1 and "AccessDenied" in told[0]["error"]


class Spots(Boto3Prices):
    def __init__(self) -> None:
        super().__init__(boto3.Session(region_name="us-east-1"))
        self.asked: list[tuple[datetime, datetime]] = []

    def spot_history(
        self,
        region: str,
        zone: str,
        instance_type: str,
        platform: str,
        *,
        start: datetime,
        end: datetime,
    ) -> tuple[SpotPoint, ...]:
        self.asked.append((start, end))
        return (SpotPoint(NOW - timedelta(hours=3), 0.4), SpotPoint(end, 0.35))


def test_spot_prices_are_asked_every_few_minutes_and_recorded(tmp_path: Path) -> None:
    spots, store = Spots(), Store(tmp_path / "h")
    book = PriceBook(config(), spots, store)
    spot = Instance(
        "us-east-1",
        "i-2",
        "g5.xlarge",
        "running",
        NOW - timedelta(hours=2),
        lifecycle="spot",
        platform="Linux/UNIX",
        zone="us-east-1a",
    )
    assert book.hourly(spot, NOW).price.source == "unknown"  # nothing recorded yet
    book.refresh(spot, NOW)
    rates = book.hourly(spot, NOW)
    assert (rates.compute_usd, rates.price.source) == (0.35, "spot-history")
    book.refresh(spot, NOW + timedelta(minutes=2))
    assert spots.asked == [(NOW - timedelta(hours=2), NOW)]  # cached for a few minutes
    book.refresh(spot, NOW + timedelta(minutes=5))
    assert spots.asked[1] == (NOW, NOW + timedelta(minutes=5))  # from the last known point
    points = store.spot_points("us-east-1", "us-east-1a", "g5.xlarge", "Linux/UNIX")
    assert [p.usd_per_hour for p in points] == [0.4, 0.35, 0.35]
