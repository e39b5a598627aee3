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
    assert "i-0000000000000000 not found in us-east-1, us-west-2" in capsys.readouterr().err


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


# --- --config on either side of the command; a named file must exist -----------------------


@pytest.fixture
def no_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $IDLE_WATCHDOG_CONFIG and an empty platform config dir: only --config counts."""
    monkeypatch.delenv("IDLE_WATCHDOG_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_config_option_works_before_and_after_the_command(
    no_default_config: Path, capsys: pytest.CaptureFixture[str], before: bool
) -> None:
    eu = no_default_config / "eu.toml"
    database = no_default_config / "h.sqlite3"
    eu.write_text(f'[aws]\nregions = ["eu-west-1"]\n[scheduler]\ndatabase = "{database}"\n')
    iid = launch("eu-west-1", tags={"Name": "in-ireland"})[0]
    option = ["--config", str(eu)]
    argv = [*option, "status", "--json"] if before else ["status", "--json", *option]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["id"], r["region"]) for r in rows] == [(iid, "eu-west-1")]


def _command(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``idle-watchdog ARGV`` in its own process, as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _idle_for_45_minutes() -> str:
    iid = launch("us-east-1", tags=MANAGED)[0]
    now = datetime.now(timezone.utc)
    set_launch_time("us-east-1", iid, now - timedelta(minutes=45))
    beat("us-east-1", iid, now, active=False, last_active=now - timedelta(minutes=40))
    return iid


def test_run_once_honours_dry_run_from_the_config_named_on_either_side(
    aws: str, no_default_config: Path
) -> None:
    """The real command in its own process: a dry-run file changes nothing, a wet one stops."""
    iid = _idle_for_45_minutes()
    files = {}
    for name, dry in (("dry", "true"), ("wet", "false")):
        files[name] = no_default_config / f"{name}.toml"
        files[name].write_text(
            f"[idle]\nwarn_minutes = 0\n[scheduler]\ndry_run = {dry}\n"
            f'database = "{no_default_config / name}.sqlite3"\n'
        )
    env = {**os.environ, "AWS_ENDPOINT_URL": aws}
    for argv in (["--config", str(files["dry"]), "run", "--once"],
                 ["run", "--once", "--config", str(files["dry"])]):  # fmt: skip
        done = _command(argv, env)
        assert done.returncode == 0, done.stderr
        assert state("us-east-1", iid) == "running"
    done = _command(["--config", str(files["wet"]), "run", "--once"], env)
    assert done.returncode == 0, done.stderr
    assert state("us-east-1", iid) in ("stopping", "stopped")


@pytest.mark.parametrize("via", ["option", "environment"])
def test_a_missing_config_file_is_an_error_never_the_defaults(
    no_default_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    via: str,
) -> None:
    missing = no_default_config / "eu.toml"
    if via == "environment":
        monkeypatch.setenv("IDLE_WATCHDOG_CONFIG", str(missing))
        argv = ["status"]
    else:
        argv = ["status", "--config", str(missing)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"idle-watchdog: {missing}: no such file")
    assert ("$IDLE_WATCHDOG_CONFIG" in err) is (via == "environment")


# --- files that are not text -----------------------------------------------------------------

BINARY = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes(range(256))


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "check", "{}"],
        ["--config", "{}", "run", "--once"],
        ["--config", "{}", "status"],
        ["--config", "{}", "keep", "i-0abc", "--for", "1h"],
        ["--config", "{}", "agent", "--once"],
        ["--config", "{}", "demo"],
    ],
    ids=lambda argv: " ".join(a for a in argv if a not in ("{}", "--config")),
)
def test_a_config_that_is_not_utf8_names_file_and_line_in_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("[idle]\n# 30 minutes \u00e0 peu pr\u00e8s\nminutes = 30\n".encode("latin-1"))
    assert main([a.replace("{}", str(path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"idle-watchdog: {path}:2: not UTF-8 text (byte 0xe0 at offset 20)")
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["simulate"], ["agent", "--instance-id", "i-1", "--replay"]])
def test_a_binary_trace_is_an_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = tmp_path / "trace.jsonl.gz"
    path.write_bytes(BINARY)
    assert main([*command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"idle-watchdog: {path}:1: not an idle-trace/1 file: not UTF-8 text")


# --- no credentials: say so and how to fix it, for every command that needs AWS --------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["run", "--once"],
        ["run"],
        ["keep", "i-0abc1234", "--for", "2h"],
        ["keep", "i-0abc1234", "--off"],
        ["agent", "--once", "--instance-id", "i-0abc1234"],
    ],
    ids=" ".join,
)
def test_without_credentials_every_aws_command_says_how_to_set_them(
    tmp_path: Path, argv: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_SECRET")}
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SESSION_TOKEN", None)
    env.update(
        IDLE_WATCHDOG_CONFIG=str(tmp_path / "c.toml"),
        AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9",
    )
    (tmp_path / "c.toml").write_text(f'[scheduler]\ndatabase = "{tmp_path / "h.sqlite3"}"\n')
    done = _command(argv, env)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("idle-watchdog: no AWS credentials found: run `aws configure`")
    for hint in ("aws sso login", "AWS_PROFILE"):
        assert hint in done.stderr
    assert len(done.stderr.splitlines()) == 1  # no traceback, no JSON log line


def test_an_unknown_profile_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[aws]\nprofile = "gpu-team"\n')
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "gpu-team" in err and "aws configure list-profiles" in err


@pytest.mark.parametrize(
    ("duration", "says"),
    [
        ("0m", "'0m' is no time at all"),
        ("0", "'0' has no unit"),
        ("90", "'90' has no unit: say 30m, 2h or 1d"),
        ("366d", "'366d' is too long: keep for at most 365 days"),
        ("99999d", "'99999d' is too long: keep for at most 365 days"),
        ("soon", "not a duration: 'soon'"),
    ],
)
def test_keep_checks_its_duration_before_anything_else(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], duration: str, says: str
) -> None:
    """No credentials and a dead endpoint: only the duration can be what is said."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as exited:
        main(["keep", "i-0abc1234", "--for", duration])
    assert exited.value.code == 2
    assert f"argument --for: {says}" in capsys.readouterr().err


def test_keep_states_its_one_limit_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["keep", "--help"])
    assert "at most 365 days" in " ".join(capsys.readouterr().out.split())


def test_agent_once_off_ec2_without_an_instance_says_it_published_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert main(["agent", "--once", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["instance_id"] == "local"  # still shown
    assert "report not published: no instance to publish to" in err


@pytest.mark.usefixtures("aws")
def test_agent_once_whose_heartbeat_is_refused_exits_non_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert main(["agent", "--once", "--instance-id", "vol-0123456789abcdef0"]) == 1
    assert "report not published: the heartbeat tag was not written" in capsys.readouterr().err


def test_config_example_prints_the_shipped_example_which_is_the_documented_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shipped = ROOT / "watchdog" / "deploy" / "config.example.toml"
    assert shipped.read_text() == (ROOT / "config.example.toml").read_text(), (
        "watchdog/deploy/config.example.toml is what the wheel ships: "
        "cp config.example.toml watchdog/deploy/config.example.toml"
    )
    assert main(["config", "example"]) == 0
    out = capsys.readouterr().out
    assert out == shipped.read_text()
    written = tmp_path / "config.toml"
    written.write_text(out)
    assert main(["config", "check", str(written)]) == 0
