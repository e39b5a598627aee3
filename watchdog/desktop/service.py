"""``install-service`` / ``uninstall-service``: run the scheduler at login, by platform.

Linux: the systemd user unit (``Type=notify``; notifications reach the
desktop through the session bus the user manager exports, no ``DISPLAY``
needed). macOS: a launchd agent in ``~/Library/LaunchAgents``. Both point at
the command that is running now, so a pipx or venv install starts itself.
The unit and plist ship inside the package (``watchdog/deploy/``).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

UNIT = "idle-watchdog.service"
LABEL = "io.github.idle-watchdog"

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    path: Path
    lines: tuple[str, ...]  # what was done, or what failed and what to do instead


def command() -> str:
    """The installed ``idle-watchdog`` that is running now (pipx, a venv, ...)."""
    found = shutil.which("idle-watchdog")
    if found:
        return str(Path(found).resolve())
    return str(Path(sys.argv[0]).resolve())


def unit_text(executable: str) -> str:
    template = resources.files("watchdog").joinpath("deploy").joinpath(UNIT).read_text("utf-8")
    lines = [
        f"ExecStart={executable} run" if line.startswith("ExecStart=") else line
        for line in template.splitlines()
    ]
    return "\n".join(lines) + "\n"


def plist_bytes(executable: str, log_file: Path) -> bytes:
    template = (
        resources.files("watchdog").joinpath("deploy").joinpath(f"{LABEL}.plist").read_bytes()
    )
    data = plistlib.loads(template)
    data["ProgramArguments"] = [executable, "run"]
    data["StandardOutPath"] = data["StandardErrorPath"] = str(log_file)
    return plistlib.dumps(data)


def _user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def _launch_agents() -> Path:
    return Path.home() / "Library" / "LaunchAgents"


def install(
    *, runner: Runner = run, platform: str | None = None, executable: str | None = None
) -> Outcome:
    exe = executable or command()
    platform = platform or sys.platform
    if platform == "darwin":
        path = _launch_agents() / f"{LABEL}.plist"
        path.parent.mkdir(parents=True, exist_ok=True)
        logs = Path.home() / "Library" / "Logs" / "idle-watchdog.log"
        path.write_bytes(plist_bytes(exe, logs))
        steps = [
            ["launchctl", "bootout", f"gui/{os.getuid()}", str(path)],
            ["launchctl", "bootstrap", f"gui/{os.getuid()}", str(path)],
        ]
        return _apply(runner, path, steps, optional_first=True, done_before=[f"wrote {path}"])
    path = _user_unit_dir() / UNIT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(exe), encoding="utf-8")
    steps = [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", UNIT],
    ]
    return _apply(runner, path, steps, done_before=[f"wrote {path}"])


def uninstall(*, runner: Runner = run, platform: str | None = None) -> Outcome:
    platform = platform or sys.platform
    if platform == "darwin":
        path = _launch_agents() / f"{LABEL}.plist"
        # bootout fails when the agent is not loaded, which is what we want anyway
        outcome = _apply(
            runner,
            path,
            [["launchctl", "bootout", f"gui/{os.getuid()}", str(path)]],
            optional_first=True,
        )
    else:
        path = _user_unit_dir() / UNIT
        if not path.exists():
            return Outcome(True, path, (f"{path} was not installed",))
        outcome = _apply(runner, path, [["systemctl", "--user", "disable", "--now", UNIT]])
        if not outcome.ok:  # keep the unit: it may still run, and the hint needs it
            return outcome
    existed = path.exists()
    path.unlink(missing_ok=True)
    lines = (*outcome.lines, f"removed {path}" if existed else f"{path} was not installed")
    if platform != "darwin":
        reload = _apply(runner, path, [["systemctl", "--user", "daemon-reload"]])
        return Outcome(reload.ok, path, (*lines, *reload.lines))
    return Outcome(outcome.ok, path, lines)


def _apply(
    runner: Runner,
    path: Path,
    steps: list[list[str]],
    *,
    optional_first: bool = False,
    done_before: Sequence[str] = (),
) -> Outcome:
    """Run ``steps`` in order; at the first that fails, say why and what is left to run."""
    lines = list(done_before)
    for index, argv in enumerate(steps):
        try:
            done = runner(argv)
            why = "" if done.returncode == 0 else _last_line(done)
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"could not run {argv[0]}: {exc}"
        if not why:
            lines.append(f"ran {' '.join(argv)}")
            continue
        if optional_first and index == 0:
            lines.append(f"{' '.join(argv)}: {why} (nothing to undo)")
            continue
        left = " && ".join(" ".join(step) for step in steps[index:])
        return Outcome(
            False, path, (*lines, f"{' '.join(argv)} failed: {why}", f"then run by hand: {left}")
        )
    return Outcome(True, path, tuple(lines))


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    why = (done.stderr or done.stdout).strip().splitlines()
    return why[-1] if why else f"exit status {done.returncode}"
