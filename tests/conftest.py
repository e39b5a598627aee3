"""Shared fixtures. AWS is a real moto server on loopback; nothing reaches real AWS.

Fake credentials and a dead loopback endpoint are set at import, before any
test or library runs, so a test that forgets its fixture fails to connect
instead of talking to an account.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_EC2_METADATA_DISABLED="true",
    AWS_ENDPOINT_URL="http://127.0.0.1:9",  # discard port: refused unless a fixture sets one
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("IDLE_WATCHDOG_CONFIG", None)

import requests
import structlog

from tests.helpers import Clock
from watchdog.aws.fake import moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A clean moto server for this test; the process points at it."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    yield moto_endpoint


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(timezone.utc).replace(microsecond=0))


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands configure structlog globally (the demo mutes it); each test starts clean."""
    yield
    structlog.reset_defaults()
