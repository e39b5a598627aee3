"""AWS's own published GetProducts answer (the AWS CLI's example, see fixtures/README.md)
through the on-demand client and parser: its real NextToken is sent back as given, and
its storage SKU (unit GB-Mo) is never read as an instance's hourly price."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from tests.aws import test_pricing
from tests.aws.test_pricing import PriceListServer, prices, recorded
from watchdog.aws.pricing import parse_price_list
from watchdog.core.costs import Price

AWS_EXAMPLE = Path(__file__).parent / "fixtures" / "get_products_aws_cli_example.json"
NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
price_list = test_pricing.price_list  # the loopback GetProducts server


def test_aws_own_answer_pages_on_and_holds_no_instance_price(price_list: PriceListServer) -> None:
    example = json.loads(AWS_EXAMPLE.read_text("utf-8"))
    assert parse_price_list(example["PriceList"]) is None  # $0.138 per GB-month is no hourly rate
    price_list.answers += [(200, example), (200, recorded())]
    price = prices(price_list).on_demand("g5.xlarge", "us-east-1", "Linux/UNIX", NOW)
    assert price == Price(1.006, "price-list", "2025-11-25T00:24:18Z")
    tokens = [body.get("NextToken") for _, body in price_list.requests]
    assert tokens == [None, example["NextToken"]]
