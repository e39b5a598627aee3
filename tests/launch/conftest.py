"""The ``world`` fixture: the launcher's commands with their edges controlled (world.py)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest

import watchdog.config
from tests.launch.world import World
from watchdog.aws.launching import LauncherAws
from watchdog.launch import commands as launch_cli


@pytest.fixture
def world(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[World]:
    ssh_dir = tmp_path / "ssh"
    state = World(ssh_dir=ssh_dir, capsys=capsys, hooks=[], sent=[])

    def record(request: Any, **_: Any) -> None:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        state.sent.append({k: v[0] for k, v in parse_qs(body).items()})

    def operation(model: Any, **_: Any) -> None:
        state.operations.add(f"{model.service_model.endpoint_prefix}:{model.name}")

    def account(cfg: watchdog.config.Config) -> LauncherAws:
        made = boto3.Session()
        made.events.register("before-send.ec2", record)
        made.events.register("before-call", operation)
        for event, hook in state.hooks:
            made.events.register(event, hook)
        return LauncherAws(made)

    monkeypatch.setattr(launch_cli.EDGES, "caller_ip", lambda: state.caller + "\n")
    monkeypatch.setattr(launch_cli.EDGES, "aws", account)
    monkeypatch.setattr(launch_cli.EDGES, "sleep", lambda _: None)
    yield state


FAKE = """#!{python}
import json, os, sys
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
sys.exit(int(os.environ.get("FAKE_" + os.path.basename(sys.argv[0]).upper() + "_EXIT", "0")))
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[list[str]]]:
    """``ssh`` and ``scp`` on PATH that record their argv, one JSON list per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ssh", "scp"):
        path = bin_dir / name
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return calls
