"""The heartbeat tag's cadence (pure), its write to a moto server, and the HTTP endpoint."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.helpers import launch, tags_of
from watchdog.agent.publish import HeartbeatTag, ReportServer, Written, due, read_token
from watchdog.aws.ec2 import AwsError, Boto3Ec2
from watchdog.core import heartbeat as hb
from watchdog.core.activity import ActivityReport
from watchdog.core.fleet import TAG_HEARTBEAT

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
MIN, REFRESH = timedelta(seconds=60), timedelta(seconds=300)


def report(at: datetime, state: str = "idle") -> ActivityReport:
    return ActivityReport("i-1", at, state, T0, ("gpu:0",) if state == "active" else ())


@pytest.mark.parametrize(
    ("last", "now", "state", "expected"),
    [
        (None, 0, "idle", True),  # first report: always
        (Written(T0, "active"), 30, "active", False),  # at most one write a minute
        (Written(T0, "active"), 60, "active", True),
        (Written(T0, "active"), 30, "idle", False),  # a change waits for the minute too
        (Written(T0, "active"), 60, "idle", True),
        (Written(T0, "idle"), 120, "idle", False),  # idle: refresh only
        (Written(T0, "idle"), 300, "idle", True),
        (Written(T0, "idle"), 90, "unknown", True),
    ],
)
def test_heartbeat_cadence(last: Written | None, now: int, state: str, expected: bool) -> None:
    at = T0 + timedelta(seconds=now)
    assert due(last, report(at, state), active_every=MIN, idle_every=REFRESH) is expected


@pytest.mark.usefixtures("aws")
def test_the_heartbeat_tag_appears_on_the_instance() -> None:
    iid = launch("us-east-1")[0]
    tag = HeartbeatTag(Boto3Ec2(), "us-east-1", iid, active_every=MIN, idle_every=REFRESH)
    assert tag.publish(report(T0 + timedelta(minutes=5), "active"))
    beat = hb.decode(tags_of("us-east-1", iid)[TAG_HEARTBEAT])
    assert beat.active is True and beat.reasons == ("gpu:0",)
    assert not tag.publish(report(T0 + timedelta(minutes=5, seconds=20), "idle"))


@pytest.mark.usefixtures("aws")
def test_a_failed_write_is_retried_on_the_next_sample() -> None:
    """Fault moto cannot produce: the instance role lacks CreateTags for a moment."""
    iid = launch("us-east-1")[0]

    class Refusing(Boto3Ec2):
        refuse = True

        def tag(self, region: str, resource_id: str, tags: Mapping[str, str]) -> None:
            if self.refuse:
                raise AwsError("UnauthorizedOperation", "not allowed")
            super().tag(region, resource_id, tags)

    api = Refusing()
    tag = HeartbeatTag(api, "us-east-1", iid, active_every=MIN, idle_every=REFRESH)
    assert not tag.publish(report(T0))
    assert tag.last is None and TAG_HEARTBEAT not in tags_of("us-east-1", iid)
    api.refuse = False
    assert tag.publish(report(T0 + timedelta(seconds=1)))
    assert TAG_HEARTBEAT in tags_of("us-east-1", iid)


@pytest.fixture
def server() -> Iterator[ReportServer]:
    srv = ReportServer("127.0.0.1:0", "s3cret-token")
    srv.start()
    yield srv
    srv.stop()


def test_the_endpoint_needs_the_token(server: ReportServer) -> None:
    host, port = server.address
    url = f"http://{host}:{port}/v1/report"
    assert host == "127.0.0.1"
    assert requests.get(url, timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer s3cret-tokeN"}
    assert requests.get(url, headers=wrong, timeout=5).status_code == 401
    good = {"Authorization": "Bearer s3cret-token"}
    assert requests.get(url, headers=good, timeout=5).status_code == 503  # no sample yet
    server.update(report(T0, "active"))
    answer = requests.get(url, headers=good, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["active"] is True and answer.json()["reasons"] == ["gpu:0"]
    assert requests.get(url.replace("report", "x"), headers=good, timeout=5).status_code == 404


def test_no_token_file_means_no_endpoint(tmp_path: Path) -> None:
    assert read_token(tmp_path / "missing") is None
    (tmp_path / "empty").write_text("\n")
    assert read_token(tmp_path / "empty") is None
    (tmp_path / "token").write_text("abc\n")
    assert read_token(tmp_path / "token") == "abc"


def test_leaving_idle_is_written_at_once() -> None:
    """Work resumed seconds after an idle write: the scheduler must hear it now."""
    last = Written(T0, "idle")
    assert due(
        last, report(T0 + timedelta(seconds=5), "active"), active_every=MIN, idle_every=REFRESH
    )
