"""``report --html``: the page holds the hand-computed amounts, each price's source and
the savings note in words, escapes what AWS sent, needs no network, and a real
browser (Debian's headless Chromium) draws its charts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path

import pytest

from watchdog.core.costs import Price, Volume
from watchdog.core.ledger import (
    InstanceRecord,
    Ledger,
    Span,
    SpotPoint,
    StateChange,
    VolumeSpan,
    build,
)
from watchdog.desktop import charts
from watchdog.desktop.report_html import TIMELINE_LIMIT, render

SINCE = datetime(2026, 11, 27, tzinfo=timezone.utc)  # November: 30 days, gp3 $0.08/GB / 30 d
UNTIL = datetime(2026, 11, 30, tzinfo=timezone.utc)
NOW = UNTIL + timedelta(hours=12)
H = timedelta(hours=1)
ROOT_ATTACHED = Span(datetime(2026, 11, 20, tzinfo=timezone.utc))


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=timezone.utc)


def spot() -> InstanceRecord:
    """Spot, 100 GB gp3: runs 11-27 02:00-14:00 (idle from 12:00) and 11-28 09:00-13:00
    across three prices.  Compute 6 h x 0.40 + 6 h x 0.45 + 1 h x 0.45 + 3 h x 0.38 = 6.69;
    IPv4 16 h x 0.005 = 0.08; EBS 100 x 0.08 x 3/30 = 0.80; total 7.57;
    idle 2 h x (0.45 + 0.005) = 0.91."""
    return InstanceRecord(
        region="us-east-1",
        id="i-0spot00000000001",
        type="g5.xlarge",
        platform="Linux/UNIX",
        name="train-spot",
        lifecycle="spot",
        changes=(
            StateChange(at(26, 0), "stopped"),
            StateChange(at(27, 2), "running", public_ipv4=1),
            StateChange(at(27, 14), "stopped"),
            StateChange(at(28, 9), "running", public_ipv4=1),
            StateChange(at(28, 13), "stopped"),
        ),
        spot_prices=(
            SpotPoint(at(26, 0), 0.40),
            SpotPoint(at(27, 8), 0.45),
            SpotPoint(at(28, 10), 0.38),
        ),
        volumes=(VolumeSpan(Volume("vol-spot", "gp3", 100), ROOT_ATTACHED),),
        idle=(Span(at(27, 12), at(27, 14)),),
    )


def on_demand() -> InstanceRecord:
    """On demand at $1.006/h (bundled), 500 GB gp3, stopped by the watchdog on 11-27 at
    22:00 after 2 h idle, started by hand 34 h later for 2 h. Running in the window
    24 h: compute 24.144, IPv4 0.12; EBS 500 x 0.08 x 3/30 = 4.00; total 28.264;
    idle 2 x 1.011 = 2.022; saved 24 h (the horizon) x 1.011 = 24.264."""
    return InstanceRecord(
        region="us-east-1",
        id="i-0ondemand0000002",
        type="g5.xlarge",
        platform="Linux/UNIX",
        name="notebook",
        on_demand=Price(1.006, "bundled"),
        changes=(
            StateChange(at(26, 18), "running", public_ipv4=1),
            StateChange(at(27, 22), "stopping"),
            StateChange(at(27, 22) + timedelta(seconds=30), "stopped"),
            StateChange(at(29, 8), "running", public_ipv4=1),
            StateChange(at(29, 10), "stopped"),
        ),
        volumes=(VolumeSpan(Volume("vol-data", "gp3", 500), ROOT_ATTACHED),),
        idle=(Span(at(27, 20), at(27, 22)),),
        watchdog_stops=(at(27, 22),),
    )


def elsewhere() -> InstanceRecord:
    """In eu-central-1, missing from the bundled table: $1.258/h from the Price List,
    running 11-28 00:00 on; its 200 GB gp3 has no known rate there. Compute
    48 x 1.258 = 60.384; an Elastic IP all 72 h = 0.36; EBS unknown, so partial."""
    return InstanceRecord(
        region="eu-central-1",
        id="i-0frankfurt000003",
        type="g5.xlarge",
        platform="Linux/UNIX",
        name="render-fra",
        on_demand=Price(1.258, "price-list", "2026-11-29T06:00:00Z"),
        changes=(StateChange(at(28, 0), "running"),),
        volumes=(VolumeSpan(Volume("vol-fra", "gp3", 200), ROOT_ATTACHED),),
        elastic_ips=(Span(at(25, 0)),),
    )


def three() -> tuple[Ledger, list[InstanceRecord]]:
    records = [spot(), on_demand(), elsewhere()]
    return build(records, SINCE, UNTIL, NOW), records


def text_of(page: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>|<svg.*?</svg>", " ", page, flags=re.DOTALL)
    body = re.sub(r"<br>|</?(div|p|li|td|th|tr|h\d|figcaption)\b[^>]*>", " ", body)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", body)))


def row_of(page: str, instance_id: str) -> list[str]:
    """The table row's cells, as text."""
    table = page[page.index('<table id="instances"') :]
    row = next(r for r in re.findall(r"<tr>.*?</tr>", table, re.DOTALL) if instance_id in r)
    return [text_of(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]


def test_the_table_holds_the_hand_computed_amounts_and_each_price_source() -> None:
    page = render(*three(), NOW)
    # Instance | running h | idle h | compute | EBS | IPv4 | total | idle cost | stops |
    # saved | price | source
    assert row_of(page, "i-0spot00000000001")[1:] == [
        "16.0", "2.0", "$6.69", "$0.80", "$0.08", "$7.57", "$0.91", "0", "$0.00",
        "$0.3800/h", "spot-history as of 2026-11-28 10:00 UTC",
    ]  # fmt: skip
    assert row_of(page, "i-0ondemand0000002")[1:] == [
        "24.0", "2.0", "$24.14", "$4.00", "$0.12", "$28.26", "$2.02", "1", "$24.26",
        "$1.0060/h", "bundled",
    ]  # fmt: skip
    assert row_of(page, "i-0frankfurt000003")[1:] == [
        "48.0", "0.0", "$60.38", "unknown", "$0.36", "unknown", "$0.00", "0", "$0.00",
        "$1.2580/h", "price-list as of 2026-11-29 06:00 UTC",
    ]  # fmt: skip


def test_the_summary_says_in_words_what_it_cost_and_saved_and_that_it_is_partial() -> None:
    words = text_of(render(*three(), NOW))
    assert (
        "In the 3 days to 2026-11-30 00:00 UTC, the 3 watched instances cost at least "
        "$96.58 (compute $91.22, EBS at least $4.80, public IPv4 $0.56); idle time cost "
        "$2.93; idle-watchdog's 1 stop saved an estimated $24.26." in words
    )
    assert "Partial: 1 instance had an unknown or incomplete price or rate" in words
    assert "Saved is an estimate: each stop made by idle-watchdog counts" in words
    assert "at most 24 h ([billing] savings_horizon_hours)" in words
    # Costliest first: Frankfurt, then the notebook, then the spot instance.
    assert words.index("render-fra") < words.index("notebook") < words.index("train-spot")


def test_a_stop_before_the_window_still_shows_what_it_saved_in_it() -> None:
    """The notebook's stop at 11-27 22:00 saves until 11-28 22:00: a window of 11-28
    03:00-09:00 holds 6 h of that saving, 6 x 1.011 = 6.066, and no stop."""
    records = [spot(), on_demand(), elsewhere()]
    page = render(build(records, at(28, 3), at(28, 9), NOW), records, NOW)
    assert (
        "In the 6 hours to 2026-11-28 09:00 UTC, the 3 watched instances cost at least $7.98"
        in text_of(page)
    )
    assert (
        "idle-watchdog made no stops in it; its earlier stops saved an estimated $6.07 in it."
        in text_of(page)
    )


def test_an_unknown_price_is_shown_as_unknown_never_as_zero() -> None:
    record = InstanceRecord(
        region="ap-southeast-7",
        id="i-0unknown",
        type="g6.xlarge",
        platform="Linux/UNIX",
        changes=(StateChange(at(28, 0), "running", public_ipv4=1),),
    )
    page = render(build([record], SINCE, UNTIL, NOW), [record], NOW)
    cells = row_of(page, "i-0unknown")
    assert cells[3] == "unknown"  # compute
    assert cells[6] == "unknown"  # total
    assert cells[5] == "$0.24"  # IPv4 is still known: 48 h x 0.005
    assert cells[-2:] == ["unknown", "unknown"]  # price and its source
    words = text_of(page)
    assert "cost at least $0.24 (compute unknown, EBS $0.00, public IPv4 $0.24)" in words
    assert "idle time cost $0.00; idle-watchdog made no stops." in words


def test_strings_from_aws_are_shown_as_text_never_run() -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    record = InstanceRecord(
        region="us-east-1",
        id="i-0hostile",
        type="g5.xlarge",
        platform="Linux/UNIX",
        name=hostile,
        on_demand=Price(1.006, "bundled"),
        changes=(StateChange(at(28, 0), "running"),),
    )
    page = render(build([record], SINCE, UNTIL, NOW), [record], NOW)
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert hostile in text_of(page)  # the reader sees the tag as it is
    assert "&lt;script&gt;" in page.split("<svg", 1)[1]  # the timeline's label too


def test_a_name_with_dollars_or_of_any_length_is_drawn_as_it_is() -> None:
    tex = r"cost $\frac{1}{0}$ or $\nosuch$"  # TeX to matplotlib unless told otherwise
    records = [
        replace(spot(), name=tex),
        replace(on_demand(), name="n" * 256),  # tags hold 256 characters
    ]
    page = render(build(records, SINCE, UNTIL, NOW), records, NOW)
    timeline = page[page.index('<title id="timeline-title">') :]
    assert tex in unescape(timeline)
    assert "n" * 40 + "…" in timeline  # cut in the chart's label
    assert "n" * 256 in text_of(page)  # whole in the table


def test_the_page_needs_no_network() -> None:
    page = render(*three(), NOW)
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", page, re.IGNORECASE)
    # Only local references (url(#clip), xlink:href="#marker") within an inline SVG.
    assert not re.search(r"""(src|href)\s*=(?!"#)|@import|url\((?!#)""", page, re.I)
    assert page.count("<svg") == 3
    assert page.count("<figure>") == page.count("<figcaption>") == 3
    for key in ("perday", "cumulative", "timeline"):
        assert f'aria-labelledby="{key}-title"' in page
        assert f'<title id="{key}-title">' in page


def test_many_instances_get_timelines_for_the_costliest_and_all_get_a_row() -> None:
    records = [
        InstanceRecord(
            region="us-east-1",
            id=f"i-{n:04d}",
            type="g5.xlarge",
            platform="Linux/UNIX",
            name=f"box-{n:04d}",
            on_demand=Price(1.0 + n, "config"),
            changes=(StateChange(at(28, 0), "running"),),
        )
        for n in range(TIMELINE_LIMIT + 5)
    ]
    page = render(build(records, SINCE, UNTIL, NOW), records, NOW)
    timeline = page[page.index('<title id="timeline-title">') :]
    timeline = timeline[: timeline.index("</svg>")]
    labelled = set(re.findall(r"box-\d{4}", timeline))
    costliest = {f"box-{n:04d}" for n in range(5, TIMELINE_LIMIT + 5)}
    assert labelled == costliest
    assert len(re.findall(r"<tr><td>box-", page)) == TIMELINE_LIMIT + 5
    assert f"the {TIMELINE_LIMIT} costliest of {TIMELINE_LIMIT + 5} instances" in page


def test_a_window_without_instances_says_so() -> None:
    page = render(build([], SINCE, UNTIL, NOW), [], NOW)
    assert "no watched instance was recorded" in text_of(page)
    assert "<svg" not in page


def test_drawing_leaves_matplotlib_settings_as_found() -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    render(*three(), NOW)
    assert dict(matplotlib.rcParams) == before


def test_status_and_the_daemon_never_import_matplotlib() -> None:
    code = (
        "import sys, watchdog.desktop.report_html, watchdog.desktop.charts, "
        "watchdog.desktop.status, watchdog.desktop.daemon\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- a real browser -----------------------------------------------------------------

CHROMIUM = shutil.which("chromium")


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (CI installs it and must run this)",
)
def test_headless_chromium_draws_the_charts(tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CI must have chromium (.ci/run installs it)"
    page = tmp_path / "report.html"
    page.write_text(render(*three(), NOW), encoding="utf-8")
    png = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1200,2400",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1200, 2400)
        pixels = Counter({rgb: n for n, rgb in image.convert("RGB").getcolors(1200 * 2400)})
    white = pixels[(255, 255, 255)]
    assert white < 0.9 * 1200 * 2400, "the page is (nearly) blank"
    # Each colour means one thing on the page, so its exact pixels are that chart's
    # fills. Floors are about a third of what this page draws here (fonts may differ).
    areas = {
        "compute bars": (charts.COMPUTE, 50_000),
        "EBS bars (billed while stopped too)": (charts.EBS, 3_000),
        "public IPv4 (a sliver of each bar, and the legend)": (charts.IPV4, 150),
        "running spans": (charts.RUNNING, 8_000),
        "idle spans": (charts.IDLE, 400),
        "stopped spans": (charts.STOPPED, 10_000),
        "estimated savings line": (charts.SAVED, 400),
        "spend line": (charts.SPEND, 700),
    }
    for what, (color, least) in areas.items():
        assert pixels[_rgb(color)] >= least, f"{what}: {pixels[_rgb(color)]} px of {color}"


def test_the_timeline_draws_what_the_ledger_bills_and_idle_only_while_running() -> None:
    record = InstanceRecord(
        region="us-east-1",
        id="i-0hibernate",
        type="g5.xlarge",
        platform="Linux/UNIX",
        changes=(
            StateChange(at(27, 6), "running"),
            StateChange(at(27, 8), "stopping", hibernating=True),  # billed, as the ledger has it
            StateChange(at(27, 9), "stopped"),
        ),
        idle=(Span(at(27, 7), at(27, 10)),),  # a heartbeat span running past the stop
    )
    spans = list(charts.state_spans(record, SINCE, UNTIL))
    assert spans == [
        (at(27, 6), at(27, 8), True),
        (at(27, 8), at(27, 9), True),
        (at(27, 9), UNTIL, False),
    ]  # nothing before 06:00: its state then is unknown
    running = [(at(27, 6), at(27, 9))]
    assert charts.idle_spans(record, running, UNTIL) == [(at(27, 7), at(27, 9))]
