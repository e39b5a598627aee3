"""install-service / uninstall-service: the unit or plist written, the service manager told."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from watchdog.cli import main
from watchdog.desktop import service


class Recorder:
    def __init__(self, fail: str = "") -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        code = 1 if self.fail and self.fail in argv else 0
        return subprocess.CompletedProcess(list(argv), code, "", "Failed to connect to bus")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    return tmp_path


@pytest.fixture
def exe(tmp_path: Path) -> str:
    stub = tmp_path / "bin" / "idle-watchdog"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return str(stub)


def test_linux_writes_the_user_unit_and_enables_it(home: Path, exe: str) -> None:
    runner = Recorder()
    outcome = service.install(runner=runner, platform="linux", executable=exe)
    unit = home / ".config" / "systemd" / "user" / "idle-watchdog.service"
    assert outcome.ok and outcome.path == unit
    assert f"ExecStart={exe} run" in unit.read_text().splitlines()
    assert "Type=notify" in unit.read_text()
    assert runner.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "idle-watchdog.service"],
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_the_written_unit_passes_systemd_analyze_verify(home: Path, exe: str) -> None:
    service.install(runner=Recorder(), platform="linux", executable=exe)
    unit = home / ".config" / "systemd" / "user" / "idle-watchdog.service"
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", str(home))}
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout + done.stderr == ""


def test_a_missing_user_manager_is_said_with_what_to_run(home: Path, exe: str) -> None:
    outcome = service.install(runner=Recorder(fail="enable"), platform="linux", executable=exe)
    assert not outcome.ok
    assert any("Failed to connect to bus" in line for line in outcome.lines)
    assert outcome.lines[-1].endswith("systemctl --user enable --now idle-watchdog.service")


def test_macos_writes_a_launch_agent_that_plistlib_reads(home: Path, exe: str) -> None:
    runner = Recorder()
    outcome = service.install(runner=runner, platform="darwin", executable=exe)
    data = plistlib.loads(outcome.path.read_bytes())
    assert outcome.path == home / "Library" / "LaunchAgents" / "io.github.idle-watchdog.plist"
    assert data["Label"] == "io.github.idle-watchdog"
    assert data["ProgramArguments"] == [exe, "run"]
    assert data["RunAtLoad"] is True
    assert data["StandardErrorPath"].endswith("Library/Logs/idle-watchdog.log")
    assert runner.calls[-1][:2] == ["launchctl", "bootstrap"]


def test_uninstall_disables_and_removes(home: Path, exe: str) -> None:
    service.install(runner=Recorder(), platform="linux", executable=exe)
    runner = Recorder()
    outcome = service.uninstall(runner=runner, platform="linux")
    assert outcome.ok and not outcome.path.exists()
    assert runner.calls[0] == ["systemctl", "--user", "disable", "--now", "idle-watchdog.service"]
    assert (
        service.uninstall(runner=Recorder(), platform="linux")
        .lines[-1]
        .endswith("was not installed")
    )


def test_the_cli_commands_use_the_real_service_manager_command(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the command line, with a stand-in ``systemctl`` that records its arguments."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    log = tmp_path / "systemctl.log"
    (fake_bin / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (fake_bin / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("sys.platform", "linux")
    assert main(["install-service"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["uninstall-service"]) == 0
    assert log.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now idle-watchdog.service",
        "--user disable --now idle-watchdog.service",
        "--user daemon-reload",
    ]


def test_without_a_user_bus_the_hint_runs_every_step_left(home: Path, exe: str) -> None:
    """daemon-reload fails first without a user manager; the hint must still enable it."""
    outcome = service.install(
        runner=Recorder(fail="daemon-reload"), platform="linux", executable=exe
    )
    assert not outcome.ok
    assert outcome.lines[-2] == "systemctl --user daemon-reload failed: Failed to connect to bus"
    assert outcome.lines[-1] == (
        "then run by hand: systemctl --user daemon-reload && "
        "systemctl --user enable --now idle-watchdog.service"
    )


def _failing_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> Path:
    """A ``systemctl`` on PATH that fails (like without a user bus) when ``fail`` is asked."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    log = tmp_path / "systemctl.log"
    (fake_bin / "systemctl").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        f'case "$*" in *{fail}*) echo "Failed to connect to bus: No medium found" >&2; exit 1;; '
        "esac\n"
    )
    (fake_bin / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("sys.platform", "linux")
    return log


@pytest.mark.parametrize("fail", ["disable", "daemon-reload"])
def test_uninstall_reports_a_failed_systemctl_step_as_failed(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fail: str,
) -> None:
    service.install(runner=Recorder(), platform="linux", executable="/bin/true")
    unit = home / ".config" / "systemd" / "user" / "idle-watchdog.service"
    _failing_systemctl(tmp_path, monkeypatch, fail)
    assert main(["uninstall-service"]) == 1
    out = capsys.readouterr().out.splitlines()
    failed = [line for line in out if line.startswith("systemctl --user") and "failed" in line]
    assert failed and fail in failed[0] and "Failed to connect to bus" in failed[0]
    assert not any(line.startswith("ran ") and fail in line for line in out)
    assert out[-1].startswith("then run by hand: systemctl --user ")
    # a failed disable keeps the unit (it may still be running); a failed reload removed it
    assert unit.exists() is (fail == "disable")


def test_uninstall_of_nothing_installed_runs_nothing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _failing_systemctl(tmp_path, monkeypatch, "disable")
    assert main(["uninstall-service"]) == 0
    assert capsys.readouterr().out.strip().endswith("was not installed")
    assert not log.exists()
