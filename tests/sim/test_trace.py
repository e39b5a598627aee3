"""Trace files and their scoring: every policy figure in docs/benchmarks.md rests on these."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from watchdog.core.sample import Gpu, Kernel, Process, Rates, Sample, Terminal, Tty
from watchdog.sim.trace import Score, Trace, TraceError, load, score, to_sample

START = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
STEP = 60
IDLE_S = 30 * 60


def labelled(
    work: str, *, step: int = STEP, idle_minutes: int = 30, price: float | None = None
) -> Trace:
    """A trace from a label string: ``W`` work, ``.`` idle, ``?`` unlabelled; one per sample."""
    header: dict[str, Any] = {
        "format": "idle-trace/1",
        "sample_seconds": step,
        "idle_minutes": idle_minutes,
    }
    if price is not None:
        header["instance"] = {"price_per_hour": price}
    labels = {"W": True, ".": False, "?": None}
    return Trace(
        "t",
        header,
        tuple(i * step for i in range(len(work))),
        tuple({} for _ in work),
        tuple(labels[c] for c in work),
    )


# --- waste ---------------------------------------------------------------------------------

# 40 idle samples between two work samples: a gap of 2,400 s, 600 s beyond the threshold.
GAP = "W" + "." * 40 + "W"


def test_waste_is_the_idle_time_beyond_the_threshold_in_each_gap() -> None:
    assert score(labelled(GAP), None) == Score(False, 600.0, 0.0)
    # two such gaps add up; a gap shorter than the threshold adds nothing
    twice = GAP + "." * 40 + "W" + "." * 10 + "W"
    assert score(labelled(twice), None).waste_seconds == 1200.0


def test_a_gap_of_exactly_the_threshold_wastes_nothing() -> None:
    assert score(labelled("W" + "." * 30 + "W"), None).waste_seconds == 0.0
    assert score(labelled("W" + "." * 31 + "W"), None).waste_seconds == 60.0


def test_never_stopping_wastes_the_trailing_gap_to_the_end_of_the_trace() -> None:
    trace = labelled("W" + "." * 45)  # idle from 60 s; the trace ends at 46 * 60 s
    assert trace.duration == 46 * STEP
    assert score(trace, None).waste_seconds == 45 * STEP - IDLE_S


def test_the_gap_holding_the_stop_counts_up_to_the_stop() -> None:
    trace = labelled("W" + "." * 100)
    assert score(trace, 60 + IDLE_S + 90).waste_seconds == 90.0
    assert score(trace, 60 + IDLE_S).waste_seconds == 0.0  # stopped exactly at the threshold
    # work after the stop is never reached, so it cannot close the gap
    after = labelled("W" + "." * 40 + "W" * 5 + "." * 40)
    assert score(after, 60 + IDLE_S + 120) == Score(False, 120.0, 0.0)


def test_every_gap_counts_the_trailing_one_too() -> None:
    trace = labelled(GAP + "." * 40)  # 600 s in the first gap, then idle to the end
    assert score(trace, None).waste_seconds == 600.0 + (40 * STEP - IDLE_S)


def test_labels_that_do_not_line_up_with_the_samples_are_refused() -> None:
    """A trace built by hand with a label missing must not be scored on a shifted tail."""
    short = labelled(GAP)
    broken = Trace(short.name, short.header, short.times, short.raw, short.work[:-1])
    with pytest.raises(ValueError, match="zip"):
        score(broken, None)
    with pytest.raises(ValueError, match="zip"):
        score(broken, 30 * STEP)
    unmatched = Trace(short.name, short.header, short.times, short.raw[:-1], short.work)
    with pytest.raises(ValueError, match="zip"):
        unmatched.samples(START)


def test_unlabelled_samples_count_as_idle() -> None:
    assert score(labelled("W" + "?" * 40 + "W"), None).waste_seconds == 600.0


def test_waste_in_dollars_is_the_wasted_hours_at_the_trace_price() -> None:
    result = score(labelled(GAP, price=1.006), None)
    assert result.waste_seconds == 600.0
    assert result.waste_usd == 0.167667  # 600 s at $1.006/h, to the micro-dollar
    assert score(labelled(GAP), None).waste_usd == 0.0  # no price: unknown, not a guess
    no_price = labelled(GAP)
    no_price.header["instance"] = {"price_per_hour": None}
    assert score(no_price, None).waste_usd == 0.0


# --- false stops ---------------------------------------------------------------------------


def test_stopping_inside_a_work_sample_is_a_false_stop() -> None:
    trace = labelled("W" * 5 + "." * 60)
    assert score(trace, 4 * STEP).false_stop  # the stop falls at the start of a work sample
    assert score(trace, 4 * STEP + 59).false_stop


def test_a_stop_sooner_than_the_threshold_after_the_last_work_is_a_false_stop() -> None:
    trace = labelled("W" * 5 + "." * 60)
    last_work = 4 * STEP
    assert score(trace, last_work + IDLE_S - 1).false_stop
    exact = score(trace, last_work + IDLE_S)
    assert not exact.false_stop
    assert exact.waste_seconds == 0.0


def test_with_a_threshold_shorter_than_a_sample_the_work_sample_still_covers_its_span() -> None:
    trace = labelled("W" + "." * 10, step=120, idle_minutes=1)
    assert score(trace, 119).false_stop  # 60 s of slack passed, but the work sample is not over
    assert not score(trace, 120).false_stop


def test_a_work_sample_starting_exactly_at_the_stop_is_a_false_stop() -> None:
    trace = labelled("." * 40 + "W" + "." * 40)
    assert score(trace, 40 * STEP).false_stop
    assert not score(trace, 40 * STEP - 1).false_stop  # before it: only idle so far


def test_never_stopping_is_never_a_false_stop() -> None:
    assert not score(labelled("WWWW"), None).false_stop


# --- the file format -----------------------------------------------------------------------

HEADER = {"format": "idle-trace/1", "name": "demo", "sample_seconds": 30, "idle_minutes": 20}


def write(tmp_path: Path, *lines: object, name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines), encoding="utf-8"
    )
    return path


def test_load_reads_header_samples_and_labels_apart(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        {"t": 0, "cpu_percent": 3.0, "work": True},
        "",
        {"t": 30, "work": False},
        {"t": 60, "work": "yes"},
        {"t": 90},
    )
    trace = load(path)
    assert trace.name == "demo"
    assert trace.times == (0, 30, 60, 90)
    assert trace.work == (True, False, None, None)
    assert trace.raw[0] == {"cpu_percent": 3.0}  # neither t nor the label is left to read
    assert trace.raw[1] == trace.raw[3] == {}
    assert (trace.sample_seconds, trace.idle_minutes, trace.duration) == (30, 20, 120)


def test_header_defaults(tmp_path: Path) -> None:
    trace = load(write(tmp_path, {"format": "idle-trace/1"}, name="quiet-night.jsonl"))
    assert trace.name == "quiet-night"
    assert (trace.sample_seconds, trace.idle_minutes, trace.duration) == (60, 30, 0)
    assert trace.samples(START) == []


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), r"t\.jsonl:1: not an idle-trace/1 file \(format=None\)"),
        (("{nope",), r"t\.jsonl:1: header is not JSON"),
        (
            ({"format": "idle-trace/2"},),
            r"t\.jsonl:1: not an idle-trace/1 file \(format='idle-trace/2'\)",
        ),
        ((HEADER, {"t": 0}, "[1,"), r"t\.jsonl:3: not a sample"),
        ((HEADER, {"gpus": []}), r"t\.jsonl:2: not a sample: 't'"),
        ((HEADER, {"t": "soon"}), r"t\.jsonl:2: not a sample"),
        ((HEADER, {"t": None}), r"t\.jsonl:2: not a sample"),
        ((HEADER, {"t": 0}, {"t": 60}, {"t": 60}), r"t\.jsonl:4: t=60 does not follow t=60"),
        ((HEADER, {"t": 60}, "", {"t": 30}), r"t\.jsonl:4: t=30 does not follow t=60"),
    ],
)
def test_a_bad_file_names_the_line_and_what_is_wrong(
    tmp_path: Path, lines: tuple[object, ...], message: str
) -> None:
    with pytest.raises(TraceError, match=message):
        load(write(tmp_path, *lines))


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"missing\.jsonl: cannot read: No such file"):
        load(tmp_path / "missing.jsonl")


# --- samples -------------------------------------------------------------------------------


def test_a_line_becomes_the_sample_an_agent_would_have_read_at_the_end_of_its_interval() -> None:
    line = {
        "gpus": [{"util": 97, "mem_used_mib": 21000, "procs": 1}, {"util": None}],
        "cpu_percent": 26.1,
        "processes": [{"name": "python3", "user": "ubuntu", "cpu_percent": 100.0}, {}],
        "kernels": [
            {"id": "k1", "execution_state": "busy", "last_activity": 590, "connections": 2},
            {"last_activity": None},
        ],
        "terminals": [{"name": "1", "last_activity": 120.5}, {}],
        "ssh": [{"tty": "pts/0", "user": "ubuntu", "idle_seconds": 30}, {}],
        "net_bytes_per_s": {"rx": 900.0, "tx": 700.0},
        "disk_bytes_per_s": {"read": 1.0, "write": 4096.0},
    }
    begin = START + timedelta(seconds=600)
    sample = to_sample(line, START, begin, timedelta(seconds=60))
    assert sample == Sample(
        at=START + timedelta(seconds=660),
        gpus=(Gpu(0, 97, 21000, 1), Gpu(1, None, None, 0)),
        kernels=(
            Kernel("k1", "busy", START + timedelta(seconds=590), 2),
            Kernel("", "", None, 0),
        ),
        terminals=(Terminal("1", START + timedelta(seconds=120.5)), Terminal("", None)),
        ssh=(Tty("pts/0", "ubuntu", 90.0), Tty("", "", 60.0)),  # aged to the reading
        processes=(Process("python3", "ubuntu", 100.0), Process("", "", 0.0)),
        cpu_percent=26.1,
        net=Rates(900.0, 700.0),
        disk=Rates(1.0, 4096.0),
    )


def test_a_signal_recorded_as_null_is_unknown_and_one_left_out_is_empty() -> None:
    nulls = dict.fromkeys(
        [
            "gpus",
            "kernels",
            "terminals",
            "ssh",
            "processes",
            "cpu_percent",
            "net_bytes_per_s",
            "disk_bytes_per_s",
        ]
    )
    at = START + timedelta(seconds=60)
    assert to_sample(nulls, START, START, timedelta(seconds=60)) == Sample(
        at, None, None, None, None, None, None, None, None
    )
    assert to_sample({}, START, START, timedelta(seconds=60)) == Sample(
        at, (), (), (), (), (), None, Rates(0.0, 0.0), Rates(0.0, 0.0)
    )
    partial = {"net_bytes_per_s": {"rx": 5.0}, "disk_bytes_per_s": {"write": 7.0}}
    sample = to_sample(partial, START, START, timedelta(seconds=60))
    assert (sample.net, sample.disk) == (Rates(5.0, 0.0), Rates(0.0, 7.0))


def test_samples_are_stamped_from_the_start_one_interval_after_each_t(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        {"t": 0, "ssh": [{"tty": "pts/0", "idle_seconds": 5}]},
        {"t": 90, "kernels": [{"id": "k", "last_activity": 80}]},
    )
    first, second = load(path).samples(START)
    assert first.at == START + timedelta(seconds=30)
    assert first.ssh == (Tty("pts/0", "", 35.0),)
    assert second.at == START + timedelta(seconds=120)
    assert second.kernels == (Kernel("k", "", START + timedelta(seconds=80), 0),)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (
            b'{"format": "idle-trace/1"}\n{"t": 0}\n{"t": 60, "x": "\xff"}\n',
            "3: not an idle-trace/1 file: not UTF-8 text (byte 0xff at offset 52)",
        ),
        (b"\n\xfe", "2: not an idle-trace/1 file: not UTF-8 text (byte 0xfe at offset 1)"),
    ],
)
def test_a_binary_file_names_the_line_of_its_first_bad_byte(
    tmp_path: Path, data: bytes, where: str
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(data)
    with pytest.raises(TraceError) as caught:
        load(path)
    assert str(caught.value) == f"{path}:{where}"
