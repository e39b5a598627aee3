"""The price edge: a real boto3 client against a recorded Price List answer served over
HTTP on loopback (moto has no Pricing API), and against the moto server for spot price
history, volumes and addresses."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import ec2, launch
from watchdog.aws.ec2 import AwsError
from watchdog.aws.pricing import Boto3Prices, parse_price_list, price_filters
from watchdog.core.costs import Addresses, Price, Volume
from watchdog.core.ledger import InstanceRecord, SpotPoint, StateChange, instance_ledger

RECORDED = Path(__file__).parent / "fixtures" / "get_products_g5_xlarge_us_east_1.json"
NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)


class PriceListServer:
    """Answers GetProducts from a queue of (status, body); keeps what each request sent."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((dict(self.headers), body))
                status, answer = outer.answers.pop(0)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def price_list() -> Iterator[PriceListServer]:
    fake = PriceListServer()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join()


def recorded() -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(RECORDED.read_text("utf-8"))
    return answer


def prices(server: PriceListServer) -> Boto3Prices:
    return Boto3Prices(boto3.Session(region_name="us-east-1"), pricing_endpoint=server.url)


def test_the_price_list_gives_the_on_demand_price_with_its_source(
    price_list: PriceListServer,
) -> None:
    price_list.answers.append((200, recorded()))
    price = prices(price_list).on_demand("g5.xlarge", "us-east-1", "Linux/UNIX", NOW)
    assert price == Price(1.006, "price-list", "2025-11-25T00:24:18Z")
    ((headers, body),) = price_list.requests
    assert headers["X-Amz-Target"] == "AWSPriceListService.GetProducts"
    assert "/us-east-1/pricing/aws4_request" in headers["Authorization"]
    assert body["ServiceCode"] == "AmazonEC2"
    assert {f["Field"]: f["Value"] for f in body["Filters"]} == {
        "instanceType": "g5.xlarge",
        "regionCode": "us-east-1",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }


def test_every_page_is_read(price_list: PriceListServer) -> None:
    price_list.answers += [
        (200, {"FormatVersion": "aws_v1", "PriceList": [], "NextToken": "page-2"}),
        (200, recorded()),
    ]
    price = prices(price_list).on_demand("g5.xlarge", "us-east-1", "Linux/UNIX", NOW)
    assert price.usd_per_hour == 1.006
    assert [body.get("NextToken") for _, body in price_list.requests] == [None, "page-2"]


def test_two_different_prices_are_unknown_not_a_pick(price_list: PriceListServer) -> None:
    answer = recorded()
    other = json.loads(answer["PriceList"][0])
    other["product"]["attributes"]["usagetype"] = "SomethingElse:g5.xlarge"
    dimension = next(
        iter(next(iter(other["terms"]["OnDemand"].values()))["priceDimensions"].values())
    )
    dimension["pricePerUnit"]["USD"] = "0.9000000000"
    answer["PriceList"].append(json.dumps(other))
    price_list.answers.append((200, answer))
    price = prices(price_list).on_demand("g5.xlarge", "us-east-1", "Linux/UNIX", NOW)
    assert price == Price(None, "unknown")


def test_capacity_block_skus_do_not_count_as_on_demand() -> None:
    items = recorded()["PriceList"]
    block = json.loads(items[0])
    block["product"]["attributes"]["marketoption"] = "CapacityBlock"
    dimension = next(
        iter(next(iter(block["terms"]["OnDemand"].values()))["priceDimensions"].values())
    )
    dimension["pricePerUnit"]["USD"] = "0.4000000000"
    assert parse_price_list([*items, json.dumps(block)]) == (1.006, "2025-11-25T00:24:18Z")
    assert parse_price_list([]) is None


def test_no_product_is_unknown(price_list: PriceListServer) -> None:
    price_list.answers.append((200, {"FormatVersion": "aws_v1", "PriceList": []}))
    price = prices(price_list).on_demand("x9.huge", "us-east-1", "Linux/UNIX", NOW)
    assert price == Price(None, "unknown")


def test_a_platform_with_preinstalled_software_is_unknown_without_asking(
    price_list: PriceListServer,
) -> None:
    assert price_filters("g5.xlarge", "us-east-1", "Windows with SQL Server Standard") is None
    assert prices(price_list).on_demand(
        "g5.xlarge", "us-east-1", "Windows with SQL Server Standard", NOW
    ) == Price(None, "unknown")
    assert price_list.requests == []
    windows = price_filters("g5.xlarge", "eu-west-1", "Windows") or []
    assert {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Windows"} in windows


def test_a_refusal_is_an_aws_error_naming_its_code(price_list: PriceListServer) -> None:
    price_list.answers.append(
        (400, {"__type": "AccessDeniedException", "message": "not allowed: pricing:GetProducts"})
    )
    with pytest.raises(AwsError) as caught:
        prices(price_list).on_demand("g5.xlarge", "us-east-1", "Linux/UNIX", NOW)
    assert caught.value.code == "AccessDeniedException"


def test_a_malformed_price_list_is_an_aws_error(price_list: PriceListServer) -> None:
    price_list.answers.append((200, {"FormatVersion": "aws_v1", "PriceList": ["{not json"]}))
    with pytest.raises(AwsError) as caught:
        prices(price_list).on_demand("g5.xlarge", "us-east-1", "Linux/UNIX", NOW)
    assert caught.value.code == "MalformedPriceList"


# --- on the moto server ---------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_spot_history_is_for_the_zone_type_and_product_asked() -> None:
    # moto serves one synthetic row per zone (0.00001 at 2006-01-02) and ignores the zone
    # and product parameters: only our own filtering keeps us-east-1b's rows out.
    points = Boto3Prices().spot_history(
        "us-east-1", "us-east-1a", "g5.xlarge", "Linux/UNIX", start=NOW, end=NOW
    )
    assert points == (SpotPoint(datetime(2006, 1, 2, 15, 4, 5, tzinfo=timezone.utc), 0.00001),)
    # the last change before the window is the price in effect during it
    record = InstanceRecord(
        "us-east-1", "i-1", "g5.xlarge", "Linux/UNIX",
        (StateChange(NOW, "running"),), lifecycle="spot", spot_prices=points,
    )  # fmt: skip
    later = datetime(2026, 11, 30, 13, tzinfo=timezone.utc)
    inst = instance_ledger(record, NOW, later, later)
    assert inst.total.compute_usd == pytest.approx(0.00001)
    assert inst.price.source == "spot-history"


@pytest.mark.usefixtures("aws")
def test_a_zone_that_does_not_offer_the_type_has_no_spot_history() -> None:
    # moto offers g5.xlarge in every us-east-1 zone but us-east-1e, and answers with the
    # other zones' rows anyway
    api = Boto3Prices()
    assert (
        api.spot_history("us-east-1", "us-east-1e", "g5.xlarge", "Linux/UNIX", start=NOW, end=NOW)
        == ()
    )


@pytest.mark.usefixtures("aws")
def test_spot_history_of_a_platform_spot_does_not_sell_is_empty() -> None:
    assert (
        Boto3Prices().spot_history(
            "us-east-1", "us-east-1a", "g5.xlarge", "Ubuntu Pro", start=NOW, end=NOW
        )
        == ()
    )


@pytest.mark.usefixtures("aws")
def test_volumes_are_read_per_instance_with_iops_and_throughput() -> None:
    first, second = launch("us-east-1", count=2)
    client = ec2("us-east-1")
    data = client.create_volume(
        AvailabilityZone="us-east-1a", Size=500, VolumeType="gp3", Iops=6000, Throughput=250
    )
    client.attach_volume(VolumeId=data["VolumeId"], InstanceId=first, Device="/dev/sdf")
    found = Boto3Prices().volumes("us-east-1", [first, second])
    assert set(found) == {first, second}
    roots = {
        span.volume.id for spans in found.values() for span in spans if span.volume.size_gb == 8
    }
    assert len(roots) == 2  # each instance's own root volume, nobody else's
    (extra,) = [s for s in found[first] if s.volume.id == data["VolumeId"]]
    assert extra.volume == Volume(data["VolumeId"], "gp3", 500, 6000, 250)
    assert extra.span.end is None and extra.span.start.tzinfo is not None
    assert all(s.volume.id != data["VolumeId"] for s in found[second])


@pytest.mark.usefixtures("aws")
def test_public_ipv4_and_elastic_ips_are_counted_apart() -> None:
    plain, with_eip = launch("us-east-1", count=2)
    client = ec2("us-east-1")
    bound = client.allocate_address(Domain="vpc")["AllocationId"]
    client.associate_address(AllocationId=bound, InstanceId=with_eip)
    spare = client.allocate_address(Domain="vpc")["AllocationId"]
    api = Boto3Prices()
    found = api.addresses("us-east-1", [plain, with_eip])
    assert found[plain] == Addresses(public_ipv4=1)
    assert found[with_eip] == Addresses(public_ipv4=0, elastic_ips=(bound,))
    assert api.unattached_elastic_ips("us-east-1") == (spare,)


@pytest.mark.usefixtures("aws")
def test_an_unknown_instance_has_no_volumes_and_no_addresses() -> None:
    api = Boto3Prices()
    assert api.volumes("us-east-1", ["i-0123456789abcdef0"]) == {"i-0123456789abcdef0": ()}
    assert api.addresses("us-east-1", ["i-0123456789abcdef0"]) == {
        "i-0123456789abcdef0": Addresses()
    }
    assert api.volumes("us-east-1", []) == {}
