"""Money in a whole pass on moto: a $55/h machine idle at ``max_idle_usd = 5`` is warned
and stopped after about 5.45 idle minutes while a cheap one runs on; what the
person is told says what the idle spell cost and what the stop saves."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import MANAGED, beat, config, launch, launch_time, state
from watchdog.aws.ec2 import Boto3Ec2
from watchdog.core.costs import Price
from watchdog.core.fleet import Instance
from watchdog.core.ledger import HourlyRates
from watchdog.desktop.store import Store
from watchdog.scheduler import run_pass, tell
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.rates import Rates

pytestmark = pytest.mark.usefixtures("aws")

REGION = "us-east-1"
P5 = "p5.48xlarge"
CFG = config(
    aws={"regions": (REGION,)},
    idle={"minutes": 30, "warn_minutes": 2, "max_idle_usd": 5.0},
    billing={"prices": {P5: 55.0}},  # 5 x 3600 / 55 = 327.3 s: stops at 328 s of idle
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "history.sqlite3")


class Two:
    """A p5 and a g4dn, both managed, both idle since a minute after launch."""

    def __init__(self) -> None:
        self.big = launch(REGION, P5, tags=MANAGED)[0]
        self.cheap = launch(REGION, "g4dn.xlarge", tags=MANAGED)[0]
        self.left = launch_time(REGION, self.big) + timedelta(minutes=1)

    def idle_pass(
        self, store: Store, seconds: int, rates: Rates | None = None
    ) -> tuple[set[tuple[str, str]], list[Message]]:
        """Both agents write at ``seconds`` of idle, then a pass runs and tells."""
        now = self.left + timedelta(seconds=seconds)
        for iid in (self.big, self.cheap):
            if state(REGION, iid) == "running":
                beat(REGION, iid, now, active=False, last_active=self.left)
        report = run_pass(Boto3Ec2(), store, CFG, now, rates=rates)
        return {(d.target, d.kind) for d in report.done}, tell(report, store, CFG)


def test_a_55_dollar_machine_stops_after_5_dollars_of_idle_and_a_cheap_one_runs_on(
    store: Store,
) -> None:
    two = Two()
    assert two.idle_pass(store, 207)[0] == set()  # the warning is due at 328 - 120 s
    done, told = two.idle_pass(store, 208)
    assert done == {(two.big, "warn")}
    (warning,) = told
    first, second = warning.body.splitlines()
    assert first.startswith("Idle since ")
    assert "(3m, $3.18 of $5.00 so far): no GPU" in first  # 55 x 208 / 3600
    assert second.startswith("Costs $55.0") and "unless you keep it." in second
    assert warning.title.endswith("stops in 2m")

    assert two.idle_pass(store, 327)[0] == set()  # $4.996: not yet
    done, told = two.idle_pass(store, 328)  # 5m28s: $5.01
    assert done == {(two.big, "stop")}
    assert state(REGION, two.big) in ("stopping", "stopped")
    assert state(REGION, two.cheap) == "running"
    (stopped,) = told
    reason, kept = stopped.body.splitlines()
    assert reason.startswith("Idle for 5m, $5.01 so far (threshold 30m or $5.00). Saves $55.0")
    assert "(compute $55.00" in reason
    assert kept.startswith("Its disks are kept (what they cost while stopped is unknown)")

    assert two.idle_pass(store, 29 * 60)[0] == {
        (two.cheap, "warn")
    }  # cheap: the minutes come first
    assert state(REGION, two.cheap) == "running"


class Flat:
    """A price book of one flat rate (compute and address) and no price for ``unpriced``."""

    def __init__(self, usd: float, unpriced: str = "") -> None:
        self.usd, self.unpriced = usd, unpriced

    def hourly(self, instance: Instance, now: datetime) -> HourlyRates:
        if instance.id == self.unpriced:
            raise ConnectionError("the price list did not answer")
        return HourlyRates(self.usd, 0.0, 0.0548, self.usd, Price(self.usd, "price-list"))


def test_the_pass_decides_and_tells_with_the_rates_it_is_given(store: Store) -> None:
    two = Two()
    done, told = two.idle_pass(store, 380, rates=Flat(36.0))  # 1 cent a second: both at $3.80
    assert done == {(two.big, "warn"), (two.cheap, "warn")}  # due at 500 s, lead 120 s
    assert all("$3.80 of $5.00 so far" in m.body for m in told)
    done, told = two.idle_pass(store, 500, rates=Flat(36.0))
    assert done == {(two.big, "stop"), (two.cheap, "stop")}
    assert all("Its disks are kept, still costing $0.055/h" in m.body for m in told)


def test_an_instance_whose_price_fails_keeps_the_minutes_and_blocks_no_other(
    store: Store,
) -> None:
    two = Two()
    rates = Flat(36.0, unpriced=two.big)
    done, told = two.idle_pass(store, 500 - 120, rates=rates)
    assert done == {(two.cheap, "warn")}
    done, told = two.idle_pass(store, 500, rates=rates)
    assert done == {(two.cheap, "stop")}
    assert state(REGION, two.big) == "running"
    done, told = two.idle_pass(store, 28 * 60, rates=rates)
    assert done == {(two.big, "warn")}
    (warning,) = told
    assert "Its price is unknown, so $5.00 does not apply" in warning.body
