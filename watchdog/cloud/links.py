"""Keep and Stop-now links: HMAC-SHA256 signed, valid until the stop they announce.

A link names the account, region, instance, action and its expiry; the
signature covers all five, so a link changed in any of them, past its
expiry, or signed with another secret is refused. The secret is an SSM
SecureString (``[cloud] link_secret_parameter``), read once per container.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

from watchdog.core.timeutil import parse_duration
from watchdog.scheduler.coexist import stop_time
from watchdog.scheduler.notifier import Message

_INSTANCE = re.compile(r"i-[0-9a-f]{8,17}")
_ACCOUNT = re.compile(r"[0-9]{12}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
_ACTION = re.compile(r"keep:[0-9dhms]{1,12}|stop")
_FIELDS = ("account", "region", "instance", "action", "expires")


class LinkRefused(Exception):
    """The link is not one we signed, or no longer valid; ``str()`` says which, plainly."""


@dataclass(frozen=True)
class Link:
    account: str
    region: str
    instance: str
    action: str  # "keep:1h" | "stop"
    expires: int  # epoch seconds: the stop time the warning announced

    def payload(self) -> bytes:
        return "|".join(str(getattr(self, f)) for f in _FIELDS).encode()

    @property
    def keep_for(self) -> str:
        return self.action.removeprefix("keep:") if self.action.startswith("keep:") else ""


def sign(link: Link, secret: bytes) -> str:
    digest = hmac.new(secret, link.payload(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify(params: Mapping[str, str], secret: bytes, now: datetime) -> Link:
    """The link the query string names, if we signed it and it has not expired."""
    try:
        link = Link(params["a"], params["r"], params["i"], params["do"], int(params["exp"]))
        given = params["sig"]
    except (KeyError, ValueError) as exc:
        raise LinkRefused("This link is incomplete; use the link from the message.") from exc
    if not hmac.compare_digest(sign(link, secret), given):
        raise LinkRefused(
            "This link was not signed by idle-watchdog, or was changed; nothing was done."
        )
    if now.timestamp() >= link.expires:
        raise LinkRefused(
            "This link has expired: it was valid until the announced stop time; nothing was done."
        )
    if not all(
        (
            _ACCOUNT.fullmatch(link.account),
            _REGION.fullmatch(link.region),
            _INSTANCE.fullmatch(link.instance),
            _ACTION.fullmatch(link.action),
        )
    ):
        raise LinkRefused("This link names no instance we manage; nothing was done.")
    if link.keep_for:
        parse_duration(link.keep_for)  # signed by us, so it parses; a ValueError is a bug
    return link


class SignedLinks:
    """``Links`` for the notifiers: button label -> signed URL of the keep function."""

    def __init__(self, base_url: str, secret: bytes, account: str):
        self.base_url, self.secret, self.account = base_url.rstrip("/") + "/", secret, account

    def for_message(self, message: Message) -> Mapping[str, str]:
        """Only a warning with its stop time gets links (they expire at that stop)."""
        stop = stop_time(message)
        if stop is None or not message.target or not message.region:
            return {}
        expires = int(stop.astimezone(timezone.utc).timestamp())
        out: dict[str, str] = {}
        for button in message.buttons:
            link = Link(self.account, message.region, message.target, button.action, expires)
            out[button.label] = self.url(link)
        return out

    def url(self, link: Link) -> str:
        query = {
            "a": link.account,
            "r": link.region,
            "i": link.instance,
            "do": link.action,
            "exp": str(link.expires),
            "sig": sign(link, self.secret),
        }
        return self.base_url + "?" + urlencode(query)
