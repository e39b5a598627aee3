"""``idle-watchdog agent`` from the command line, publishing to a moto server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import launch, tags_of
from watchdog.cli import main
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import TAG_HEARTBEAT

SHARED = Path(__file__).parent.parent / "traces" / "shared"


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize(
    ("trace", "state", "idle_minutes"),
    [
        ("nohup-training", "idle", 237),
        ("terminal-editing", "idle", 210),
        ("long-cpu-cell", "idle", 180),
    ],
)
def test_replay_publishes_the_reduced_report_as_the_live_agent_would(
    capsys: pytest.CaptureFixture[str], trace: str, state: str, idle_minutes: int
) -> None:
    iid = launch("us-east-1")[0]
    path = SHARED / f"{trace}.jsonl"
    assert main(["agent", "--replay", str(path), "--instance-id", iid, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["instance_id"] == iid and report["state"] == state
    assert report["idle_seconds"] // 60 == idle_minutes
    beat = hb.decode(tags_of("us-east-1", iid)[TAG_HEARTBEAT])
    assert beat.active is False
    assert int((beat.sampled_at - beat.last_active_at).total_seconds()) == report["idle_seconds"]


def test_replay_of_a_broken_trace_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "idle-trace/1"}\n{"t": "soon"}\n')
    assert main(["agent", "--replay", str(bad), "--instance-id", "i-1"]) == 2
    assert f"{bad}:2: not a sample" in capsys.readouterr().err
