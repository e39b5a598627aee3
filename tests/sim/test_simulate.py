"""``simulate``: the real reducer and policy in virtual time, scored against labels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.cli import main
from watchdog.sim.simulate import POLICIES, simulate
from watchdog.sim.trace import Trace, load

TRACES = sorted((Path(__file__).parents[1] / "traces").rglob("*.jsonl"))
SHARED = Path(__file__).parents[1] / "traces" / "shared"


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
def test_idle_watchdog_never_stops_work_and_wastes_under_two_minutes(path: Path) -> None:
    result = simulate(load(path))
    assert result.false_stop is False, result
    assert result.waste_seconds is not None and result.waste_seconds < 120, result
    if result.stopped_at is not None:
        assert result.warned_at is not None and result.warned_at < result.stopped_at


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
def test_the_labels_are_never_read_to_decide(path: Path) -> None:
    trace = load(path)
    flipped = replace(trace, work=tuple(not w for w in trace.work))
    for policy in POLICIES:
        assert simulate(flipped, policy).stopped_at == simulate(trace, policy).stopped_at


@pytest.mark.parametrize(
    ("trace", "policy"),
    [
        ("terminal-editing", "cpu-alarm"),  # a person typing uses no CPU
        ("nohup-training", "jupyter-only"),  # no kernels: counts from boot
        ("long-cpu-cell", "gpu-only"),  # CPU work, GPU at 0 %
        ("notebook-then-leave", "gpu-only"),  # thinking between cells
    ],
)
def test_the_baselines_fail_where_their_tools_do(trace: str, policy: str) -> None:
    assert simulate(load(SHARED / f"{trace}.jsonl"), policy).false_stop is True


def test_simulate_json_is_one_object_per_trace_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = [str(SHARED / "nohup-training.jsonl"), str(SHARED / "spot-relaunch-idle.jsonl")]
    assert main(["simulate", "--json", *paths]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["trace"] for x in lines] == ["nohup-training", "spot-relaunch-idle"]
    assert lines[0]["policy"] == "idle-watchdog"
    assert lines[0]["stopped_at"] == 23580 and lines[1]["stopped_at"] == 1800
    assert lines[1]["warned_at"] == 1200
    assert lines[0]["false_stop"] is False and lines[0]["waste_usd"] == 0


def test_simulate_table_for_a_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policy", "cpu-alarm", str(SHARED / "terminal-editing.jsonl")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["trace", "policy", "stopped"]
    assert "cpu-alarm" in out[1] and "YES" in out[1]


def _sample(t: int, busy: bool, kind: int) -> dict[str, Any]:
    line: dict[str, Any] = {
        "gpus": [{"util": 0, "mem_used_mib": 9000, "procs": 1}],
        "cpu_percent": 0.8,
        "processes": [],
        "kernels": [],
        "terminals": [],
        "ssh": [],
        "net_bytes_per_s": {"rx": 900.0, "tx": 700.0},
        "disk_bytes_per_s": {"read": 0.0, "write": 4096.0},
    }
    if busy:
        if kind == 0:
            line["gpus"][0]["util"] = 90
        elif kind == 1:
            line["processes"] = [{"name": "python", "user": "ubuntu", "cpu_percent": 100.0}]
        elif kind == 2:
            line["ssh"] = [{"tty": "pts/0", "user": "ubuntu", "idle_seconds": 10}]
        elif kind == 3:
            line["kernels"] = [
                {"id": "k", "execution_state": "busy", "last_activity": t, "connections": 1}
            ]
        else:
            line["net_bytes_per_s"] = {"rx": 30e6, "tx": 1e5}
    return line


@settings(max_examples=60, deadline=None)
@given(
    spells=st.lists(
        st.tuples(st.integers(1, 90), st.integers(0, 29), st.integers(0, 4)),
        min_size=1,
        max_size=12,
    )
)
def test_work_that_never_pauses_past_the_threshold_is_never_stopped(
    spells: list[tuple[int, int, int]],
) -> None:
    """Work spells of any signal, separated by pauses shorter than the 30-minute threshold."""
    raw: list[dict[str, Any]] = []
    t = 0
    for work_minutes, pause_minutes, kind in spells:
        for _ in range(work_minutes):
            raw.append(_sample(t, True, kind))
            t += 60
        for _ in range(pause_minutes):
            raw.append(_sample(t, False, kind))
            t += 60
    header = {
        "format": "idle-trace/1",
        "name": "generated",
        "idle_minutes": 30,
        "sample_seconds": 60,
        "instance": {"type": "g5.xlarge"},
    }
    trace = Trace("generated", header, tuple(range(0, t, 60)), tuple(raw), (None,) * len(raw))
    assert simulate(trace).stopped_at is None
