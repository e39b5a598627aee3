"""The whole team flow on moto: schedule -> tick -> SQS -> workers in two accounts and two
regions -> warnings, then stops; the Keep link; a redelivered batch changes nothing.

The handlers are called as Lambda calls them, with the recorded events in
``events/`` (the SQS batch carries the messages the tick really queued). The
notifier is the ``Told`` double; swapping in SNS and Slack is one argument
(``Runtime.send_factory``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from tests.cloud import world
from tests.cloud.world import HUB, MANAGED, MEMBER, REGIONS
from tests.helpers import AMI, Clock
from watchdog.aws.fake import set_spot_request_state
from watchdog.cloud import handler
from watchdog.cloud.handler import Runtime, keep, tick, work
from watchdog.cloud.history import DynamoHistory
from watchdog.cloud.template import hub as hub_template
from watchdog.config import DEFAULT
from watchdog.core.coexist import TAG_WARNED
from watchdog.core.fleet import TAG_EXEMPT, TAG_KEEP_UNTIL, TAG_STOPPED
from watchdog.core.timeutil import iso

pytestmark = pytest.mark.usefixtures("aws")
EAST, WEST = REGIONS
CONTEXT = SimpleNamespace(aws_request_id="5ac2e5a9-1b4e-4a83-9e0b-6f7d2a0c0de1")


class Fleet:
    """Every kind the policy tells apart, spread over two accounts and two regions."""

    def __init__(self) -> None:
        self.hub, self.member = world.hub(), world.session_in(MEMBER)
        owner = {**MANAGED, "idle-watchdog:owner": "ana@example.com"}
        self.where: dict[str, tuple[boto3.Session, str]] = {}
        self.idle_member_east = self._launch(self.member, EAST, owner)
        self.idle_member_west = self._launch(self.member, WEST, MANAGED)
        self.idle_hub = self._launch(self.hub, EAST, {**MANAGED, "Owner": "bo"})
        self.busy = self._launch(self.member, EAST, MANAGED)
        self.silent = self._launch(self.member, WEST, MANAGED)
        self.exempt = self._launch(self.hub, WEST, {**MANAGED, TAG_EXEMPT: "true"})
        self.kept = self._launch(self.hub, EAST, MANAGED)
        self.unmanaged = self._launch(self.member, EAST, {})
        self.start = max(world.launched_at(s, r, i) for i, (s, r) in self.where.items())
        world.tag(self.hub, EAST, self.kept, {TAG_KEEP_UNTIL: iso(self.start + timedelta(hours=8))})
        ec2 = self.hub.client("ec2", region_name=WEST)
        spot = ec2.request_spot_instances(
            SpotPrice="0.5",
            Type="persistent",
            LaunchSpecification={"ImageId": AMI, "InstanceType": "g5.xlarge"},
        )["SpotInstanceRequests"][0]
        self.orphan = spot["SpotInstanceRequestId"]
        ec2.terminate_instances(InstanceIds=[spot["InstanceId"]])
        set_spot_request_state(WEST, self.orphan, "open", "instance-terminated-by-user")

    def _launch(self, session: boto3.Session, region: str, tags: dict[str, str]) -> str:
        iid = world.launch(session, region, tags)
        self.where[iid] = (session, region)
        return iid

    @property
    def idle(self) -> set[str]:
        return {self.idle_member_east, self.idle_member_west, self.idle_hub}

    def agents_at(self, now: datetime) -> None:
        left = self.start + timedelta(minutes=1)
        for iid in (*self.idle, self.exempt, self.kept, self.unmanaged):
            if self.state(iid) == "running":
                session, region = self.where[iid]
                world.beat(session, region, iid, now, active=False, since=left)
        session, region = self.where[self.busy]
        world.beat(session, region, self.busy, now, active=True, since=now)
        session, region = self.where[self.silent]
        world.beat(
            session, region, self.silent, self.start + timedelta(minutes=2), active=True, since=now
        )

    def state(self, iid: str) -> str:
        session, region = self.where[iid]
        return world.describe(session, region, iid)[0]

    def tags(self, iid: str) -> dict[str, str]:
        session, region = self.where[iid]
        return world.describe(session, region, iid)[1]

    def stopped(self) -> set[str]:
        return {i for i in self.where if self.state(i) in ("stopping", "stopped")}

    def open_requests(self) -> set[str]:
        answer = self.hub.client("ec2", region_name=WEST).describe_spot_instance_requests()
        return {
            r["SpotInstanceRequestId"]
            for r in answer["SpotInstanceRequests"]
            if r["State"] == "open"
        }


def a_tick(rt: Runtime, queue: str, at: str) -> list[dict[str, Any]]:
    scheduled = world.event("scheduler")
    scheduled["tick"] = at
    answer = tick(scheduled, CONTEXT, runtime=rt)
    assert answer["messages"] == 4
    return world.receive_all(queue)


def warned(clock: Clock) -> tuple[str, Fleet, world.Told, Runtime]:
    """The hub and the fleet, after a first tick 25 minutes in (the idle ones warned)."""
    queue = world.make_hub()
    fleet = Fleet()
    told = world.Told()
    rt = world.runtime(told, clock, queue)
    clock.now = fleet.start + timedelta(minutes=25)
    fleet.agents_at(clock.now)
    work(world.sqs_event(a_tick(rt, queue, "2026-11-30T17:00:00Z")), CONTEXT, runtime=rt)
    return queue, fleet, told, rt


def test_the_team_flow_warns_then_stops_only_the_idle_managed_instances_in_both_accounts(
    clock: Clock,
) -> None:
    queue = world.make_hub()
    fleet = Fleet()
    told = world.Told()
    rt = world.runtime(told, clock, queue)

    clock.now = fleet.start + timedelta(minutes=25)
    fleet.agents_at(clock.now)
    messages = a_tick(rt, queue, "2026-11-30T17:00:00Z")
    scopes = {(json.loads(m["Body"])["account"], json.loads(m["Body"])["region"]) for m in messages}
    assert scopes == {(a, r) for a in (HUB, MEMBER) for r in REGIONS}

    assert work(world.sqs_event(messages), CONTEXT, runtime=rt) == {"batchItemFailures": []}
    warned = {m.target for _, m, _ in told.messages if m.key.startswith("warn:")}
    assert warned == fleet.idle
    assert {m.target for _, m, _ in told.messages if m.key.startswith("cancel")} == {fleet.orphan}
    assert fleet.open_requests() == set()
    assert fleet.stopped() == set()
    assert all(TAG_WARNED in fleet.tags(i) for i in fleet.idle)  # written for a desktop to see
    assert world.external_ids(MEMBER) and set(world.external_ids(MEMBER)) == {world.EXTERNAL_ID}
    accounts = {m.target: account for account, m, _ in told.messages}
    assert accounts[fleet.idle_member_east] == MEMBER and accounts[fleet.idle_hub] == HUB
    assert "Keep 1h" in told.links(f"warn:{fleet.idle_member_east}")

    # SQS delivers at least once: the same batch again changes nothing and tells nothing.
    before = list(told.messages)
    assert work(world.sqs_event(messages), CONTEXT, runtime=rt) == {"batchItemFailures": []}
    assert told.messages == before and fleet.stopped() == set()

    clock.advance(minutes=10)
    fleet.agents_at(clock.now)
    messages = a_tick(rt, queue, "2026-11-30T17:10:00Z")
    assert work(world.sqs_event(messages), CONTEXT, runtime=rt) == {"batchItemFailures": []}
    assert fleet.stopped() == fleet.idle
    assert all(fleet.tags(i)[TAG_STOPPED].startswith(iso(clock.now)) for i in fleet.idle)
    stops = [m for _, m, _ in told.messages if m.key.startswith("stopped:")]
    assert {m.target for m in stops} == fleet.idle
    history = DynamoHistory(world.hub().client("dynamodb"), world.TABLE, MEMBER, EAST)
    kinds = [(a["target"], a["kind"]) for a in history.actions()]
    assert kinds.count((fleet.idle_member_east, "stop")) == 1
    assert kinds.count((fleet.idle_member_east, "warn")) == 1

    # and the stop tick's batch, redelivered later, neither stops nor tells again
    before = list(told.messages)
    clock.advance(minutes=1)
    assert work(world.sqs_event(messages), CONTEXT, runtime=rt) == {"batchItemFailures": []}
    assert told.messages == before


def test_a_signed_keep_link_keeps_the_instance_and_a_changed_or_late_one_is_refused(
    clock: Clock,
) -> None:
    queue, fleet, told, rt = warned(clock)
    links = told.links(f"warn:{fleet.idle_member_east}")
    keep_url, stop_url = links["Keep 1h"], links["Stop now"]

    asked = keep(world.url_event(keep_url, "GET"), CONTEXT, runtime=rt)
    assert asked["statusCode"] == 200 and 'method="post"' in asked["body"]
    assert TAG_KEEP_UNTIL not in fleet.tags(fleet.idle_member_east), (
        "a GET (a link scanner) never acts"
    )

    tampered = keep_url.replace(fleet.idle_member_east, fleet.busy)
    refused = keep(world.url_event(tampered, "POST"), CONTEXT, runtime=rt)
    assert refused["statusCode"] == 403 and "changed" in refused["body"]
    assert TAG_KEEP_UNTIL not in fleet.tags(fleet.busy)

    done = keep(world.url_event(keep_url, "POST"), CONTEXT, runtime=rt)
    assert done["statusCode"] == 200
    until = clock.now + timedelta(hours=1)
    assert fleet.tags(fleet.idle_member_east)[TAG_KEEP_UNTIL] == iso(until)

    clock.advance(minutes=11)  # the announced stop time has passed
    fleet.agents_at(clock.now)
    late = keep(world.url_event(stop_url, "POST"), CONTEXT, runtime=rt)
    assert late["statusCode"] == 403 and "expired" in late["body"]
    work(world.sqs_event(a_tick(rt, queue, "2026-11-30T17:10:00Z")), CONTEXT, runtime=rt)
    assert fleet.state(fleet.idle_member_east) == "running"  # kept
    assert fleet.stopped() == fleet.idle - {fleet.idle_member_east}


def test_a_stop_now_link_stops_its_instance_at_once(clock: Clock) -> None:
    _, fleet, told, rt = warned(clock)
    stop_url = told.links(f"warn:{fleet.idle_hub}")["Stop now"]

    done = keep(world.url_event(stop_url, "POST"), CONTEXT, runtime=rt)
    assert done["statusCode"] == 200 and "stopping now" in done["body"]
    assert fleet.stopped() == {fleet.idle_hub}
    again = keep(world.url_event(stop_url, "POST"), CONTEXT, runtime=rt)
    assert again["statusCode"] == 200 and "nothing was done" in again["body"]


def test_the_sns_message_reaches_an_sqs_subscription_with_the_owner_attribute(
    clock: Clock,
) -> None:
    """The real notifiers (``watchdog.cloud.notify``)."""
    topic = world.hub().client("sns").create_topic(Name="idle-watchdog")["TopicArn"]
    sqs = world.hub().client("sqs")
    inbox = sqs.create_queue(QueueName="ana-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]
    world.hub().client("sns").subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn["QueueArn"],
        Attributes={"FilterPolicy": json.dumps({"owner": ["ana@example.com"]})},
    )
    queue = world.make_hub()
    fleet = Fleet()
    environment = {  # as the hub template sets it; the topic is the stack's, not the config's
        handler.TABLE_ENV: world.TABLE,
        handler.QUEUE_ENV: queue,
        handler.CONFIG_ENV: world.CONFIG_PARAMETER,
        handler.KEEP_URL_ENV: world.KEEP_URL,
        handler.SECRET_ENV: world.SECRET_PARAMETER,
        handler.TOPIC_ENV: topic,
    }
    rt = Runtime.from_env(environment, session=world.hub(), clock=lambda: clock.now)
    clock.now = fleet.start + timedelta(minutes=25)
    fleet.agents_at(clock.now)
    assert work(
        world.sqs_event(a_tick(rt, queue, "2026-11-30T17:00:00Z")), CONTEXT, runtime=rt
    ) == {"batchItemFailures": []}
    (got,) = world.receive_all(inbox)  # only ana's instance passes the filter
    envelope = json.loads(got["Body"])
    attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
    assert attributes == {
        "owner": "ana@example.com",
        "account": MEMBER,
        "region": EAST,
        "kind": "warn",
    }
    assert fleet.idle_member_east in envelope["Message"]
    assert "Keep 1h: https://" in envelope["Message"]


def test_the_template_s_schedule_on_eventbridge_scheduler_hands_tick_what_it_reads(
    clock: Clock,
) -> None:
    """The schedule as the hub template declares it, created on moto's EventBridge
    Scheduler; its input, with the context attributes Scheduler fills in, is a tick."""
    declared = hub_template(DEFAULT)["Resources"]["TickSchedule"]["Properties"]
    scheduler = world.hub().client("scheduler")
    function = "arn:aws:lambda:us-east-1:123456789012:function:idle-watchdog-tick"
    scheduler.create_schedule(
        Name="idle-watchdog-tick",
        ScheduleExpression=declared["ScheduleExpression"]["Fn::If"][1],
        FlexibleTimeWindow=declared["FlexibleTimeWindow"],
        Target={
            "Arn": function,
            "RoleArn": "arn:aws:iam::123456789012:role/idle-watchdog-scheduler",
            "Input": declared["Target"]["Input"],
        },
    )
    stored = scheduler.get_schedule(Name="idle-watchdog-tick")
    assert stored["ScheduleExpression"] == "rate(1 minute)"
    fired = (
        stored["Target"]["Input"]
        .replace("<aws.scheduler.scheduled-time>", "2026-11-30T17:00:00Z")
        .replace("<aws.scheduler.execution-id>", "8f1a0c5e-3c2b-4f8e-9d41-2b7f6a0e9c11")
    )
    assert json.loads(fired) == world.event("scheduler")  # the recorded event is this one
    queue = world.make_hub()
    rt = world.runtime(world.Told(), clock, queue)
    assert tick(json.loads(fired), CONTEXT, runtime=rt)["messages"] == 4
    assert len(world.receive_all(queue)) == 4  # one per (account, region)
