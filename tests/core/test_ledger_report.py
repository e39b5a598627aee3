"""``report --json``: the figures per instance as rounded for other tools, and the notes a
person reads beside them, word for word."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from watchdog.core.costs import Price, Volume
from watchdog.core.ledger import InstanceRecord, Span, StateChange, VolumeSpan, build
from watchdog.core.ledger_report import notes, report_json

T = datetime(2026, 6, 1, tzinfo=timezone.utc)  # June: 720 hours, so gp3 is $0.08/GB / 720 h
H = timedelta(hours=1)


def record(price: float | None = 1.00001) -> InstanceRecord:
    """Two hours running with a public IPv4, the second one idle, 720 GB of gp3."""
    return InstanceRecord(
        region="us-east-1",
        id="i-1",
        type="g5.xlarge",
        platform="Linux/UNIX",
        changes=(StateChange(T, "running", public_ipv4=1), StateChange(T + 2 * H, "stopped")),
        on_demand=Price(price, "config") if price is not None else Price.unknown(),
        volumes=(VolumeSpan(Volume("vol-1", "gp3", 720, 3000, 125), Span(T)),),
        idle=(Span(T + H, T + 2 * H),),
    )


def test_amounts_are_rounded_to_a_hundredth_of_a_cent() -> None:
    doc = report_json(build([record()], T, T + 2 * H, T + 2 * H))
    (inst,) = doc["instances"]
    amounts = {k: inst[k] for k in ("compute_usd", "ebs_usd", "ipv4_usd", "idle_usd", "total_usd")}
    # 2 h at $1.00001 is $2.00002: $2.0000 to the hundredth of a cent
    assert amounts == {
        "compute_usd": 2.0,
        "ebs_usd": 0.16,
        "ipv4_usd": 0.01,
        "idle_usd": 1.005,  # the idle hour's compute and IPv4
        "total_usd": 2.17,
    }
    assert doc["totals"] == {
        "compute_usd": 2.0,
        "ebs_usd": 0.16,
        "ipv4_usd": 0.01,
        "total_usd": 2.17,
        "idle_usd": 1.005,
        "saved_usd": 0.0,
        "partial": False,
    }
    assert inst["running_seconds"] == inst["billed_seconds"] == 7200
    assert inst["idle_seconds"] == 3600


COMMON = [
    "Saved is an estimate: each stop made by idle-watchdog counts what the instance would "
    "have cost running on (compute and public IPv4, at the price in effect) from the stop "
    "until it next started, at most {hours} h ([billing] savings_horizon_hours). EBS keeps "
    "billing while stopped, so it is not saved.",
    "Compute: only running time is billed, per second with a 60 s minimum per start (Linux, "
    "Windows, RHEL, Ubuntu Pro) or per started hour (other platforms); spot at the price in "
    "effect each second (DescribeSpotPriceHistory in the instance's zone).",
    "EBS: every attached volume by type, size, IOPS and throughput, running or stopped, "
    "prorated over the calendar month (https://aws.amazon.com/ebs/pricing/ (US East (N. "
    "Virginia), as of 2026-01)).",
    "Public IPv4: $0.005/h per address while running; Elastic IPs for as long as they are "
    "allocated.",
    "Idle: running time the instance's heartbeats reported idle, at its compute and public "
    "IPv4 cost.",
    "Start and stop times come from LaunchTime and StateTransitionReason where EC2 gives "
    "them, else from the pass that saw the change; a stop no pass saw counts as running.",
]
PARTIAL = (
    "Partial: some amounts are unknown (null) or incomplete (a magnetic volume's I/O "
    "requests), never guessed; totals add up only the known amounts."
)


def test_the_notes_say_how_each_figure_was_counted() -> None:
    ledger = build([record()], T, T + 2 * H, T + 2 * H)
    assert notes(ledger) == [n.replace("{hours}", "24") for n in COMMON]
    longer = build([record()], T, T + 2 * H, T + 2 * H, savings_horizon_hours=36.5)
    assert notes(longer)[0] == COMMON[0].replace("{hours}", "36.5")


def test_an_unknown_amount_adds_the_partial_note() -> None:
    ledger = build([record(price=None)], T, T + 2 * H, T + 2 * H)
    assert notes(ledger) == [*(n.replace("{hours}", "24") for n in COMMON), PARTIAL]
    assert report_json(ledger)["instances"][0]["compute_usd"] is None
