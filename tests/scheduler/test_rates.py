"""The price table behind the pass's default ``Rates``."""

from __future__ import annotations

from datetime import datetime, timezone

from tests.helpers import config
from watchdog.core.fleet import Instance
from watchdog.scheduler.rates import TableRates

NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)


def instance(**kw: object) -> Instance:
    fields: dict[str, object] = {
        "region": "us-east-1",
        "id": "i-1",
        "type": "g5.xlarge",
        "state": "running",
    }
    return Instance(launch_time=NOW, **{**fields, **kw})  # type: ignore[arg-type]


def test_a_config_override_wins_and_a_public_address_adds_ipv4() -> None:
    rates = TableRates(config(billing={"prices": {"g5.xlarge": 2.0}}))
    got = rates.hourly(instance(public_ip="3.3.3.3"), NOW)
    assert got.price.source == "config" and got.compute_usd == 2.0
    assert got.stop_saves_usd == 2.005 and got.ipv4_usd == 0.005
    assert got.ebs_usd is None  # the table knows no volumes: unknown, not zero


def test_spot_is_never_priced_as_on_demand_and_an_unlisted_type_is_unknown() -> None:
    rates = TableRates(config())
    assert rates.hourly(instance(lifecycle="spot"), NOW).price.source == "unknown"
    unknown = rates.hourly(instance(type="x9.nothing"), NOW)
    assert unknown.compute_usd is None and unknown.stop_saves_usd is None
    assert rates.hourly(instance(), NOW).price.source == "bundled"
