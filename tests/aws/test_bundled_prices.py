"""scripts/bundled_prices.py: the bundled table rebuilt from each source in its own format
(GetProducts over HTTP on loopback, a region's offer file, instances.vantage.sh's list),
and the shipped table itself: per region, dated, after AWS's 2025 P4d/P5 price cut."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from tests.aws import test_pricing
from tests.aws.test_pricing import RECORDED, PriceListServer, recorded
from watchdog.core import billing

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
CLI_EXAMPLE = FIXTURES / "get_products_aws_cli_example.json"
VANTAGE = FIXTURES / "vantage_instances_excerpt.json"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bundled_prices", ROOT / "scripts/bundled_prices.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load()
price_list = test_pricing.price_list  # the loopback GetProducts server


def _product(instance_type: str, region: str, usd: str, **attributes: str) -> dict[str, Any]:
    """The recorded g5.xlarge product, moved to another type, region and price."""
    product: dict[str, Any] = copy.deepcopy(json.loads(recorded()["PriceList"][0]))
    product["product"]["attributes"].update(
        instanceType=instance_type, regionCode=region, **attributes
    )
    for term in product["terms"]["OnDemand"].values():
        for dimension in term["priceDimensions"].values():
            dimension["pricePerUnit"]["USD"] = usd
    return product


def _page(*products: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "FormatVersion": "aws_v1",
        "PriceList": [json.dumps(p) for p in products],
    }
    if token:
        page["NextToken"] = token
    return page


def _table(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return found


def test_the_price_list_source_reads_every_page_of_each_family(
    price_list: PriceListServer, tmp_path: Path
) -> None:
    cli_example = json.loads(CLI_EXAMPLE.read_text("utf-8"))  # AWS's own answer: an EBS SKU
    gpu_pages = [
        (200, cli_example),  # its real NextToken leads to the next page
        (
            200,
            _page(
                _product("g5.xlarge", "us-east-1", "1.0060000000"),
                _product("g5.xlarge", "eu-west-1", "1.1230000000"),
                _product("g5.xlarge", "eu-west-1", "0.5000000000", marketoption="CapacityBlock"),
                _product(
                    "g5.xlarge", "us-east-1-atl-1", "1.2070000000", locationType="AWS Local Zone"
                ),
                _product("g6.xlarge", "us-east-1", "0.8048000000"),
                _product("g6.xlarge", "us-east-1", "0.9000000000"),  # two prices: unknown
                _product("g5.xlarge", "us-west-2", "1.0060000000", tenancy="Dedicated"),
            ),
        ),
    ]
    asic_page = (200, _page(_product("trn1.32xlarge", "us-west-2", "21.5000000000")))
    price_list.answers += [*gpu_pages, asic_page]
    out = tmp_path / "prices.json"
    client = boto3.client("pricing", region_name="us-east-1", endpoint_url=price_list.url)

    assert (
        script.main(
            ["--price-list", "--out", str(out), "--read", "2026-11-30"], pricing_client=client
        )
        == 0
    )

    table = _table(out)
    assert table["prices"] == {
        "g5.xlarge": {"eu-west-1": 1.123, "us-east-1": 1.006},
        "trn1.32xlarge": {"us-west-2": 21.5},
    }
    assert table["read"] == "2026-11-30"
    assert "AWS Price List Query API" in table["source"]
    bodies = [body for _, body in price_list.requests]
    assert [b.get("NextToken") for b in bodies] == [None, cli_example["NextToken"], None]
    families = [{f["Field"]: f["Value"] for f in b["Filters"]}["instanceFamily"] for b in bodies]
    assert families == ["GPU instance", "GPU instance", "Machine Learning ASIC Instances"]
    assert {f["Field"]: f["Value"] for f in bodies[0]["Filters"]} == {
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
        "instanceFamily": "GPU instance",
    }


def test_a_refused_price_list_keeps_the_table_and_says_why(
    price_list: PriceListServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    denied = {"__type": "AccessDeniedException", "message": "not authorized: pricing:GetProducts"}
    price_list.answers.append((400, denied))
    out = tmp_path / "prices.json"
    out.write_text("{}", "utf-8")
    client = boto3.client("pricing", region_name="us-east-1", endpoint_url=price_list.url)
    assert script.main(["--price-list", "--out", str(out)], pricing_client=client) == 2
    assert out.read_text("utf-8") == "{}"
    assert "pricing:GetProducts" in capsys.readouterr().err


def test_an_offer_file_gives_the_same_table(tmp_path: Path) -> None:
    products = [
        _product("g5.xlarge", "us-east-1", "1.0060000000"),
        _product("m5.large", "us-east-1", "0.0960000000"),  # not an accelerator
    ]
    offer = {
        "formatVersion": "v1.0",
        "offerCode": "AmazonEC2",
        "publicationDate": "2026-11-25T00:24:18Z",
        "products": {p["product"]["sku"] + str(n): p["product"] for n, p in enumerate(products)},
        "terms": {
            "OnDemand": {
                p["product"]["sku"] + str(n): p["terms"]["OnDemand"] for n, p in enumerate(products)
            }
        },
    }
    source = tmp_path / "us-east-1.json"
    source.write_text(json.dumps(offer), "utf-8")
    out = tmp_path / "prices.json"
    assert (
        script.main(["--offer-file", str(source), "--out", str(out), "--read", "2026-11-25"]) == 0
    )
    assert _table(out)["prices"] == {"g5.xlarge": {"us-east-1": 1.006}}


def test_the_vantage_list_keeps_linux_regions_and_accelerators_only(tmp_path: Path) -> None:
    out = tmp_path / "prices.json"
    argv = ["--from-vantage", str(VANTAGE), "--out", str(out), "--read", "2026-01-21"]
    assert script.main(argv) == 0
    table = _table(out)
    assert table["prices"] == {
        "g5.xlarge": {"eu-west-1": 1.123, "us-east-1": 1.006},  # no Local Zone, no Windows
        "inf2.xlarge": {"eu-west-1": 0.94775},
        "p5.48xlarge": {"ap-northeast-1": 68.8, "us-east-1": 55.04},
    }  # trn2 (no on-demand price) and m5 (no accelerator) are left out
    assert table["read"] == "2026-01-21"
    assert table["regions"] == ["ap-northeast-1", "eu-west-1", "us-east-1"]


def test_a_derived_js_file_reads_like_the_vantage_list(tmp_path: Path) -> None:
    derived = [{"apiName": "g5.xlarge", "pricing": {"eu-west-1": {"onDemand": 1.123}}}]
    source = tmp_path / "all_gpu_instances.js"
    source.write_text("// generated\nconst all = " + json.dumps(derived) + ";\n", "utf-8")
    out = tmp_path / "prices.json"
    assert script.main(["--from-vantage", str(source), "--out", str(out)]) == 0
    assert _table(out)["prices"] == {"g5.xlarge": {"eu-west-1": 1.123}}


def test_an_unreadable_source_is_one_sentence_and_no_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prices.json"
    assert script.main(["--from-vantage", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert not out.exists()
    assert "cannot read the source" in capsys.readouterr().err
    assert script.main(["--from-vantage", str(RECORDED), "--out", str(out)]) == 2  # not a list


def test_the_shipped_table_is_per_region_dated_and_current() -> None:
    table = json.loads((ROOT / "watchdog/core/prices.json").read_text("utf-8"))
    assert table["read"] == billing.bundled_as_of() == "2026-01-21"
    assert "2026-01-21" in table["_about"] and "vantage" in table["source"]
    families = {t.split(".")[0] for t in table["prices"]}
    wanted = {
        "g4dn",
        "g4ad",
        "g5",
        "g5g",
        "g6",
        "g6e",
        "gr6",
        "p3",
        "p3dn",
        "p4d",
        "p4de",
        "p5",
        "p5en",
        "inf1",
        "inf2",
        "trn1",
        "trn1n",
    }
    assert wanted <= families
    assert len(table["regions"]) >= 25
    # AWS cut P4d and P5 prices in 2025; the 2024 figures (32.7726, 98.32) are gone
    assert billing.hourly_price("p5.48xlarge", "us-east-1") == 55.04
    assert billing.hourly_price("p4d.24xlarge", "us-west-2") == 21.95764
    assert billing.hourly_price("g4dn.xlarge", "eu-central-1") == 0.658
    # the file is exactly what the script renders from its own content
    rendered = script.render(table["prices"], read=table["read"], source=table["source"])
    assert rendered == (ROOT / "watchdog/core/prices.json").read_text("utf-8")
