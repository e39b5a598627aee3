"""The README and the IAM README say what the code does: links, commands, keys, claims."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from watchdog.cli import _parser
from watchdog.config import DEFAULT, Config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_it_opens_with_exactly_two_set_up_commands_demo_then_tests() -> None:
    head = README.split("\n---\n", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", head, re.S)
    assert len(blocks) == 2 and all(len(b.strip().splitlines()) == 1 for b in blocks)
    assert blocks[0].strip().endswith("idle-watchdog demo")
    assert blocks[1].strip().endswith("python -m pytest")


def test_every_relative_link_and_named_repository_path_exists() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", README)
    named = re.findall(r"`((?:watchdog|deploy|systemd|tests|docs|benchmarks)/[^`*\s]*)`", README)
    missing = [p for p in [*links, *named] if not p.startswith("http") and not (ROOT / p).exists()]
    assert missing == []
    assert "being built" not in README and "units/" not in README


def test_every_command_is_documented() -> None:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    assert {"launch", "ssh", "tunnel", "start", "stop", "install-agent", "audit"} <= commands
    assert [c for c in sorted(commands) if f"idle-watchdog {c}" not in README] == []


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{}" if isinstance(value, Mapping) else str(value)


def test_the_config_table_lists_every_key_with_the_code_s_default() -> None:
    defaults = {
        f"{section.name}.{f.name}": _toml(getattr(getattr(DEFAULT, section.name), f.name))
        for section in dataclasses.fields(Config)
        if section.name != "source"
        for f in dataclasses.fields(type(getattr(DEFAULT, section.name)))
    }
    rows = dict(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| `([^`]*)` \|", README, re.M))
    assert [k for k in defaults if k not in rows] == []
    assert {k: v for k, v in rows.items() if defaults.get(k) != v} == {}


def test_the_grace_times_are_the_code_s() -> None:
    agent = DEFAULT.agent
    assert agent.kernel_grace_seconds == 300 and agent.tty_grace_seconds == 120
    assert agent.sample_seconds == 60
    assert "plus `kernel_grace_seconds` | 300 s |" in README
    assert "plus `tty_grace_seconds` | 120 s |" in README
    assert "counts for `sample_seconds` after its last message" in README


@pytest.mark.parametrize(
    ("policy", "heading"),
    [
        ("scheduler-policy.json", "# IAM policy for the scheduler"),
        ("instance-role-policy.json", "# IAM policy for the agent"),
        ("launcher-policy.json", "# IAM policy for the launcher"),
    ],
)
def test_the_iam_readme_never_denies_an_action_its_policy_grants(policy: str, heading: str) -> None:
    """Each policy's section of deploy/iam/README.md, against that policy."""
    text = (ROOT / "deploy" / "iam" / "README.md").read_text(encoding="utf-8")
    sections = re.split(r"^(?=# )", text, flags=re.M)
    (section,) = [part for part in sections if part.startswith(heading)]
    granted = set()
    for statement in json.loads((ROOT / "deploy" / "iam" / policy).read_text())["Statement"]:
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    denied = set(re.findall(r"\bno `(ec2:[A-Za-z]+)`", section))
    assert "ec2:TerminateInstances" in denied  # the check reads the claims at all
    assert denied & granted == set()
