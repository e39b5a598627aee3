"""The heartbeat tag's cadence (pure), its write to a moto server, and the HTTP endpoint."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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


# --- the endpoint under idle connections ------------------------------------------------


def _closed_by_server(socks: list[socket.socket], within: float) -> set[socket.socket]:
    """The sockets the server closed (EOF or reset) within ``within`` seconds."""
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ, sock)
        while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                s: socket.socket = key.data
                try:
                    data = s.recv(1)
                except ConnectionError:
                    data = b""
                assert data == b"", data  # nobody sent a request, so no answer is due
                closed.add(s)
                sel.unregister(s)
    return closed


def _until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


GOOD = {"Authorization": "Bearer s3cret-token"}


def test_idle_connections_are_closed_and_their_threads_end() -> None:
    """100 sockets that never send a byte: all closed, no thread left behind."""
    srv = ReportServer("127.0.0.1:0", "s3cret-token", timeout=1.0)
    srv.start()
    srv.update(report(T0, "active"))
    baseline = threading.active_count()
    socks = [socket.create_connection(srv.address) for _ in range(100)]
    try:
        assert len(_closed_by_server(socks, within=30)) == 100
        _until(lambda: threading.active_count() == baseline)
        host, port = srv.address
        got = requests.get(f"http://{host}:{port}/v1/report", headers=GOOD, timeout=5)
        assert got.status_code == 200 and got.json()["active"] is True
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_a_connection_over_the_cap_is_closed_at_once_and_served_once_a_slot_frees() -> None:
    srv = ReportServer("127.0.0.1:0", "s3cret-token", timeout=120.0, limit=4)
    srv.start()
    srv.update(report(T0, "active"))
    host, port = srv.address
    url = f"http://{host}:{port}/v1/report"
    held = [socket.create_connection(srv.address) for _ in range(4)]
    try:
        _until(lambda: threading.active_count() >= 4 + 2)  # main, accept loop, 4 handlers
        extra = socket.create_connection(srv.address)
        assert _closed_by_server([extra], within=30) == {extra}  # not queued behind the 4
        extra.close()
        for s in held:  # ... which are still open, well inside their 120 s
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
        with pytest.raises(requests.ConnectionError):
            requests.get(url, headers=GOOD, timeout=30)
        held.pop().close()  # one client goes away: its slot is free again

        def served() -> bool:
            try:
                return requests.get(url, headers=GOOD, timeout=30).status_code == 200
            except requests.ConnectionError:
                return False  # the freed handler thread had not ended yet

        _until(served)
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_a_client_trickling_bytes_is_cut_off_at_the_connection_deadline() -> None:
    """One byte a little faster than any per-read timeout: the deadline is for the whole
    connection, so the server still closes it."""
    srv = ReportServer("127.0.0.1:0", "s3cret-token", timeout=1.0)
    srv.start()
    s = socket.create_connection(srv.address)
    try:
        closed = False
        with selectors.DefaultSelector() as sel:
            sel.register(s, selectors.EVENT_READ)
            for byte in b"GET /v1/report HTTP/1.1\r\nX-Slow: " + b"a" * 300:
                if sel.select(0.2):  # the server closed it (EOF): stop trickling
                    closed = True
                    break
                s.send(bytes([byte]))
        assert closed and s.recv(1) == b""  # before the 300 bytes (a minute) were through
    finally:
        s.close()
        srv.stop()


#: Where each machine's waiting system calls keep their timeout: (argument, "none").
_WAITS = {
    "x86_64": {7: (2, -1), 232: (3, -1), 281: (3, -1), 271: (2, 0)},  # poll, epoll_*, ppoll
    "aarch64": {22: (3, -1), 73: (2, 0)},  # epoll_pwait, ppoll (a NULL timespec)
}


def test_the_accept_loop_sleeps_until_a_connection_comes() -> None:
    """Nothing to do, nothing done: the loop waits with no timeout (it polled twice a
    second before), as the kernel shows in /proc/self/task/TID/syscall."""
    waits = _WAITS.get(os.uname().machine)
    if waits is None or not Path("/proc/self/task").is_dir():
        pytest.skip("system call numbers known for x86_64 and aarch64 Linux only")
    srv = ReportServer("127.0.0.1:0", "s3cret-token")
    srv.start()
    try:
        tid = srv._thread.native_id  # the accept loop, as the kernel names it
        syscall = Path(f"/proc/self/task/{tid}/syscall")
        fields: list[str] = []

        def waiting() -> bool:
            nonlocal fields
            fields = syscall.read_text().split()
            return bool(fields) and fields[0].isdigit() and int(fields[0]) in waits

        _until(waiting)
        arg, none = waits[int(fields[0])]
        timeout = int(fields[1 + arg], 16)
        assert timeout in ((none & 0xFFFFFFFF), (none & 0xFFFFFFFFFFFFFFFF)), fields
        host, port = srv.address  # and it still answers
        assert requests.get(f"http://{host}:{port}/v1/report", timeout=5).status_code == 401
    finally:
        srv.stop()
