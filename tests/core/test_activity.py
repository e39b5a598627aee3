"""The reducer: unit cases, and every recorded trace replayed through it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchdog.core import heartbeat as hb
from watchdog.core.activity import ActivityReport, Thresholds, reduce, reduce_all
from watchdog.core.sample import Gpu, Kernel, Process, Rates, Sample, Terminal, Tty
from watchdog.core.settings import AgentConfig
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


# --- exact thresholds: "above" means strictly above ------------------------------------------


@pytest.mark.parametrize(
    ("at_threshold", "just_above"),
    [
        (Sample(AT, gpus=(Gpu(0, 5.0),)), Sample(AT, gpus=(Gpu(0, 5.01),))),
        (
            Sample(AT, processes=(Process("a", "u", 12.0), Process("b", "u", 8.0))),
            Sample(AT, processes=(Process("a", "u", 12.0), Process("b", "u", 8.01))),
        ),
        (Sample(AT, net=Rates(400_000.0, 100_000.0)), Sample(AT, net=Rates(400_000.0, 100_001.0))),
        (Sample(AT, disk=Rates(1_000_000.0, 0.0)), Sample(AT, disk=Rates(999_000.0, 1_001.0))),
    ],
    ids=["gpu", "processes", "net", "disk"],
)
def test_a_signal_exactly_at_its_threshold_is_idle(
    at_threshold: Sample, just_above: Sample
) -> None:
    assert one(at_threshold).state == "idle"
    assert one(just_above).state == "active"


@pytest.mark.parametrize(("cpu", "state"), [(5.0, "idle"), (4.9, "active")])
def test_an_updater_counts_as_the_cause_of_a_transfer_from_five_percent_of_a_core(
    cpu: float, state: str
) -> None:
    sample = Sample(AT, processes=(Process("apt-get", "root", cpu),), net=Rates(8e6, 0))
    assert one(sample).state == state


def test_only_updaters_explain_a_transfer() -> None:
    """Case matters in process names; sshd carrying a person's scp is no update."""
    for name in ("APT", "sshd"):
        sample = Sample(
            AT, processes=(Process(name, "root", 50.0, system=True),), net=Rates(8e6, 0)
        )
        assert one(sample).reasons == ("net",)
    dpkg = Sample(AT, processes=(Process("dpkg-deb", "root", 50.0),), disk=Rates(0, 8e6))
    assert one(dpkg).state == "idle"


def test_a_process_marked_system_by_the_probe_is_not_work() -> None:
    sample = Sample(AT, processes=(Process("python3", "root", 90.0, system=True),))
    assert one(sample).state == "idle"


def test_the_busiest_process_names_the_reason() -> None:
    sample = Sample(AT, processes=(Process("a", "u", 10.0), Process("b", "u", 11.0)))
    assert one(sample).reasons == ("proc:b",)


# --- kernels, terminals and ttys at the edge of the interval and the grace --------------------


def test_an_idle_kernel_that_never_said_when_is_no_evidence() -> None:
    """Counted as "now" it would keep the machine up forever."""
    report = one(Sample(AT, kernels=(Kernel("k", "idle", None, 2),)))
    assert report.state == "idle"
    assert report.last_active_at == T0


def test_a_busy_kernel_that_spoke_exactly_one_interval_ago_is_still_at_it() -> None:
    kernel = Kernel("k", "busy", AT - TH.interval, 1)
    report = one(Sample(AT, kernels=(kernel,)))
    assert report.state == "active" and report.last_active_at == AT
    quiet = Kernel("k", "busy", AT - TH.interval - timedelta(seconds=1), 1)
    stuck = one(Sample(AT, kernels=(quiet,)))
    assert stuck.state == "idle"
    assert stuck.last_active_at == AT - TH.interval - timedelta(seconds=1)


def test_evidence_exactly_at_the_start_of_the_interval_is_current() -> None:
    finished = Kernel("k", "idle", AT - TH.interval, 0)  # nobody connected: no grace
    assert one(Sample(AT, kernels=(finished,))).state == "active"
    earlier = Kernel("k", "idle", AT - TH.interval - timedelta(seconds=1), 0)
    assert one(Sample(AT, kernels=(earlier,))).state == "idle"


def test_the_kernel_grace_ends_exactly_after_the_configured_seconds() -> None:
    read = AT - TH.interval - TH.kernel_grace  # output printed; the person reads for 300 s
    assert one(Sample(AT, kernels=(Kernel("k", "idle", read, 1),))).state == "active"
    late = read - timedelta(seconds=1)
    report = one(Sample(AT, kernels=(Kernel("k", "idle", late, 1),)))
    assert report.state == "idle"
    assert report.last_active_at == late + TH.kernel_grace


def test_the_terminal_and_tty_grace_end_exactly_after_the_configured_seconds() -> None:
    typed = AT - TH.interval - TH.tty_grace
    assert one(Sample(AT, terminals=(Terminal("1", typed),))).state == "active"
    late = one(Sample(AT, terminals=(Terminal("1", typed - timedelta(seconds=1)),)))
    assert late.state == "idle"
    assert late.last_active_at == AT - TH.interval - timedelta(seconds=1)
    idle_s = (TH.interval + TH.tty_grace).total_seconds()
    assert one(Sample(AT, ssh=(Tty("pts/0", "u", idle_s),))).state == "active"
    report = one(Sample(AT, ssh=(Tty("pts/0", "u", idle_s + 1),)))
    assert report.state == "idle"
    assert report.last_active_at == AT - TH.interval - timedelta(seconds=1)


def test_a_person_typing_right_now_is_active_now_even_without_grace() -> None:
    no_grace = Thresholds(tty_grace=timedelta(0))
    report = reduce(Sample(AT, ssh=(Tty("pts/0", "u", 0.0),)), no_grace, instance_id="i-1")
    assert report.state == "active" and report.last_active_at == AT
    clock_skew = reduce(Sample(AT, ssh=(Tty("pts/0", "u", -5.0),)), no_grace, instance_id="i-1")
    assert clock_skew.last_active_at == AT  # a negative idle time never dates input ahead


def test_a_terminal_that_never_said_when_is_no_evidence() -> None:
    assert one(Sample(AT, terminals=(Terminal("1", None),))).state == "idle"


def test_one_reason_per_kernel_prefix() -> None:
    kernels = (Kernel("abcdef12-1", "busy", AT), Kernel("abcdef12-2", "busy", AT))
    assert one(Sample(AT, kernels=kernels, gpus=(Gpu(1, 50.0),))).reasons == (
        "gpu:1",
        "kernel:abcdef12",
    )


# --- the report's clock ---------------------------------------------------------------------


def test_without_history_the_idle_clock_starts_at_boot() -> None:
    assert one(Sample(AT)).last_active_at == T0
    alone = reduce(Sample(AT), TH, instance_id="i-1")  # no boot time known
    assert alone.last_active_at == AT - TH.interval


def test_the_previous_report_wins_over_boot() -> None:
    before = reduce(Sample(AT), TH, instance_id="i-1", started_at=T0 + timedelta(minutes=5))
    later = reduce(Sample(AT + TH.interval), TH, instance_id="i-1", previous=before, started_at=T0)
    assert later.last_active_at == T0 + timedelta(minutes=5)


def test_reduce_all_threads_each_report_into_the_next() -> None:
    samples = [
        Sample(AT, gpus=(Gpu(0, 90.0),)),
        Sample(AT + TH.interval),
        Sample(AT + 2 * TH.interval, gpus=None),
    ]
    reports = reduce_all(samples, TH, instance_id="i-9", started_at=T0)
    assert [r.state for r in reports] == ["active", "idle", "unknown"]
    assert [r.last_active_at for r in reports] == [AT, AT, AT]
    assert {r.instance_id for r in reports} == {"i-9"}
    first = reduce_all([Sample(AT)], TH, instance_id="i-9", started_at=T0)
    assert first[0].last_active_at == T0


# --- unknown signals and what the report says --------------------------------------------------


def test_every_unreadable_signal_is_named_once_and_sorted() -> None:
    sample = Sample(
        AT,
        gpus=None,
        kernels=None,
        terminals=None,
        ssh=None,
        processes=None,
        net=None,
        disk=None,
    )
    report = one(sample)
    assert report.state == "unknown"
    assert report.unknown == ("disk", "gpu", "jupyter", "net", "processes", "tty")
    assert one(Sample(AT, terminals=None)).unknown == ("terminals",)


def test_an_unknown_report_serialises_with_its_idle_time_and_unknown_signals() -> None:
    quiet = one(Sample(AT, gpus=(Gpu(0, 1.0), Gpu(1, None))))
    assert quiet.to_json() == {
        "version": 1,
        "instance_id": "i-1",
        "sampled_at": "2026-11-23T13:00:00Z",
        "active": True,
        "state": "unknown",
        "last_active_at": "2026-11-23T12:00:00Z",
        "idle_seconds": 3600,
        "reasons": [],
        "unknown": ["gpu"],
    }
    assert quiet.heartbeat() == hb.Heartbeat(AT, None, T0, ("unknown:gpu",))
    idle = one(Sample(AT))
    assert idle.heartbeat() == hb.Heartbeat(AT, False, T0, ())
    assert idle.to_json()["active"] is False


def test_thresholds_come_from_every_agent_key() -> None:
    agent = AgentConfig(
        sample_seconds=30,
        gpu_util_percent=7.5,
        process_cpu_percent=33.0,
        net_bytes_per_s=1234.0,
        disk_bytes_per_s=5678.0,
        kernel_grace_seconds=90,
        tty_grace_seconds=45,
        ignore_processes=("my-exporter", "backup*"),
    )
    assert Thresholds.from_config(agent) == Thresholds(
        interval=timedelta(seconds=30),
        gpu_util_percent=7.5,
        process_cpu_percent=33.0,
        net_bytes_per_s=1234.0,
        disk_bytes_per_s=5678.0,
        kernel_grace=timedelta(seconds=90),
        tty_grace=timedelta(seconds=45),
        ignore_processes=("my-exporter", "backup*"),
    )
    assert Thresholds.from_config(AgentConfig()) == Thresholds()
