"""The agent's live loop (``Agent.serve``) with the real system probe: what its first
report says, and what it tells systemd."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import psutil
import pytest

from tests.helpers import config
from watchdog.agent.probes.system import SystemProbe
from watchdog.agent.run import Agent, Sampler, boot_time
from watchdog.core.sample import Kernel, Terminal

INTERVAL = 5  # the shortest sample_seconds the config allows


class Nothing:
    """No GPU, no Jupyter: this test is about process CPU."""

    def read(self) -> tuple[()]:
        return ()


class NoJupyter:
    def read(self) -> tuple[tuple[Kernel, ...], tuple[Terminal, ...]]:
        return (), ()


class OnlyThese:
    """Real psutil, but only ``pids`` in the process list: other people's work on this
    shared machine must not decide the test."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = set(pids)

    def users(self) -> Any:
        return psutil.users()

    def process_iter(self, attrs: list[str]) -> Iterator[Any]:
        return (p for p in psutil.process_iter(attrs) if p.info["pid"] in self.pids)

    def cpu_times(self) -> Any:
        return psutil.cpu_times()

    def net_io_counters(self, pernic: Literal[True]) -> Mapping[str, Any]:
        return psutil.net_io_counters(pernic=pernic)

    def disk_io_counters(self, perdisk: Literal[False]) -> Any:
        return psutil.disk_io_counters(perdisk=perdisk)


def until(condition: Callable[[], bool], what: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


BURN = """
import sys, time
print("burning", flush=True)
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
sys.stdin.read()
"""


@pytest.fixture
def brief() -> Iterator[subprocess.Popen[str]]:
    """A process that uses 0.3 s of CPU as the agent starts, then waits on its stdin."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "burning\n"
    yield proc
    proc.kill()
    proc.wait()


def test_the_first_report_covers_a_full_interval_not_the_start_up(
    tmp_path: Path, brief: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started while a brief process (and the agent itself, seen from outside) use CPU:
    the first report is not "active: proc:python"."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify"))
        systemd.settimeout(120)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        cfg = config(agent={"sample_seconds": INTERVAL})
        # own_pid=-1: the test process, which builds and runs the agent, counts as
        # somebody else's, as a wrapper that starts the agent would.
        system = SystemProbe(source=OnlyThese([brief.pid, os.getpid()]), own_pid=-1)
        sampler = Sampler(cfg, gpu=Nothing(), jupyter=NoJupyter(), system=system)
        agent = Agent(
            cfg,
            sampler,
            identity=None,
            ec2=None,
            state_path=tmp_path / "agent.json",
            started_at=boot_time(),
        )
        stop = threading.Event()
        loop = threading.Thread(target=agent.serve, args=(stop,))
        loop.start()
        try:
            until(lambda: agent.report is not None, "the first report")
        finally:
            stop.set()
            loop.join()
        messages = [systemd.recv(4096).decode() for _ in range(2)]

    report = agent.report
    assert report is not None
    assert not [r for r in report.reasons if r.startswith("proc:")], report.reasons
    # systemd hears READY at once (not a minute later), WATCHDOG after the sample
    assert messages[0] == "READY=1"
    assert messages[1].startswith("WATCHDOG=1\nSTATUS=")
