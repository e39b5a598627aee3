"""The system probe: ttys, busy user processes, whole-machine CPU, network and disk rates.

One ``SystemProbe`` lives as long as the agent. It keeps the counters of its
previous read, so every rate and CPU figure covers exactly the interval since
then, and nobody else's call (say ``psutil.cpu_percent`` elsewhere in the
process) can shorten that interval. The constructor takes a baseline, so the
first ``read()`` already has an interval.

Each part is read on its own: a part that cannot be read is ``None``
(unknown, which never counts as idle) with a log line, and the others are
still reported. A part whose baseline could not be taken is ``None`` once
more on the next read, because a rate with no start is not a rate.
"""

from __future__ import annotations

import os
import re
import time as _time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import psutil
import structlog

from watchdog.core.processes import is_system
from watchdog.core.sample import ProbeError, Process, Rates, Tty

log = structlog.get_logger("watchdog.agent.system")

T = TypeVar("T")

_SSHD_NOTTY = re.compile(r"sshd(?:-session)?: (?P<user>[^\s@]+)@notty(?:\s|$)")
_LOOPBACK = frozenset({"lo"})
_MIN_AGE_S = 1.0  # floor for a new process's age: create_time is only good to ~1 s
#: Read for every process on every sample: one read of /proc/PID/stat.
_CHEAP_ATTRS = ["pid", "ppid", "create_time", "cpu_times"]


# --- the psutil-like source -------------------------------------------------


class _User(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def terminal(self) -> str | None: ...
    @property
    def started(self) -> float: ...


class _Proc(Protocol):
    """A ``psutil.Process`` from ``process_iter``: ``info`` holds the attrs asked for;
    the rest costs a read of /proc (and a user lookup) each, so only on demand."""

    info: dict[str, Any]

    def name(self) -> str: ...
    def username(self) -> str: ...
    def cmdline(self) -> list[str]: ...


class _NetIO(Protocol):
    @property
    def bytes_recv(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...


class _DiskIO(Protocol):
    @property
    def read_bytes(self) -> int: ...
    @property
    def write_bytes(self) -> int: ...


class _CpuTimes(Protocol):
    def _asdict(self) -> dict[str, Any]: ...


class PsutilLike(Protocol):
    """The slice of psutil this probe reads; the ``psutil`` module itself is one."""

    def users(self) -> Sequence[_User]: ...
    def process_iter(self, attrs: list[str]) -> Iterable[_Proc]: ...
    def cpu_times(self) -> _CpuTimes: ...
    def net_io_counters(self, pernic: Literal[True]) -> Mapping[str, _NetIO]: ...
    def disk_io_counters(self, perdisk: Literal[False]) -> _DiskIO | None: ...


class _Times(NamedTuple):
    user: float
    system: float


class _StatProc:
    """One process as read from /proc/PID/stat: the cheap fields in ``info``; name, user
    and command line from psutil when asked, checked to be the same process."""

    def __init__(self, pid: int, ppid: int, create_time: float, times: _Times) -> None:
        self.info: dict[str, Any] = {
            "pid": pid,
            "ppid": ppid,
            "create_time": create_time,
            "cpu_times": times,
        }
        self._proc: psutil.Process | None = None

    def _psutil(self) -> psutil.Process:
        if self._proc is None:
            proc = psutil.Process(self.info["pid"])
            if abs(proc.create_time() - self.info["create_time"]) > 0.005:
                raise psutil.NoSuchProcess(self.info["pid"])  # the pid was reused since
            self._proc = proc
        return self._proc

    def name(self) -> str:
        return self._psutil().name()

    def username(self) -> str:
        return self._psutil().username()

    def cmdline(self) -> list[str]:
        return self._psutil().cmdline()


class ProcFs:
    """psutil, with the process list read straight from /proc/PID/stat (Linux): about
    20 µs a process where ``psutil.process_iter`` takes about 70, which is most of the
    agent's CPU on a machine with a thousand processes."""

    def __init__(self, root: str = "/proc") -> None:
        self._root = root
        self._tick = os.sysconf("SC_CLK_TCK")

    def users(self) -> Sequence[_User]:
        return psutil.users()

    def cpu_times(self) -> _CpuTimes:
        return psutil.cpu_times()

    def net_io_counters(self, pernic: Literal[True]) -> Mapping[str, _NetIO]:
        return psutil.net_io_counters(pernic=pernic)

    def disk_io_counters(self, perdisk: Literal[False]) -> _DiskIO | None:
        return psutil.disk_io_counters(perdisk=perdisk)

    def process_iter(self, attrs: list[str]) -> Iterator[_Proc]:
        if not set(attrs) <= set(_CHEAP_ATTRS):
            raise ValueError(f"only {_CHEAP_ATTRS} come from /proc/PID/stat")
        tick, boot = self._tick, psutil.boot_time()  # as psutil computes create_time
        # os and str paths, not pathlib: this loop runs for every process on every sample
        for name in os.listdir(self._root):  # noqa: PTH208
            if not name.isdigit():
                continue
            try:
                fd = os.open(f"{self._root}/{name}/stat", os.O_RDONLY)
            except OSError:  # gone since the listing
                continue
            try:
                data = os.read(fd, 4096)  # one line, a few hundred bytes
            except OSError:
                continue
            finally:
                os.close(fd)
            # after "pid (comm) ": state ppid ... utime(14) stime(15) ... starttime(22)
            fields = data[data.rindex(b")") + 2 :].split()
            yield _StatProc(
                int(name),
                int(fields[1]),
                (int(fields[19]) / tick) + boot,
                _Times(int(fields[11]) / tick, int(fields[12]) / tick),
            )


def default_source() -> PsutilLike:
    """ProcFs where /proc has the Linux layout, psutil itself elsewhere."""
    return ProcFs() if Path("/proc/self/stat").exists() else psutil


def _ours_or_kernel(p: _ProcInfo, own: Collection[int]) -> bool:
    """The agent and its children, and kernel threads: not worth reporting at all."""
    kernel_thread = p.pid == 2 or p.ppid == 2 or (p.cmdline is not None and not p.cmdline)
    return p.pid in own or kernel_thread


# --- the probe ---------------------------------------------------------------


@dataclass(frozen=True)
class SystemReading:
    """One read of the system probe; ``None`` marks a part that could not be read."""

    ssh: tuple[Tty, ...] | None
    processes: tuple[Process, ...] | None
    cpu_percent: float | None  # whole machine, 0-100
    net: Rates | None  # (rx, tx) bytes/s, loopback excluded
    disk: Rates | None  # (read, write) bytes/s


class _ProcInfo(NamedTuple):  # a tuple: one is built per process per sample
    pid: int
    ppid: int | None
    name: str | None
    user: str | None
    cmdline: tuple[str, ...] | None
    create_time: float | None
    cpu_seconds: float | None  # user + system, children excluded (as psutil's cpu_percent)


@dataclass(frozen=True)
class _Identity:
    """What a process is, read only when it is new or used CPU (see ``_snapshot``)."""

    name: str | None
    user: str | None
    cmdline: tuple[str, ...] | None
    look_again: bool  # first read: read once more next time (see ``_snapshot``)


def _read_identity(p: _Proc, *, first: bool) -> _Identity:
    """Each field on its own: one that cannot be read is None, as ``process_iter`` does."""

    def get(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except psutil.Error:  # gone since the list was taken, a zombie, or not ours to read
            return None

    cmd = get(p.cmdline)
    return _Identity(get(p.name), get(p.username), None if cmd is None else tuple(cmd), first)


@dataclass(frozen=True)
class _ProcState:
    mono: float
    cpu: dict[int, tuple[float | None, float | None]]  # pid -> (create_time, cpu_seconds)


class _NoBaseline(ProbeError):
    """The part has no previous read to measure from: expected once, at the baseline."""


def _cpu_split(times: _CpuTimes) -> tuple[float, float]:
    """(busy, total) seconds, by psutil's own rule: guests are inside user time
    already, and idle and iowait are not busy."""
    t = {k: float(v) for k, v in times._asdict().items()}
    total = sum(t.values()) - t.get("guest", 0.0) - t.get("guest_nice", 0.0)
    return total - t["idle"] - t.get("iowait", 0.0), total


def _rate(now: float, before: float, dt: float) -> float:
    """Bytes/s; a counter that went backwards (wrap, reset) counts as no transfer."""
    return max(0.0, now - before) / dt if dt > 0 else 0.0


class SystemProbe:
    """Reads ttys, busy user processes, CPU, network and disk over the interval
    since its previous read (or since it was built, for the first read)."""

    def __init__(
        self,
        *,
        ignore: Sequence[str] = (),
        source: PsutilLike | None = None,
        monotonic: Callable[[], float] = _time.monotonic,
        time: Callable[[], float] = _time.time,
        dev_root: Path | str = "/dev",
        own_pid: int | None = None,
        min_cpu_percent: float = 1.0,
        top: int = 20,
    ) -> None:
        self.ignore = tuple(ignore)
        self.min_cpu_percent = min_cpu_percent
        self.top = top
        self._src: PsutilLike = source if source is not None else default_source()
        self._mono = monotonic
        self._time = time
        self._dev = Path(dev_root)
        self._own_pid = os.getpid() if own_pid is None else own_pid
        self._failing: dict[str, str] = {}
        self._cpu_prev: tuple[float, float] | None = None
        self._net_prev: tuple[float, dict[str, tuple[int, int]]] | None = None
        self._disk_prev: tuple[float, tuple[int, int]] | None = None
        self._proc_prev: _ProcState | None = None
        self._identities: dict[tuple[int, float | None], tuple[float | None, _Identity]] = {}
        self.identity_reads = 0  # how many processes' identities were read, for the benchmark
        self.read()  # the baseline

    def read(self) -> SystemReading:
        """Every part over the interval since the previous read; each part on its own."""
        procs = self._part("process list", self._snapshot)
        return SystemReading(
            ssh=self._part("ssh", lambda: self._ttys(procs)),
            processes=self._part("processes", lambda: self._processes(procs)),
            cpu_percent=self._part("cpu", self._cpu),
            net=self._part("net", self._net),
            disk=self._part("disk", self._disk),
        )

    # -- plumbing

    def _part(self, part: str, fn: Callable[[], T | None]) -> T | None:
        """``fn()``, or None with a log line: a warning when the part starts failing
        (or fails differently), debug while it keeps failing the same way."""
        try:
            value = fn()
        except _NoBaseline as exc:
            log.debug("system probe part has no baseline yet", part=part, error=str(exc))
            return None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self._failing.get(part) != error:
                log.warning("system probe part unreadable", part=part, error=error)
            else:
                log.debug("system probe part still unreadable", part=part, error=error)
            self._failing[part] = error
            return None
        if part in self._failing and value is not None:
            log.info("system probe part readable again", part=part)
            del self._failing[part]
        return value

    # -- ttys

    def _ttys(self, procs: list[_ProcInfo] | None) -> tuple[Tty, ...]:
        """Logged-in sessions with the idle time of their terminal's input, as ``w``
        computes it (now - atime of the tty device). Local consoles count: a person
        at a console is a person. A session without a terminal (utmp has none, or
        sshd's "user@notty" process: an editor's remote server, a port forward)
        is "notty" with idle time since it started, the only time it has."""
        if procs is None:
            raise ProbeError("process list unreadable: notty sessions unknown")
        now = self._time()
        ttys: list[Tty] = []
        for user in self._src.users():
            term = (user.terminal or "").removeprefix("/dev/")
            if not term or ":" in term:  # none, or an X display such as ":0"
                ttys.append(Tty("notty", user.name, max(0.0, now - user.started)))
                continue
            try:
                atime = (self._dev / term).stat().st_atime
            except FileNotFoundError:  # a stale utmp entry: the terminal is gone
                log.debug("tty gone; stale login record", tty=term, user=user.name)
                continue
            ttys.append(Tty(term, user.name, max(0.0, now - atime)))
        for p in procs:
            if not p.cmdline or not p.cmdline[0].startswith("sshd"):
                continue  # the regex's own first test, without a join for every process
            m = _SSHD_NOTTY.match(" ".join(p.cmdline))
            if m and p.create_time is not None:
                ttys.append(Tty("notty", m["user"], max(0.0, now - p.create_time)))
        return tuple(ttys)

    # -- processes

    def _snapshot(self) -> list[_ProcInfo]:
        """Every process, reading its name, user and command line only when it is new
        or used CPU since the previous read (a few per sample on an idle machine, so
        the cost stays near one /proc read per process, not four and a user lookup).

        Identities are kept by (pid, create_time), so a reused pid is a new process.
        A new one is read twice, at first sight and on the next read: a fork that has
        not yet renamed itself (sshd's "user@notty" child) does so at once, with too
        little CPU to show. A process that renames itself later uses CPU to do so."""
        out: list[_ProcInfo] = []
        known, self._identities = self._identities, {}
        for p in self._src.process_iter(_CHEAP_ATTRS):
            i = p.info
            ct = i.get("cpu_times")
            cpu = None if ct is None else float(ct.user + ct.system)
            key = (int(i["pid"]), i.get("create_time"))
            cached = known.get(key)
            if cached is None or cached[1].look_again or cpu is None or cpu != cached[0]:
                ident = _read_identity(p, first=cached is None)
                self.identity_reads += 1
            else:
                ident = cached[1]
            self._identities[key] = (cpu, ident)
            out.append(
                _ProcInfo(
                    pid=key[0],
                    ppid=i.get("ppid"),
                    name=ident.name,
                    user=ident.user,
                    cmdline=ident.cmdline,
                    create_time=key[1],
                    cpu_seconds=cpu,
                )
            )
        return out

    def _own_pids(self, procs: list[_ProcInfo]) -> set[int]:
        """The agent and all its descendants (hooks it runs, say)."""
        children: dict[int, list[int]] = {}
        for p in procs:
            if p.ppid is not None:
                children.setdefault(p.ppid, []).append(p.pid)
        own, todo = {self._own_pid}, [self._own_pid]
        while todo:
            for c in children.get(todo.pop(), ()):
                if c not in own:
                    own.add(c)
                    todo.append(c)
        return own

    def _processes(self, procs: list[_ProcInfo] | None) -> tuple[Process, ...] | None:
        """Processes above ``min_cpu_percent`` of a core, busiest first.

        System processes are kept, marked ``system``, so the reducer can tell
        whose I/O it sees (package updates downloading are nobody's work); the
        agent itself and kernel threads are left out.

        A process already seen is measured over the interval. One born since (its
        pid absent from the previous list, or reused: pid + create_time) is
        measured over its lifetime, capped at the interval it lies within, since
        ``create_time`` is only good to about a second.
        """
        if procs is None:
            return None
        mono, now = self._mono(), self._time()
        prev = self._proc_prev
        self._proc_prev = _ProcState(mono, {p.pid: (p.create_time, p.cpu_seconds) for p in procs})
        if prev is None:
            raise _NoBaseline("processes measured from the next read")
        dt = mono - prev.mono
        busy: list[tuple[float, _ProcInfo]] = []
        for p in procs:
            if p.cpu_seconds is None:
                continue
            seen = prev.cpu.get(p.pid)
            if seen is not None and seen[0] == p.create_time:
                if seen[1] is None:  # its CPU time was unreadable last time: no start
                    continue
                pct = _rate(p.cpu_seconds, seen[1], dt) * 100
            elif p.create_time is not None and dt > 0:
                pct = p.cpu_seconds / min(max(now - p.create_time, _MIN_AGE_S), dt) * 100
            else:
                continue
            if pct > self.min_cpu_percent:
                busy.append((pct, p))
        if not busy:
            return ()
        own = self._own_pids(procs)
        busy = [(pct, p) for pct, p in busy if not _ours_or_kernel(p, own)]
        busy.sort(key=lambda b: (-b[0], b[1].pid))
        return tuple(
            Process(
                name=p.name or "?",
                user=p.user or "?",
                cpu_percent=pct,
                pid=p.pid,
                system=is_system(p.name, p.cmdline, p.pid, own, self.ignore, ppid=p.ppid),
            )
            for pct, p in busy[: self.top]
        )

    # -- machine-wide counters

    def _cpu(self) -> float:
        busy, total = _cpu_split(self._src.cpu_times())
        prev, self._cpu_prev = self._cpu_prev, (busy, total)
        if prev is None:
            raise _NoBaseline("CPU measured from the next read")
        d_busy, d_total = busy - prev[0], total - prev[1]
        if d_total <= 0 or d_busy <= 0:
            return 0.0
        return min(100.0, d_busy / d_total * 100)

    def _net(self) -> Rates:
        """Summed over every interface but loopback (a local copy moves no data off
        the machine). Bridges and container veths are kept: traffic to a container
        from outside shows twice, which only errs towards activity. An interface
        that appeared since the previous read counts from zero."""
        mono = self._mono()
        nics = {
            nic: (c.bytes_recv, c.bytes_sent)
            for nic, c in self._src.net_io_counters(pernic=True).items()
            if nic not in _LOOPBACK
        }
        prev, self._net_prev = self._net_prev, (mono, nics)
        if prev is None:
            raise _NoBaseline("network measured from the next read")
        dt = mono - prev[0]
        rx = tx = 0.0
        for nic, (r, t) in nics.items():
            r0, t0 = prev[1].get(nic, (0, 0))
            rx += _rate(r, r0, dt)
            tx += _rate(t, t0, dt)
        return Rates(rx, tx)

    def _disk(self) -> Rates:
        mono = self._mono()
        c = self._src.disk_io_counters(perdisk=False)
        if c is None:  # no disks in /proc/diskstats: some containers
            raise ProbeError("no disk counters on this machine")
        prev, self._disk_prev = self._disk_prev, (mono, (c.read_bytes, c.write_bytes))
        if prev is None:
            raise _NoBaseline("disk measured from the next read")
        dt = mono - prev[0]
        return Rates(_rate(c.read_bytes, prev[1][0], dt), _rate(c.write_bytes, prev[1][1], dt))
