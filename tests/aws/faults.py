"""Faults no moto server produces, played at the HTTP edge of a real client.

``Hanging`` is a real TCP peer that accepts and never answers (a region whose
endpoint hangs). ``refuse`` answers chosen requests with an EC2 error before
they leave the client, as AWS would (an IAM condition refusing one instance,
throttling); every other request still reaches moto. Both count what they saw.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from botocore.awsrequest import AWSResponse, HTTPHeaders

from watchdog.aws.ec2 import Boto3Ec2


class Hanging:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hanging", daemon=True)

    def __enter__(self) -> Hanging:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with self._changed:
                self._held.append(conn)
                self._changed.notify_all()

    def accepted(self, at_least: int = 0, timeout: float = 10.0) -> int:
        """Connections accepted so far, after waiting (bounded) for ``at_least`` of them."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._held) >= at_least, timeout=timeout)
            return len(self._held)


class _Body:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def form(request: Any) -> dict[str, list[str]]:
    """A form-encoded EC2 request's fields."""
    body = request.body or b""
    return parse_qs(body.decode() if isinstance(body, bytes) else str(body))


def request_ids(request: Any) -> list[str]:
    """The instance or resource ids a form-encoded EC2 request names, in order."""
    numbered = [(k.split("."), v[0]) for k, v in form(request).items()]
    named = [(int(k[1]), v) for k, v in numbered if k[0] in ("InstanceId", "ResourceId")]
    return [v for _, v in sorted(named)]


def refuse(
    api: Boto3Ec2,
    region: str,
    action: str,
    code: str,
    when: Callable[[list[str]], bool] = lambda ids: True,
    *,
    message: str = "refused by the test",
) -> list[list[str]]:
    """Answer ``action`` requests whose ids satisfy ``when`` with EC2 error ``code``.

    Returns the list of refused requests' ids, filled in as they happen.
    """
    refused: list[list[str]] = []

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        ids = request_ids(request)
        if form(request).get("Action") != [action] or not when(ids):
            return None
        refused.append(ids)
        xml = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            "</Error></Errors><RequestID>test</RequestID></Response>"
        )
        return AWSResponse(request.url, 400, HTTPHeaders(), _Body(xml.encode()))

    api.client(region).meta.events.register("before-send.ec2", answer)  # type: ignore[arg-type]
    return refused
