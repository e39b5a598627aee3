"""What the agent's probes read at one moment: the input of the reducer.

Field for field this mirrors a line of an ``idle-trace/1`` file (see
``../shared/traces/README.md``), with trace seconds replaced by aware UTC
datetimes. A signal that could not be read is ``None`` (unknown), which is
different from an empty tuple (read fine, nothing there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class ProbeError(Exception):
    """A probe could not read its signal; the sample records it as unknown."""


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    util: float | None  # highest SM utilisation (%) seen over the interval; None: not supported
    mem_used_mib: float | None = None  # reported, never counted as activity
    procs: int = 0  # compute processes holding the GPU
    pids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Kernel:
    id: str
    execution_state: str  # starting | idle | busy | dead | ...
    last_activity: datetime | None
    connections: int = 0
    server: str = ""  # the Jupyter server's URL, when several run


@dataclass(frozen=True, slots=True)
class Terminal:
    name: str
    last_activity: datetime | None
    server: str = ""


@dataclass(frozen=True, slots=True)
class Tty:
    tty: str  # "pts/0"; "notty" for a session without a terminal
    user: str
    idle_seconds: float  # since the last input on that terminal


@dataclass(frozen=True, slots=True)
class Process:
    name: str
    user: str
    cpu_percent: float  # of one core, over the interval (may exceed 100)
    pid: int = 0
    system: bool = False  # the machine's own (updates, cloud agents): never a person's work


@dataclass(frozen=True, slots=True)
class Rates:
    """Bytes per second over the interval: (rx, tx) for the network, (read, write) for disks."""

    a: float
    b: float

    @property
    def total(self) -> float:
        return self.a + self.b


@dataclass(frozen=True, slots=True)
class Sample:
    at: datetime  # the end of the interval the sample covers
    gpus: tuple[Gpu, ...] | None = ()
    kernels: tuple[Kernel, ...] | None = ()
    terminals: tuple[Terminal, ...] | None = ()
    ssh: tuple[Tty, ...] | None = ()
    processes: tuple[Process, ...] | None = ()
    cpu_percent: float | None = 0.0  # whole machine, 0-100
    net: Rates | None = Rates(0.0, 0.0)
    disk: Rates | None = Rates(0.0, 0.0)
