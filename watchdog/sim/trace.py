"""``idle-trace/1`` files: a recorded life of one instance, sample by sample.

Format: ``../shared/traces/README.md``. A sample at trace second ``t``
covers ``[t, t + sample_seconds)``; as a ``Sample`` it is stamped at the end
of that interval, when an agent would have read it. A signal recorded as
``null`` is unknown. The ``work`` label is kept apart (``Trace.work``) so
nothing that decides can read it by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from watchdog.core.sample import Gpu, Kernel, Process, Rates, Sample, Terminal, Tty

FORMAT = "idle-trace/1"


class TraceError(ValueError):
    """A trace file that does not follow idle-trace/1; the message says where."""


@dataclass(frozen=True)
class Trace:
    name: str
    header: dict[str, Any]
    times: tuple[int, ...]  # trace seconds of each sample's start
    raw: tuple[dict[str, Any], ...]  # the sample lines, label removed
    work: tuple[bool | None, ...]  # the labels: for scoring only

    @property
    def sample_seconds(self) -> int:
        return int(self.header.get("sample_seconds", 60))

    @property
    def idle_minutes(self) -> int:
        return int(self.header.get("idle_minutes", 30))

    @property
    def duration(self) -> int:
        """Seconds from the trace start to the end of its last sample."""
        return (self.times[-1] + self.sample_seconds) if self.times else 0

    def samples(self, start: datetime) -> list[Sample]:
        """The samples as the agent would have read them, the trace starting at ``start``."""
        step = timedelta(seconds=self.sample_seconds)
        return [
            to_sample(line, start, start + timedelta(seconds=t), step)
            for t, line in zip(self.times, self.raw, strict=True)
        ]


def load(path: str | Path) -> Trace:
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise TraceError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        bad = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(
            f"{source}:{bad}: not an {FORMAT} file: not UTF-8 text "
            f"(byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from exc
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError as exc:
        raise TraceError(f"{source}:1: header is not JSON: {exc}") from exc
    if header.get("format") != FORMAT:
        raise TraceError(f"{source}:1: not an {FORMAT} file (format={header.get('format')!r})")
    times: list[int] = []
    raw: list[dict[str, Any]] = []
    work: list[bool | None] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            t = int(item.pop("t"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{source}:{number}: not a sample: {exc}") from exc
        if times and t <= times[-1]:
            raise TraceError(f"{source}:{number}: t={t} does not follow t={times[-1]}")
        label = item.pop("work", None)
        times.append(t)
        raw.append(item)
        work.append(label if isinstance(label, bool) else None)
    name = str(header.get("name") or source.stem)
    return Trace(name, header, tuple(times), tuple(raw), tuple(work))


def to_sample(line: dict[str, Any], start: datetime, begin: datetime, step: timedelta) -> Sample:
    """One trace line as a ``Sample`` read at the end of its interval ``[begin, begin + step)``.

    Trace seconds become datetimes from ``start``; tty idle times, recorded at
    ``begin``, are aged to the moment of reading.
    """
    at = begin + step

    def when(value: Any) -> datetime | None:
        return None if value is None else start + timedelta(seconds=float(value))

    def listed(key: str) -> list[dict[str, Any]] | None:
        value = line.get(key, [])
        return None if value is None else list(value)

    gpus, kernels, terms = listed("gpus"), listed("kernels"), listed("terminals")
    ssh, procs = listed("ssh"), listed("processes")
    net, disk = line.get("net_bytes_per_s", {}), line.get("disk_bytes_per_s", {})
    return Sample(
        at=at,
        gpus=None
        if gpus is None
        else tuple(
            Gpu(i, g.get("util"), g.get("mem_used_mib"), int(g.get("procs") or 0))
            for i, g in enumerate(gpus)
        ),
        kernels=None
        if kernels is None
        else tuple(
            Kernel(
                str(k.get("id", "")),
                str(k.get("execution_state", "")),
                when(k.get("last_activity")),
                int(k.get("connections") or 0),
            )
            for k in kernels
        ),
        terminals=None
        if terms is None
        else tuple(Terminal(str(x.get("name", "")), when(x.get("last_activity"))) for x in terms),
        ssh=None
        if ssh is None
        else tuple(
            Tty(
                str(x.get("tty", "")),
                str(x.get("user", "")),
                float(x.get("idle_seconds", 0)) + step.total_seconds(),
            )
            for x in ssh
        ),
        processes=None
        if procs is None
        else tuple(
            Process(str(p.get("name", "")), str(p.get("user", "")), float(p.get("cpu_percent", 0)))
            for p in procs
        ),
        cpu_percent=line.get("cpu_percent"),
        net=None if net is None else Rates(float(net.get("rx", 0)), float(net.get("tx", 0))),
        disk=None
        if disk is None
        else Rates(float(disk.get("read", 0)), float(disk.get("write", 0))),
    )


@dataclass(frozen=True)
class Score:
    false_stop: bool
    waste_seconds: float
    waste_usd: float


def score(trace: Trace, stop: float | None) -> Score:
    """Score a stop time (trace seconds; None = never) as ``traces/README.md`` defines.

    False stop: a work sample covers the stop, or the stop came less than the
    idle threshold after the last work sample before it (one sample of
    slack). Waste: billed idle time beyond the threshold, over every idle gap
    before the stop, the gap holding the stop counted up to it.
    """
    step, idle_s = trace.sample_seconds, trace.idle_minutes * 60
    end = float(trace.duration if stop is None else stop)
    false_stop = False
    if stop is not None:
        worked = [t for t, w in zip(trace.times, trace.work, strict=True) if w and t <= stop]
        if worked and (stop < worked[-1] + step or stop < worked[-1] + idle_s):
            false_stop = True
    waste = 0.0
    gap_start: float | None = None
    for t, w in zip(trace.times, trace.work, strict=True):
        if t >= end:
            break
        if w:
            if gap_start is not None:
                waste += max(0.0, (t - gap_start) - idle_s)
                gap_start = None
        elif gap_start is None:
            gap_start = t
    if gap_start is not None:
        waste += max(0.0, (end - gap_start) - idle_s)
    price = float(trace.header.get("instance", {}).get("price_per_hour") or 0.0)
    return Score(false_stop, waste, round(waste / 3600 * price, 6))
