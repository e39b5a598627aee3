"""The reducer: unit cases, and every recorded trace replayed through it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchdog.core import heartbeat as hb
from watchdog.core.activity import ActivityReport, Thresholds, reduce, reduce_all
from watchdog.core.sample import Gpu, Kernel, Process, Rates, Sample, Terminal, Tty
from watchdog.sim.trace import load, score

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
TH = Thresholds()
TRACES = sorted((Path(__file__).parents[1] / "traces").rglob("*.jsonl"))


def one(sample: Sample, previous: ActivityReport | None = None) -> ActivityReport:
    return reduce(sample, TH, instance_id="i-1", previous=previous, started_at=T0)


AT = T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (Sample(AT, gpus=(Gpu(0, 97.0),)), "gpu:0"),
        (
            Sample(AT, kernels=(Kernel("abcdef123456", "busy", AT - timedelta(seconds=30)),)),
            "kernel:abcdef12",
        ),
        (Sample(AT, kernels=(Kernel("k", "starting", None),)), "kernel:k"),
        (Sample(AT, kernels=(Kernel("k", "idle", AT - timedelta(minutes=4), 1),)), "kernel:k"),
        (Sample(AT, terminals=(Terminal("1", AT - timedelta(seconds=90)),)), "terminal:1"),
        (Sample(AT, ssh=(Tty("pts/0", "ubuntu", 30),)), "tty:pts/0"),
        (Sample(AT, processes=(Process("python3", "ubuntu", 85.0),)), "proc:python3"),
        (Sample(AT, processes=(Process("a", "u", 12.0), Process("b", "u", 11.0))), "proc:a"),
        (Sample(AT, net=Rates(20e6, 1e5)), "net"),
        (Sample(AT, disk=Rates(5e6, 0)), "disk"),
        (  # a download at 2 % CPU is work, whoever else is busy
            Sample(
                AT,
                processes=(Process("aws", "u", 2.0), Process("snapd", "root", 50.0)),
                net=Rates(50e6, 1e5),
            ),
            "net",
        ),
    ],
)
def test_each_kind_of_work_is_activity(sample: Sample, reason: str) -> None:
    report = one(sample)
    assert report.state == "active" and report.active
    assert report.reasons == (reason,)
    assert report.last_active_at == AT


@pytest.mark.parametrize(
    "sample",
    [
        Sample(AT, gpus=(Gpu(0, 0.0, mem_used_mib=21000, procs=1),)),  # memory held
        Sample(AT, gpus=(Gpu(0, 3.0),)),
        Sample(AT, kernels=(Kernel("k", "idle", AT - timedelta(minutes=40), 3),)),  # tab open
        Sample(AT, kernels=(Kernel("k", "idle", AT - timedelta(minutes=2), 0),)),  # nobody
        Sample(AT, kernels=(Kernel("k", "busy", AT - timedelta(hours=3), 1),)),  # stuck
        Sample(AT, kernels=(Kernel("k", "starting", AT - timedelta(minutes=5), 0),)),  # never
        Sample(  # package updates downloading: the machine's own transfer
            AT,
            processes=(Process("unattended-upgr", "root", 90.0),),
            net=Rates(8e6, 1e5),
            disk=Rates(0, 8e6),
        ),
        Sample(AT, ssh=(Tty("pts/0", "ubuntu", 600),)),  # connected, not typing
        Sample(AT, ssh=(Tty("notty", "ubuntu", 0),)),  # a port forward
        Sample(AT, processes=(Process("unattended-upgr", "root", 95.0),)),
        Sample(AT, processes=(Process("amazon-ssm-agent", "root", 40.0),)),
        Sample(AT, processes=(Process("python3", "ubuntu", 4.0),)),
        Sample(AT, cpu_percent=80.0),  # no process to show for it
        Sample(AT, net=Rates(900, 700), disk=Rates(0, 4096)),
    ],
)
def test_what_is_not_activity(sample: Sample) -> None:
    report = one(sample)
    assert report.state == "idle" and not report.active
    assert report.reasons == ()


def test_ignored_process_names_come_from_config() -> None:
    th = Thresholds(ignore_processes=("my-exporter",))
    sample = Sample(AT, processes=(Process("my-exporter", "ubuntu", 90.0),))
    assert reduce(sample, th, instance_id="i-1").state == "idle"


def test_an_unreadable_signal_is_unknown_never_idle() -> None:
    report = one(Sample(AT, gpus=None))
    assert report.state == "unknown" and report.active
    assert report.unknown == ("gpu",)
    assert report.heartbeat().active is None


def test_other_activity_wins_over_unknown() -> None:
    report = one(Sample(AT, gpus=None, ssh=(Tty("pts/1", "u", 5),)))
    assert report.state == "active" and report.unknown == ("gpu",)


def test_last_active_at_carries_over_samples_and_never_runs_ahead() -> None:
    busy = one(Sample(AT, gpus=(Gpu(0, 90.0),)))
    later = AT + timedelta(minutes=10)
    quiet = one(Sample(later), previous=busy)
    assert quiet.state == "idle" and quiet.last_active_at == AT
    reading = one(Sample(later, kernels=(Kernel("k", "idle", later, 1),)), previous=quiet)
    assert reading.last_active_at == later  # grace would reach past now: capped


def test_the_report_serialises_to_the_contract_and_the_heartbeat() -> None:
    report = one(Sample(AT, gpus=(Gpu(0, 90.0),)))
    data = report.to_json()
    assert data["version"] == 1 and data["instance_id"] == "i-1"
    assert data["sampled_at"] == "2026-11-23T13:00:00Z" and data["active"] is True
    assert data["last_active_at"] == "2026-11-23T13:00:00Z" and data["reasons"] == ["gpu:0"]
    beat = hb.decode(hb.encode(report.heartbeat()))
    assert beat.active is True and beat.reasons == ("gpu:0",)


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
def test_every_trace_stops_after_the_work_and_within_one_sample_of_the_ideal(
    path: Path,
) -> None:
    """The reducer alone: idle counts from last_active_at, stop at the first sample past it."""
    trace = load(path)
    th = Thresholds(interval=timedelta(seconds=trace.sample_seconds))
    reports = reduce_all(trace.samples(T0), th, instance_id="i-1", started_at=T0)
    idle_s = timedelta(minutes=trace.idle_minutes)
    stop = next(
        (
            (r.sampled_at - T0).total_seconds()
            for r in reports
            if r.state == "idle" and r.sampled_at - r.last_active_at >= idle_s
        ),
        None,
    )
    result = score(trace, stop)
    assert not result.false_stop, f"stopped at {stop}s during work"
    assert result.waste_seconds <= trace.sample_seconds, result


def test_a_gpu_whose_utilisation_cannot_be_read_is_unknown() -> None:
    """MIG slices and old boards report [N/A]: unknown, never idle."""
    report = one(Sample(AT, gpus=(Gpu(0, None, 4312.0, 1, (77,)),)))
    assert report.state == "unknown" and report.unknown == ("gpu",)


def test_a_transfer_through_a_daemon_is_still_work() -> None:
    """A docker pull: dockerd is busy and the docker client too quiet to be listed."""
    sample = Sample(AT, processes=(Process("dockerd", "root", 40.0),), net=Rates(100e6, 1e5))
    assert one(sample).reasons == ("net",)
