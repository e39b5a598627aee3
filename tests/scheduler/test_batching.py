"""A pass over many idle machines: their stops go out together, each keeps its own
outcome, and a region whose endpoint hangs holds back no other region's stops."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.aws.faults import form, refuse
from tests.helpers import MANAGED, beat, config, launch, state, tags_of
from watchdog.aws.ec2 import AwsError, Boto3Ec2
from watchdog.aws.fake import set_launch_time
from watchdog.core.fleet import TAG_STOPPED, Instance
from watchdog.desktop.store import Store
from watchdog.scheduler import run_pass, tell
from watchdog.scheduler.passes import IDLE_STOP

pytestmark = pytest.mark.usefixtures("aws")

REGION = "us-east-1"
_SCOPE = re.compile(r"/([a-z]{2}-[a-z]+-\d+)/ec2/")  # SigV4 credential scope
CFG = config(aws={"regions": (REGION,)}, idle={"minutes": 30, "warn_minutes": 0})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "history.sqlite3")


def _idle(count: int, region: str = REGION) -> tuple[list[str], datetime]:
    """``count`` managed machines up for 45 minutes whose agents say idle for 40."""
    ids = launch(region, tags=MANAGED, count=count)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for iid in ids:
        set_launch_time(region, iid, now - timedelta(minutes=45))
        beat(region, iid, now, active=False, last_active=now - timedelta(minutes=40))
    return ids, now


def _actions(api: Boto3Ec2) -> list[str]:
    """Every EC2 action the client sends from now on, in order."""
    seen: list[str] = []

    def record(request: Any, **_: Any) -> None:
        seen.extend(form(request).get("Action", []))

    api.client(REGION).meta.events.register("before-send.ec2", record)
    return seen


def test_twelve_idle_machines_take_one_read_one_stop_and_one_tag(store: Store) -> None:
    ids, now = _idle(12)
    api = Boto3Ec2()
    sent = _actions(api)
    report = run_pass(api, store, CFG, now + timedelta(seconds=30))
    assert {d.target for d in report.done if d.kind == "stop" and d.ok} == set(ids)
    assert all(state(REGION, i) in ("stopping", "stopped") for i in ids)
    assert sent.count("StopInstances") == 1
    assert sent.count("CreateTags") == 1
    assert sent.count("DescribeInstances") == 2  # the scan, and one re-read of all twelve
    assert all(tags_of(REGION, i)[TAG_STOPPED].endswith(IDLE_STOP) for i in ids)
    told = [m.key for m in tell(report, store, CFG)]
    assert sorted(k for k in told if k.startswith("stopped:")) == sorted(
        f"stopped:{i}" for i in ids
    )


def test_one_refused_stop_fails_alone_and_the_others_stop(store: Store) -> None:
    ids, now = _idle(5)
    api = Boto3Ec2()
    refused = refuse(api, REGION, "StopInstances", "UnauthorizedOperation", lambda g: ids[2] in g)
    report = run_pass(api, store, CFG, now + timedelta(seconds=30))
    outcome = {d.target: d.ok for d in report.done if d.kind == "stop"}
    assert outcome == {i: i != ids[2] for i in ids}
    assert state(REGION, ids[2]) == "running"
    assert [ids[2]] in refused  # the batch was refused, then it was tried on its own
    failed = [d for d in report.done if not d.ok]
    assert "UnauthorizedOperation" in failed[0].detail
    assert TAG_STOPPED not in tags_of(REGION, ids[2])


def test_when_the_reread_fails_nothing_is_stopped_this_pass(store: Store) -> None:
    ids, now = _idle(3)
    api = Boto3Ec2()
    # The scan names no ids (it filters by state); the re-read names the candidates.
    refuse(api, REGION, "DescribeInstances", "UnauthorizedOperation", bool)
    report = run_pass(api, store, CFG, now + timedelta(seconds=30))
    assert not [d for d in report.done if d.kind == "stop"]
    assert all(state(REGION, i) == "running" for i in ids)
    reasons = {p.decision.target: p.decision.reason for p in report.planned}
    assert all("could not read it again" in reasons[i] for i in ids)


def test_a_region_whose_acting_breaks_never_blocks_the_next(store: Store) -> None:
    """A fault no peer produces (a bug, say) while acting on one region: logged, and
    the other region's idle machine is still stopped."""
    broken, fine = "eu-west-1", REGION
    (lost,), _ = _idle(1, broken)
    (kept,), now = _idle(1, fine)

    class Broken(Boto3Ec2):
        def describe_many(self, region: str, ids: Sequence[str]) -> dict[str, Instance]:
            if region == broken:
                raise RuntimeError("a bug")
            return super().describe_many(region, ids)

    cfg = replace(CFG, aws=replace(CFG.aws, regions=(broken, fine)))
    report = run_pass(Broken(), store, cfg, now + timedelta(seconds=30))
    assert {d.target for d in report.done if d.kind == "stop" and d.ok} == {kept}
    assert state(broken, lost) == "running"


def test_a_stopped_tag_that_breaks_loses_no_stop_record(store: Store) -> None:
    ids, now = _idle(2)

    class NoTags(Boto3Ec2):
        def tag_many(
            self, region: str, ids: Sequence[str], tags: Mapping[str, str]
        ) -> dict[str, AwsError | None]:
            raise RuntimeError("a bug")

    report = run_pass(NoTags(), store, CFG, now + timedelta(seconds=30))
    assert {d.target for d in report.done if d.kind == "stop" and d.ok} == set(ids)
    assert {a[1] for a in store.actions() if a[2] == "stop" and a[3]} == set(ids)


# --- a region that hangs, end to end --------------------------------------------------------


class RegionRouter:
    """A loopback HTTP proxy in front of moto that holds every request signed for one
    region without answering, until the client gives up. It logs what it saw, in order."""

    def __init__(self, upstream: str, hang: str):
        self.log: list[str] = []
        self._lock = threading.Lock()
        target = urlsplit(upstream)
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                action = parse_qs(body.decode()).get("Action", ["?"])[0]
                if f"/{hang}/" in self.headers.get("Authorization", ""):
                    router.note(f"{hang} {action} held")
                    self.connection.settimeout(120)
                    with contextlib.suppress(OSError):
                        self.connection.recv(1)  # b"" once the client hangs up
                    router.note(f"{hang} {action} abandoned")
                    self.close_connection = True
                    return
                signed = _SCOPE.search(self.headers.get("Authorization", ""))
                region = signed.group(1) if signed else "unsigned"
                router.note(f"{region} {action}")
                conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
                conn.request("POST", self.path, body, headers=dict(self.headers))
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def note(self, event: str) -> None:
        with self._lock:
            self.log.append(event)

    def __enter__(self) -> RegionRouter:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_a_hung_region_holds_back_no_other_regions_stop(aws: str, tmp_path: Path) -> None:
    """``run --once`` in its own process: us-west-2's endpoint accepts and never answers;
    the idle machine in us-east-1 is stopped while us-west-2 is still being waited for,
    and us-west-2 is given up after the configured timeout, not botocore's minutes."""
    (iid,), _ = _idle(1)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[aws]\nregions = ["us-west-2", "us-east-1"]\n'
        "connect_timeout_seconds = 5\nread_timeout_seconds = 15\nmax_attempts = 1\n"
        "[idle]\nwarn_minutes = 0\n"
        f'[scheduler]\ndatabase = "{tmp_path / "history.sqlite3"}"\n'
    )
    with RegionRouter(aws, hang="us-west-2") as router:
        env = {**os.environ, "AWS_ENDPOINT_URL": router.url, "IDLE_WATCHDOG_CONFIG": str(cfg)}
        done = subprocess.run(
            [sys.executable, "-m", "watchdog", "run", "--once"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        events = list(router.log)
    assert state(REGION, iid) in ("stopping", "stopped"), done.stderr
    assert "us-west-2 DescribeInstances held" in events
    stop = events.index("us-east-1 StopInstances")
    given_up = events.index("us-west-2 DescribeInstances abandoned")
    assert stop < given_up, events
    assert events.count("us-west-2 DescribeInstances held") == 1  # max_attempts = 1
