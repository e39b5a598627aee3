"""Deployment of the agent: its system unit, install script, cloud-init template and IAM policy.

``systemd-analyze verify`` exits 0 on unknown keys and unparseable values and
only prints warnings, so any output at all counts as a failure.
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import importlib
import json
import os
import re
import shlex
import shutil
import stat
import string
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.helpers import source_copy

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "idle-watchdog-agent.service"
INSTALL = ROOT / "deploy" / "install-agent.sh"
CLOUD_INIT = ROOT / "deploy" / "cloud-init.yaml"
POLICY = ROOT / "deploy" / "iam" / "instance-role-policy.json"

DEFAULT_ARGV = [
    "/opt/idle-watchdog/bin/idle-watchdog",
    "agent",
    "--config",
    "/etc/idle-watchdog/config.toml",
]
# EC2 rejects user-data above 16 KB before base64 encoding.
USER_DATA_LIMIT = 16 * 1024
PLACEHOLDERS = {"IDLE_WATCHDOG_SOURCE", "IDLE_MINUTES", "INSTALL_AGENT_SH", "AGENT_UNIT"}
# "An instance may act only on itself": the pattern of AWS's managed policy
# AWSEC2VssSnapshotPolicy (see deploy/iam/README.md).
SELF_ONLY = {"ec2:SourceInstanceARN": "arn:aws:ec2:*:*:instance/${ec2:InstanceId}"}
AGENT_TAGS = {
    "idle-watchdog:heartbeat",
    "idle-watchdog:stopped",
    "idle-watchdog:keep-until",  # `idle-watchdog keep --for 2h` run on the instance
}
# Security exposure from `systemd-analyze security` (0-10), times ten. The
# unit scores 2.4 with systemd 252; this catches hardening that gets dropped.
EXPOSURE_THRESHOLD = 30


def toml() -> ModuleType:
    """``tomllib`` (3.11+) or its backport ``tomli``, the project's own dependency on 3.10."""
    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        return importlib.import_module("tomli")


def directives(unit_text: str, section: str = "Service") -> dict[str, list[str]]:
    """Every ``Key=value`` of one section, in order; comments and blank lines skipped."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def exec_start(unit_text: str) -> list[str]:
    values = directives(unit_text)["ExecStart"]
    assert len(values) == 1, values
    return shlex.split(values[0])


def with_exec_start(unit_text: str, program: Path) -> str:
    """The unit with its ``ExecStart=`` program replaced, arguments kept."""
    argv = exec_start(unit_text)
    lines = [
        "ExecStart=" + shlex.join([str(program), *argv[1:]])
        if line.startswith("ExecStart=")
        else line
        for line in unit_text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not on PATH")
    return found


def run_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    return subprocess.run(
        [analyze(), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def stub_unit(tmp_path: Path) -> Path:
    """A copy of the unit, alone in a directory, whose ExecStart= program exists."""
    stub = tmp_path / "bin" / "idle-watchdog"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    unit = unit_dir / UNIT.name
    unit.write_text(with_exec_start(UNIT.read_text(), stub))
    return unit


# --- (a) the system unit ------------------------------------------------------------


def test_agent_unit_passes_systemd_analyze_verify_silently(tmp_path: Path) -> None:
    # verify fails if the ExecStart= binary is missing, so point it at a stub.
    unit = stub_unit(tmp_path)
    result = run_analyze("verify", str(unit), cwd=unit.parent)
    output = result.stdout + result.stderr
    assert output == "", f"systemd-analyze verify printed:\n{output}"
    assert result.returncode == 0


def test_agent_unit_exposure_stays_low(tmp_path: Path) -> None:
    unit = stub_unit(tmp_path)
    result = run_analyze(
        "security",
        "--offline=true",
        f"--threshold={EXPOSURE_THRESHOLD}",
        str(unit),
        cwd=unit.parent,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "Overall exposure level" in result.stdout


def test_agent_unit_runs_the_agent_under_the_watchdog() -> None:
    service = directives(UNIT.read_text())
    assert exec_start(UNIT.read_text()) == DEFAULT_ARGV
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"] == ["300"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"] == ["30"]
    install = directives(UNIT.read_text(), "Install")
    assert install["WantedBy"] == ["multi-user.target"]


def test_agent_unit_is_hardened_but_can_reach_what_the_agent_reads() -> None:
    service = directives(UNIT.read_text())
    single = {key: values[-1] for key, values in service.items()}
    # Other users' Jupyter runtime files: readable homes, DAC read override only.
    assert single["ProtectHome"] == "read-only"
    assert single["CapabilityBoundingSet"].split() == ["CAP_DAC_READ_SEARCH"]
    # NVML: /dev/nvidia* must stay visible and allowed.
    assert single.get("PrivateDevices", "no") == "no"
    assert single["DevicePolicy"] == "closed"
    assert any(value.startswith("char-nvidia") for value in service["DeviceAllow"])
    # `wall` to other users' terminals without setgid (NoNewPrivileges).
    assert single["SupplementaryGroups"] == "tty"
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert single[key] == "yes", key
    assert single["ProtectSystem"] == "strict"
    assert single["StateDirectory"] == "idle-watchdog"
    assert single["ConfigurationDirectory"] == "idle-watchdog"
    assert single["SystemCallArchitectures"] == "native"
    assert "@system-service" in service["SystemCallFilter"]
    assert set(single["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


# --- (b) the install script ---------------------------------------------------------


def install(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def snapshot(*paths: Path) -> dict[Path, tuple[bytes, int, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in paths}


def test_install_script_installs_once_and_changes_nothing_the_second_time(
    tmp_path: Path,
) -> None:
    prefix, etc, units = tmp_path / "opt", tmp_path / "etc", tmp_path / "units"
    args = [
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
    first = install(*args, "--idle-minutes", "45")
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines, first.stderr
    assert all(line.startswith("install-agent: ") for line in lines), lines
    assert "not started (--no-start)" in lines[-1]

    program = prefix / "bin" / "idle-watchdog"
    version = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("idle-watchdog ")

    config, token, unit = etc / "config.toml", etc / "token", units / UNIT.name
    check = subprocess.run(
        [str(program), "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    parsed = toml().loads(config.read_text())
    assert parsed["idle"]["minutes"] == 45
    assert parsed["agent"]["token_file"] == str(token)
    assert stat.S_IMODE(config.stat().st_mode) == 0o644

    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    if os.geteuid() == 0:
        assert token.stat().st_uid == 0
    assert re.fullmatch(r"[0-9a-f]{64}\n", token.read_text())

    # The installed unit is the repository's, with ExecStart= pointing at the
    # venv and the config, and ConfigurationDirectory= dropped (not under /etc).
    text = unit.read_text()
    assert exec_start(text) == [str(program), "agent", "--config", str(config)]
    assert "ConfigurationDirectory" not in directives(text)
    changed = {line for line in text.splitlines() if not line.startswith("#")} ^ {
        line for line in UNIT.read_text().splitlines() if not line.startswith("#")
    }
    assert {line.split("=", 1)[0] for line in changed} == {"ExecStart", "ConfigurationDirectory"}
    if shutil.which("systemd-analyze"):
        result = run_analyze("verify", str(unit), cwd=units)
        assert result.stdout + result.stderr == ""

    before = snapshot(config, token, unit)
    second = install(*args, "--idle-minutes", "5")
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(config, token, unit) == before
    assert f"config: {config} exists, kept (--idle-minutes not applied)" in second.stdout
    assert f"token: {token} exists, kept" in second.stdout
    assert f"unit: {unit} unchanged" in second.stdout


def test_install_script_refuses_a_venv_where_watchdog_is_another_library(tmp_path: Path) -> None:
    # A stand-in interpreter: pip "succeeds", but `import watchdog` is not ours,
    # as when PyPI's filesystem watchdog shares the environment.
    prefix = tmp_path / "opt"
    python = prefix / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  *"-m pip"*) exit 0 ;;\n'
        "  *\"import watchdog\"*) echo 'AttributeError: IDLE_WATCHDOG' >&2; exit 1 ;;\n"
        "esac\n"
        "exit 1\n"
    )
    python.chmod(0o755)
    etc = tmp_path / "etc"
    result = install(
        "--prefix",
        str(prefix),
        "--config-dir",
        str(etc),
        "--unit-dir",
        str(tmp_path / "units"),
        "--no-start",
        timeout=60,
    )
    assert result.returncode == 1
    assert "PyPI's filesystem library" in result.stderr
    assert not etc.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--idle-minutes", "0"], "--idle-minutes must be"),
        (["--idle-minutes", "ten"], "--idle-minutes must be"),
        (["--prefix", "/opt/idle watchdog"], "contains characters"),
        (["--unit", "/nonexistent/agent.service"], "unit file not found"),
        (["--frobnicate"], "unknown option"),
    ],
)
def test_install_script_rejects_bad_arguments_before_doing_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = install("--prefix", str(tmp_path / "opt"), "--no-start", *args, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "opt").exists()


# --- (c) the cloud-init template ----------------------------------------------------


def blob(path: Path) -> str:
    return base64.b64encode(gzip.compress(path.read_bytes())).decode()


def render(source: str = "idle-watchdog", minutes: str = "30") -> str:
    return string.Template(CLOUD_INIT.read_text()).substitute(
        IDLE_WATCHDOG_SOURCE=source,
        IDLE_MINUTES=minutes,
        INSTALL_AGENT_SH=blob(INSTALL),
        AGENT_UNIT=blob(UNIT),
    )


def install_command(user_data: dict[str, Any]) -> list[str]:
    commands = [c for c in user_data["runcmd"] if "install-agent.sh" in " ".join(map(str, c))]
    assert len(commands) == 1, user_data["runcmd"]
    command = commands[0]
    assert isinstance(command, list), "runcmd entry should be a list: no shell quoting"
    return [str(word) for word in command]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_cloud_init_template_is_cloud_config_that_runs_the_install_script() -> None:
    text = CLOUD_INIT.read_text()
    assert text.startswith("#cloud-config\n")
    user_data = yaml.safe_load(text)
    assert isinstance(user_data, dict)
    assert {"python3-venv", "git"} <= set(user_data["packages"])
    argv = install_command(user_data)
    assert argv[0] == "bash"
    assert argv[1].endswith("/install-agent.sh")
    assert option(argv, "--source") == "${IDLE_WATCHDOG_SOURCE}"
    assert option(argv, "--idle-minutes") == "${IDLE_MINUTES}"


def test_cloud_init_placeholders_are_exactly_the_documented_ones() -> None:
    text = CLOUD_INIT.read_text()
    found = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)
    assert sorted(found) == sorted(PLACEHOLDERS), "each placeholder exactly once"
    # No other dollar sign, so string.Template can neither fail nor eat text.
    assert text.count("$") == len(PLACEHOLDERS)


def test_rendered_cloud_init_fits_user_data_and_carries_the_repository_files() -> None:
    rendered = render(source="git+https://github.com/example/idle-watchdog@v1", minutes="45")
    assert rendered.startswith("#cloud-config\n")
    assert len(rendered.encode()) <= USER_DATA_LIMIT
    user_data = yaml.safe_load(rendered)
    files = {entry["path"]: entry for entry in user_data["write_files"]}
    argv = install_command(user_data)
    script, unit = files[argv[1]], files[option(argv, "--unit")]
    for entry, original in ((script, INSTALL), (unit, UNIT)):
        assert entry["encoding"] == "gz+b64"
        assert gzip.decompress(base64.b64decode(entry["content"])) == original.read_bytes()
    assert script["permissions"] == "0755"
    assert option(argv, "--source") == "git+https://github.com/example/idle-watchdog@v1"
    assert option(argv, "--idle-minutes") == "45"
    assert option(argv, "--python") == "/usr/bin/python3"


# --- (d) the instance role's policy -------------------------------------------------


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements() -> list[dict[str, Any]]:
    policy: dict[str, Any] = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    return as_list(policy["Statement"])


def grants(statement: dict[str, Any], action: str) -> bool:
    """Whether an Allow statement's Action patterns match ``action`` (IAM is case-blind)."""
    patterns = [str(p).lower() for p in as_list(statement.get("Action", []))]
    return statement["Effect"] == "Allow" and any(
        fnmatch.fnmatchcase(action.lower(), p) for p in patterns
    )


def test_instance_policy_never_terminates_and_has_no_wildcard_action() -> None:
    assert "terminateinstances" not in POLICY.read_text().lower()
    for statement in statements():
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        for action in as_list(statement["Action"]):
            assert "*" not in action, statement
        assert not grants(statement, "ec2:TerminateInstances"), statement


@pytest.mark.parametrize("action", ["ec2:CreateTags", "ec2:DeleteTags", "ec2:StopInstances"])
def test_instance_policy_changes_only_the_instance_itself(action: str) -> None:
    guarded = [s for s in statements() if grants(s, action)]
    assert guarded, f"no statement grants {action}"
    for statement in guarded:
        assert statement["Condition"]["ArnLike"] == SELF_ONLY, statement
        for resource in as_list(statement["Resource"]):
            assert resource.endswith(":instance/*"), statement


def test_instance_policy_tags_only_its_own_keys() -> None:
    for statement in statements():
        if grants(statement, "ec2:CreateTags"):
            condition = statement["Condition"]
            keys = condition["ForAllValues:StringEquals"]["aws:TagKeys"]
            assert set(as_list(keys)) == AGENT_TAGS, statement
            # ForAllValues is true when aws:TagKeys is absent: require the keys.
            assert condition["Null"]["aws:TagKeys"] == "false", statement
        if grants(statement, "ec2:DeleteTags"):
            condition = statement["Condition"]
            keys = condition["ForAllValues:StringEquals"]["aws:TagKeys"]
            assert set(as_list(keys)) == {"idle-watchdog:keep-until"}, statement
            # ForAllValues is true when aws:TagKeys is absent: require the keys.
            assert condition["Null"]["aws:TagKeys"] == "false", statement


def test_instance_policy_stops_only_a_managed_instance() -> None:
    for statement in statements():
        if grants(statement, "ec2:StopInstances"):
            condition = statement["Condition"]["StringEquals"]
            assert condition["aws:ResourceTag/idle-watchdog:managed"] == "true"


def test_instance_policy_grants_exactly_what_the_agent_calls() -> None:
    granted = {a for s in statements() if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    assert granted == {
        "ec2:DescribeInstances",
        "ec2:DescribeTags",
        "ec2:DescribeSpotInstanceRequests",
        "ec2:CreateTags",
        "ec2:DeleteTags",
        "ec2:StopInstances",
    }
