"""The reducer: samples + thresholds -> ActivityReport. Pure.

Activity is anything a person would lose or be interrupted by if the machine
stopped now (DESIGN.md, "What counts as activity"). Each signal in a sample
gives *evidence*: a reason and the moment it last showed activity.

- a GPU above ``gpu_util_percent`` (memory held is not activity): now;
- a Jupyter kernel: its ``last_activity``; an idle kernel with a connected
  client, plus ``kernel_grace_seconds`` (the person is reading what the cell
  printed; a tab left open does not extend it further). A ``busy`` (or
  ``starting``) kernel counts through its messages and what it uses (CPU,
  GPU, I/O below), not through the flag: jupyter_server (2.15+) bumps
  ``last_activity`` on every message of a busy kernel, a computing cell shows
  up as CPU, GPU or I/O, and a cell stuck on nothing (a dead dataloader, a
  forgotten ``input()``; a kernel no client ever opened stays ``starting``)
  must not keep a machine up forever;
- a Jupyter terminal or an SSH tty: its last input, extended by
  ``tty_grace_seconds`` (the person is thinking between keystrokes); a
  session without a terminal (a port forward) is not evidence by itself;
- non-system processes whose CPU adds up to ``process_cpu_percent`` of a
  core: now;
- network or disk transfer above their thresholds: now, unless the only busy
  processes are package updates or first-boot set-up (nobody waits for those).

``last_active_at`` is the latest evidence ever seen (never later than the
sample); the sample is *active* when some evidence falls within its interval.
A signal that could not be read is *unknown*: when nothing else is active the
report says ``state: unknown``, which never counts as idle.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from watchdog.core import heartbeat as hb
from watchdog.core.processes import is_system
from watchdog.core.sample import Process, Sample
from watchdog.core.settings import AgentConfig
from watchdog.core.timeutil import iso

REPORT_VERSION = 1
ACTIVE_KERNEL_STATES = frozenset({"busy", "starting"})
#: CPU (% of a core) at which a system process is visibly doing something.
SYSTEM_BUSY_PERCENT = 5.0
#: System processes whose own transfers are upkeep (not sshd, dockerd or a Jupyter
#: server: those carry a person's downloads and uploads).
UPKEEP_PROCESSES = (
    "apt",
    "apt-get",
    "apt-check",
    "aptd",
    "dpkg",
    "dpkg-*",
    "unattended-upgr*",
    "packagekitd",
    "snapd",
    "yum",
    "dnf",
    "dnf-automatic",
    "cloud-init",
    "fwupd",
)


@dataclass(frozen=True)
class ActivityReport:
    instance_id: str
    sampled_at: datetime
    state: str  # active | idle | unknown
    last_active_at: datetime
    reasons: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()  # signals that could not be read
    version: int = REPORT_VERSION

    @property
    def active(self) -> bool:
        """The contract's boolean: anything but a known idle counts as active."""
        return self.state != "idle"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "instance_id": self.instance_id,
            "sampled_at": iso(self.sampled_at),
            "active": self.active,
            "state": self.state,
            "last_active_at": iso(self.last_active_at),
            "idle_seconds": int((self.sampled_at - self.last_active_at).total_seconds()),
            "reasons": list(self.reasons),
            "unknown": list(self.unknown),
        }

    def heartbeat(self) -> hb.Heartbeat:
        flag = {"active": True, "idle": False}.get(self.state)
        reasons = self.reasons + tuple(f"unknown:{u}" for u in self.unknown)
        return hb.Heartbeat(self.sampled_at, flag, self.last_active_at, reasons)


@dataclass(frozen=True)
class Evidence:
    reason: str
    moment: datetime


@dataclass(frozen=True)
class Thresholds:
    """The reducer's knobs; ``from_config`` maps ``[agent]`` onto them."""

    interval: timedelta = timedelta(seconds=60)
    gpu_util_percent: float = 5.0
    process_cpu_percent: float = 20.0
    net_bytes_per_s: float = 500_000.0
    disk_bytes_per_s: float = 1_000_000.0
    kernel_grace: timedelta = timedelta(seconds=300)
    tty_grace: timedelta = timedelta(seconds=120)
    ignore_processes: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, agent: AgentConfig) -> Thresholds:
        return cls(
            interval=timedelta(seconds=agent.sample_seconds),
            gpu_util_percent=agent.gpu_util_percent,
            process_cpu_percent=agent.process_cpu_percent,
            net_bytes_per_s=agent.net_bytes_per_s,
            disk_bytes_per_s=agent.disk_bytes_per_s,
            kernel_grace=timedelta(seconds=agent.kernel_grace_seconds),
            tty_grace=timedelta(seconds=agent.tty_grace_seconds),
            ignore_processes=agent.ignore_processes,
        )


def evidence(sample: Sample, th: Thresholds) -> list[Evidence]:
    """Every signal in ``sample`` that shows activity, with when it last did."""
    now = sample.at
    found: list[Evidence] = []
    for gpu in sample.gpus or ():
        if gpu.util is not None and gpu.util > th.gpu_util_percent:
            found.append(Evidence(f"gpu:{gpu.index}", now))
    for kernel in sample.kernels or ():
        running = kernel.execution_state in ACTIVE_KERNEL_STATES
        last = kernel.last_activity
        if last is None:
            last = now if running else None  # a busy kernel that never said when: now
        if last is not None:
            if running:  # still at it if it said something during this interval
                moment = now if last >= now - th.interval else last
            else:  # finished: the person may be reading its output
                moment = last + (th.kernel_grace if kernel.connections > 0 else timedelta(0))
            found.append(Evidence(f"kernel:{kernel.id[:8]}", moment))
    for term in sample.terminals or ():
        if term.last_activity is not None:
            found.append(Evidence(f"terminal:{term.name}", term.last_activity + th.tty_grace))
    for tty in sample.ssh or ():
        if tty.tty != "notty":
            last_input = now - timedelta(seconds=max(0.0, tty.idle_seconds))
            found.append(Evidence(f"tty:{tty.tty}", last_input + th.tty_grace))
    ignore = tuple(th.ignore_processes)
    busy: list[Process] = []
    system: list[Process] = []
    for p in sample.processes or ():
        mine = p.system or is_system(p.name, None, -1, (), ignore)
        (system if mine else busy).append(p)
    if busy and sum(p.cpu_percent for p in busy) > th.process_cpu_percent:
        top = max(busy, key=lambda p: p.cpu_percent)
        found.append(Evidence(f"proc:{top.name}", now))
    # Transfers count unless the machine itself is visibly their cause: system
    # processes busy and no one else's (package updates fetching and unpacking).
    upkeep = not busy and any(
        p.cpu_percent >= SYSTEM_BUSY_PERCENT and _updating(p.name) for p in system
    )
    if sample.net is not None and sample.net.total > th.net_bytes_per_s and not upkeep:
        found.append(Evidence("net", now))
    if sample.disk is not None and sample.disk.total > th.disk_bytes_per_s and not upkeep:
        found.append(Evidence("disk", now))
    return found


def _updating(name: str) -> bool:
    """Package updates and first-boot set-up: the transfers nobody waits for."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in UPKEEP_PROCESSES)


def unknown_signals(sample: Sample) -> tuple[str, ...]:
    gpus = sample.gpus
    if gpus is not None and any(g.util is None for g in gpus):
        gpus = None  # a GPU whose utilisation cannot be read (MIG, old boards): unknown
    parts = {
        "gpu": gpus,
        "jupyter": sample.kernels,
        "terminals": sample.terminals,
        "tty": sample.ssh,
        "processes": sample.processes,
        "net": sample.net,
        "disk": sample.disk,
    }
    missing = {name for name, value in parts.items() if value is None}
    if "jupyter" in missing:
        missing.discard("terminals")  # one probe reads both
    return tuple(sorted(missing))


def reduce(
    sample: Sample,
    th: Thresholds,
    *,
    instance_id: str,
    previous: ActivityReport | None = None,
    started_at: datetime | None = None,
) -> ActivityReport:
    """Fold one sample into the running report.

    ``previous`` carries ``last_active_at`` across samples (and agent
    restarts); without it the clock starts at ``started_at`` (boot), or at
    the start of this sample's interval.
    """
    now = sample.at
    found = evidence(sample, th)
    since = now - th.interval
    current = [e for e in found if e.moment >= since]
    if previous is not None:
        last = previous.last_active_at
    else:
        last = started_at if started_at is not None else since
    latest = max((e.moment for e in found), default=last)
    last = min(now, max(last, latest))
    unknown = unknown_signals(sample)
    if current:
        state = "active"
    elif unknown:
        state = "unknown"
    else:
        state = "idle"
    reasons = tuple(dict.fromkeys(e.reason for e in current))
    return ActivityReport(instance_id, now, state, last, reasons, unknown)


def reduce_all(
    samples: Iterable[Sample],
    th: Thresholds,
    *,
    instance_id: str,
    started_at: datetime | None = None,
) -> list[ActivityReport]:
    """The report after each sample, in order (for replay and simulation)."""
    reports: list[ActivityReport] = []
    previous: ActivityReport | None = None
    for sample in samples:
        previous = reduce(
            sample, th, instance_id=instance_id, previous=previous, started_at=started_at
        )
        reports.append(previous)
    return reports
