"""The desktop ledger: facts recorded after a pass (asking AWS only about what changed),
an old history migrated with its rows, and ``report`` as a person runs it."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import config, ec2, launch
from watchdog.aws.ec2 import Boto3Ec2, scan_regions
from watchdog.aws.fake import set_launch_time
from watchdog.aws.pricing import Boto3Prices
from watchdog.cli import main
from watchdog.core.costs import Price
from watchdog.core.fleet import Instance
from watchdog.core.ledger import StateChange
from watchdog.core.timeutil import utcnow as now
from watchdog.desktop import ledger
from watchdog.desktop.store import SCHEMA_VERSION, Store
from watchdog.scheduler.pricebook import PriceBook

T0 = datetime(2026, 11, 2, 9, tzinfo=timezone.utc)
CFG = config(aws={"regions": ("us-east-1",)})


class NoPriceList(Boto3Prices):
    def on_demand(self, instance_type: str, region: str, platform: str, now: datetime) -> Price:
        return Price.unknown()


def _record(store: Store, prices: Boto3Prices, now: datetime) -> ledger.Recorded:
    scans = scan_regions(Boto3Ec2(), CFG.aws.regions, 2)
    with store.transaction():
        for scan in scans:
            store.observe(now, scan.instances)
    return ledger.record(store, prices, PriceBook(CFG, prices, store), scans, now)


def test_volumes_and_addresses_are_asked_only_when_they_changed(aws: str, tmp_path: Path) -> None:
    first, second = launch(count=2)
    store, prices = Store(tmp_path / "h"), NoPriceList(boto3.Session())
    assert _record(store, prices, T0) == ledger.Recorded(volume_calls=1, address_calls=1)
    assert _record(store, prices, T0 + timedelta(minutes=5)) == ledger.Recorded(0, 0)

    client = ec2()
    volume = client.create_volume(AvailabilityZone="us-east-1a", Size=100, VolumeType="gp3")
    client.attach_volume(VolumeId=volume["VolumeId"], InstanceId=first, Device="/dev/sdf")
    assert _record(store, prices, T0 + timedelta(minutes=10)).volume_calls == 1
    client.detach_volume(VolumeId=volume["VolumeId"], InstanceId=first, Device="/dev/sdf")
    assert _record(store, prices, T0 + timedelta(minutes=15)) == ledger.Recorded(0, 0)

    (record,) = [
        r for r in ledger.records(store, CFG, T0, T0 + timedelta(hours=1)) if r.id == first
    ]
    spans = {v.volume.id: v.span for v in record.volumes}
    assert spans[volume["VolumeId"]].end == T0 + timedelta(minutes=15)  # detached then
    assert record.volumes[0].volume.size_gb == 8 and len(record.volumes) == 2
    assert second in {r.id for r in ledger.records(store, CFG, T0, T0 + timedelta(hours=1))}


def test_an_elastic_ip_is_billed_by_allocation_not_as_a_public_ipv4(
    aws: str, tmp_path: Path
) -> None:
    (instance,) = launch()
    client = ec2()
    allocation = client.allocate_address(Domain="vpc")["AllocationId"]
    client.associate_address(AllocationId=allocation, InstanceId=instance)
    store = Store(tmp_path / "h")
    _record(store, NoPriceList(boto3.Session()), T0)
    client.disassociate_address(
        AssociationId=client.describe_addresses()["Addresses"][0]["AssociationId"]
    )
    _record(store, NoPriceList(boto3.Session()), T0 + timedelta(hours=1))
    (record,) = ledger.records(store, CFG, T0, T0 + timedelta(hours=2))
    assert [(s.start, s.end) for s in record.elastic_ips] == [(T0, T0 + timedelta(hours=1))]
    assert record.changes[0].public_ipv4 == 0  # its address then was the Elastic IP
    assert record.changes[-1].public_ipv4 == 1  # an auto-assigned one after
    built = ledger.build_ledger(store, CFG, T0, T0 + timedelta(hours=2), T0 + timedelta(hours=2))
    assert built.instances[0].total.ipv4_usd == pytest.approx(0.005 * 2)


V2 = """
CREATE TABLE instances (
    region TEXT NOT NULL, id TEXT NOT NULL, name TEXT, type TEXT, lifecycle TEXT,
    state TEXT, launch_time TEXT, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    running_seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (region, id));
CREATE TABLE observations (
    at TEXT NOT NULL, region TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL,
    launch_time TEXT);
CREATE TABLE actions (
    at TEXT NOT NULL, region TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
    ok INTEGER NOT NULL, detail TEXT NOT NULL, dry_run INTEGER NOT NULL);
INSERT INTO instances VALUES ('us-east-1', 'i-old', 'box', 'g5.xlarge', 'on-demand',
    'stopped', '2026-11-02T09:00:00+00:00', '2026-11-02T09:05:00+00:00',
    '2026-11-02T12:00:00+00:00', 7200);
INSERT INTO observations VALUES ('2026-11-02T09:05:00+00:00', 'us-east-1', 'i-old',
    'running', '2026-11-02T09:00:00+00:00');
INSERT INTO observations VALUES ('2026-11-02T11:00:00+00:00', 'us-east-1', 'i-old',
    'stopped', NULL);
INSERT INTO actions VALUES ('2026-11-02T11:00:00+00:00', 'us-east-1', 'i-old', 'stop', 1,
    'idle', 0);
PRAGMA user_version=2;
"""


def test_a_version_2_history_keeps_its_rows_and_the_ledger_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(V2)
    store = Store(path)
    assert store.query("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    history = store.history("us-east-1", "i-old")
    assert history is not None and history.running_seconds == 7200
    (record,) = ledger.records(store, CFG, T0, T0 + timedelta(days=1))
    assert record.changes == (
        StateChange(T0, "running"),
        StateChange(T0 + timedelta(hours=2), "stopping"),  # the watchdog's stop action
        StateChange(T0 + timedelta(hours=2), "stopped"),
    )
    assert record.watchdog_stops == (T0 + timedelta(hours=2),)
    built = ledger.build_ledger(store, CFG, T0, T0 + timedelta(hours=4), T0 + timedelta(hours=4))
    assert built.instances[0].total.compute_usd == pytest.approx(2 * 1.006)  # bundled
    assert built.instances[0].total.saved_usd == pytest.approx(2 * 1.006)
    # it writes on in the new shape
    seen = Instance("us-east-1", "i-old", "g5.xlarge", "stopped", None, zone="us-east-1a")
    store.observe(T0 + timedelta(hours=5), [seen])
    assert store.query("SELECT zone FROM instances") == [("us-east-1a",)]


def _report(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    conf = tmp_path / "config.toml"
    conf.write_text(f'[scheduler]\ndatabase = "{tmp_path / "h.sqlite3"}"\n')
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", "--config", str(conf), *args])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--since", "yesterday"], "--since 'yesterday'"),
        (["--since", "30"], "--since '30'"),
        (["--until", "2026-13-01"], "--until '2026-13-01'"),
        (["--since", "2026-11-30", "--until", "2026-11-01"], "--since 2026-11-30T00:00:00Z"),
    ],
)
def test_a_bad_window_names_the_flag_and_the_accepted_forms(
    tmp_path: Path, args: list[str], flag: str
) -> None:
    code, out, err = _report(tmp_path, *args)
    assert code == 2 and out == ""
    assert err.startswith(f"idle-watchdog: {flag}") and "Traceback" not in err
    assert "30d" in err or "earlier --since" in err


def test_the_table_says_unknown_and_partial_and_json_is_version_1(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    recent = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    far = Instance("ap-east-2", "i-far", "zz9.huge", "running", recent, platform="Linux/UNIX")
    store.observe(recent + timedelta(minutes=5), [far])
    store.close()
    code, out, _ = _report(tmp_path)
    assert code == 0
    row = next(line for line in out.splitlines() if "i-far" in line)
    assert "unknown (unknown)" in row and row.count("unknown") >= 3
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert "partial" in total
    assert "Saved is an estimate" in out
    code, out, _ = _report(tmp_path, "--json", "--since", "1d")
    doc: dict[str, Any] = json.loads(out)
    assert doc["version"] == 1 and doc["totals"]["partial"] is True
    assert doc["instances"][0]["compute_usd"] is None
    assert doc["instances"][0]["price_source"] == "unknown"


def test_run_once_records_the_ledger_s_facts_after_its_pass(aws: str, tmp_path: Path) -> None:
    (instance,) = launch()
    conf = tmp_path / "config.toml"
    conf.write_text(
        f'[scheduler]\ndatabase = "{tmp_path / "h.sqlite3"}"\n[notify]\nbackend = "log"\n'
    )
    assert main(["run", "--once", "--config", str(conf)]) == 0
    store = Store(tmp_path / "h.sqlite3")
    assert [i for i, _ in store.open_volumes("us-east-1").items()] == [instance]
    assert store.last_addresses("us-east-1")[instance][1].public_ipv4 == 1
    code, out, _ = _report(tmp_path, "--json", "--since", "1h")
    (row,) = json.loads(out)["instances"]
    assert code == 0 and row["id"] == instance and row["ebs_usd"] is not None
    assert row["price_source"] == "bundled"  # moto has no Price List API: the table


def test_a_watchdog_stop_ends_the_run_when_ec2_accepted_it(tmp_path: Path) -> None:
    """The laptop slept after the stop: the scan that saw it stopped came 30 minutes
    later and EC2 gave no stop time. The run ends at the stop, not at that scan."""
    store = Store(tmp_path / "h.sqlite3")
    running = Instance("us-east-1", "i-1", "g5.xlarge", "running", T0, platform="Linux/UNIX")
    store.observe(T0 + timedelta(minutes=1), [running])
    stop = T0 + timedelta(hours=1)
    store.record_action(stop, "us-east-1", "i-1", "stop", ok=True, detail="idle", dry_run=False)
    stopped = Instance("us-east-1", "i-1", "g5.xlarge", "stopped", None, platform="Linux/UNIX")
    store.observe(stop + timedelta(minutes=30), [stopped])
    end = T0 + timedelta(hours=3)
    (inst,) = ledger.build_ledger(store, CFG, T0, end, end).instances
    assert inst.total.running_seconds == 3600
    assert inst.total.saved_usd == pytest.approx(2 * 1.006)  # stop until the report's end


def test_run_once_tells_a_budget_passed_from_the_ledger(aws: str, tmp_path: Path) -> None:
    (instance,) = launch()
    # launched a minute ago (this month, whenever the test runs: a month is > 1 min)
    started = max(datetime.now(timezone.utc) - timedelta(minutes=1), ledger.month_start(now()))
    set_launch_time("us-east-1", instance, started)
    conf = tmp_path / "config.toml"
    conf.write_text(
        f'[scheduler]\ndatabase = "{tmp_path / "h.sqlite3"}"\n[notify]\nbackend = "log"\n'
        "[billing]\nmonthly_budget_usd = 0.01\n"  # a g5.xlarge's first hour (no platform)
    )
    assert main(["run", "--once", "--config", str(conf)]) == 0
    told = Store(tmp_path / "h.sqlite3").told()
    assert [k for k in told if k.startswith("budget:")] == [
        f"budget:{datetime.now(timezone.utc):%Y-%m}:100"
    ]


def test_report_reconcile_adds_cost_explorer_beside_the_ledger(aws: str, tmp_path: Path) -> None:
    from tests.desktop.test_reconcile import AWS_ANSWER, seed

    seed(aws, AWS_ANSWER)
    Store(tmp_path / "h.sqlite3").close()
    code, out, _ = _report(tmp_path, "--json", "--reconcile", "--since", "2d")
    doc = json.loads(out)
    assert code == 0 and doc["version"] == 1
    assert doc["reconcile"]["requests"] == 1 and doc["reconcile"]["error"] is None
    code, out, _ = _report(tmp_path, "--since", "2d")
    assert code == 0 and "Cost Explorer" not in out  # no call without the flag
