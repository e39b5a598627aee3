"""deploy/install-agent.sh run for real into a scratch prefix."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.helpers import source_copy

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "watchdog" / "deploy" / "install-agent.sh"


def writable_by_others(top: Path) -> list[str]:
    """Files and directories under ``top`` (itself included) that group or others may
    write; symlinks carry no permissions of their own."""
    found = []
    for path in [top, *top.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"{stat.filemode(mode)} {path.relative_to(top.parent)}")
    return found


def test_install_under_umask_000_leaves_nothing_writable_by_others(tmp_path: Path) -> None:
    prefix, etc, units = tmp_path / "opt", tmp_path / "etc", tmp_path / "units"
    command = [
        "bash",
        str(INSTALL),
        "--source",
        str(source_copy(tmp_path)),
        "--prefix",
        str(prefix),
        "--config-dir",
        str(etc),
        "--unit-dir",
        str(units),
        "--python",
        sys.executable,
        "--no-start",
    ]
    result = subprocess.run(
        ["bash", "-c", 'umask 000 && exec "$@"', "bash", *command],
        capture_output=True,
        text=True,
        env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"),
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (prefix / "bin" / "idle-watchdog").is_file()
    for top in (prefix, etc, units):
        assert writable_by_others(top) == [], top
    assert stat.S_IMODE((etc / "token").stat().st_mode) == 0o600
