"""IMDSv2 against a local HTTP server that answers as EC2's does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from watchdog.agent.imds import Identity, Imds, ImdsError

TOKEN = "AQAEAFake-token=="


class FakeImds:
    """IMDSv2: PUT a token, then GETs must present it; unknown paths are 404."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {
            "/latest/meta-data/instance-id": "i-0123456789abcdef0",
            "/latest/meta-data/placement/region": "us-west-2",
            "/latest/meta-data/instance-life-cycle": "spot",
        }
        self.tokens_issued = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                if self.path != "/latest/api/token" or not self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    self._reply(400, "")
                    return
                owner.tokens_issued += 1
                self._reply(200, TOKEN)

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    self._reply(401, "")
                elif self.path in owner.values:
                    self._reply(200, owner.values[self.path])
                else:
                    self._reply(404, "")

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_identity_comes_from_imdsv2_with_one_token(imds: FakeImds) -> None:
    client = Imds(imds.url)
    assert client.identity() == Identity("i-0123456789abcdef0", "us-west-2", "spot")
    assert client.identity().region == "us-west-2"
    assert imds.tokens_issued == 1  # cached across reads


def test_spot_notice_is_none_until_aws_sends_one(imds: FakeImds) -> None:
    client = Imds(imds.url)
    assert client.spot_notice() is None  # 404: no interruption coming
    notice = {"action": "stop", "time": "2026-11-23T16:00:00Z"}
    imds.values["/latest/meta-data/spot/instance-action"] = json.dumps(notice)
    assert client.spot_notice() == notice


def test_garbled_notice_is_an_error_not_a_notice(imds: FakeImds) -> None:
    imds.values["/latest/meta-data/spot/instance-action"] = "<html>oops"
    with pytest.raises(ImdsError, match="garbled"):
        Imds(imds.url).spot_notice()


def test_an_expired_token_is_renewed_once(imds: FakeImds) -> None:
    client = Imds(imds.url)
    client.identity()
    client._token = "stale"  # as if it had expired on the server's side
    assert client.get("meta-data/instance-id") == "i-0123456789abcdef0"
    assert imds.tokens_issued == 2


def test_no_imds_is_a_clear_error() -> None:
    with pytest.raises(ImdsError, match="unreachable"):
        Imds("http://127.0.0.1:9", timeout=0.5).identity()


def test_the_endpoint_follows_boto_s_environment_variable(
    imds: FakeImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    assert Imds().identity().instance_id == "i-0123456789abcdef0"
