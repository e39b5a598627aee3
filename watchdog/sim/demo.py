"""``idle-watchdog demo``: the whole loop on an embedded fake AWS, in virtual time.

A moto server on 127.0.0.1 plays EC2 in two regions. Simulated agents write
heartbeat tags as the real agent would; the real scheduler pass (scan ->
decide -> act -> remember) runs against it while the clock moves five minutes
per pass, so twenty minutes of a fleet's life take a few seconds. Nothing
here reaches AWS: the credentials are fake and every endpoint is loopback.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from watchdog import log
from watchdog.aws.fake import (
    moto_server,
    set_launch_time,
    set_platform_details,
    set_spot_request_state,
)
from watchdog.aws.pricing import Boto3Prices
from watchdog.config import Config
from watchdog.core import heartbeat as hb
from watchdog.core.costs import Price
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_KEEP_UNTIL, TAG_MANAGED
from watchdog.core.timeutil import human, iso, utcnow
from watchdog.desktop import ledger, status
from watchdog.desktop import report as reporting

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


# moto's "Deep Learning AMI Ubuntu Linux": a Linux image, as the launcher would pick
LINUX_AMI = "ami-dca37ea5"


def _launch(ec2: EC2Client, itype: str, name: str, tags: dict[str, str], start: datetime) -> str:
    tag_list: list[Any] = [{"Key": k, "Value": v} for k, v in {"Name": name, **tags}.items()]
    reservation = ec2.run_instances(
        ImageId=LINUX_AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType=itype,  # type: ignore[arg-type]
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    # what EC2 reports for a Linux instance (moto does not): billed per second
    set_platform_details(ec2.meta.region_name, instance_id, "Linux/UNIX")
    set_launch_time(ec2.meta.region_name, instance_id, start)  # launched in virtual time
    return instance_id


def _beat(ec2: EC2Client, instance_id: str, beat: hb.Heartbeat) -> None:
    ec2.create_tags(
        Resources=[instance_id], Tags=[{"Key": TAG_HEARTBEAT, "Value": hb.encode(beat)}]
    )


class Fleet:
    """The demo's simulated instances and their agents."""

    def __init__(self, session: Any, start: datetime):
        self.east: EC2Client = session.client("ec2", region_name="us-east-1")
        self.west: EC2Client = session.client("ec2", region_name="us-west-2")
        managed = {TAG_MANAGED: "true"}
        self.busy = _launch(self.east, "g5.xlarge", "training-run", managed, start)
        self.idle = _launch(self.east, "g4dn.xlarge", "forgotten-notebook", managed, start)
        self.silent = _launch(self.east, "g6.xlarge", "agent-crashed", managed, start)
        self.unmanaged = _launch(self.west, "p3.2xlarge", "colleagues-box", {}, start)
        self.kept = _launch(
            self.west,
            "g5.2xlarge",
            "kept-for-tonight",
            {**managed, TAG_KEEP_UNTIL: iso(start + timedelta(hours=3))},
            start,
        )
        spot = self.west.request_spot_instances(
            SpotPrice="0.50",
            InstanceCount=1,
            Type="persistent",
            LaunchSpecification={"ImageId": LINUX_AMI, "InstanceType": "g5.xlarge"},
        )["SpotInstanceRequests"][0]
        self.orphan = spot["SpotInstanceRequestId"]
        # The person terminated the spot instance; the persistent request reopens.
        self.west.terminate_instances(InstanceIds=[spot["InstanceId"]])
        set_spot_request_state("us-west-2", self.orphan, "open", "instance-terminated-by-user")
        self.idle_since = start + timedelta(minutes=5)  # the person left after 5 minutes
        self.silent_since = start + timedelta(minutes=10)  # that agent crashed then

    def agents_report(self, now: datetime) -> None:
        """What each running agent would publish at ``now``."""
        _beat(self.east, self.busy, hb.Heartbeat(now, True, now, ("gpu:0", "proc:python3")))
        state = self.east.describe_instances(InstanceIds=[self.idle])
        if state["Reservations"][0]["Instances"][0]["State"]["Name"] == "running":
            _beat(self.east, self.idle, hb.Heartbeat(now, False, self.idle_since))
        _beat(self.west, self.kept, hb.Heartbeat(now, False, self.idle_since))
        _beat(self.west, self.unmanaged, hb.Heartbeat(now, False, self.idle_since))
        last = min(now, self.silent_since)  # the crashed agent's last word stays behind
        _beat(self.east, self.silent, hb.Heartbeat(last, True, last, ("kernel:1a2b",)))


class DemoPrices(Boto3Prices):
    """moto's volumes, addresses and spot history; no Price List API (moto has none), so
    on-demand prices come from the bundled table."""

    def on_demand(self, instance_type: str, region: str, platform: str, now: datetime) -> Price:
        return Price.unknown()


def main(
    passes: int = 5,
    step: timedelta = timedelta(minutes=5),
    first: timedelta = timedelta(minutes=25),
    html_dir: str | None = None,
) -> int:
    import boto3

    from watchdog.aws.ec2 import Boto3Ec2
    from watchdog.desktop.store import Store
    from watchdog.scheduler import run_pass, tell
    from watchdog.scheduler.pricebook import PriceBook

    log.configure(level=logging.CRITICAL)
    cfg = replace(Config(), aws=replace(Config().aws, regions=("us-east-1", "us-west-2")))
    print("idle-watchdog demo: a fake EC2 (moto) on 127.0.0.1, two regions, virtual time.")
    print(
        f"Policy: stop managed instances idle {cfg.idle.minutes} min, warning "
        f"{cfg.idle.warn_minutes} min before; cancel orphaned spot requests.\n"
    )
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        # moto's backend is per process: start from an empty fake AWS whatever ran before
        reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310
        urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310  # our loopback server
        session = boto3.Session()
        # Virtual time ends at the wall clock's now: moto stamps stops with the wall
        # clock, and the ledger takes the earlier of a stamp and the pass that saw it.
        start = utcnow().replace(microsecond=0) - first - passes * step
        fleet = Fleet(session, start)
        print(
            f"Fleet on {endpoint}, launched at {iso(start)}: a training run (busy GPU), a "
            "notebook left after 5 minutes, an instance whose agent crashed after 10, a "
            "colleague's unmanaged machine, one kept with `keep --for 3h`, and a persistent "
            "spot request whose instance was terminated (it would relaunch). The scheduler "
            f"first looks {human(first)} later, then every {human(step)}.\n"
        )
        api, store = Boto3Ec2(session), Store(os.path.join(tmp, "history.sqlite3"))  # noqa: PTH118
        prices = DemoPrices(session)
        book = PriceBook(cfg, prices, store)
        for number in range(passes):
            now = start + first + number * step
            fleet.agents_report(now)
            report = run_pass(api, store, cfg, now, rates=book)
            ledger.record(store, prices, book, report.scans, now)
            print(
                f"── pass {number + 1} at launch +{human(now - start)} "
                f"({sum(s.api_calls for s in report.scans)} API calls) ──"
            )
            for done in report.done:
                print(
                    f"  {done.kind.upper():6} {done.region} {done.target}: {done.detail}"
                    + ("" if done.ok else "  [FAILED]")
                )
            if not report.done:
                print("  nothing to do")
            for message in tell(report, store, cfg):  # what the desktop would show
                buttons = "  ".join(f"[{b.label}]" for b in message.buttons)
                print(f"  notification: {message.title}")
                print(_indent(message.body + (f"\n{buttons}" if buttons else ""), "    "))
            print()
            # what `idle-watchdog status` shows now: after this pass's stops and cancels
            planned, _ = status.survey(api, store, cfg, now, rates=book)
            so_far = ledger.per_instance(store, cfg, now)
            rows = status.rows(planned, now, cfg, rates=book, so_far=so_far)
            print(_indent(status.table(rows, now)))
            print()
        summary, page = _report(store, cfg, start, now, html_dir or tmp_keep())
        store.close()
    print(
        "Done: the idle notebook was warned, then stopped; the orphaned spot request was "
        "cancelled; busy, kept, silent and unmanaged machines kept running."
    )
    print(f"\nWhat it cost, and what the stop saved (idle-watchdog report):\n{summary}")
    print(f"HTML report (open it in a browser): {page}")
    return 0


def tmp_keep() -> str:
    """A directory that outlives the demo, for its HTML report."""
    return tempfile.mkdtemp(prefix="idle-watchdog-demo-")


def _report(store: Any, cfg: Config, start: datetime, now: datetime, where: str) -> tuple[str, str]:
    """The report's summary since launch, and the path of the HTML page it wrote."""
    from watchdog.desktop.report_html import render

    book = ledger.build_ledger(store, cfg, start, now, now)
    page = render(book, ledger.records(store, cfg, start, now), now)
    path = os.path.join(where, "report.html")  # noqa: PTH118
    with open(path, "w", encoding="utf-8") as out:  # noqa: PTH123
        out.write(page)
    return reporting.summary(book), path


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
