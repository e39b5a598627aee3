"""A region whose endpoint hangs: bounded by the ``[aws]`` timeouts, and never
holding back the regions that answered."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.aws.faults import Hanging
from tests.helpers import launch
from watchdog.aws.ec2 import Boto3Ec2, call_budget_seconds, client_config, iter_scans, scan_regions
from watchdog.config import parse
from watchdog.core.fleet import RegionScan
from watchdog.core.settings import AwsConfig

pytestmark = pytest.mark.usefixtures("aws")
HUNG, GOOD = "eu-west-3", "us-east-1"


def test_every_client_uses_the_configured_timeouts_and_attempts() -> None:
    cfg = parse(
        "[aws]\nconnect_timeout_seconds = 2\nread_timeout_seconds = 9\nmax_attempts = 4\n"
    ).aws
    meta: Any = Boto3Ec2.from_config(cfg).client(GOOD).meta.config
    assert (meta.connect_timeout, meta.read_timeout) == (2, 9)
    assert meta.retries == {"mode": "standard", "total_max_attempts": 4}
    default: Any = Boto3Ec2().client(GOOD).meta.config
    assert (default.connect_timeout, default.read_timeout) == (5, 15)
    assert default.retries == client_config(AwsConfig()).retries  # type: ignore[attr-defined]
    # A hang costs 3 x 15 s = 45 s with the defaults, and one call 73 s at the very
    # most: within a minute or so, where botocore's defaults took ~4.7 minutes.
    assert call_budget_seconds(AwsConfig()) == 73


def test_a_hung_region_is_given_up_within_its_budget_after_the_others_are_yielded() -> None:
    launch(GOOD, count=2)
    cfg = AwsConfig(connect_timeout_seconds=1, read_timeout_seconds=2, max_attempts=2)
    arrived: list[tuple[RegionScan, float]] = []
    with Hanging() as hung:
        api = Boto3Ec2(aws=cfg, endpoints={HUNG: hung.url})
        started = time.monotonic()
        for scan in iter_scans(api, [HUNG, GOOD], max_workers=2):
            arrived.append((scan, time.monotonic() - started))
        assert hung.accepted(at_least=cfg.max_attempts) == cfg.max_attempts
    (good, _), (bad, bad_after) = arrived
    assert good.region == GOOD and not good.error and len(good.instances) == 2
    assert bad.region == HUNG and bad.error.startswith("ReadTimeoutError")
    assert bad.api_calls == cfg.max_attempts
    # It waited out every attempt (a lower bound, safe on a loaded machine) and gave
    # up within the budget the config sets (generous margin: a busy machine is slow).
    assert cfg.max_attempts * cfg.read_timeout_seconds <= bad_after
    assert bad_after < 2 * call_budget_seconds(cfg)


class _Waits(Boto3Ec2):
    """``slow`` answers only once the caller has acted on ``fast`` (or after 30 s)."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.acted = threading.Event()

    def scan(self, region: str) -> RegionScan:
        if region == self.slow and not self.acted.wait(timeout=30):
            return RegionScan(region, error="the caller waited for every region")
        return super().scan(region)


def test_the_caller_acts_on_a_region_while_another_is_still_scanning() -> None:
    api = _Waits(slow=HUNG)
    order = []
    for scan in iter_scans(api, [HUNG, GOOD]):
        order.append(scan.region)
        assert not scan.error
        if scan.region == GOOD:
            api.acted.set()  # what the pass does: act on it, with HUNG still out
    assert order == [GOOD, HUNG]


class _FastFirst(_Waits):
    def scan(self, region: str) -> RegionScan:
        if region == self.slow:
            return super().scan(region)
        try:
            return super().scan(region)
        finally:
            self.acted.set()


def test_scan_regions_keeps_the_configured_order() -> None:
    api = _FastFirst(slow=HUNG)  # completes GOOD, HUNG; listed as configured
    assert [s.region for s in scan_regions(api, [HUNG, GOOD, HUNG])] == [HUNG, GOOD]


def test_a_caller_that_stops_early_leaves_no_scan_behind() -> None:
    api = _Waits(slow=HUNG)
    scans = iter_scans(api, [GOOD, HUNG], max_workers=1)
    assert next(scans).region == GOOD
    api.acted.set()
    scans.close()  # joins the worker; the queued region is cancelled or finished
    assert not any(t.name.startswith("ec2-scan") for t in threading.enumerate())
