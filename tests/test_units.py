"""Deployment files: the systemd user unit and the scheduler's IAM policy.

``systemd-analyze verify`` exits 0 on unknown keys and unparseable values and
only prints warnings, so any output at all counts as a failure.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "idle-watchdog.service"
POLICY = ROOT / "deploy" / "iam" / "scheduler-policy.json"

MANAGED_TAG = "aws:ResourceTag/idle-watchdog:managed"
WRITABLE_TAGS = {"idle-watchdog:stopped", "idle-watchdog:keep-until", "idle-watchdog:warned"}
# ExecStart= prefixes that change how systemd runs the command, not the command.
EXEC_PREFIXES = "-@:+!"


def exec_start_line(lines: list[str]) -> int:
    """Index of the single ``ExecStart=`` directive in ``[Service]`` (comments skipped)."""
    section = ""
    found: list[int] = []
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and line.startswith("ExecStart="):
            found.append(index)
    assert len(found) == 1, f"expected one ExecStart= in [Service], found lines {found}"
    return found[0]


def exec_start(unit_text: str) -> list[str]:
    """The argv of the unit's ``ExecStart=``, without prefixes such as ``-`` or ``!``."""
    lines = unit_text.splitlines()
    value = lines[exec_start_line(lines)].strip().removeprefix("ExecStart=")
    return shlex.split(value.lstrip(EXEC_PREFIXES))


def toml() -> ModuleType:
    """``tomllib`` (3.11+) or its backport ``tomli``, the project's own dependency on 3.10."""
    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        return importlib.import_module("tomli")


# --- (a) systemd-analyze --user verify prints nothing -----------------------------


def test_unit_passes_systemd_analyze_verify_silently(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH")

    # verify fails if the ExecStart= binary is missing, so point it at a stub.
    stub = tmp_path / "bin" / "idle-watchdog"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    lines = UNIT.read_text().splitlines(keepends=True)
    argv = exec_start("".join(lines))
    lines[exec_start_line(lines)] = "ExecStart=" + shlex.join([str(stub), *argv[1:]]) + "\n"
    text = "".join(lines)
    assert exec_start(text) == [str(stub), *argv[1:]]

    # A directory of its own: verify also loads the unit's neighbours.
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    unit = unit_dir / UNIT.name
    unit.write_text(text)

    # --user verify needs XDG_RUNTIME_DIR. A private HOME and XDG dirs keep
    # drop-ins of a real installation (~/.config/systemd/user) out of the check.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", str(runtime))
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        SYSTEMD_LOG_COLOR="0",
        SYSTEMD_PAGER="",
    )
    result = subprocess.run(
        [analyze, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        cwd=unit_dir,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert output == "", f"systemd-analyze --user verify printed:\n{output}"
    assert result.returncode == 0


# --- (c) ExecStart stays in step with the CLI -------------------------------------


def test_unit_runs_idle_watchdog_run() -> None:
    argv = exec_start(UNIT.read_text())
    assert Path(argv[0]).name == "idle-watchdog"
    assert argv[1:] == ["run"]


def test_unit_command_is_the_installed_console_script() -> None:
    scripts = toml().loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(exec_start(UNIT.read_text())[0]).name in scripts


def test_cli_has_a_run_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watchdog", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--config" in result.stdout


# --- (b) the IAM policy is least privilege -----------------------------------------


def load_policy() -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(POLICY.read_text())
    return policy


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements() -> list[dict[str, Any]]:
    return as_list(load_policy()["Statement"])


def grants(statement: dict[str, Any], action: str) -> bool:
    """Whether an Allow statement's Action patterns match ``action`` (IAM is case-blind)."""
    patterns = [str(p).lower() for p in as_list(statement.get("Action", []))]
    return statement["Effect"] == "Allow" and any(
        fnmatch.fnmatchcase(action.lower(), p) for p in patterns
    )


def test_policy_is_valid_json_with_the_current_version() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    assert statements()
    for statement in statements():
        assert statement["Effect"] in ("Allow", "Deny")
        assert "Action" in statement
        assert "Resource" in statement


def test_policy_never_terminates_and_has_no_wildcard_action() -> None:
    assert "ec2:terminateinstances" not in POLICY.read_text().lower()
    for statement in statements():
        # NotAction in an Allow grants everything it does not name.
        assert "NotAction" not in statement
        for action in as_list(statement["Action"]):
            assert action.lower() not in ("*", "ec2:*"), statement
        assert not grants(statement, "ec2:TerminateInstances"), statement


@pytest.mark.parametrize("action", ["ec2:StopInstances", "ec2:CreateTags", "ec2:DeleteTags"])
def test_instance_changes_require_the_managed_tag(action: str) -> None:
    guarded = [s for s in statements() if grants(s, action)]
    assert guarded, f"no statement grants {action}"
    for statement in guarded:
        condition = statement.get("Condition", {})
        assert condition.get("StringEquals", {}).get(MANAGED_TAG) == "true", statement
        for resource in as_list(statement["Resource"]):
            assert resource.endswith(":instance/*"), statement


@pytest.mark.parametrize(
    ("action", "allowed"),
    [("ec2:CreateTags", WRITABLE_TAGS), ("ec2:DeleteTags", {"idle-watchdog:keep-until"})],
)
def test_tag_statements_touch_only_the_watchdog_keys(action: str, allowed: set[str]) -> None:
    for statement in statements():
        if grants(statement, action):
            condition = statement["Condition"]
            keys = condition["ForAllValues:StringEquals"]["aws:TagKeys"]
            assert set(as_list(keys)) == allowed, statement
            # ForAllValues is true when aws:TagKeys is absent (DeleteTags without
            # keys deletes every tag): the keys must be present.
            assert condition["Null"]["aws:TagKeys"] == "false", statement


def test_policy_grants_exactly_what_the_scheduler_calls() -> None:
    granted = {a for s in statements() if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    assert granted == {
        "ec2:DescribeInstances",
        "ec2:DescribeSpotInstanceRequests",
        "ec2:StopInstances",
        "ec2:CreateTags",
        "ec2:DeleteTags",  # keep --off
        "ec2:CancelSpotInstanceRequests",
        # the ledger (issue 12): volumes, addresses, spot prices, list prices, reconcile
        "ec2:DescribeVolumes",
        "ec2:DescribeAddresses",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSpotPriceHistory",
        "pricing:GetProducts",
        "ce:GetCostAndUsage",
    }
