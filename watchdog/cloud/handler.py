"""The three Lambda handlers of the team shell: ``tick``, ``work`` and ``keep``.

- ``tick`` (EventBridge Scheduler, every ``poll_seconds``): one SQS message
  per (account, region), sent ten at a time.
- ``work`` (SQS, ReportBatchItemFailures): per message, the member role is
  assumed, the scope's lease taken, the same ``scheduler.passes.run_pass``
  run for that one region over the DynamoDB history, and the outbox
  delivered. A record that failed is returned in ``batchItemFailures`` and
  retried by SQS; the others are done. A lease held by another worker means
  that worker is running this very pass: the record is done (a retry would
  only run it again after it, and the next tick comes anyway).
- ``keep`` (function URL, payload format 2.0): a signed link. GET shows what
  the link will do with one button (mail scanners and chat unfurlers fetch
  links: a GET never acts); POST verifies again and acts.

Environment (the hub template sets every one; names in the constants below):
``IDLE_WATCHDOG_TABLE`` (the DynamoDB table), ``IDLE_WATCHDOG_QUEUE_URL`` (the
work queue), ``IDLE_WATCHDOG_CONFIG_PARAMETER`` (SSM parameter holding the
TOML config), ``IDLE_WATCHDOG_KEEP_URL`` (the keep function's URL, for links),
``IDLE_WATCHDOG_LINK_SECRET_PARAMETER`` (SSM SecureString: the links' HMAC
key; else ``[cloud] link_secret_parameter``), ``IDLE_WATCHDOG_TOPIC_ARN`` (the
stack's topic, used when the config names none).
"""

from __future__ import annotations

import asyncio
import base64
import html
import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import boto3
import structlog

from watchdog import config as configmod
from watchdog import log as logging_setup
from watchdog.aws.ec2 import AwsError, Boto3Ec2
from watchdog.cloud import accounts as acc
from watchdog.cloud.history import DynamoHistory
from watchdog.cloud.links import Link, LinkRefused, SignedLinks, verify
from watchdog.cloud.notify import owner_of
from watchdog.core.fleet import TAG_KEEP_UNTIL, Instance, SpotRequest
from watchdog.core.settings import Config
from watchdog.core.timeutil import iso, parse_duration, utcnow
from watchdog.scheduler.coexist import tag_warned
from watchdog.scheduler.history import HistoryUnwritable
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.outbox import Send, deliver
from watchdog.scheduler.passes import PassReport, mark_stopped, run_pass

log = structlog.get_logger("watchdog.cloud")

TABLE_ENV = "IDLE_WATCHDOG_TABLE"  # the DynamoDB table (cloud.history)
QUEUE_ENV = "IDLE_WATCHDOG_QUEUE_URL"  # the work queue (tick sends, work receives)
CONFIG_ENV = "IDLE_WATCHDOG_CONFIG_PARAMETER"  # SSM parameter holding the TOML config
KEEP_URL_ENV = "IDLE_WATCHDOG_KEEP_URL"  # the keep function's URL, for links
SECRET_ENV = "IDLE_WATCHDOG_LINK_SECRET_PARAMETER"  # noqa: S105 - a name: the links' HMAC key
TOPIC_ENV = "IDLE_WATCHDOG_TOPIC_ARN"  # the stack's topic, for a config without topic_arn
ENVIRONMENT = (TABLE_ENV, QUEUE_ENV, CONFIG_ENV, KEEP_URL_ENV, SECRET_ENV, TOPIC_ENV)

#: The schedule's Input (EventBridge Scheduler fills in the context attributes).
TICK_INPUT = '{"tick": "<aws.scheduler.scheduled-time>", "id": "<aws.scheduler.execution-id>"}'
SEND_BATCH = 10  # SendMessageBatch's limit

#: Builds the worker's notifiers: (config, hub session, account, links, owners) -> send.
SendFactory = Callable[[Config, boto3.Session, str, SignedLinks | None, Mapping[str, str]], Send]


class TickFailed(Exception):
    """Some messages were not queued; the schedule retries the tick (a repeat is harmless)."""


def default_send(
    cfg: Config,
    session: boto3.Session,
    account: str,
    links: SignedLinks | None,
    owners: Mapping[str, str],
) -> Send:
    """SNS and Slack, as ``watchdog.cloud.notify`` builds them."""
    import importlib

    notify: Any = importlib.import_module("watchdog.cloud.notify")
    chosen: list[Any] = []
    if cfg.cloud.topic_arn:
        sns = session.client("sns")
        chosen.append(
            notify.SnsNotifier(
                sns, cfg.cloud.topic_arn, account=account, owners=owners, links=links
            )
        )
    if cfg.cloud.slack_webhook_parameter:
        url = _parameter(session, cfg.cloud.slack_webhook_parameter)
        chosen.append(notify.SlackNotifier(url, owners=owners, links=links))
    if not chosen:  # like a desktop without one: the log is where it is told
        return _logged
    return synchronous(notify.Fanout(chosen))


def _logged(message: Message) -> bool:
    log.warning("no channel configured: told in the log only", key=message.key, title=message.title)
    return True


def synchronous(notifier: Any) -> Send:
    """A ``Notifier`` (``send`` sync or async) as the outbox's ``Send``."""

    def send(message: Message) -> bool:
        result = notifier.send(message)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return bool(result)

    return send


async def _awaited(result: Any) -> Any:
    return await result


_logging = {"configured": False}


def _configure_logging() -> None:
    """Once per container: one JSON object per line on stderr (CloudWatch Logs Insights)."""
    if not _logging["configured"]:
        logging_setup.configure(json=True)
        _logging["configured"] = True


@dataclass
class Runtime:
    """What the handlers need from their environment; tests build one on moto."""

    session: boto3.Session
    table: str
    queue_url: str = ""
    config_parameter: str = ""
    keep_url: str = ""
    secret_parameter: str = ""
    topic_arn: str = ""
    send_factory: SendFactory = default_send
    clock: Callable[[], datetime] = utcnow
    _hub: tuple[str, str] | None = field(default=None, repr=False)
    _secret: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kw: Any) -> Runtime:
        env = os.environ if environ is None else environ
        return cls(
            session=kw.pop("session", None) or boto3.Session(),
            table=env.get(TABLE_ENV, ""),
            queue_url=env.get(QUEUE_ENV, ""),
            config_parameter=env.get(CONFIG_ENV, ""),
            keep_url=env.get(KEEP_URL_ENV, ""),
            secret_parameter=env.get(SECRET_ENV, ""),
            topic_arn=env.get(TOPIC_ENV, ""),
            **kw,
        )

    @property
    def hub(self) -> str:
        return self._identity()[0]

    @property
    def partition(self) -> str:
        return self._identity()[1]

    def _identity(self) -> tuple[str, str]:
        if self._hub is None:
            self._hub = acc.hub_identity(self.session)
        return self._hub

    def config(self) -> Config:
        """The TOML in the SSM parameter, checked as ``config check`` checks a file."""
        cfg = configmod.DEFAULT
        if self.config_parameter:
            text = _parameter(self.session, self.config_parameter)
            cfg = configmod.parse(text, source=f"ssm:{self.config_parameter}")
        if self.topic_arn and not cfg.cloud.topic_arn:
            cfg = replace(cfg, cloud=replace(cfg.cloud, topic_arn=self.topic_arn))
        return cfg

    def secret(self, cfg: Config) -> bytes:
        if self._secret is None:
            name = self.secret_parameter or cfg.cloud.link_secret_parameter
            self._secret = _parameter(self.session, name).encode()
        return self._secret

    def links(self, cfg: Config, account: str) -> SignedLinks | None:
        """None without a keep URL, or when the secret cannot be read: a warning without
        links still warns (and the stop still waits for it)."""
        if not self.keep_url:
            return None
        try:
            return SignedLinks(self.keep_url, self.secret(cfg), account)
        except Exception:
            log.exception("link secret unreadable: messages go out without links")
            return None

    def history(self, account: str, region: str) -> DynamoHistory:
        return DynamoHistory(self.session.client("dynamodb"), self.table, account, region)

    def account_session(self, cfg: Config, account: str) -> boto3.Session:
        return acc.session_for(
            account, cfg.cloud, self.session, hub=self.hub, partition=self.partition
        )


def _parameter(session: boto3.Session, name: str) -> str:
    answer = session.client("ssm").get_parameter(Name=name, WithDecryption=True)
    return str(answer["Parameter"]["Value"])


# -- tick -----------------------------------------------------------------------


def tick(
    event: Mapping[str, Any], context: Any, *, runtime: Runtime | None = None
) -> dict[str, Any]:
    """Fan out: one message per (account, region) of this tick."""
    if runtime is None:
        _configure_logging()
    rt = runtime or Runtime.from_env()
    cfg = rt.config()
    tick_id = str(event.get("tick") or iso(rt.clock()))
    members = acc.accounts(cfg.cloud, rt.session, rt.hub)
    bodies = [
        json.dumps({"account": a, "region": r, "tick": tick_id}, sort_keys=True)
        for a in members
        for r in cfg.aws.regions
    ]
    sqs = rt.session.client("sqs")
    failed: list[str] = []
    for start in range(0, len(bodies), SEND_BATCH):
        chunk = bodies[start : start + SEND_BATCH]
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
        answer = sqs.send_message_batch(QueueUrl=rt.queue_url, Entries=entries)
        failed += [chunk[int(f["Id"])] for f in answer.get("Failed", [])]
    log.info("tick", tick=tick_id, accounts=len(members), messages=len(bodies) - len(failed))
    if failed:
        raise TickFailed(f"{len(failed)} of {len(bodies)} messages not queued: {failed[:3]}")
    return {"tick": tick_id, "accounts": len(members), "messages": len(bodies)}


# -- work -----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    account: str
    region: str
    tick: str

    @classmethod
    def parse(cls, body: str) -> Job:
        data = json.loads(body)
        return cls(str(data["account"]), str(data["region"]), str(data["tick"]))


def work(
    event: Mapping[str, Any], context: Any, *, runtime: Runtime | None = None
) -> dict[str, Any]:
    """One pass per record; the records that failed go back to the queue, alone."""
    if runtime is None:
        _configure_logging()
    rt = runtime or Runtime.from_env()
    records = list(event.get("Records", []))
    request = str(getattr(context, "aws_request_id", "") or "local")
    try:
        cfg = rt.config()
    except Exception:  # a broken config fails every record: retried, then the DLQ alarm
        log.exception("config unreadable; no pass this batch")
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}
    failures: list[dict[str, str]] = []
    for record in records:
        try:
            outcome = run_job(
                rt, cfg, Job.parse(record["body"]), f"{request}/{record['messageId']}"
            )
            log.info("record done", message=record["messageId"], outcome=outcome)
        except Exception:  # one bad account or region never blocks the others
            log.exception("record failed; SQS retries it", message=record.get("messageId"))
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


class PassIncomplete(Exception):
    """The region could not be scanned or a message not delivered: retried by SQS."""


def run_job(rt: Runtime, cfg: Config, job: Job, holder: str) -> str:
    """One (account, region) pass under its lease; what happened, in a word or three."""
    history = rt.history(job.account, job.region)
    if not history.take_lease(holder, rt.clock()):
        return "skipped: another worker holds the lease"
    try:
        if history.tick_done(job.tick):
            return "skipped: this tick's pass is done"
        session = rt.account_session(cfg, job.account)
        one = replace(cfg, aws=replace(cfg.aws, regions=(job.region,)))
        api = Boto3Ec2(session, aws=cfg.aws)
        report = run_pass(api, history, one, rt.clock())
        send = rt.send_factory(
            cfg, rt.session, job.account, rt.links(cfg, job.account), owners(report)
        )
        delivery = deliver(history, send, rt.clock, on_sent=tag_warned(api))
        if report.failed_regions or delivery.failed:
            errors = [s.error for s in report.failed_regions] + [m.key for m in delivery.failed]
            raise PassIncomplete(f"{job.account} {job.region}: {errors}")
        history.mark_tick(job.tick, rt.clock())
        return f"done: {len(report.done)} actions, {len(delivery.sent)} messages"
    finally:
        try:
            history.release_lease(holder)
        except HistoryUnwritable:  # it lapses by itself; the pass's own error matters more
            log.exception("lease not released", scope=history.scope)


def owners(report: PassReport) -> dict[str, str]:
    """Target id -> its owner tag (``idle-watchdog:owner``, else ``Owner``), where set."""
    out: dict[str, str] = {}
    for scan in report.scans:
        subjects: list[Instance | SpotRequest] = [*scan.instances, *scan.spot_requests]
        for subject in subjects:
            owner = owner_of(subject.tags)
            if owner:
                out[subject.id] = owner
    return out


# -- keep -----------------------------------------------------------------------


def keep(
    event: Mapping[str, Any], context: Any, *, runtime: Runtime | None = None
) -> dict[str, Any]:
    """A Keep or Stop-now link: GET asks, POST acts; 403 with a plain sentence when refused."""
    if runtime is None:
        _configure_logging()
    rt = runtime or Runtime.from_env()
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "GET")).upper()
    params = dict(event.get("queryStringParameters") or {})
    if method == "POST":
        params.update(_form(event))
    now = rt.clock()
    try:
        cfg = rt.config()
        link = verify(params, rt.secret(cfg), now)
    except LinkRefused as exc:
        return page(403, "Link refused", str(exc))
    except Exception:
        log.exception("keep: config or secret unreadable")
        return page(500, "Not available", "The service cannot check links right now; try again.")
    if method != "POST":
        return _confirm(link, params)
    try:
        return _act(rt, cfg, link, now)
    except (AwsError, acc.AccountError) as exc:
        log.error("keep: action failed", instance=link.instance, error=str(exc))
        return page(502, "Not done", f"AWS refused: {exc}. Nothing was changed; try again.")


def _act(rt: Runtime, cfg: Config, link: Link, now: datetime) -> dict[str, Any]:
    api = Boto3Ec2(rt.account_session(cfg, link.account), aws=cfg.aws)
    inst = api.describe(link.region, link.instance)
    if inst is None or not inst.managed:
        return page(
            403, "Link refused", f"{link.instance} is not an instance idle-watchdog manages."
        )
    name = html.escape(inst.name or inst.id)
    if link.keep_for:
        until = now + parse_duration(link.keep_for)
        api.tag(link.region, link.instance, {TAG_KEEP_UNTIL: iso(until)})
        kind, detail = "keep", f"kept until {iso(until)} from a link"
        text = f"{name} is kept running until {iso(until)}. It is not stopped before then."
    elif inst.state != "running":
        return page(200, "Nothing to do", f"{name} is already {inst.state}; nothing was done.")
    else:
        api.stop(
            link.region,
            link.instance,
            hibernate=inst.hibernation_configured and cfg.scheduler.hibernate,
        )
        mark_stopped(api, link.region, link.instance, now, "stop pressed")
        kind, detail = "stop", "stopped from a link"
        text = f"{name} is stopping now. Start it again from the console when you need it."
    history = rt.history(link.account, link.region)
    history.record_action(
        now, link.region, link.instance, kind, ok=True, detail=detail, dry_run=False
    )
    log.warning("link used", instance=link.instance, action=link.action, detail=detail)
    return page(200, "Done", text)


def _confirm(link: Link, params: Mapping[str, str]) -> dict[str, Any]:
    what = (
        f"keep {link.instance} running for {link.keep_for}"
        if link.keep_for
        else f"stop {link.instance} now"
    )
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
        if k in ("a", "r", "i", "do", "exp", "sig")
    )
    button = f'<button type="submit">Yes, {html.escape(what)}</button>'
    form = f'<form method="post">{hidden}{button}</form>'
    return page(
        200, "Confirm", f"This link will {html.escape(what)} ({html.escape(link.region)}).", form
    )


def _form(event: Mapping[str, Any]) -> dict[str, str]:
    body = str(event.get("body") or "")
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    return dict(parse_qsl(body))


def page(status: int, title: str, sentence: str, extra: str = "") -> dict[str, Any]:
    """A small HTML page (``sentence`` is already safe: escaped where it came from outside)."""
    body = (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width">'
        f"<title>idle-watchdog: {html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{sentence}</p>{extra}</body></html>"
    )
    return {
        "statusCode": status,
        "headers": {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"},
        "body": body,
    }
