"""The hub and a member account on the moto server, and Lambda's events for the handlers.

moto keys every resource by the account of the credentials that made the
call, and AssumeRole into another account returns credentials of that
account (verified: GetCallerIdentity then names it), so two accounts are
real here. moto does not check trust policies or the external id; it records
the external id of each AssumeRole, which the tests read back.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import boto3

from tests.helpers import AMI, Clock
from watchdog.cloud.handler import Runtime
from watchdog.cloud.history import create_table
from watchdog.cloud.links import SignedLinks
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_MANAGED
from watchdog.core.settings import Config
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.outbox import Send

HUB = "123456789012"  # moto's own account: the hub
MEMBER = "222222222222"
REGIONS = ("us-east-1", "eu-west-1")
EXTERNAL_ID = "idle-watchdog-test-external-id"
TABLE = "idle-watchdog"
CONFIG_PARAMETER = "/idle-watchdog/config"
SECRET_PARAMETER = "/idle-watchdog/link-secret"
KEEP_URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/"
SECRET = "s3cret-for-tests-only"
EVENTS = Path(__file__).parent / "events"
MANAGED = {TAG_MANAGED: "true"}

CONFIG = f"""
[aws]
regions = {json.dumps(list(REGIONS))}

[idle]
minutes = 30
warn_minutes = 10

[cloud]
accounts = ["{HUB}", "{MEMBER}"]
role_name = "idle-watchdog-member"
external_id = "{EXTERNAL_ID}"
"""


def event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


def hub() -> boto3.Session:
    return boto3.Session(region_name="us-east-1")


def session_in(account: str) -> boto3.Session:
    """A session in ``account`` as a test sets it up (the member role, assumed)."""
    if account == HUB:
        return hub()
    creds = (
        hub()
        .client("sts")
        .assume_role(RoleArn=f"arn:aws:iam::{account}:role/setup", RoleSessionName="test-setup")[
            "Credentials"
        ]
    )
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name="us-east-1",
    )


def external_ids(account: str) -> list[str]:
    """The external id of every AssumeRole of the member role in ``account`` (moto records
    them; the tests' own setup role is left out)."""
    from moto.sts.models import sts_backends

    return [
        r.external_id
        for b in sts_backends[account].values()
        for r in b.assumed_roles
        if r.role_arn.endswith(":role/idle-watchdog-member")
    ]


def make_hub(config_text: str = CONFIG) -> str:
    """The hub stack's stateful parts: table, queue, config and secret parameters."""
    session = hub()
    create_table(session.client("dynamodb"), TABLE)
    ssm = session.client("ssm")
    ssm.put_parameter(Name=CONFIG_PARAMETER, Value=config_text, Type="String")
    ssm.put_parameter(Name=SECRET_PARAMETER, Value=SECRET, Type="SecureString")
    url: str = session.client("sqs").create_queue(QueueName="idle-watchdog-work")["QueueUrl"]
    return url


@dataclass
class Told:
    """The notifier double: what was sent, with the links each message carried."""

    messages: list[tuple[str, Message, dict[str, str]]] = field(default_factory=list)
    fail: bool = False

    def factory(
        self,
        cfg: Config,
        session: boto3.Session,
        account: str,
        links: SignedLinks | None,
        owners: Mapping[str, str],
    ) -> Send:
        def send(message: Message) -> bool:
            if self.fail:
                return False
            self.messages.append(
                (account, message, dict(links.for_message(message)) if links else {})
            )
            return True

        return send

    def keys(self) -> list[str]:
        return [m.key for _, m, _ in self.messages]

    def links(self, key: str) -> dict[str, str]:
        return next(found for _, m, found in self.messages if m.key == key)


def runtime(told: Told, clock: Clock, queue_url: str = "") -> Runtime:
    return Runtime(
        session=hub(),
        table=TABLE,
        queue_url=queue_url,
        config_parameter=CONFIG_PARAMETER,
        keep_url=KEEP_URL,
        secret_parameter=SECRET_PARAMETER,
        send_factory=told.factory,
        clock=lambda: clock.now,
    )


def launch(session: boto3.Session, region: str, tags: Mapping[str, str] | None = None) -> str:
    spec: Any = (
        [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        if tags
        else []
    )
    answer = session.client("ec2", region_name=region).run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="g5.xlarge", TagSpecifications=spec
    )
    return str(answer["Instances"][0]["InstanceId"])


def tag(session: boto3.Session, region: str, iid: str, tags: Mapping[str, str]) -> None:
    session.client("ec2", region_name=region).create_tags(
        Resources=[iid], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
    )


def beat(
    session: boto3.Session, region: str, iid: str, at: datetime, *, active: bool, since: datetime
) -> None:
    value = hb.encode(
        hb.Heartbeat(at, active, since if not active else at, ("gpu:0",) if active else ())
    )
    tag(session, region, iid, {TAG_HEARTBEAT: value})


def describe(session: boto3.Session, region: str, iid: str) -> tuple[str, dict[str, str]]:
    answer = session.client("ec2", region_name=region).describe_instances(InstanceIds=[iid])
    inst = answer["Reservations"][0]["Instances"][0]
    return inst["State"]["Name"], {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def launched_at(session: boto3.Session, region: str, iid: str) -> datetime:
    answer = session.client("ec2", region_name=region).describe_instances(InstanceIds=[iid])
    launched: datetime = answer["Reservations"][0]["Instances"][0]["LaunchTime"]
    return launched


def receive_all(queue_url: str) -> list[dict[str, Any]]:
    sqs = hub().client("sqs")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        out.extend(got)


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch Lambda's SQS poller would deliver: the recorded event, with these messages."""
    recorded = event("sqs_batch")
    template = recorded["Records"][0]
    records = []
    for m in messages:
        record = copy.deepcopy(template)
        record.update(
            messageId=m["MessageId"],
            receiptHandle=m["ReceiptHandle"],
            body=m["Body"],
            md5OfBody=m["MD5OfBody"],
        )
        records.append(record)
    return {"Records": records}


def url_event(url: str, method: str = "GET") -> dict[str, Any]:
    """The recorded function URL event (payload 2.0) for this link, GET or POST (form)."""
    params = dict(parse_qsl(urlparse(url).query))
    if method == "GET":
        found = event("function_url_get")
        found["rawQueryString"] = urlparse(url).query
        found["queryStringParameters"] = params
        return found
    found = event("function_url_post")
    found["body"] = base64.b64encode(urlencode(params).encode()).decode()
    return found
