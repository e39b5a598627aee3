"""The command line as a user runs it, against a real moto server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.helpers import MANAGED, beat, launch, launch_time, state, tags_of
from watchdog.aws.fake import set_launch_time
from watchdog.cli import main
from watchdog.core.fleet import TAG_KEEP_UNTIL
from watchdog.core.timeutil import parse_iso

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cfg_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        '[aws]\nregions = ["us-east-1", "us-west-2"]\n'
        "[idle]\nminutes = 30\nwarn_minutes = 0\n"
        f'[scheduler]\ndatabase = "{tmp_path / "history.sqlite3"}"\npoll_seconds = 10\n'
    )
    monkeypatch.setenv("IDLE_WATCHDOG_CONFIG", str(path))
    return path


@pytest.mark.usefixtures("aws", "cfg_file")
def test_status_json_lists_every_instance_with_cost_and_next_action(
    capsys: pytest.CaptureFixture[str],
) -> None:
    idle = launch("us-east-1", "g5.xlarge", tags={**MANAGED, "Name": "nb"})[0]
    other = launch("us-west-2", "p3.2xlarge")[0]
    now = datetime.now(timezone.utc)
    beat("us-east-1", idle, now, active=False, last_active=launch_time("us-east-1", idle))
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["id"]: r for r in data["rows"]}
    assert rows.keys() == {idle, other}
    assert rows[idle]["name"] == "nb" and rows[idle]["region"] == "us-east-1"
    assert rows[idle]["price_per_hour"] == 1.006
    assert rows[idle]["cost_so_far"] == 1.006  # moto reports no platform: billed per hour
    assert rows[idle]["next_action"].startswith("stop at ")
    assert rows[idle]["agent_last_seen"] is not None
    assert rows[other]["managed"] is False and rows[other]["next_action"] is None


@pytest.mark.usefixtures("aws", "cfg_file")
def test_status_table_filters_by_family(capsys: pytest.CaptureFixture[str]) -> None:
    launch("us-east-1", "g5.xlarge", tags={"Name": "five"})
    launch("us-east-1", "p3.2xlarge", tags={"Name": "three"})
    assert main(["status", "--family", "p3"]) == 0
    out = capsys.readouterr().out
    assert "three" in out and "five" not in out
    assert out.splitlines()[0].split()[:3] == ["region", "id", "name"]


@pytest.mark.usefixtures("aws", "cfg_file")
def test_keep_snoozes_and_off_ends_it(capsys: pytest.CaptureFixture[str]) -> None:
    iid = launch("us-west-2", tags=MANAGED)[0]
    start = launch_time("us-west-2", iid)
    beat("us-west-2", iid, datetime.now(timezone.utc), active=False, last_active=start)
    assert main(["keep", iid, "--for", "2h"]) == 0
    until = parse_iso(tags_of("us-west-2", iid)[TAG_KEEP_UNTIL])
    assert timedelta(minutes=119) < until - datetime.now(timezone.utc) <= timedelta(hours=2)
    assert main(["keep", iid, "--off"]) == 0
    assert TAG_KEEP_UNTIL not in tags_of("us-west-2", iid)
    assert main(["keep", "i-0000000000000000", "--for", "1h"]) == 1
    assert main(["keep", iid, "--for", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


@pytest.mark.usefixtures("aws", "cfg_file")
def test_run_once_stops_an_idle_instance_and_dry_run_does_not() -> None:
    idle, busy = launch("us-east-1", count=2, tags=MANAGED)
    now = datetime.now(timezone.utc)
    for iid in (idle, busy):
        set_launch_time("us-east-1", iid, now - timedelta(minutes=45))
    beat("us-east-1", idle, now, active=False, last_active=now - timedelta(minutes=31))
    beat("us-east-1", busy, now, active=True, reasons=("gpu:0",))

    assert main(["run", "--once", "--dry-run"]) == 0
    assert state("us-east-1", idle) == "running"
    assert main(["run", "--once"]) == 0
    assert state("us-east-1", idle) in ("stopping", "stopped")
    assert state("us-east-1", busy) == "running"
    assert main(["run", "--once"]) == 0  # nothing new to do


def test_config_check_names_key_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.toml"
    bad.write_text("[idle]\nminutes = 30\nwarn_minute = 5\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: idle.warn_minute: unknown key" in err
    assert main(["config", "check", str(ROOT / "config.example.toml")]) == 0


def test_a_bad_config_stops_every_command_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scheduler]\npoll_seconds = "often"\n')
    assert main(["status", "--config", str(bad)]) == 2
    assert "scheduler.poll_seconds: expected a whole number" in capsys.readouterr().err


def test_pypi_watchdog_in_the_same_environment_gets_a_clear_error(tmp_path: Path) -> None:
    """PyPI's filesystem library shares the import name: the entry point says so."""
    fake = tmp_path / "watchdog"
    fake.mkdir()
    (fake / "__init__.py").write_text("# PyPI's filesystem-events library\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", "import _idle_watchdog_entry as e; e.main()"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "resolves to another library" in done.stderr
    assert "own virtual environment" in done.stderr


def test_daemon_under_systemd_notify_runs_a_pass_at_start_and_stops_on_sigterm(
    aws: str, cfg_file: Path, tmp_path: Path
) -> None:
    """The real ``idle-watchdog run`` as systemd starts it: READY, a pass, WATCHDOG, clean exit."""
    iid = launch("us-east-1", tags=MANAGED)[0]
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "4000000",
        "AWS_ENDPOINT_URL": aws,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog", "run"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        got: list[str] = []
        deadline = time.monotonic() + 30
        while not ({"READY=1", "WATCHDOG=1"} <= set(got)) and time.monotonic() < deadline:
            got.extend(sock.recv(4096).decode().split("\n"))
        assert "READY=1" in got and "WATCHDOG=1" in got
        assert any(m.startswith("STATUS=last pass") and "1 targets" in m for m in got)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        sock.close()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    decisions = [e for e in lines if e.get("event") == "decision"]
    assert decisions and decisions[0]["target"] == iid
    assert decisions[0]["reason"].startswith("waiting for the agent")


def test_demo_shows_the_whole_loop(capsys: pytest.CaptureFixture[str]) -> None:
    endpoint_before = os.environ["AWS_ENDPOINT_URL"]
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "WARN   us-east-1" in out and "STOP   us-east-1" in out
    assert "CANCEL us-west-2" in out
    assert "notification: forgotten-notebook" in out and "[Keep 1h]  [Keep 4h]  [Stop now]" in out
    assert "[FAILED]" not in out
    assert os.environ["AWS_ENDPOINT_URL"] == endpoint_before  # the demo restored the env
