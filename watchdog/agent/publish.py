"""Publishing the ActivityReport: the heartbeat tag, and a small HTTP endpoint.

The tag is written through the instance role at most once per
``heartbeat_active_seconds`` and refreshed every ``heartbeat_idle_seconds``
while nothing changes, so the scheduler can tell a silent agent (an old
heartbeat) from an idle machine (a fresh one saying idle). A change of state
is written as soon as the minimum interval allows; leaving ``idle`` is
written at once, so the scheduler never stops on a stale idle report.

The endpoint answers ``GET /v1/report`` with the latest report as JSON, to a
caller that presents the token from a root-only file (``Authorization:
Bearer <token>``, compared in constant time). It binds to 127.0.0.1 unless
configured otherwise; without a readable token file it does not start.
"""

from __future__ import annotations

import hmac
import io
import json
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from watchdog.aws.ec2 import AwsError, Ec2Api
from watchdog.core import heartbeat as hb
from watchdog.core.activity import ActivityReport
from watchdog.core.fleet import TAG_HEARTBEAT

log = structlog.get_logger("watchdog.agent.publish")


@dataclass(frozen=True)
class Written:
    at: datetime
    state: str


def due(
    last: Written | None, report: ActivityReport, *, active_every: timedelta, idle_every: timedelta
) -> bool:
    """Whether the heartbeat tag should be written for ``report`` now (pure)."""
    if last is None:
        return True
    if last.state == "idle" and report.state != "idle":
        return True  # work resumed (or can't be told): say so at once, never throttled
    since = report.sampled_at - last.at
    if since < active_every:
        return False
    if report.state != last.state or report.state == "active":
        return True
    return since >= idle_every


class HeartbeatTag:
    """Writes this instance's heartbeat tag on the cadence ``due`` decides."""

    def __init__(
        self,
        ec2: Ec2Api,
        region: str,
        instance_id: str,
        *,
        active_every: timedelta,
        idle_every: timedelta,
    ):
        self.ec2, self.region, self.instance_id = ec2, region, instance_id
        self.active_every, self.idle_every = active_every, idle_every
        self.last: Written | None = None

    def publish(self, report: ActivityReport, *, force: bool = False) -> bool:
        if not force and not due(
            self.last, report, active_every=self.active_every, idle_every=self.idle_every
        ):
            return False
        value = hb.encode(report.heartbeat())
        try:
            self.ec2.tag(self.region, self.instance_id, {TAG_HEARTBEAT: value})
        except AwsError as exc:
            log.warning("heartbeat not written; retrying next sample", error=str(exc))
            return False
        self.last = Written(report.sampled_at, report.state)
        log.info("heartbeat written", instance_id=self.instance_id, value=value)
        return True


def read_token(path: str | Path) -> str | None:
    """The endpoint token, or None (with a log line) when the file is missing or empty."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.warning(
            "HTTP endpoint off: token file unreadable",
            path=str(path),
            error=exc.strerror or str(exc),
        )
        return None
    if not token:
        log.warning("HTTP endpoint off: token file empty", path=str(path))
        return None
    return token


#: A connection gets this long in all (request, headers, answer), however slowly
#: its bytes come; then it is closed.
CONNECTION_SECONDS = 5.0
#: Connections served at once; one more is closed at once (never queued), so a
#: flood of idle sockets pins at most this many threads, for CONNECTION_SECONDS.
MAX_CONNECTIONS = 16


class _Deadline(io.RawIOBase):
    """A socket's reads, each allowed only the time left before a fixed moment:
    a per-read timeout alone lets a client that sends one byte every few seconds
    hold a thread for as long as it likes."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("connection time used up")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``limit`` at once; the rest closed at once."""

    daemon_threads = True
    request_queue_size = 64  # listen backlog: a burst waits briefly to be accepted and closed

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(limit)
        self._limit = limit
        self._full = False

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            if not self._full:  # once per flood, not once per connection
                log.warning("HTTP endpoint busy: closing new connections", limit=self._limit)
            self._full = True
            self.shutdown_request(request)
            return
        self._full = False
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread was started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class ReportServer:
    """``GET /v1/report`` over HTTP on a background thread.

    The accepting thread sleeps until a connection comes or ``stop`` wakes it
    (no polling); each connection gets ``timeout`` seconds in all, and at most
    ``limit`` are served at once.
    """

    def __init__(
        self,
        listen: str,
        token: str,
        *,
        timeout: float = CONNECTION_SECONDS,
        limit: int = MAX_CONNECTIONS,
    ):
        host, _, port = listen.rpartition(":")
        self._token = token.encode()
        self._report: dict[str, Any] | None = None
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                super().setup()
                self.rfile.close()
                deadline = time.monotonic() + timeout
                self.rfile = io.BufferedReader(_Deadline(self.connection, deadline))

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/v1/report":
                    self._send(404, {"error": "not found"})
                    return
                given = self.headers.get("Authorization", "")
                scheme, _, credential = given.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                    credential.strip().encode(), outer._token
                ):
                    self._send(401, {"error": "a valid bearer token is required"})
                    return
                with outer._lock:
                    body = outer._report
                if body is None:
                    self._send(503, {"error": "no sample yet"})
                else:
                    self._send(200, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # one structured line per decision is enough; no access log

        self._server = _Server((host or "127.0.0.1", int(port)), Handler, limit)
        self._server.timeout = 0  # handle_request() is called only when a connection waits
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="http-endpoint", daemon=True)

    def _serve(self) -> None:
        """Accept connections until ``stop``; blocks in ``select`` with no timeout."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                self._server.handle_request()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        host, port = self.address
        log.info("HTTP endpoint listening", address=f"{host}:{port}")

    def update(self, report: ActivityReport) -> None:
        with self._lock:
            self._report = report.to_json()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join()
        self._server.server_close()
        self._wake_r.close()
        self._wake_w.close()
