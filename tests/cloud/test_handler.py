"""The handlers' edges: fan-out in batches, one bad record alone, the lease, bad config,
undelivered messages, and links for what we do not manage."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest

from tests.cloud import world
from tests.helpers import Clock
from watchdog.cloud import fleet_status
from watchdog.cloud.handler import Job, keep, run_job, tick, work
from watchdog.cloud.history import LEASE_SECONDS, DynamoHistory
from watchdog.cloud.links import Link, SignedLinks

pytestmark = pytest.mark.usefixtures("aws")
CONTEXT = SimpleNamespace(aws_request_id="0b3c0d5e-7f1a-4e8b-9c2d-3e4f5a6b7c8d")
EAST = "us-east-1"


def idle_hub_instance(clock: Clock) -> str:
    """An idle managed instance in the hub, 25 minutes in: the next pass warns it."""
    hub = world.hub()
    iid = world.launch(hub, EAST, world.MANAGED)
    start = world.launched_at(hub, EAST, iid)
    clock.now = start + timedelta(minutes=25)
    world.beat(hub, EAST, iid, clock.now, active=False, since=start + timedelta(minutes=1))
    return iid


def one_scope_config() -> str:
    return world.CONFIG.replace('["us-east-1", "eu-west-1"]', '["us-east-1"]').replace(
        f'"{world.HUB}", "{world.MEMBER}"', f'"{world.HUB}"'
    )


def record(
    account: str, region: str, tick_id: str = "2026-11-30T17:00:00Z", body: str = ""
) -> dict[str, str]:
    text = body or json.dumps({"account": account, "region": region, "tick": tick_id})
    return {
        "MessageId": f"m-{account}-{region}-{len(body)}",
        "ReceiptHandle": "r",
        "Body": text,
        "MD5OfBody": "x",
    }


def test_the_tick_sends_one_message_per_account_and_region_ten_at_a_time(clock: Clock) -> None:
    members = [f"{n:012d}" for n in range(100000000001, 100000000013)]
    text = world.CONFIG.replace(
        f'"{world.HUB}", "{world.MEMBER}"', ", ".join(f'"{m}"' for m in members)
    )
    queue = world.make_hub(text)
    rt = world.runtime(world.Told(), clock, queue)
    sent: list[int] = []
    rt.session.events.register(
        "before-parameter-build.sqs.SendMessageBatch",
        lambda params, **_: sent.append(len(params["Entries"])),
    )
    assert tick(world.event("scheduler"), CONTEXT, runtime=rt)["messages"] == 24
    assert sent == [10, 10, 4]
    bodies = [json.loads(m["Body"]) for m in world.receive_all(queue)]
    assert sorted((b["account"], b["region"]) for b in bodies) == sorted(
        (m, r) for m in members for r in world.REGIONS
    )
    assert {b["tick"] for b in bodies} == {"2026-11-30T17:00:00Z"}


def test_a_bad_record_fails_alone_and_the_others_are_done(clock: Clock) -> None:
    world.make_hub(one_scope_config())
    iid = idle_hub_instance(clock)
    told = world.Told()
    rt = world.runtime(told, clock)
    event = world.sqs_event([record("", "", body="{not json"), record(world.HUB, EAST)])
    answer = work(event, CONTEXT, runtime=rt)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m---9"}]}
    assert told.keys() == [f"warn:{iid}"]


def test_a_config_that_does_not_parse_fails_every_record_and_says_where(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    world.make_hub("[idle]\nminutes = 'soon'\n")
    rt = world.runtime(world.Told(), clock)
    event = world.sqs_event([record(world.HUB, EAST), record(world.MEMBER, EAST)])
    failed = work(event, CONTEXT, runtime=rt)["batchItemFailures"]
    assert len(failed) == 2
    assert "ssm:/idle-watchdog/config:2" in capsys.readouterr().out


def test_a_held_lease_skips_the_record_as_done_and_a_lapsed_one_is_taken_over(clock: Clock) -> None:
    world.make_hub(one_scope_config())
    iid = idle_hub_instance(clock)
    told = world.Told()
    rt = world.runtime(told, clock)
    other = DynamoHistory(world.hub().client("dynamodb"), world.TABLE, world.HUB, EAST)
    assert other.take_lease("a-worker-mid-pass", clock.now)
    event = world.sqs_event([record(world.HUB, EAST)])
    assert work(event, CONTEXT, runtime=rt) == {"batchItemFailures": []}
    assert told.keys() == []  # that worker is running this pass; ours did nothing
    clock.advance(seconds=LEASE_SECONDS + 1)  # it died (timed out) without giving it back
    world.beat(
        world.hub(), EAST, iid, clock.now, active=False, since=clock.now - timedelta(minutes=30)
    )
    assert work(event, CONTEXT, runtime=rt) == {"batchItemFailures": []}
    assert told.keys() == [f"warn:{iid}"]


def test_two_workers_on_one_scope_at_once_warn_once(clock: Clock) -> None:
    """Whoever wins, the other finds the lease held or the tick done: one warning."""
    world.make_hub(one_scope_config())
    iid = idle_hub_instance(clock)
    told = world.Told()
    rt = world.runtime(told, clock)
    cfg = rt.config()
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        start.wait()
        outcomes.append(run_job(rt, cfg, Job(world.HUB, EAST, "2026-11-30T17:00:00Z"), name))

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert told.keys() == [f"warn:{iid}"]
    assert sorted(o.split(":")[0] for o in outcomes) == ["done", "skipped"]


def test_an_undelivered_warning_is_retried_and_told_once(clock: Clock) -> None:
    world.make_hub(one_scope_config())
    iid = idle_hub_instance(clock)
    told = world.Told(fail=True)
    rt = world.runtime(told, clock)
    event = world.sqs_event([record(world.HUB, EAST)])
    assert work(event, CONTEXT, runtime=rt)["batchItemFailures"]  # SQS retries it
    assert world.describe(world.hub(), EAST, iid)[1].get("idle-watchdog:warned") is None
    told.fail = False
    clock.advance(minutes=1)
    assert work(event, CONTEXT, runtime=rt) == {"batchItemFailures": []}
    assert told.keys() == [f"warn:{iid}"]
    clock.advance(minutes=20)  # well past the stop: it stops only 10 minutes after *delivery*
    world.beat(
        world.hub(), EAST, iid, clock.now, active=False, since=clock.now - timedelta(minutes=50)
    )
    later = world.sqs_event([record(world.HUB, EAST, "2026-11-30T17:21:00Z")])
    assert work(later, CONTEXT, runtime=rt) == {"batchItemFailures": []}
    assert told.keys() == [f"warn:{iid}", f"stopped:{iid}"]


def test_links_that_are_incomplete_or_for_an_unmanaged_instance_are_refused(clock: Clock) -> None:
    world.make_hub()
    rt = world.runtime(world.Told(), clock)
    recorded = world.event("function_url_get")  # its signature is a placeholder
    answer = keep(recorded, CONTEXT, runtime=rt)
    assert answer["statusCode"] == 403 and "changed" in answer["body"]
    assert (
        keep({**recorded, "queryStringParameters": None}, CONTEXT, runtime=rt)["statusCode"] == 403
    )

    unmanaged = world.launch(world.hub(), EAST, {})
    signer = SignedLinks(world.KEEP_URL, world.SECRET.encode(), world.HUB)
    exp = int((clock.now + timedelta(minutes=10)).timestamp())
    url = signer.url(Link(world.HUB, EAST, unmanaged, "stop", exp))
    answer = keep(world.url_event(url, "POST"), CONTEXT, runtime=rt)
    assert answer["statusCode"] == 403 and "not an instance idle-watchdog manages" in answer["body"]
    assert world.describe(world.hub(), EAST, unmanaged)[0] == "running"


def test_status_shows_each_scope_its_instances_and_who_was_warned(clock: Clock) -> None:
    world.make_hub(one_scope_config())
    client = world.hub().client("dynamodb")
    assert "No pass recorded yet" in fleet_status.render(client, world.TABLE, now=clock.now)
    iid = idle_hub_instance(clock)
    world.tag(world.hub(), EAST, iid, {"Owner": "ana", "Name": "gpu-box"})
    work(
        world.sqs_event([record(world.HUB, EAST)]),
        CONTEXT,
        runtime=world.runtime(world.Told(), clock),
    )
    text = fleet_status.render(client, world.TABLE, now=clock.now + timedelta(minutes=5))
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == f"{world.HUB} {EAST}: last pass 5m ago"
    (row,) = [line for line in lines if iid in line]
    assert "gpu-box" in row and "running" in row and "ana" in row
    assert f"warned {clock.now:%Y-%m-%dT%H:%M:%S}Z" in row
    assert " 5m " in row  # running time counts from when a worker first saw it, 5 minutes ago


def test_a_missing_link_secret_still_warns_without_links(clock: Clock) -> None:
    world.make_hub(one_scope_config())
    world.hub().client("ssm").delete_parameter(Name=world.SECRET_PARAMETER)
    iid = idle_hub_instance(clock)
    told = world.Told()
    work(world.sqs_event([record(world.HUB, EAST)]), CONTEXT, runtime=world.runtime(told, clock))
    assert told.keys() == [f"warn:{iid}"] and told.links(f"warn:{iid}") == {}
