"""Generate the project's own ``idle-trace/1`` activity traces, deterministically.

The format is described in the shared traces' README (``../shared/traces/README.md``
from the repository root); copies of the shared traces live in ``shared/``.

Run from the repository root::

    python tests/traces/make_traces.py

It (re)writes one ``<name>.jsonl`` per trace next to this script, never into
``shared/``. Every trace draws from its own ``random.Random(seed)``, so a rerun
writes byte-identical files. One sample per minute; ``tests/traces/README.md``
explains each shape and why its ``work`` labels are what they are.

Conventions, taken from the shared traces:

- baseline: net rx/tx 900/700 B/s, disk write 4096 B/s, machine CPU ~0.8 %;
- a sample at ``t`` covers ``[t, t + 60)``; ``ssh[].idle_seconds`` is measured at
  ``t``; kernel ``last_activity`` is the ``t`` of the last minute the kernel
  was busy (a busy kernel that prints progress is bumped every minute);
- only processes at 1 % of a core or more are listed;
- a person typing stays at work until 2 min after the last keystroke; a person
  running notebook cells stays at work for 5 minutes of reading after the
  last cell's output (as in the shared notebook-then-leave).
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "idle-trace/1"
SAMPLE_SECONDS = 60
IDLE_MINUTES = 30
BASE_RX = 900.0
BASE_TX = 700.0
BASE_WRITE = 4096.0
MB = 1_000_000.0
TYPING_GRACE_S = 120  # a person is still at work this long after a keystroke
SAMPLE_KEYS = (
    "t",
    "gpus",
    "cpu_percent",
    "processes",
    "kernels",
    "terminals",
    "ssh",
    "net_bytes_per_s",
    "disk_bytes_per_s",
    "work",
)


@dataclass(frozen=True)
class Instance:
    type: str
    price_per_hour: float
    vcpus: int
    gpus: int = 1
    lifecycle: str = "on-demand"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "lifecycle": self.lifecycle,
            "price_per_hour": self.price_per_hour,
            "gpus": self.gpus,
            "vcpus": self.vcpus,
        }


@dataclass(frozen=True)
class Proc:
    name: str
    user: str
    cpu: float  # percent of one core


@dataclass(frozen=True)
class Kern:
    id: str
    state: str
    last_activity: int
    connections: int


@dataclass(frozen=True)
class Tty:
    tty: str
    user: str
    idle_seconds: int


@dataclass
class Minute:
    """One sample under construction; ``render`` turns it into a trace line."""

    t: int
    work: bool = False
    gpu_util: int = 0
    gpu_mem: int = 0
    gpu_procs: int = 0
    procs: list[Proc] = field(default_factory=list)
    kernels: list[Kern] = field(default_factory=list)
    ssh: list[Tty] = field(default_factory=list)
    rx: float = BASE_RX
    tx: float = BASE_TX
    read: float = 0.0
    write: float = BASE_WRITE
    extra_cpu: float = 0.0  # machine CPU no listed process accounts for (softirq, workers)

    def hold_gpu(self, mem_mib: int) -> None:
        self.gpu_mem, self.gpu_procs = mem_mib, 1

    def render(self, rng: random.Random, vcpus: int) -> dict[str, Any]:
        listed = [p for p in self.procs if p.cpu >= 1.0]
        cpu = rng.uniform(0.6, 1.0) + self.extra_cpu
        cpu += sum(p.cpu for p in self.procs) / vcpus * rng.uniform(0.95, 1.05)
        return {
            "t": self.t,
            "gpus": [
                {"util": self.gpu_util, "mem_used_mib": self.gpu_mem, "procs": self.gpu_procs}
            ],
            "cpu_percent": round(min(cpu, 100.0), 2),
            "processes": [
                {"name": p.name, "user": p.user, "cpu_percent": round(p.cpu, 1)}
                for p in sorted(listed, key=lambda p: -p.cpu)
            ],
            "kernels": [
                {
                    "id": k.id,
                    "execution_state": k.state,
                    "last_activity": k.last_activity,
                    "connections": k.connections,
                }
                for k in self.kernels
            ],
            "terminals": [],
            "ssh": [
                {"tty": s.tty, "user": s.user, "idle_seconds": s.idle_seconds} for s in self.ssh
            ],
            "net_bytes_per_s": {"rx": float(round(self.rx)), "tx": float(round(self.tx))},
            "disk_bytes_per_s": {
                "read": float(round(self.read)),
                "write": float(round(self.write)),
            },
            "work": self.work,
        }


@dataclass
class Trace:
    name: str
    description: str
    instance: Instance
    minutes: list[Minute]

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "instance": self.instance.to_json(),
            "idle_minutes": IDLE_MINUTES,
            "sample_seconds": SAMPLE_SECONDS,
        }

    def lines(self, rng: random.Random) -> list[str]:
        rows = [self.header(), *(m.render(rng, self.instance.vcpus) for m in self.minutes)]
        return [json.dumps(row) for row in rows]


# --- building blocks ------------------------------------------------------------------


def timeline(hours: float) -> list[Minute]:
    return [Minute(t=i * SAMPLE_SECONDS) for i in range(round(hours * 60))]


def label(minutes: list[Minute], first: int, stop: int) -> None:
    """Mark minutes ``first`` .. ``stop - 1`` as work."""
    for m in minutes[first:stop]:
        m.work = True


def keystrokes(rng: random.Random, start_s: int, end_s: int, max_pause_s: int = 170) -> list[int]:
    """Input times (trace seconds) of a person typing from ``start_s``; the last one is ``end_s``.

    Mostly bursts seconds apart, sometimes a pause of a minute or two (reading,
    thinking), never longer than ``max_pause_s``.
    """
    keys: list[int] = []
    s = start_s
    while s < end_s:
        keys.append(s)
        r = rng.random()
        if r < 0.6:
            s += rng.randint(1, 30)
        elif r < 0.92:
            s += rng.randint(30, 90)
        else:
            s += rng.randint(90, max_pause_s)
    keys.append(end_s)
    return keys


def idle_seconds(keys: list[int], t: int, connected_at: int) -> int:
    """Seconds since the last input at ``t`` (since the login if none yet)."""
    i = bisect.bisect_right(keys, t)
    return t - (keys[i - 1] if i else connected_at)


def ssh_session(
    minutes: list[Minute],
    keys: list[int],
    *,
    tty: str,
    user: str,
    connected_at: int,
    logout_at: int | None = None,
) -> None:
    """List the tty in every sample that starts while the session is open."""
    for m in minutes:
        if m.t >= connected_at and (logout_at is None or m.t < logout_at):
            m.ssh.append(Tty(tty, user, idle_seconds(keys, m.t, connected_at)))


def notebook_cells(rng: random.Random, first: int, last: int) -> set[int]:
    """Busy minutes of a person running cells from minute ``first``; the final one is ``last``.

    Cells last 1-4 min, with 1-8 min of reading/editing between them.
    """
    busy: set[int] = set()
    m = first
    while True:
        length = rng.choice((1, 1, 1, 2, 2, 3, 4))
        if m + length + 1 >= last:
            break
        busy.update(range(m, m + length))
        m += length + rng.choice((1, 1, 2, 2, 3, 3, 4, 5, 6, 8))
    final = rng.choice((1, 1, 2, 3))
    busy.update(range(max(first, last - final + 1), last + 1))
    return busy


def notebook(
    minutes: list[Minute],
    rng: random.Random,
    *,
    kernel_id: str,
    user: str,
    opened: int,
    busy: set[int],
    gpu_mem: int,
) -> None:
    """A kernel started at minute ``opened`` with a tab connected to the end.

    While a cell runs: kernel busy with ``last_activity`` bumped every minute,
    the GPU in bursts, ``python`` at ~100 % of a core. Between cells and after
    the last one: idle, ``last_activity`` at the last busy minute, GPU memory
    kept by the kernel once it has used the GPU.
    """
    last_activity = minutes[opened].t
    used_gpu = False
    for i in range(opened, len(minutes)):
        m = minutes[i]
        state = "idle"
        if i in busy:
            state, last_activity, used_gpu = "busy", m.t, True
            m.gpu_util = rng.randint(50, 99)
            m.procs.append(Proc("python", user, rng.uniform(97.0, 100.0)))
        if used_gpu:
            m.hold_gpu(gpu_mem)
        m.kernels.append(Kern(kernel_id, state, last_activity, 1))


def thinking_pause(rng: random.Random) -> int:
    """Minutes a person keeps reading after a cell's last output: 5, as in the shared
    notebook-then-leave trace (work until 5 min after the last busy minute)."""
    return 5


def transfer(
    minutes: list[Minute],
    rng: random.Random,
    start_s: int,
    end_s: int,
    *,
    low: float,
    high: float,
) -> list[tuple[Minute, float]]:
    """Spread a transfer at ``low``-``high`` B/s over [start_s, end_s); returns (minute, share)."""
    touched: list[tuple[Minute, float]] = []
    for m in minutes:
        overlap = min(end_s, m.t + SAMPLE_SECONDS) - max(start_s, m.t)
        if overlap <= 0:
            continue
        share = overlap / SAMPLE_SECONDS
        m.rx = BASE_RX + rng.uniform(low, high) * share
        m.tx = BASE_TX + (m.rx - BASE_RX) * rng.uniform(0.01, 0.02)
        touched.append((m, share))
    return touched


# --- the traces -----------------------------------------------------------------------


def stuck_busy_kernel(rng: random.Random) -> Trace:
    minutes = timeline(10)
    hang = 60  # first minute of the hang
    for i, m in enumerate(minutes):
        m.hold_gpu(18400)
        if i < hang:  # training, progress printed every minute
            m.gpu_util = rng.randint(80, 99)
            m.procs.append(Proc("python", "ubuntu", rng.uniform(96.0, 100.0)))
            m.extra_cpu = rng.uniform(0.0, 3.0)
            m.kernels.append(Kern("k1", "busy", m.t, 1))
        else:  # dead dataloader: busy flag, frozen messages, nothing computing
            m.kernels.append(Kern("k1", "busy", (hang - 1) * SAMPLE_SECONDS, 1))
    label(minutes, 0, hang)
    return Trace(
        "stuck-busy-kernel",
        "A notebook cell trains for 1 h, then hangs on a dead dataloader: the kernel stays "
        "busy with the tab open for 9 h while nothing computes.",
        Instance("g5.xlarge", 1.006, vcpus=4),
        minutes,
    )


def io_pause_training(rng: random.Random) -> Trace:
    minutes = timeline(8)
    login_end = 3  # ssh for the first 3 min, job from minute 3
    job_end = 300
    logout_s = rng.randint(150, 178)
    keys = keystrokes(rng, rng.randint(0, 5), logout_s - rng.randint(1, 5))
    ssh_session(minutes, keys, tty="pts/0", user="ubuntu", connected_at=0, logout_at=logout_s)
    # Training segments of ~45 min, each followed by an 8-12 min shard download.
    pauses: list[tuple[int, int]] = []
    m = login_end
    while True:
        train = rng.randint(40, 50)
        pause = rng.randint(8, 12)
        if m + train + pause + 10 > job_end:
            break
        pauses.append((m + train, m + train + pause))
        m += train + pause
    in_pause = {i for a, b in pauses for i in range(a, b)}
    for i in range(login_end, job_end):
        mm = minutes[i]
        mm.hold_gpu(14800)
        if i in in_pause:
            mm.procs.append(Proc("python3", "ubuntu", rng.uniform(2.0, 4.0)))
            mm.extra_cpu = rng.uniform(1.0, 3.0)  # softirq of a fast download
        else:
            mm.gpu_util = rng.randint(85, 100)
            mm.procs.append(Proc("python3", "ubuntu", rng.uniform(98.0, 100.0)))
            mm.extra_cpu = rng.uniform(11.0, 15.0)  # dataloader threads, driver
            mm.write = rng.uniform(80_000, 120_000)  # logs, metrics
            if i + 1 in in_pause or i + 1 == job_end:  # checkpoint before a download / at exit
                mm.write = rng.uniform(15 * MB, 35 * MB)
    for a, b in pauses:  # the shard is streamed into memory: only the network shows it
        transfer(minutes, rng, a * SAMPLE_SECONDS, b * SAMPLE_SECONDS, low=20 * MB, high=60 * MB)
    label(minutes, 0, job_end)
    return Trace(
        "io-pause-training",
        "A nohup training job (SSH closed after 3 min) pauses 8-12 min every ~45 min to "
        "download its next shard (GPU idle, net busy); it exits after 5 h.",
        Instance("p3.2xlarge", 3.06, vcpus=8),
        minutes,
    )


def tmux_terminal(rng: random.Random) -> Trace:
    minutes = timeline(6)
    logout_s = 150 * SAMPLE_SECONDS - rng.randint(5, 50)
    # Compiles: a few minutes of cc1plus while the person waits.
    compiles: list[tuple[int, int]] = []
    s = rng.randint(12, 25) * SAMPLE_SECONDS
    while s < logout_s - 15 * SAMPLE_SECONDS:
        length = rng.randint(2, 5) * SAMPLE_SECONDS
        compiles.append((s + rng.randint(0, 40), s + length))
        s += length + rng.randint(15, 35) * SAMPLE_SECONDS
    keys: list[int] = []
    start = 0
    for a, b in [*compiles, (logout_s, logout_s)]:
        keys += keystrokes(rng, start, a)  # the last key starts the build (or logs out)
        start = b + rng.randint(5, 40)  # back to the keyboard once it is built
    ssh_session(minutes, keys, tty="pts/0", user="ubuntu", connected_at=0, logout_at=logout_s)
    for m in minutes:
        for a, b in compiles:
            overlap = min(b, m.t + SAMPLE_SECONDS) - max(a, m.t)
            if overlap > 0:
                share = overlap / SAMPLE_SECONDS
                m.procs.append(Proc("cc1plus", "ubuntu", rng.uniform(140.0, 160.0) * share))
                m.procs.append(Proc("make", "ubuntu", rng.uniform(1.0, 2.0) * share))
                m.read = rng.uniform(100_000, 600_000) * share
                m.write = BASE_WRITE + rng.uniform(100_000, 500_000) * share
    label(minutes, 0, logout_s // SAMPLE_SECONDS + 1)
    return Trace(
        "tmux-terminal",
        "A person works in tmux over SSH for 2.5 h (typing, occasional compiles), then "
        "detaches and logs out; the tmux server stays at 0 % CPU.",
        Instance("g4dn.xlarge", 0.526, vcpus=4),
        minutes,
    )


def two_users(rng: random.Random) -> Trace:
    minutes = timeline(8)
    # alice: edits over ssh for the first hour, then leaves the session open.
    alice_last = 60 * SAMPLE_SECONDS - rng.randint(10, 90)
    alice_keys = keystrokes(rng, rng.randint(0, 10), alice_last)
    ssh_session(minutes, alice_keys, tty="pts/0", user="alice", connected_at=0)
    # bob: notebook cells with GPU bursts from 0:30 to 3:30, then the tab stays open.
    opened = rng.randint(28, 30)
    last_cell = 210
    busy = notebook_cells(rng, rng.randint(30, 32), last_cell)
    notebook(minutes, rng, kernel_id="k1", user="bob", opened=opened, busy=busy, gpu_mem=11200)
    alice_stop = -(-(alice_last + TYPING_GRACE_S) // SAMPLE_SECONDS)  # first t >= key + grace
    bob_stop = last_cell + 1 + thinking_pause(rng)
    label(minutes, 0, alice_stop)
    label(minutes, opened, bob_stop)
    return Trace(
        "two-users",
        "alice edits over SSH for 1 h then leaves her session open; bob runs notebook cells "
        "from 0:30 to 3:30 then leaves his tab open.",
        Instance("g5.2xlarge", 1.212, vcpus=8),
        minutes,
    )


def boot_never_touched(rng: random.Random) -> Trace:
    minutes = timeline(4)
    for m in minutes[0:3]:  # cloud-init: host keys, users, first-boot reads from the snapshot
        m.procs.append(Proc("cloud-init", "root", rng.uniform(55.0, 65.0)))
        m.read = rng.uniform(2 * MB, 8 * MB)
        m.write = rng.uniform(200_000, 900_000)
    for i, m in enumerate(minutes[5:20]):  # unattended-upgrades: fetch, unpack, install
        m.procs.append(Proc("unattended-upgr", "root", rng.uniform(85.0, 95.0)))
        m.write = rng.uniform(7 * MB, 9 * MB)
        m.read = rng.uniform(200_000, 600_000)
        m.extra_cpu = rng.uniform(2.0, 5.0)  # iowait, dpkg triggers
        if i < 2:
            m.rx = rng.uniform(3 * MB, 12 * MB)
            m.tx = rng.uniform(20_000, 60_000)
    for m in minutes[20:]:  # the agent checking in now and then
        if rng.random() < 0.05:
            m.procs.append(Proc("amazon-ssm-agent", "root", rng.uniform(1.0, 3.0)))
    return Trace(
        "boot-never-touched",
        "An instance launched and never used: cloud-init and unattended-upgrades at boot "
        "(high disk writes for 15 min), then nothing for 4 h.",
        Instance("g6.xlarge", 0.8048, vcpus=4),
        minutes,
    )


def dataset_download(rng: random.Random) -> Trace:
    minutes = timeline(5)
    started = rng.randint(100, 170)  # `aws s3 sync` launched (nohup) at this second
    logout_s = started + rng.randint(20, 90)
    done = started + 2 * 3600
    keys = keystrokes(rng, rng.randint(0, 5), logout_s - rng.randint(1, 3))
    ssh_session(minutes, keys, tty="pts/0", user="ubuntu", connected_at=0, logout_at=logout_s)
    for m, share in transfer(minutes, rng, started, done, low=40 * MB, high=80 * MB):
        m.write = BASE_WRITE + (m.rx - BASE_RX) * rng.uniform(0.95, 1.05)
        m.procs.append(Proc("aws", "ubuntu", rng.uniform(2.0, 4.0) * share))
        m.extra_cpu = rng.uniform(1.5, 3.5) * share  # softirq, page cache writeback
    label(minutes, 0, (done - 1) // SAMPLE_SECONDS + 1)
    return Trace(
        "dataset-download",
        "A person starts `aws s3 sync` over SSH and logs out; 2 h of download at 40-80 MB/s "
        "with little CPU, then nothing.",
        Instance("g5.xlarge", 1.006, vcpus=4),
        minutes,
    )


def ssh_port_forward(rng: random.Random) -> Trace:
    minutes = timeline(6)
    connected = rng.randint(5, 40)  # the forward was opened just before the trace starts
    for m in minutes:  # no terminal: idle_seconds only says when the session began
        m.ssh.append(Tty("notty", "ubuntu", m.t + connected))
    last_cell = 40
    busy = notebook_cells(rng, rng.randint(1, 3), last_cell)
    notebook(minutes, rng, kernel_id="k1", user="ubuntu", opened=0, busy=busy, gpu_mem=6100)
    label(minutes, 0, last_cell + 1 + thinking_pause(rng))
    return Trace(
        "ssh-port-forward",
        "40 min of notebook work through an SSH port forward (no tty), then the forward and "
        "the tab stay open for 5 h.",
        Instance("g4dn.xlarge", 0.526, vcpus=4),
        minutes,
    )


GENERATORS: dict[str, tuple[int, Callable[[random.Random], Trace]]] = {
    "stuck-busy-kernel": (101, stuck_busy_kernel),
    "io-pause-training": (102, io_pause_training),
    "tmux-terminal": (103, tmux_terminal),
    "two-users": (104, two_users),
    "boot-never-touched": (105, boot_never_touched),
    "dataset-download": (106, dataset_download),
    "ssh-port-forward": (107, ssh_port_forward),
}


# --- checks and output ----------------------------------------------------------------


def check(name: str, lines: list[str]) -> list[dict[str, Any]]:
    """The invariants every trace must keep; returns the parsed samples."""
    header = json.loads(lines[0])
    assert header["format"] == FORMAT and header["name"] == name, header
    samples = [json.loads(line) for line in lines[1:]]
    for i, sample in enumerate(samples):
        assert tuple(sample) == SAMPLE_KEYS, (name, i, tuple(sample))
        assert sample["t"] == i * SAMPLE_SECONDS, (name, i, sample["t"])
        assert isinstance(sample["work"], bool), (name, i)
        for kernel in sample["kernels"]:
            assert kernel["last_activity"] <= sample["t"], (name, i, kernel)
    return samples


def clock(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}"


def summary(name: str, samples: Iterable[dict[str, Any]]) -> str:
    rows = list(samples)
    worked = [s["t"] for s in rows if s["work"]]
    total_h = len(rows) * SAMPLE_SECONDS / 3600
    work_h = len(worked) * SAMPLE_SECONDS / 3600
    last = f"t={worked[-1]} ({clock(worked[-1])})" if worked else "none"
    return f"{name:20} {total_h:5.2f} h total  {work_h:5.2f} h work  last work sample {last}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="directory to write the .jsonl files into (default: next to this script)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, (seed, make) in GENERATORS.items():
        rng = random.Random(seed)
        trace = make(rng)
        assert trace.name == name, (trace.name, name)
        lines = trace.lines(rng)
        samples = check(name, lines)
        (out / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(summary(name, samples))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
