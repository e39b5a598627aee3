"""The team shell's channels: an SNS topic (e-mail, SQS, ...) and a Slack incoming webhook.

A person reads these away from any desktop, so a message's buttons become
links (``Links``: button label -> signed URL, served by the keep function).
Each ``send`` is synchronous, returns True once the channel took the message
and False otherwise, and never raises: the outbox keeps an undelivered
message and tries it again on the next tick, and a stop waits for its
warning to be delivered.

The owner of an instance (``owner_of``) routes the message: an SNS message
carries it as the ``owner`` attribute (absent for the default route, so a
subscription filters it with ``{"owner": [{"exists": false}]}``), and Slack
names the owner in the message.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol

import requests
import structlog

from watchdog.core.fleet import TAG_PREFIX
from watchdog.scheduler.notifier import Message

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

log = structlog.get_logger("watchdog.cloud.notify")

TAG_OWNER = TAG_PREFIX + "owner"
OWNER_FALLBACK_TAG = "Owner"
#: SNS refuses a longer subject (and any line break or control character in it).
SUBJECT_MAX = 100
#: Slack's limits: a section's text and a button's label.
SLACK_TEXT_MAX = 3000
SLACK_LABEL_MAX = 75
#: (connect, read) seconds for the webhook: a stuck Slack must not eat the worker's time.
SLACK_TIMEOUT = (3.05, 10.0)
#: The longest ``Retry-After`` waited for in place; a longer one is left to the next tick.
SLACK_RETRY_AFTER_MAX = 5.0
_SLACK_MEMBER = re.compile(r"^[UW][A-Z0-9]{6,}$")


def owner_of(tags: Mapping[str, str]) -> str:
    """Who is told about an instance: ``idle-watchdog:owner``, else ``Owner``, else "" (default)."""
    for key in (TAG_OWNER, OWNER_FALLBACK_TAG):
        value = tags.get(key, "").strip()
        if value:
            return value
    return ""


def kind_of(message: Message) -> str:
    """What a message is about, from its key: ``warn:i-1`` -> ``warn``, ``stopped:i-1`` -> ..."""
    return message.key.split(":", 1)[0]


class Links(Protocol):
    """Signed URLs for a message's buttons (``watchdog.cloud.links``)."""

    def for_message(self, message: Message) -> Mapping[str, str]:
        """Button label -> URL; empty when the message has no buttons."""
        ...


def _links(links: Links | None, message: Message) -> dict[str, str]:
    """The message's links; a failure to sign them loses the links, never the message."""
    if links is None or not message.buttons:
        return {}
    try:
        return dict(links.for_message(message))
    except Exception as exc:
        log.warning("links not made", key=message.key, error=f"{type(exc).__name__}: {exc}")
        return {}


def subject(title: str) -> str:
    """An SNS subject: printable ASCII on one line, at most 100 characters."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(text) > SUBJECT_MAX:
        text = text[: SUBJECT_MAX - 3].rstrip() + "..."
    return text or "idle-watchdog"


class SnsNotifier:
    """Publishes with attributes subscriptions filter on: owner, account, region, kind."""

    name = "sns"

    def __init__(
        self,
        client: SNSClient,
        topic_arn: str,
        *,
        account: str,
        owners: Mapping[str, str],
        links: Links | None = None,
    ) -> None:
        self.client = client
        self.topic_arn = topic_arn
        self.account = account
        self.owners = owners  # instance or request id -> owner ("" or absent: default route)
        self.links = links

    def attributes(self, message: Message) -> dict[str, str]:
        """The filterable attributes; an empty one is left out (SNS refuses empty values)."""
        values = {
            "owner": self.owners.get(message.target, ""),
            "account": self.account,
            "region": message.region,
            "kind": kind_of(message),
        }
        return {k: v for k, v in values.items() if v}

    def body(self, message: Message) -> str:
        """Plain text for e-mail: the message, its links as bare URLs, where it is."""
        lines = [message.title, "", message.body]
        links = _links(self.links, message)
        if links:
            lines.append("")
            lines += [f"{label}: {url}" for label, url in links.items()]
        where = " / ".join(
            x for x in (f"account {self.account}", message.region, message.target) if x
        )
        lines += ["", f"-- idle-watchdog, {where}"]
        return "\n".join(lines)

    def send(self, message: Message) -> bool:
        """True once SNS accepted it; False (logged) on any failure."""
        try:
            self.client.publish(
                TopicArn=self.topic_arn,
                Subject=subject(message.title),
                Message=self.body(message),
                MessageAttributes={
                    k: {"DataType": "String", "StringValue": v}
                    for k, v in self.attributes(message).items()
                },
            )
        except Exception as exc:  # botocore's errors, a bad endpoint, anything: never raise
            log.warning(
                "notification not delivered",
                channel=self.name,
                key=message.key,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        return True


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlackNotifier:
    """Posts to a Slack incoming webhook with ``requests``: Block Kit text and link buttons.

    Slack answers a burst with 429 and ``Retry-After``: a wait of up to
    ``retry_after_max`` seconds is waited once in place and the post retried;
    a longer one returns False at once and the outbox tries again next tick
    (a worker must not spend its time sleeping). Timeouts, connection errors
    and any other status return False.
    """

    name = "slack"

    def __init__(
        self,
        webhook_url: str,
        *,
        owners: Mapping[str, str],
        links: Links | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = SLACK_TIMEOUT,
        retry_after_max: float = SLACK_RETRY_AFTER_MAX,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.webhook_url = webhook_url
        self.owners = owners
        self.links = links
        self.session = session or requests.Session()
        self.timeout = timeout
        self.retry_after_max = retry_after_max
        self.sleep = sleep

    def payload(self, message: Message) -> dict[str, Any]:
        """Block Kit: the text (also the notification's fallback), who and where, buttons."""
        owner = self.owners.get(message.target, "")
        mention = f"<@{owner}>" if _SLACK_MEMBER.match(owner) else _escape(owner)
        context = " · ".join(
            x for x in (f"for {mention}" if owner else "", message.region, message.target) if x
        )
        text = _cut(f"*{_escape(message.title)}*\n{_escape(message.body)}", SLACK_TEXT_MAX)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}}
        ]
        if context:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
        links = _links(self.links, message)
        if links:
            stop_labels = {b.label for b in message.buttons if b.action == "stop"}
            buttons: list[dict[str, Any]] = []
            for i, (label, url) in enumerate(links.items()):
                button: dict[str, Any] = {
                    "type": "button",
                    "text": {"type": "plain_text", "text": _cut(label, SLACK_LABEL_MAX)},
                    "url": url,
                    "action_id": f"link-{i}",
                }
                if label in stop_labels:
                    button["style"] = "danger"
                buttons.append(button)
            blocks.append({"type": "actions", "elements": buttons})
        return {"text": _cut(f"{message.title}: {message.body}", SLACK_TEXT_MAX), "blocks": blocks}

    def _post(self, payload: Mapping[str, Any]) -> requests.Response:
        return self.session.post(self.webhook_url, json=payload, timeout=self.timeout)

    def send(self, message: Message) -> bool:
        """True once Slack answered 200; False (logged) otherwise, never an exception."""
        payload = self.payload(message)
        try:
            response = self._post(payload)
            if response.status_code == 429:
                wait = _retry_after(response.headers.get("Retry-After"))
                if wait is None or wait > self.retry_after_max:
                    return self._failed(message, f"429, Retry-After {wait}: next tick")
                self.sleep(wait)
                response = self._post(payload)
        except requests.RequestException as exc:
            return self._failed(message, f"{type(exc).__name__}: {exc}")
        if response.status_code != 200:
            return self._failed(message, f"{response.status_code} {response.text[:200]}")
        return True

    def _failed(self, message: Message, error: str) -> bool:
        log.warning("notification not delivered", channel=self.name, key=message.key, error=error)
        return False


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (Slack sends seconds); None when absent or bad."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 else seconds


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> bool: ...


#: How many delivered (message, channel) pairs a ``Fanout`` remembers.
FANOUT_MEMORY = 4096


class Fanout:
    """Sends each message to every channel; True only once every channel has taken it.

    An undelivered message stays in the outbox and comes back next tick. So
    that one channel being down does not repeat the message on the others,
    the fanout remembers (by the message's content) which channels already
    took it, and a retry goes only to those that did not. That memory lasts
    as long as this object: keep one per warm Lambda container. After a cold
    start a retried message may reach a channel a second time; losing it is
    the worse failure.
    """

    name = "fanout"

    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels = tuple(channels)
        self._took: OrderedDict[tuple[str, int], None] = OrderedDict()

    def send(self, message: Message) -> bool:
        digest = hashlib.sha256(
            json.dumps(asdict(message), sort_keys=True).encode("utf-8")
        ).hexdigest()
        ok = True
        for index, channel in enumerate(self.channels):
            mark = (digest, index)
            if mark in self._took:
                continue
            try:
                took = channel.send(message)
            except Exception as exc:  # a channel that breaks its promise never stops the rest
                log.warning(
                    "notification not delivered",
                    channel=channel.name,
                    key=message.key,
                    error=f"{type(exc).__name__}: {exc}",
                )
                took = False
            if took:
                self._took[mark] = None
                while len(self._took) > FANOUT_MEMORY:
                    self._took.popitem(last=False)
            else:
                ok = False
        return ok
