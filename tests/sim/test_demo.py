"""``idle-watchdog demo`` as a person reads it: Linux billing, and tables that follow the stops."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

from watchdog.cli import main


@pytest.fixture(scope="module")
def passes() -> list[str]:
    """The demo's output, one chunk per pass."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["demo"]) == 0
    return out.getvalue().split("── pass ")[1:]


def _row(chunk: str, name: str) -> list[str]:
    (line,) = [line for line in chunk.splitlines() if f"  {name}  " in line]
    return line.split()


def test_instances_are_billed_per_second_as_linux_instances_are(passes: list[str]) -> None:
    """moto reports no platform (per started hour); the demo's instances report Linux/UNIX."""
    costs = [float(_row(chunk, "training-run")[7].lstrip("$")) for chunk in passes]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)  # grows every 5 minutes
    assert costs[0] < 1.006 / 2  # a g5.xlarge ($1.006/h) after under half an hour
    assert costs[-1] == pytest.approx(1.006 * 44 / 60, abs=0.02)


def test_the_table_after_a_stop_shows_the_instance_stopping_not_stop_now(
    passes: list[str],
) -> None:
    (stopping_pass,) = [c for c in passes if "STOP   us-east-1" in c]
    row = _row(stopping_pass, "forgotten-notebook")
    assert row[5] in ("stopping", "stopped")
    assert "stop now" not in " ".join(row)
    assert row[7] == "-"  # no cost of a current run: it is not running (its price/h stays)
    (cancel_pass,) = [c for c in passes if "CANCEL us-west-2" in c]
    assert not re.search(r"sir-\S+\s.*cancel now", cancel_pass)


def test_the_warning_shows_local_wall_clock_times(passes: list[str]) -> None:
    first = passes[0]
    assert "notification: forgotten-notebook stops in 10m" in first
    assert re.search(
        r"\n    Idle since (\d+ \w{3} )?\d\d:\d\d \(20m, \$\d+\.\d\d so far\): no GPU", first
    )
    assert re.search(
        r"\n    Costs \$0\.53/h; stops at (\d+ \w{3} )?\d\d:\d\d unless you keep it\.", first
    )


def test_the_demo_ends_with_the_report_s_summary(passes: list[str]) -> None:
    last = passes[-1]
    summary = last.split("(idle-watchdog report):\n", 1)[1]
    assert re.match(r"5 instances, \S+ to \S+: cost \$\d+\.\d\d \(compute \$", summary)
    assert "1 stop by idle-watchdog saved an estimated $0.0" in summary
    page = Path(summary.split("\nHTML report (open it in a browser): ", 1)[1].strip())
    try:
        assert page.read_text("utf-8").lstrip().lower().startswith("<!doctype html")
    finally:
        shutil.rmtree(page.parent)  # the demo keeps it for the person; a test does not
