"""What the agent costs the instance it watches: CPU per hour, memory, threads, and how
the process probe's cost grows with the number of processes.

Part 1 runs the real agent (``idle-watchdog agent``, a separate process, at the
default 60 s sample interval unless told otherwise) against a moto server on
loopback (heartbeat tag, the backstop's DescribeInstances each sample) and a real
jupyter_server with one idle ipykernel, with the HTTP endpoint on, and measures
that process from its first report on: CPU seconds per hour (children included),
RSS steady (median of one reading a second) and peak (the kernel's high-water
mark, start-up included), and threads.

Part 2 spawns 100, 400 and 1,600 idle processes (``sleep``) and times the system
probe's read in this process, side by side with what the probe read before issue
9 item 17 (seven fields of every process on every sample).

    python benchmarks/agent_overhead.py                   # 5 minutes of samples
    python benchmarks/agent_overhead.py --duration 60     # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import psutil
import requests
import websocket

from watchdog.agent.probes.system import SystemProbe
from watchdog.aws.fake import moto_server

GOAL_CPU_S_PER_HOUR = 3.6  # 0.1 % of one core
GOAL_RSS_MB = 80
BEFORE_ATTRS = ["pid", "ppid", "name", "username", "cmdline", "create_time", "cpu_times"]
MIB, MB = 1024 * 1024, 1_000_000


def until(condition: Callable[[], Any], what: str, within: float = 180.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"agent_overhead: timed out waiting for {what}")
        time.sleep(0.1)
    return value


@contextmanager
def jupyter(base: Path) -> Iterator[tuple[Path, str]]:
    """A jupyter_server on a free loopback port with one idle kernel: (runtime dir, url)."""
    for sub in ("runtime", "data", "config", "home", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        IPYTHONDIR=str(base / "home" / ".ipython"),
        HOME=str(base / "home"),
    )
    token = secrets.token_hex(16)
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    argv += [
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={base / 'root'}",
    ]
    with (base / "server.log").open("wb") as log_file:
        proc = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            info_file = base / "runtime" / f"jpserver-{proc.pid}.json"

            def url() -> str | None:
                if proc.poll() is not None:
                    raise SystemExit("agent_overhead: jupyter_server exited; see server.log")
                try:
                    return str(json.loads(info_file.read_text())["url"])
                except (OSError, ValueError, KeyError):
                    return None

            base_url: str = until(url, "jupyter_server to start")
            headers = {"Authorization": f"token {token}"}
            kernel = until(lambda: _post(base_url + "api/kernels", headers), "a kernel to start")[
                "id"
            ]
            # A client on the kernel's channels, as a browser tab would be: without
            # one a kernel stays "starting".
            ws = websocket.create_connection(
                f"{base_url.replace('http://', 'ws://', 1)}api/kernels/{kernel}/channels",
                header=headers,
                timeout=120,
            )
            until(lambda: _kernel_idle(base_url, kernel, headers), "the kernel to become idle", 120)
            try:
                yield base / "runtime", base_url
            finally:
                ws.close()
        finally:
            children = _children(proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(children, timeout=10)


def _post(url: str, headers: dict[str, str]) -> Any:
    try:
        resp = requests.post(url, json={"name": "python3"}, headers=headers, timeout=30)
    except requests.ConnectionError:
        return None
    return resp.json() if resp.status_code == 201 else None


def _kernel_idle(base_url: str, kernel: str, headers: dict[str, str]) -> bool:
    body = requests.get(
        f"{base_url}api/kernels/{kernel}",
        params={"no_track_activity": "1"},
        headers=headers,
        timeout=30,
    ).json()
    return bool(body.get("execution_state") == "idle")


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def high_water_mark(pid: int) -> int:
    """VmHWM: the process's peak resident set, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def reports(log_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def measure_agent(work: Path, duration: float, sample_seconds: int) -> dict[str, Any]:
    """Run the agent for ``duration`` seconds after its first report; its figures."""
    with moto_server(), jupyter(work / "jupyter") as (runtime, _):
        instance = boto3.client("ec2", region_name="us-east-1").run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g5.xlarge"
        )["Instances"][0]["InstanceId"]
        token = work / "token"
        token.write_text(secrets.token_hex(32) + "\n")
        port = free_port()
        config = work / "agent.toml"
        config.write_text(
            "[agent]\n"
            f"sample_seconds = {sample_seconds}\n"
            f'jupyter_runtime_dirs = ["{runtime}"]\n'
            f'http_listen = "127.0.0.1:{port}"\n'
            f'token_file = "{token}"\n'
        )
        program = Path(sys.executable).with_name("idle-watchdog")
        argv = [str(program), "agent", "--config", str(config), "--instance-id", instance]
        log_path = work / "agent.log"
        env = dict(os.environ, STATE_DIRECTORY=str(work / "state"), PYTHONUNBUFFERED="1")
        with log_path.open("wb") as log_file:
            agent = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            try:
                return _watch(agent, log_path, duration, port, token.read_text().strip())
            finally:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait()


def _watch(
    agent: subprocess.Popen[bytes], log_path: Path, duration: float, port: int, token: str
) -> dict[str, Any]:
    proc = psutil.Process(agent.pid)

    def first_report() -> bool:
        if agent.poll() is not None:
            raise SystemExit(f"agent_overhead: the agent exited:\n{log_path.read_text()}")
        return any(e.get("event") == "report" for e in reports(log_path))

    until(first_report, "the agent's first report", within=900)
    startup_cpu = _cpu(proc)
    start, cpu0 = time.monotonic(), startup_cpu
    rss: list[int] = []
    threads: list[int] = []
    while (elapsed := time.monotonic() - start) < duration:
        rss.append(proc.memory_info().rss)
        threads.append(proc.num_threads())
        time.sleep(min(1.0, duration - elapsed))
    cpu1, wall = _cpu(proc), time.monotonic() - start
    answer = requests.get(
        f"http://127.0.0.1:{port}/v1/report",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    events = reports(log_path)
    samples = [e for e in events if e.get("event") == "report"]
    problems = sorted(
        {str(e.get("event")) for e in events if e.get("level") in ("warning", "error")}
    )
    return {
        "samples": len(samples),
        "states": sorted({str(e.get("state")) for e in samples}),
        "heartbeats": sum(e.get("event") == "heartbeat written" for e in events),
        "endpoint": answer.status_code,
        "problems": problems,
        "startup_cpu_s": startup_cpu,
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall,
        "cpu_s_per_hour": (cpu1 - cpu0) / wall * 3600,
        "rss_steady": statistics.median(rss),
        "rss_max_seen": max(rss),
        "rss_peak": high_water_mark(agent.pid),
        "threads": (min(threads), max(threads)),
    }


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def probe_cost(extra: list[int], reads: int) -> list[dict[str, Any]]:
    """Per-sample cost of the process probe with ``extra`` idle processes added."""
    rows = []
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        for n in extra:
            while len(sleepers) < n:
                sleepers.append(subprocess.Popen(["sleep", "3600"]))
            until(lambda: all(_execed(p.pid) for p in sleepers), f"{n} sleep processes to start")
            rows.append({"extra": n, "processes": len(psutil.pids()), **_time_reads(reads)})
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()
    return rows


def _execed(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "sleep"
    except psutil.Error:
        return False


def _time_reads(reads: int) -> dict[str, Any]:
    """CPU time per read, median of ``reads``: the probe now, then the seven fields
    of every process as before, alternating so both see the same machine."""
    probe = SystemProbe()  # the baseline: every identity read once
    probe.read()  # the second look at processes first seen at the baseline
    now, before, identities = [], [], []
    for _ in range(reads):
        seen = probe.identity_reads
        t0 = time.process_time()
        probe.read()
        now.append(time.process_time() - t0)
        identities.append(probe.identity_reads - seen)
        t0 = time.process_time()
        for _p in psutil.process_iter(BEFORE_ATTRS):
            pass
        before.append(time.process_time() - t0)
    return {
        "now_ms": statistics.median(now) * 1000,
        "before_ms": statistics.median(before) * 1000,
        "identities": statistics.median(identities),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=300, help="seconds measured after the first report"
    )
    parser.add_argument(
        "--sample-seconds", type=int, default=60, help="the agent's interval (default 60)"
    )
    parser.add_argument("--reads", type=int, default=15, help="probe reads per process count")
    parser.add_argument("--skip-agent", action="store_true", help="part 2 only")
    args = parser.parse_args()

    if not args.skip_agent:
        with tempfile.TemporaryDirectory(prefix="agent-overhead-") as tmp:
            r = measure_agent(Path(tmp), args.duration, args.sample_seconds)
        print(
            f"agent, {r['samples']} samples at {args.sample_seconds} s over "
            f"{r['wall_s']:.0f} s measured; states {', '.join(r['states'])}; "
            f"{r['heartbeats']} heartbeat writes; GET /v1/report: {r['endpoint']}; "
            f"warnings: {', '.join(r['problems']) or 'none'}\n"
        )
        print("| figure | measured | goal |")
        print("|---|---:|---:|")
        print(
            f"| CPU seconds per hour (children included) | {r['cpu_s_per_hour']:.2f} | "
            f"<= {GOAL_CPU_S_PER_HOUR} |"
        )
        print(f"| CPU seconds to start, up to the first report | {r['startup_cpu_s']:.2f} | |")
        print(
            f"| RSS steady (median) | {r['rss_steady'] / MIB:.1f} MiB = "
            f"{r['rss_steady'] / MB:.1f} MB | < {GOAL_RSS_MB} MB |"
        )
        print(
            f"| RSS peak (VmHWM, start-up included) | {r['rss_peak'] / MIB:.1f} MiB = "
            f"{r['rss_peak'] / MB:.1f} MB | < {GOAL_RSS_MB} MB |"
        )
        lo, hi = r["threads"]
        print(f"| threads | {lo}" + (f"-{hi}" if hi != lo else "") + " | |")
        print()

    rows = probe_cost([0, 100, 400, 1600], args.reads)
    print(
        "| idle processes added | processes on the machine | probe read now (ms CPU) | "
        "seven fields of every process, as before (ms CPU) | before / now | "
        "identities read per sample | probe CPU s per hour at 60 s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['extra']} | {row['processes']} | {row['now_ms']:.1f} | "
            f"{row['before_ms']:.1f} | {row['before_ms'] / row['now_ms']:.1f}x | "
            f"{row['identities']:g} | {row['now_ms'] * 60 / 1000:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
