"""The system probe: replayed psutil readings for the arithmetic, real peers for the rest.

Like psutil's own tests, the fake source replays what psutil would return (the same
field names, ``process_iter`` objects carrying ``.info``) rather than patching the
probe; the clock is injected, so every rate is exact. Where a real peer is cheap
(a busy process, an idle one, a file written to disk, a loopback transfer, this
machine's logins) the test uses it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest
from structlog.testing import capture_logs

from watchdog.agent.probes.system import ProcFs, SystemProbe, SystemReading
from watchdog.core.processes import is_system
from watchdog.core.sample import Process, Rates, Tty

MIB = 1024 * 1024
T0 = 1_700_000_000.0  # wall clock at the baseline


# --- a replayed psutil --------------------------------------------------------


class User(NamedTuple):
    name: str
    terminal: str | None
    host: str | None
    started: float
    pid: int


class NetIO(NamedTuple):
    bytes_sent: int
    bytes_recv: int


class DiskIO(NamedTuple):
    read_bytes: int
    write_bytes: int


class CpuTimes(NamedTuple):
    user: float
    system: float
    idle: float
    iowait: float = 0.0
    guest: float = 0.0


class PCpuTimes(NamedTuple):
    user: float
    system: float


class Proc:
    """What ``psutil.process_iter(attrs)`` yields: ``.info`` with the attrs asked for, and
    the other fields on demand (counted in ``reads``; None stands for AccessDenied)."""

    def __init__(self, full: dict[str, Any], attrs: list[str], reads: list[int]) -> None:
        self.info = {k: full[k] for k in attrs}
        self._full, self._reads = full, reads

    def _get(self, key: str) -> Any:
        self._reads.append(self._full["pid"])
        if self._full[key] is None:
            raise psutil.AccessDenied(self._full["pid"])
        return self._full[key]

    def name(self) -> str:
        return str(self._get("name"))

    def username(self) -> str:
        return str(self._get("username"))

    def cmdline(self) -> list[str]:
        return list(self._get("cmdline"))


def proc(
    pid: int,
    name: str,
    cmdline: Sequence[str] | None,
    cpu: float | None,
    *,
    user: str = "alice",
    ppid: int = 1,
    created: float = T0 - 3600,
) -> dict[str, Any]:
    return {
        "pid": pid,
        "ppid": ppid,
        "name": name,
        "username": user,
        "cmdline": None if cmdline is None else list(cmdline),
        "create_time": created,
        "cpu_times": None if cpu is None else PCpuTimes(cpu * 0.75, cpu * 0.25),
    }


@dataclass
class FakePsutil:
    """psutil's answers, set by the test between reads; an exception in ``fail`` is raised."""

    users_: list[User] = field(default_factory=list)
    procs: list[dict[str, Any]] = field(default_factory=list)
    cpu: CpuTimes = field(default_factory=lambda: CpuTimes(0.0, 0.0, 0.0))
    nics: dict[str, NetIO] = field(default_factory=lambda: {"lo": NetIO(0, 0)})
    disk: DiskIO | None = field(default_factory=lambda: DiskIO(0, 0))
    fail: dict[str, Exception] = field(default_factory=dict)
    reads: list[int] = field(default_factory=list)  # pid per expensive field read

    def _check(self, what: str) -> None:
        if what in self.fail:
            raise self.fail[what]

    def users(self) -> list[User]:
        self._check("users")
        return list(self.users_)

    def process_iter(self, attrs: list[str]) -> Iterator[Proc]:
        self._check("process_iter")
        for info in self.procs:
            yield Proc(info, attrs, self.reads)

    def cpu_times(self) -> CpuTimes:
        self._check("cpu_times")
        return self.cpu

    def net_io_counters(self, pernic: bool) -> dict[str, NetIO]:
        assert pernic
        self._check("net_io_counters")
        return dict(self.nics)

    def disk_io_counters(self, perdisk: bool) -> DiskIO | None:
        assert not perdisk
        self._check("disk_io_counters")
        return self.disk


@dataclass
class FakeClock:
    mono: float = 1000.0
    wall: float = T0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def fake() -> FakePsutil:
    return FakePsutil()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_probe(
    fake: FakePsutil, clock: FakeClock, dev: Path | None = None, **kw: Any
) -> SystemProbe:
    return SystemProbe(
        source=fake,
        monotonic=clock.monotonic,
        time=clock.time,
        dev_root=dev or Path("/nonexistent"),
        own_pid=kw.pop("own_pid", 500),
        **kw,
    )


def work(procs: Sequence[Process] | None) -> list[Process] | None:
    """The processes that may be a person's work (not marked as the machine's own)."""
    return None if procs is None else [p for p in procs if not p.system]


def table(procs: Sequence[Process] | None) -> list[tuple[str, str, float, int]] | None:
    """Processes as rows, CPU rounded: float noise is not the subject of these tests."""
    return (
        None if procs is None else [(p.name, p.user, round(p.cpu_percent, 6), p.pid) for p in procs]
    )


def sessions(ttys: Sequence[Tty] | None) -> list[tuple[str, str, float]] | None:
    return None if ttys is None else [(t.tty, t.user, round(t.idle_seconds, 3)) for t in ttys]


# --- is_system ----------------------------------------------------------------

SYSTEM = [
    ("kthreadd", [], 2, None),
    ("kworker/0:1-events", [], 57, 2),
    ("odd-kthread", ["x"], 58, 2),
    ("systemd", ["/lib/systemd/systemd", "--user"], 900, None),
    ("systemd-journal", ["/lib/systemd/systemd-journald"], 300, None),
    ("sshd", ["sshd:", "alice@pts/0"], 901, None),
    ("sshd", ["sshd: alice [priv]"], 902, None),
    ("sshd-session", ["sshd-session:", "alice@notty"], 903, None),
    ("sshd", None, 904, None),  # cmdline unreadable: the name still tells
    ("unattended-upgr", ["/usr/bin/python3", "/usr/bin/unattended-upgrade", "-d"], 905, None),
    ("amazon-ssm-agen", ["/usr/bin/amazon-ssm-agent"], 906, None),
    ("ssm-session-wor", ["/usr/bin/ssm-session-worker", "s-1"], 907, None),
    ("http", ["/usr/lib/apt/methods/http"], 908, None),
    ("sh", ["/bin/sh", "/usr/lib/apt/apt.systemd.daily", "update"], 909, None),
    ("apt-get", ["apt-get", "-qq", "update"], 910, None),
    ("google_guest_ag", ["/usr/bin/google_guest_agent"], 911, None),
    ("cloud-init", ["/usr/bin/python3", "/usr/bin/cloud-init", "modules"], 912, None),
    ("dockerd", ["/usr/bin/dockerd", "-H", "fd://"], 913, None),
    ("nvidia-persiste", ["/usr/bin/nvidia-persistenced", "--user", "nvidia"], 914, None),
    ("jupyter-lab", ["/usr/bin/python3", "/usr/local/bin/jupyter-lab", "--no-browser"], 915, None),
    ("python3", ["python3", "-m", "jupyter_server", "--port", "8888"], 916, None),
    ("python3", ["python3", "-m", "jupyterlab"], 917, None),
    ("idle-watchdog", ["/opt/iw/bin/python", "/opt/iw/bin/idle-watchdog", "agent"], 918, None),
    ("python", ["python", "-u", "-m", "watchdog", "agent"], 919, None),
    ("python", ["python", "-um", "watchdog"], 920, None),
    ("python3.11", ["/usr/bin/python3.11", "-W", "ignore", "-X", "dev", "-m", "watchdog"], 921, 1),
    ("python3", ["python3", "-Wignore", "-mwatchdog"], 922, None),
]

USER = [
    ("python3", ["python3", "-m", "ipykernel_launcher", "-f", "/k.json"], 1000),
    ("python3", ["python3", "train.py", "--epochs", "3"], 1001),
    ("python", ["python", "train.py"], 1),  # pid 1 in a container is user work too
    ("python3", ["python3", "-c", "import watchdog; spin()"], 1002),
    ("python3", ["python3", "-m", "watchdog.watchmedo", "log"], 1003),  # the other watchdog
    ("python3", ["python3", "-m", "torch.distributed.run", "train.py"], 1004),
    ("python3", None, 1005),
    ("bash", ["bash", "-c", "apt-get update"], 1006),  # the shell; apt-get is its own process
    ("bash", ["bash", "train.sh"], 1007),
    ("google-chrome", ["/opt/google/chrome/chrome"], 1008),
    ("wget", ["wget", "https://example.com/dataset.tar"], 1009),
    ("rsync", ["rsync", "-a", "src/", "dst/"], 1010),
]


@pytest.mark.parametrize(("name", "cmdline", "pid", "ppid"), SYSTEM)
def test_system_processes_are_recognised(
    name: str, cmdline: list[str] | None, pid: int, ppid: int | None
) -> None:
    assert is_system(name, cmdline, pid, {500}, (), ppid=ppid)


@pytest.mark.parametrize(("name", "cmdline", "pid"), USER)
def test_user_work_is_not_system(name: str, cmdline: list[str] | None, pid: int) -> None:
    assert not is_system(name, cmdline, pid, {500}, (), ppid=1)


def test_own_pids_are_system() -> None:
    assert is_system("python3", ["python3", "train.py"], 501, {500, 501}, ())


@pytest.mark.parametrize(
    ("ignore", "cmdline"),
    [
        (["trainer*"], ["./trainer-v2", "--fast"]),  # argv[0]'s basename
        (["/opt/backup/*"], ["/opt/backup/run", "nightly"]),  # a path pattern
        (["nightly_sync"], ["python3", "-m", "nightly_sync"]),  # a module
        (["sync"], ["python3", "/srv/sync.py"]),  # a script, .py dropped
    ],
)
def test_ignore_extends_the_list(ignore: list[str], cmdline: list[str]) -> None:
    name = Path(cmdline[0]).name
    assert not is_system(name, cmdline, 1200, set(), ())
    assert is_system(name, cmdline, 1200, set(), ignore)


# --- rates and CPU, replayed -------------------------------------------------------


def test_first_read_covers_the_interval_since_construction(
    fake: FakePsutil, clock: FakeClock
) -> None:
    fake.nics = {"lo": NetIO(0, 0), "eth0": NetIO(500, 1000)}
    fake.disk = DiskIO(0, 0)
    fake.cpu = CpuTimes(user=10, system=5, idle=85)
    probe = make_probe(fake, clock)

    clock.advance(10)
    fake.nics = {"lo": NetIO(10**9, 10**9), "eth0": NetIO(2500, 11000)}  # loopback ignored
    fake.disk = DiskIO(4096, 81920)
    # 30 s busy (user includes 10 s of guest, not counted twice), 30 s idle, 10 s iowait
    fake.cpu = CpuTimes(user=40, system=5, idle=115, iowait=10, guest=10)
    r = probe.read()

    assert r.net == Rates(1000.0, 200.0)  # rx, tx
    assert r.disk == Rates(409.6, 8192.0)  # read, write
    assert r.cpu_percent == pytest.approx(30 / 70 * 100)

    clock.advance(5)
    fake.nics = {"lo": NetIO(0, 0), "eth0": NetIO(2500, 11000)}
    r = probe.read()
    assert r.net == Rates(0.0, 0.0)
    assert r.disk == Rates(0.0, 0.0)
    assert r.cpu_percent == 0.0


def test_counters_going_backwards_count_as_no_transfer(fake: FakePsutil, clock: FakeClock) -> None:
    fake.nics = {"eth0": NetIO(10_000, 10_000), "veth1": NetIO(5_000, 5_000)}
    fake.disk = DiskIO(10_000, 10_000)
    probe = make_probe(fake, clock)

    clock.advance(10)
    # eth0 reset (driver reload), veth1 gone, docker0 new (counts from zero)
    fake.nics = {"eth0": NetIO(1_000, 12_000), "docker0": NetIO(500, 300)}
    fake.disk = DiskIO(5_000, 20_000)  # read wrapped, write grew
    r = probe.read()

    assert r.net == Rates((2_000 + 300) / 10, (0 + 500) / 10)
    assert r.disk == Rates(0.0, 1000.0)


def test_a_part_that_fails_is_unknown_and_the_others_still_read(
    fake: FakePsutil, clock: FakeClock
) -> None:
    probe = make_probe(fake, clock)
    fake.fail["disk_io_counters"] = PermissionError(13, "Permission denied")
    fake.fail["users"] = psutil.AccessDenied(pid=None, msg="utmp")
    clock.advance(10)
    with capture_logs() as logs:
        r = probe.read()
        probe.read()  # the same failure again: no second warning

    assert r.disk is None
    assert r.ssh is None
    assert r.net == Rates(0.0, 0.0)
    assert r.cpu_percent == 0.0
    assert r.processes == ()
    warned = [(e["part"], e["error"]) for e in logs if e["log_level"] == "warning"]
    assert warned == [
        ("ssh", "AccessDenied: utmp"),
        ("disk", "PermissionError: [Errno 13] Permission denied"),
    ]


def test_a_part_without_a_baseline_stays_unknown_one_more_read(
    fake: FakePsutil, clock: FakeClock
) -> None:
    """A rate needs a start: after the part comes back it has one only from then on."""
    fake.disk = None  # no disks, as in some containers
    probe = make_probe(fake, clock)
    clock.advance(10)
    assert probe.read().disk is None

    fake.disk = DiskIO(1000, 1000)
    clock.advance(10)
    with capture_logs() as logs:
        assert probe.read().disk is None  # the new baseline
    assert not [e for e in logs if e["log_level"] == "warning"]

    fake.disk = DiskIO(2000, 1000)
    clock.advance(10)
    with capture_logs() as logs:
        assert probe.read().disk == Rates(100.0, 0.0)
    assert [e["part"] for e in logs if e["log_level"] == "info"] == ["disk"]


def test_unreadable_process_list_makes_processes_and_ssh_unknown(
    fake: FakePsutil, clock: FakeClock
) -> None:
    probe = make_probe(fake, clock)
    fake.fail["process_iter"] = psutil.Error("boom")
    clock.advance(10)
    r = probe.read()
    assert r.processes is None
    assert r.ssh is None  # sshd's notty sessions are found in the process list
    assert r.net is not None and r.disk is not None and r.cpu_percent is not None


# --- processes, replayed --------------------------------------------------------


def test_names_users_and_command_lines_are_read_only_for_new_or_busy_processes(
    fake: FakePsutil, clock: FakeClock
) -> None:
    """400 idle processes cost one cheap read each per sample, not four reads and a user
    lookup: their identities are kept from the first sight (and a second look)."""
    idle = [proc(1000 + n, "sleep", ["sleep", "inf"], 1.0) for n in range(400)]
    notty = proc(90, "sshd", ["sshd: alice@notty"], 2.0, user="alice", created=T0 - 50)
    fake.procs = [*idle, notty, proc(100, "python3", ["python3", "train.py"], 10.0)]
    probe = make_probe(fake, clock)
    assert len(set(fake.reads)) == 402  # the baseline: everything is new
    clock.advance(10)
    probe.read()  # the second look at processes first seen at the baseline
    fake.reads.clear()

    clock.advance(10)
    fake.procs[-1] = proc(100, "python3", ["python3", "train.py"], 18.0)  # 80 % of a core
    fake.procs.append(proc(105, "make", ["make"], 2.0, user="bob", created=clock.wall - 4))
    r = probe.read()
    assert set(fake.reads) == {100, 105}  # the busy one and the new one, nothing idle
    assert [(p.name, p.user, p.pid) for p in work(r.processes) or ()] == [
        ("python3", "alice", 100),
        ("make", "bob", 105),
    ]
    assert ("notty", "alice") in {(t.tty, t.user) for t in r.ssh or ()}  # kept from before

    fake.reads.clear()
    clock.advance(10)
    fake.procs[-2] = proc(100, "python3", ["python3", "train.py"], 18.0)  # idle again
    probe.read()
    assert set(fake.reads) == {105}  # its second look; the now idle 100 is not read
    fake.reads.clear()
    clock.advance(10)
    # pid 1000 reused by a new process: read, never taken for the old "sleep"
    fake.procs[0] = proc(1000, "cc1", ["cc1"], 0.0, user="bob", created=clock.wall - 1)
    probe.read()
    assert set(fake.reads) == {1000}


def test_a_process_that_renamed_itself_just_after_first_sight_is_seen_renamed(
    fake: FakePsutil, clock: FakeClock
) -> None:
    """sshd forks, is listed, then renames its child "user@notty" with no CPU to show."""
    fake.procs = [proc(90, "sshd", ["sshd: alice [priv]"], 0.0, user="root")]
    probe = make_probe(fake, clock)
    fake.procs = [proc(90, "sshd", ["sshd: alice@notty"], 0.0, user="alice")]
    clock.advance(10)
    r = probe.read()
    assert ("notty", "alice") in {(t.tty, t.user) for t in r.ssh or ()}


def test_busy_user_processes_over_the_interval(fake: FakePsutil, clock: FakeClock) -> None:
    fake.procs = [
        proc(100, "python3", ["python3", "train.py"], 10.0),
        proc(101, "sleep", ["sleep", "30"], 0.0),
        proc(102, "kworker/0:1", [], 0.0, user="root", ppid=2),
        proc(103, "systemd-journal", ["/lib/systemd/systemd-journald"], 1.0, user="root"),
        proc(500, "python3", ["python3", "-m", "watchdog", "agent"], 1.0, user="root"),
        proc(501, "bash", ["bash", "/etc/hooks/before-stop"], 0.0, user="root", ppid=500),
        proc(502, "gzip", ["gzip", "-9"], 0.0, user="root", ppid=501),  # the agent's grandchild
        proc(106, "postgres", ["postgres"], 100.0, user="postgres", created=T0 - 9000),
        proc(107, "tail", ["tail", "-f", "log"], 0.0),
        proc(108, "secret", ["secret"], None, user="root"),  # cpu_times denied
    ]
    probe = make_probe(fake, clock)

    clock.advance(10)
    fake.procs = [
        proc(100, "python3", ["python3", "train.py"], 18.0),  # 80 % of a core
        proc(101, "sleep", ["sleep", "30"], 0.0),
        proc(102, "kworker/0:1", [], 5.0, user="root", ppid=2),
        proc(103, "systemd-journal", ["/lib/systemd/systemd-journald"], 4.0, user="root"),
        proc(500, "python3", ["python3", "-m", "watchdog", "agent"], 3.0, user="root"),
        proc(501, "bash", ["bash", "/etc/hooks/before-stop"], 9.0, user="root", ppid=500),
        proc(502, "gzip", ["gzip", "-9"], 9.0, user="root", ppid=501),
        # born 4 s ago, inside the interval: 2 s of CPU over its 4 s life is 50 %
        proc(105, "make", ["make", "-j2"], 2.0, user="bob", created=clock.wall - 4),
        # pid 106 reused by a new process: measured over its life, not against the old one
        proc(106, "cc1", ["cc1"], 1.2, user="bob", created=clock.wall - 2),
        # new too, though create_time (good to ~1 s) puts its birth before the interval
        proc(109, "ffmpeg", ["ffmpeg", "-i", "a"], 7.0, user="bob", created=clock.wall - 10.4),
        proc(107, "tail", ["tail", "-f", "log"], 0.05),  # 0.5 %: below 1 % of a core
        proc(108, "secret", ["secret"], 50.0, user="root"),  # readable now, but no start
    ]
    r = probe.read()

    assert table(work(r.processes)) == [
        ("python3", "alice", 80.0, 100),
        ("ffmpeg", "bob", 70.0, 109),
        ("cc1", "bob", 60.0, 106),
        ("make", "bob", 50.0, 105),
    ]
    # The machine's own are reported, marked, so the reducer knows whose I/O it sees;
    # the agent (500 and its descendants) and kernel threads (102) are not reported.
    assert r.processes is not None
    assert [(p.pid, p.system) for p in r.processes if p.system] == [(103, True)]
    assert {500, 501, 502, 102}.isdisjoint(p.pid for p in r.processes)

    clock.advance(10)
    fake.procs = fake.procs[:2]  # the rest ended; pid 100 went on at the same pace
    fake.procs[0] = proc(100, "python3", ["python3", "train.py"], 26.0)
    assert table(work(probe.read().processes)) == [("python3", "alice", 80.0, 100)]


def test_ignore_and_top_n(fake: FakePsutil, clock: FakeClock) -> None:
    fake.procs = [proc(1000 + i, f"worker{i}", [f"./worker{i}"], 0.0) for i in range(25)]
    fake.procs.append(proc(2000, "nightly", ["/opt/nightly/run"], 0.0, user="root"))
    probe = make_probe(fake, clock, ignore=["/opt/nightly/*"], top=20)
    clock.advance(10)
    fake.procs = [proc(1000 + i, f"worker{i}", [f"./worker{i}"], 0.1 * (i + 1)) for i in range(25)]
    fake.procs.append(proc(2000, "nightly", ["/opt/nightly/run"], 10.0, user="root"))

    procs = probe.read().processes
    assert procs is not None
    assert procs[0].pid == 2000 and procs[0].system  # ignored: reported, marked, not work
    assert [p.pid for p in work(procs) or ()] == [1024 - i for i in range(19)]  # busiest first
    assert procs[1].cpu_percent == pytest.approx(25.0)


def test_first_read_without_a_process_baseline_is_unknown(
    fake: FakePsutil, clock: FakeClock
) -> None:
    fake.fail["process_iter"] = psutil.Error("boom")
    probe = make_probe(fake, clock)
    del fake.fail["process_iter"]
    fake.procs = [proc(100, "python3", ["python3", "train.py"], 100.0)]
    clock.advance(10)
    assert probe.read().processes is None  # every process would look new: no guessing
    fake.procs = [proc(100, "python3", ["python3", "train.py"], 105.0)]
    clock.advance(10)
    assert table(probe.read().processes) == [("python3", "alice", 50.0, 100)]


# --- ttys ---------------------------------------------------------------------


def test_ttys_idle_time_is_input_idle(tmp_path: Path, fake: FakePsutil, clock: FakeClock) -> None:
    (tmp_path / "pts").mkdir()
    for tty, idle in [("pts/0", 30), ("pts/1", 0), ("tty1", 5)]:
        (tmp_path / tty).touch()
        os.utime(tmp_path / tty, (clock.wall + 10 - idle, clock.wall - 10_000))  # (atime, mtime)
    started = clock.wall - 3600
    fake.users_ = [
        User("alice", "pts/0", "203.0.113.7", started, 900),
        User("alice", "/dev/pts/1", "203.0.113.7", started, 901),
        User("bob", "tty1", None, started, 902),  # a person at the console counts too
        User("carol", None, "203.0.113.9", clock.wall - 590, 903),  # no terminal
        User("erin", ":0", None, clock.wall - 90, 904),  # an X display, not a /dev tty
        User("dave", "pts/9", "203.0.113.8", started, 905),  # stale: the tty is gone
    ]
    fake.procs = [
        proc(910, "sshd", ["sshd:", "frank@notty"], 0.0, user="frank", created=clock.wall - 110),
        proc(911, "sshd-session", ["sshd-session: gina@notty"], 0.0, created=clock.wall - 50),
        proc(912, "sshd", ["sshd: frank [priv]"], 0.0, user="root"),
        proc(913, "sshd", ["sshd:", "alice@pts/0"], 0.0),
    ]
    probe = make_probe(fake, clock, dev=tmp_path)
    clock.advance(10)

    assert sessions(probe.read().ssh) == [
        ("pts/0", "alice", 30.0),
        ("pts/1", "alice", 0.0),
        ("tty1", "bob", 5.0),
        ("notty", "carol", 600.0),
        ("notty", "erin", 100.0),
        ("notty", "frank", 120.0),
        ("notty", "gina", 60.0),
    ]


# --- real peers -----------------------------------------------------------------


def test_this_machines_logins_read_without_error() -> None:
    r = SystemProbe().read()
    assert isinstance(r, SystemReading)
    assert r.ssh is not None
    assert all(t.idle_seconds >= 0 for t in r.ssh)


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def _runs(pid: int, last_arg: str) -> bool:
    try:
        return psutil.Process(pid).cmdline()[-1:] == [last_arg]
    except psutil.Error:
        return False


def test_a_real_busy_process_shows_up_and_an_idle_one_does_not(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    script = tmp_path / "busy_loop.py"
    script.write_text("while True:\n    pass\n")
    busy = subprocess.Popen([sys.executable, str(script)])
    idle = subprocess.Popen(["sleep", "30"])
    spawn += [busy, idle]
    started = time.monotonic() + 30
    while not (_runs(busy.pid, str(script)) and _runs(idle.pid, "30")):  # both exec'd
        assert time.monotonic() < started, "the processes did not start"
        time.sleep(0.01)

    me = psutil.Process(busy.pid)
    before, start = sum(me.cpu_times()[:2]), time.monotonic()
    # Both exec'd; the busy one now needs a while on a core to show (the sleep below).
    probes = {
        "plain": SystemProbe(own_pid=-1),  # as if the agent were some other process
        "ignored": SystemProbe(own_pid=-1, ignore=["busy_loop"]),
        "own child": SystemProbe(),  # the test process is the agent: its children are its own
    }
    time.sleep(1.5)
    readings = {k: p.read() for k, p in probes.items()}
    oracle = (sum(me.cpu_times()[:2]) - before) / (time.monotonic() - start) * 100

    procs = readings["plain"].processes
    assert procs is not None
    found = {p.pid: p for p in procs}
    assert found[busy.pid].name == me.name()
    assert found[busy.pid].user == me.username()
    assert found[busy.pid].cpu_percent == pytest.approx(oracle, abs=10)  # psutil's own count
    if oracle > 60:  # it had a core to itself (other work on this machine can starve it)
        assert found[busy.pid].cpu_percent > 50
    assert idle.pid not in found
    cpu = readings["plain"].cpu_percent
    assert cpu is not None and cpu > 20  # one core of two
    ignored = readings["ignored"].processes
    assert ignored is not None and {p.pid: p.system for p in ignored}.get(busy.pid) is True
    others = readings["own child"].processes
    assert others is not None and busy.pid not in {p.pid for p in others}


def test_a_real_disk_write_raises_the_write_rate(tmp_path: Path) -> None:
    start = time.monotonic()
    probe = SystemProbe()
    fd = os.open(tmp_path / "blob", os.O_WRONLY | os.O_CREAT)
    try:
        chunk = os.urandom(MIB)
        for _ in range(48):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    r = probe.read()
    elapsed = time.monotonic() - start
    if psutil.disk_io_counters() is None:
        assert r.disk is None
        pytest.skip("no disk counters on this machine (container)")
    assert r.disk is not None
    assert r.disk.b * elapsed >= 40 * MIB  # the probe's interval is within `elapsed`


def test_a_real_loopback_transfer_is_not_network_activity() -> None:
    total = 64 * MIB
    received = 0
    with socket.create_server(("127.0.0.1", 0)) as server:

        def sink() -> None:
            nonlocal received
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(MIB):
                    received += len(data)

        t = threading.Thread(target=sink)
        t.start()
        lo_before = psutil.net_io_counters(pernic=True)["lo"].bytes_recv
        start = time.monotonic()
        probe = SystemProbe()
        with socket.create_connection(server.getsockname()) as c:
            chunk = b"\0" * MIB
            for _ in range(total // MIB):
                c.sendall(chunk)
        t.join(timeout=10)
        r = probe.read()
        elapsed = time.monotonic() - start

    assert received == total
    assert psutil.net_io_counters(pernic=True)["lo"].bytes_recv - lo_before >= total
    assert r.net is not None
    assert r.net.total * elapsed < total / 4


def test_the_proc_fs_list_reads_what_psutil_reads(spawn: list[subprocess.Popen[bytes]]) -> None:
    """The fast process list (straight from /proc/PID/stat) against psutil's own answers."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no Linux /proc")
    child = subprocess.Popen(["sleep", "30"])
    spawn.append(child)
    started = time.monotonic() + 30
    while not _runs(child.pid, "30"):  # the fork has not exec'd yet
        assert time.monotonic() < started, "sleep did not start"
        time.sleep(0.01)
    listed = {p.info["pid"]: p for p in ProcFs().process_iter(["pid", "ppid", "cpu_times"])}
    assert set(psutil.pids()) & set(listed) >= {os.getpid(), child.pid}
    sleeper, real = listed[child.pid], psutil.Process(child.pid)
    assert sleeper.info["ppid"] == os.getpid()
    assert sleeper.info["create_time"] == pytest.approx(real.create_time(), abs=1e-6)
    assert sleeper.info["cpu_times"][:2] == pytest.approx(tuple(real.cpu_times())[:2], abs=0.011)
    assert (sleeper.name(), sleeper.cmdline()) == ("sleep", ["sleep", "30"])
    assert sleeper.username() == real.username()


def test_a_pid_reused_between_the_list_and_the_identity_read_is_not_misnamed() -> None:
    from watchdog.agent.probes.system import _StatProc, _Times

    me = psutil.Process()
    stale = _StatProc(me.pid, me.ppid(), me.create_time() - 100, _Times(0.0, 0.0))
    with pytest.raises(psutil.NoSuchProcess):
        stale.name()
