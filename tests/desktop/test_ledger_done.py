"""Issue 12, done when: three instances on moto, priced by hand, shown by ``status`` and
``report --json`` within a cent, each with its price source and the savings note.

- ``od``: on-demand g5.xlarge in us-east-1 with a 500 GB gp3 root volume, idle for two
  hours, warned, then stopped by the watchdog; its price from the Price List API.
- ``spot``: a spot g5.xlarge in us-east-1a, running throughout. moto's spot history is
  synthetic, so the price book's source is a test double *for spot history only*
  (``SpotDouble.spot_history``); the points it gives are recorded into the history
  by the price book, as real ones are. Volumes and addresses come from moto.
- ``far``: a g5.xlarge in ca-west-1, a region the bundled table lacks; its price
  comes from the Price List API (a recorded answer served on loopback), and its
  EBS is unknown (no EBS rates for that region): the totals say partial.

Virtual time ``W`` lies three hours before the wall clock, so every moment the
test names is in the past: moto stamps the stop with the wall clock, and the pass
that sees the stop runs one second after it, so the ledger takes the pass's time.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.aws.test_pricing import PriceListServer, recorded
from tests.helpers import MANAGED, beat, config, ec2
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.aws.fake import set_attach_time, set_launch_time, set_platform_details
from watchdog.aws.pricing import Boto3Prices
from watchdog.cli import main
from watchdog.core import billing
from watchdog.core.costs import month_seconds
from watchdog.core.ledger import SpotPoint
from watchdog.core.timeutil import iso, utcnow
from watchdog.desktop import ledger, status
from watchdog.desktop.store import Store
from watchdog.scheduler import run_pass, tell
from watchdog.scheduler.pricebook import PriceBook

H = 3600
W = utcnow().replace(microsecond=0) - timedelta(hours=3)  # the stop; the report ends at W+3h
LAUNCH = W - timedelta(hours=10)
IDLE_SINCE = W - timedelta(hours=2)
SPOT_POINTS = (SpotPoint(W - timedelta(hours=12), 0.40), SpotPoint(W - timedelta(hours=5), 0.30))
FAR_PRICE = 1.234  # the served ca-west-1 answer (a test figure, not AWS's)
AMI = "ami-12c6146b"
CFG = config(
    aws={"regions": ("us-east-1", "ca-west-1")},
    idle={"minutes": 30, "warn_minutes": 10},
)


class ByRegion(list[tuple[int, dict[str, Any]]]):
    """The Price List server's answers, chosen by the request's ``regionCode`` filter."""

    def __init__(self, server: PriceListServer):
        super().__init__()
        self.server = server

    def pop(self, index: Any = -1) -> tuple[int, dict[str, Any]]:
        _, body = self.server.requests[-1]
        region = {f["Field"]: f["Value"] for f in body["Filters"]}["regionCode"]
        answer = recorded()
        if region != "us-east-1":
            product = json.loads(answer["PriceList"][0])
            product["product"]["attributes"]["regionCode"] = region
            for term in product["terms"]["OnDemand"].values():
                for dimension in term["priceDimensions"].values():
                    dimension["pricePerUnit"]["USD"] = f"{FAR_PRICE:.10f}"
            answer["PriceList"] = [json.dumps(product)]
        return 200, answer


class SpotDouble(Boto3Prices):
    """moto for volumes and addresses; these spot points instead of moto's synthetic ones."""

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
        assert (region, zone, instance_type, platform) == (
            "us-east-1",
            "us-east-1a",
            "g5.xlarge",
            "Linux/UNIX",
        )
        before = [p for p in SPOT_POINTS if p.at <= start][-1:]
        return tuple(before + [p for p in SPOT_POINTS if start < p.at <= end])


def _launch(region: str, *, spot: bool = False, gp3_gb: int = 0, tags: Any = None) -> str:
    extra: dict[str, Any] = {}
    if spot:
        extra["InstanceMarketOptions"] = {"MarketType": "spot"}
    if gp3_gb:
        extra["BlockDeviceMappings"] = [
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": gp3_gb, "VolumeType": "gp3"}}
        ]
    if tags:
        spec = [{"Key": k, "Value": v} for k, v in tags.items()]
        extra["TagSpecifications"] = [{"ResourceType": "instance", "Tags": spec}]
    client = ec2(region)
    found = client.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge", **extra
    )["Instances"][0]
    set_platform_details(region, found["InstanceId"], "Linux/UNIX")
    set_launch_time(region, found["InstanceId"], LAUNCH)
    for mapping in found["BlockDeviceMappings"]:
        set_attach_time(region, mapping["Ebs"]["VolumeId"], LAUNCH)
    return str(found["InstanceId"])


@pytest.fixture
def world(aws: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    server = PriceListServer()
    server.answers = ByRegion(server)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        od = _launch("us-east-1", gp3_gb=500, tags={**MANAGED, "Name": "notebook"})
        spot = _launch("us-east-1", spot=True, tags={"Name": "spot-run"})
        far = _launch("ca-west-1", tags={"Name": "calgary"})
        path = tmp_path / "history.sqlite3"
        store = Store(path)
        prices = SpotDouble(boto3.Session(), pricing_endpoint=server.url)
        book = PriceBook(CFG, prices, store)
        api = Boto3Ec2()
        for now in (W - timedelta(minutes=20), W, W + timedelta(seconds=1)):
            beat("us-east-1", od, now, active=False, last_active=IDLE_SINCE)
            report = run_pass(api, store, CFG, now)
            tell(report, store, CFG)  # the warning is delivered at the first pass's time
            ledger.record(store, prices, book, report.scans, now)
            if now == W:
                assert [(d.kind, d.target) for d in report.done] == [("stop", od)]
        yield {"od": od, "spot": spot, "far": far, "store": store, "book": book, "path": path}
        store.close()
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join()


# --- the hand computation ---------------------------------------------------------------


def overlap_hours(a: datetime, b: datetime, lo: datetime, hi: datetime) -> float:
    return max(0.0, (min(b, hi) - max(a, lo)).total_seconds()) / H


def ebs(usd_month: float, a: datetime, b: datetime, lo: datetime, hi: datetime) -> float:
    """EBS prorated over each calendar month, hour by hour (every moment here is whole)."""
    total, t = 0.0, max(a, lo)
    while t < min(b, hi):
        step = min(t + timedelta(hours=1), b, hi)
        total += usd_month * (step - t).total_seconds() / month_seconds(t)
        t = step
    return total


def by_hand(lo: datetime, hi: datetime) -> dict[str, dict[str, float | None]]:
    """Compute, EBS and IPv4 of each instance over ``[lo, hi)``, written out."""
    end = W + timedelta(hours=3)
    # od: running LAUNCH..W (10 h) at $1.006 (price list); one public IPv4 while running;
    # 500 GB gp3 at $0.08/GB-month = $40/month (3000 IOPS, 125 MB/s: the free baseline),
    # billed running and stopped: LAUNCH..W+3h.
    od_run = overlap_hours(LAUNCH, W, lo, hi)
    # spot: LAUNCH..W-5h at $0.40, W-5h..W+3h at $0.30; 8 GB gp2 root at $0.10/GB-month.
    spot_a = overlap_hours(LAUNCH, W - timedelta(hours=5), lo, hi)
    spot_b = overlap_hours(W - timedelta(hours=5), end, lo, hi)
    far_run = overlap_hours(LAUNCH, end, lo, hi)
    return {
        "od": {
            "compute_usd": od_run * 1.006,
            "ipv4_usd": od_run * 0.005,
            "ebs_usd": ebs(500 * 0.08, LAUNCH, end, lo, hi),
        },
        "spot": {
            "compute_usd": spot_a * 0.40 + spot_b * 0.30,
            "ipv4_usd": (spot_a + spot_b) * 0.005,
            "ebs_usd": ebs(8 * 0.10, LAUNCH, end, lo, hi),
        },
        "far": {
            "compute_usd": far_run * FAR_PRICE,
            "ipv4_usd": far_run * 0.005,
            "ebs_usd": None,  # ca-west-1 has no EBS rates in the table: unknown, not a guess
        },
    }


def test_report_json_matches_the_hand_computation_with_sources_and_the_note(
    world: dict[str, Any], tmp_path: Path
) -> None:
    assert billing.hourly_price("g5.xlarge", "ca-west-1") is None  # missing from the table
    since, until = W - timedelta(hours=12), W + timedelta(hours=3)
    conf = tmp_path / "config.toml"
    conf.write_text(
        f'[aws]\nregions = ["us-east-1", "ca-west-1"]\n[scheduler]\ndatabase = "{world["path"]}"\n'
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["report", "--config", str(conf), "--json", "--since", iso(since),
                     "--until", iso(until)])  # fmt: skip
    assert code == 0
    doc = json.loads(out.getvalue())
    hand = by_hand(since, until)
    rows = {r["id"]: r for r in doc["instances"]}
    names = {"od": world["od"], "spot": world["spot"], "far": world["far"]}
    for name, ident in names.items():
        for key, value in hand[name].items():
            got = rows[ident][key]
            assert (got is None) if value is None else got == pytest.approx(value, abs=0.01), (
                name,
                key,
                got,
                value,
            )
    od, spot, far = rows[world["od"]], rows[world["spot"]], rows[world["far"]]
    assert (od["price_per_hour"], od["price_source"]) == (1.006, "price-list")
    assert (spot["price_per_hour"], spot["price_source"], spot["lifecycle"]) == (
        0.30,
        "spot-history",
        "spot",
    )
    assert (far["price_per_hour"], far["price_source"]) == (FAR_PRICE, "price-list")
    assert od["total_usd"] == pytest.approx(sum(hand["od"].values()), abs=0.01)  # type: ignore[arg-type]
    assert far["total_usd"] is None  # its EBS is unknown
    # idle: IDLE_SINCE..W at compute + public IPv4; saved: W..W+3h (stop until report end)
    assert od["idle_seconds"] == pytest.approx(2 * H, abs=2)
    assert od["idle_usd"] == pytest.approx(2 * (1.006 + 0.005), abs=0.01)
    assert od["stops_by_watchdog"] == 1
    assert od["saved_usd"] == pytest.approx(3 * (1.006 + 0.005), abs=0.01)
    assert od["running_seconds"] == pytest.approx(10 * H, abs=2)
    totals = doc["totals"]
    assert totals["partial"] is True
    known = sum(v for row in hand.values() for v in row.values() if v is not None)
    assert totals["total_usd"] == pytest.approx(known, abs=0.01)
    assert totals["saved_usd"] == pytest.approx(3 * 1.011, abs=0.01)
    assert any(n.startswith("Saved is an estimate") and "24 h" in n for n in doc["notes"])
    assert any(n.startswith("Partial") for n in doc["notes"])


def test_status_shows_price_source_and_cost_today_and_this_month(
    world: dict[str, Any],
) -> None:
    now = W + timedelta(hours=3)
    store, book = world["store"], world["book"]
    planned, errors = status.survey(Boto3Ec2(), store, CFG, now)
    assert errors == {}
    so_far = ledger.per_instance(store, CFG, now)
    rows = {r["id"]: r for r in status.rows(planned, now, CFG, rates=book, so_far=so_far)}
    day = datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
    month = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
    for name, lo, key in (
        ("od", day, "cost_today"),
        ("od", month, "cost_month"),
        ("spot", day, "cost_today"),
        ("spot", month, "cost_month"),
        ("far", month, "cost_month"),
    ):
        hand = by_hand(lo, now)[name]
        known = sum(v for v in hand.values() if v is not None)
        assert rows[world[name]][key] == pytest.approx(known, abs=0.01), (name, key)
    od, spot, far = rows[world["od"]], rows[world["spot"]], rows[world["far"]]
    assert (od["price_per_hour"], od["price_source"]) == (1.006, "price-list")
    assert od["ebs_per_hour"] == pytest.approx(40.0 * H / month_seconds(now))
    assert (spot["price_per_hour"], spot["price_source"]) == (0.30, "spot-history")
    assert (far["price_per_hour"], far["price_source"]) == (FAR_PRICE, "price-list")
    assert far["cost_partial"] is True and od["cost_partial"] is False
    text = status.table(list(rows.values()), now)
    assert "$1.006 (price-list)" in text and "$0.3 (spot-history)" in text
    assert "partial" in text


class _Table(HTMLParser):
    """The report page's per-instance table, as text cells per row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def _usd(cell: str) -> float | None:
    text = cell.replace("partial", "").strip()
    return None if text == "unknown" else float(text.lstrip("$").replace(",", ""))


def test_report_html_shows_the_same_hand_computed_amounts_and_sources(
    world: dict[str, Any], tmp_path: Path
) -> None:
    since, until = W - timedelta(hours=12), W + timedelta(hours=3)
    conf = tmp_path / "config.toml"
    conf.write_text(
        f'[aws]\nregions = ["us-east-1", "ca-west-1"]\n[scheduler]\ndatabase = "{world["path"]}"\n'
    )
    page = tmp_path / "report.html"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["report", "--config", str(conf), "--html", str(page), "--since",
                     iso(since), "--until", iso(until)])  # fmt: skip
    assert code == 0
    table = _Table()
    table.feed(page.read_text("utf-8"))
    hand = by_hand(since, until)
    columns = ("compute_usd", "ebs_usd", "ipv4_usd")
    sources = {"od": "price-list", "spot": "spot-history", "far": "price-list"}
    for name in ("od", "spot", "far"):
        (row,) = [r for r in table.rows if world[name] in r[0]]
        got = dict(zip(columns, map(_usd, row[3:6]), strict=True))
        for key in columns:
            want = hand[name][key]
            assert (
                (got[key] is None) if want is None else got[key] == pytest.approx(want, abs=0.01)
            ), (name, key, got[key], want)
        assert row[-1].startswith(sources[name])
    (od,) = [r for r in table.rows if world["od"] in r[0]]
    assert _usd(od[6]) == pytest.approx(sum(hand["od"].values()), abs=0.01)  # type: ignore[arg-type]
    assert od[8] == "1" and _usd(od[9]) == pytest.approx(3 * 1.011, abs=0.01)  # saved (est.)
    assert od[10] == "$1.0060/h"
    assert "Saved is an estimate" in page.read_text("utf-8")
