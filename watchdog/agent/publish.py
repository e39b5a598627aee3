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
import json
import threading
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


class ReportServer:
    """``GET /v1/report`` over HTTP on a background thread."""

    def __init__(self, listen: str, token: str):
        host, _, port = listen.rpartition(":")
        self._token = token.encode()
        self._report: dict[str, Any] | None = None
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
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

        self._server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

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
        self._server.shutdown()
        self._server.server_close()
