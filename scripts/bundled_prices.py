"""Regenerate ``watchdog/core/prices.json``: on-demand Linux prices of every GPU and
accelerator instance type, per region, with the date they were read.

The bundled table is the fallback when the Price List API cannot answer, so it is
built from the same facts, from one of three sources:

``--price-list``
    The AWS Price List Query API (``pricing:GetProducts``, served from us-east-1),
    one paginated query per instance family (``GPU instance`` and ``Machine
    Learning ASIC Instances``) filtered to Linux, shared tenancy, no pre-installed
    software, no licence, capacity status ``Used``. Needs credentials allowed
    ``pricing:GetProducts``.
``--offer-file PATH`` (repeatable)
    A region's public offer file (``.../offers/v1.0/aws/AmazonEC2/current/<region>/
    index.json``, listed in ``region_index.json``), downloaded beforehand: the same
    products and terms as the API, as one document.
``--from-vantage PATH``
    ``https://instances.vantage.sh/instances.json`` (built from the Price List by
    vantage-sh/ec2instances.info), or a file derived from it with the same
    ``pricing[region]`` entries (``linux.ondemand`` or ``onDemand``). This is what
    the shipped table was made from, because the machine that made it reached no AWS
    endpoint; ``--source`` says which file, ``--read`` its date.

Every source goes through the same rules: only AWS Regions (no Local or Wavelength
Zones), only the accelerator families (``p``, ``g``, ``gr``, ``inf``, ``trn``,
``dl`` followed by a digit), and a type whose region gives two different prices is
left out (unknown), never picked.

    python scripts/bundled_prices.py --price-list
    python scripts/bundled_prices.py --offer-file us-east-1.json --offer-file eu-west-1.json
    python scripts/bundled_prices.py --from-vantage instances.json --read 2026-01-21 \\
        --source "instances.vantage.sh/instances.json"
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parent.parent / "watchdog" / "core" / "prices.json"
FAMILIES = ("GPU instance", "Machine Learning ASIC Instances")
_ACCELERATOR = re.compile(r"^(?:p|g|gr|inf|trn|dl)\d")
_REGION = re.compile(r"^[a-z]{2}(?:-gov)?-[a-z]+-\d+$")
#: The attributes that make one on-demand SKU per type and region (as aws/pricing.py).
WANTED = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
}

Prices = dict[str, dict[str, float]]  # type -> region -> USD per hour


class Conflicts:
    """Collects prices per type and region; a pair seen with two prices is dropped."""

    def __init__(self) -> None:
        self.prices: Prices = {}
        self.dropped: set[tuple[str, str]] = set()

    def add(self, instance_type: str, region: str, usd: float) -> None:
        if not _ACCELERATOR.match(instance_type.split(".", 1)[0]) or not _REGION.match(region):
            return
        if usd <= 0 or (instance_type, region) in self.dropped:
            return
        known = self.prices.setdefault(instance_type, {}).get(region)
        if known is not None and known != usd:
            del self.prices[instance_type][region]
            self.dropped.add((instance_type, region))
            return
        self.prices[instance_type][region] = usd

    def result(self) -> Prices:
        return {t: dict(sorted(r.items())) for t, r in sorted(self.prices.items()) if r}


def _hourly_usd(terms: Mapping[str, Any]) -> Iterator[float]:
    for term in terms.values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if dimension.get("unit") == "Hrs" and usd is not None:
                yield float(usd)


def from_products(products: Iterable[Mapping[str, Any]], table: Conflicts) -> None:
    """Price List products (GetProducts' ``PriceList`` items, parsed) into ``table``."""
    for product in products:
        attributes = product.get("product", {}).get("attributes", {})
        if any(attributes.get(k) != v for k, v in WANTED.items()):
            continue
        if attributes.get("locationType", "AWS Region") != "AWS Region":
            continue
        if attributes.get("marketoption", "OnDemand") != "OnDemand":
            continue  # capacity blocks share every other attribute
        for usd in _hourly_usd(product.get("terms", {}).get("OnDemand", {})):
            table.add(attributes.get("instanceType", ""), attributes.get("regionCode", ""), usd)


def from_offer_file(offer: Mapping[str, Any], table: Conflicts) -> None:
    """A region's offer file: its ``products`` by SKU and ``terms.OnDemand`` by SKU."""
    on_demand = offer.get("terms", {}).get("OnDemand", {})
    from_products(
        (
            {"product": product, "terms": {"OnDemand": on_demand.get(sku, {})}}
            for sku, product in offer.get("products", {}).items()
        ),
        table,
    )


def from_vantage(instances: Iterable[Mapping[str, Any]], table: Conflicts) -> None:
    """instances.vantage.sh's list (or a file derived from it) into ``table``."""
    for inst in instances:
        instance_type = inst.get("instance_type") or inst.get("apiName") or ""
        for region, entry in (inst.get("pricing") or {}).items():
            linux = entry.get("linux", entry) if isinstance(entry, Mapping) else {}
            usd = linux.get("ondemand", linux.get("onDemand"))
            if usd not in (None, ""):
                table.add(instance_type, region, float(usd))


def read_vantage(path: Path) -> list[dict[str, Any]]:
    """The JSON list in ``path``; a ``.js`` file's ``[...]`` literal is JSON too."""
    text = path.read_text("utf-8")
    if path.suffix == ".js":
        text = text[text.index("[") : text.rindex("]") + 1]
    found = json.loads(text)
    if not isinstance(found, list):
        raise ValueError(f"{path}: expected a JSON list of instance types")
    return found


def from_price_list(client: Any, table: Conflicts) -> None:
    """Every page of one GetProducts query per accelerator family."""
    for family in FAMILIES:
        filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in WANTED.items()]
        filters.append({"Type": "TERM_MATCH", "Field": "instanceFamily", "Value": family})
        pages = client.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1"
        )
        for page in pages:
            from_products((json.loads(item) for item in page.get("PriceList", [])), table)


def render(prices: Prices, *, read: str, source: str) -> str:
    """The table as ``prices.json``: one line per type, so a refresh diffs by type."""
    regions = sorted({r for by_region in prices.values() for r in by_region})
    about = (
        f"On-demand Linux prices in USD per hour (shared tenancy, no pre-installed "
        f"software), per instance type and AWS Region, as the AWS Price List gave them on "
        f"{read}: every GPU and accelerator family in every Region that sells it. "
        f"Source: {source}. Regenerate with scripts/bundled_prices.py. A type or Region "
        f"missing here costs 'unknown' unless [billing] prices sets it; the Price List API "
        f"answer, when there is one, is used before this table."
    )
    head = {"_about": about, "read": read, "source": source, "regions": regions}
    lines = [json.dumps(head, indent=1)[:-2] + ","]
    lines.append(' "prices": {')
    rows = [f"  {json.dumps(t)}: {json.dumps(r, separators=(',', ':'))}" for t, r in prices.items()]
    lines.append(",\n".join(rows))
    lines.append(" }\n}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, pricing_client: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--price-list", action="store_true", help="ask pricing:GetProducts")
    group.add_argument("--offer-file", type=Path, action="append", help="a region's index.json")
    group.add_argument("--from-vantage", type=Path, help="instances.vantage.sh instances.json")
    parser.add_argument("--read", help="the date the prices were read (default: today, UTC)")
    parser.add_argument("--source", help="where they came from, cited in the file")
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    today = datetime.now(timezone.utc).date().isoformat()
    table = Conflicts()
    try:
        if args.price_list:
            if pricing_client is None:
                import boto3  # only this source needs AWS

                pricing_client = boto3.client("pricing", region_name="us-east-1")
            from_price_list(pricing_client, table)
            source = args.source or "AWS Price List Query API (pricing:GetProducts)"
        elif args.offer_file:
            for path in args.offer_file:
                from_offer_file(json.loads(path.read_text("utf-8")), table)
            source = args.source or "AWS public offer files: " + ", ".join(
                p.name for p in args.offer_file
            )
        else:
            from_vantage(read_vantage(args.from_vantage), table)
            source = args.source or f"instances.vantage.sh data ({args.from_vantage.name})"
        read = date.fromisoformat(args.read).isoformat() if args.read else today
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"bundled_prices: cannot read the source: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # botocore's errors, without importing botocore here
        print(f"bundled_prices: the Price List API failed: {exc}", file=sys.stderr)
        return 2
    prices = table.result()
    if not prices:
        print("bundled_prices: the source holds no accelerator prices; table kept", file=sys.stderr)
        return 1
    args.out.write_text(render(prices, read=read, source=source), "utf-8")
    regions = len({r for by_region in prices.values() for r in by_region})
    print(f"{args.out}: {len(prices)} types, {regions} regions, read {read}")
    for instance_type, region in sorted(table.dropped):
        print(f"left out (two prices): {instance_type} in {region}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
