"""IMDSv2: who and where this instance is, and whether a spot interruption is coming.

Every read takes a session token first (IMDSv2; the launcher requires it).
The endpoint follows boto's ``AWS_EC2_METADATA_SERVICE_ENDPOINT``, so tests
point it at a local server.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import requests

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL = 21600


class ImdsError(Exception):
    """IMDS is unreachable or answered something unexpected (not on EC2, or hop limit)."""


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str
    lifecycle: str  # "on-demand" | "spot"


class Imds:
    def __init__(self, endpoint: str | None = None, timeout: float = 2.0):
        base = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT
        self.base = base.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()
        self._token = ""
        self._expires = 0.0

    def _fresh_token(self) -> str:
        if self._token and time.monotonic() < self._expires:
            return self._token
        try:
            answer = self._http.put(
                f"{self.base}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ImdsError(f"IMDS unreachable: {exc}") from exc
        if answer.status_code != 200:
            raise ImdsError(f"IMDS token refused: HTTP {answer.status_code}")
        self._token = answer.text.strip()
        self._expires = time.monotonic() + TOKEN_TTL - 60
        return self._token

    def get(self, path: str) -> str | None:
        """The value at ``/latest/<path>``; ``None`` for 404 (not there, e.g. no notice)."""
        for attempt in (1, 2):
            try:
                answer = self._http.get(
                    f"{self.base}/latest/{path}",
                    headers={"X-aws-ec2-metadata-token": self._fresh_token()},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise ImdsError(f"IMDS unreachable: {exc}") from exc
            if answer.status_code == 401 and attempt == 1:
                self._token = ""  # expired or rotated: fetch a new one once
                continue
            if answer.status_code == 404:
                return None
            if answer.status_code != 200:
                raise ImdsError(f"IMDS {path}: HTTP {answer.status_code}")
            return answer.text
        raise ImdsError(f"IMDS {path}: token refused twice")  # pragma: no cover

    def identity(self) -> Identity:
        instance_id = self.get("meta-data/instance-id")
        region = self.get("meta-data/placement/region")
        if not instance_id or not region:
            raise ImdsError("IMDS has no instance-id or region")
        lifecycle = self.get("meta-data/instance-life-cycle") or "on-demand"
        return Identity(instance_id.strip(), region.strip(), lifecycle.strip())

    def spot_notice(self) -> dict[str, Any] | None:
        """The spot ``instance-action`` notice (``{"action": ..., "time": ...}``), or None."""
        text = self.get("meta-data/spot/instance-action")
        if text is None:
            return None
        try:
            notice = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImdsError(f"garbled spot notice: {text[:80]!r}") from exc
        if not isinstance(notice, dict):
            raise ImdsError(f"garbled spot notice: {text[:80]!r}")
        return notice
