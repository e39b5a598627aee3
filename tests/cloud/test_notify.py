"""The team's channels against real peers: SNS on the moto server delivering to SQS
subscriptions that filter on the owner, and a webhook served on 127.0.0.1 standing in
for Slack (its payload, its 429 with Retry-After, its failures)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from watchdog.cloud.notify import (
    Fanout,
    SlackNotifier,
    SnsNotifier,
    kind_of,
    owner_of,
    subject,
)
from watchdog.scheduler.notifier import Button, Message

SQSClient = Any  # boto3's sqs client (its stubs are not among the test extras)

ACCOUNT = "123456789012"
ALICE = "alice@example.com"

WARNING = Message(
    key="warn:i-0abc",
    title="gpu-box stops in 15 min",
    body="Idle for 45 min: no GPU, notebook, terminal, process or transfer activity.",
    buttons=(Button("Keep 1h", "keep:1h"), Button("Stop now", "stop")),
    urgent=True,
    target="i-0abc",
    region="eu-west-1",
)
STOPPED = Message(
    key="stopped:i-0def", title="Stopped spare", body="Idle.", target="i-0def", region="us-east-1"
)


class SignedLinks:
    """Stands in for cloud/links.py: one URL per button."""

    def for_message(self, message: Message) -> Mapping[str, str]:
        return {
            b.label: f"https://keep.example/{message.target}/{b.action}" for b in message.buttons
        }


class BrokenLinks:
    def for_message(self, message: Message) -> Mapping[str, str]:
        raise RuntimeError("no link secret")


class TestOwner:
    def test_the_watchdog_tag_wins_then_owner_then_the_default_route(self) -> None:
        """The routing order the issue fixes."""
        assert owner_of({"idle-watchdog:owner": "ann", "Owner": "bob"}) == "ann"
        assert owner_of({"idle-watchdog:owner": " ", "Owner": "bob"}) == "bob"
        assert owner_of({"Name": "x"}) == ""

    def test_the_kind_comes_from_the_key(self) -> None:
        assert [kind_of(WARNING), kind_of(STOPPED)] == ["warn", "stopped"]

    def test_a_subject_is_one_ascii_line_of_at_most_100_characters(self) -> None:
        """SNS refuses anything else; titles are prose with typographic characters."""
        made = subject("Café “gpu” stops\nin 15 min " + "x" * 200)
        assert len(made) <= 100 and made.isascii() and "\n" not in made
        assert made.startswith("Cafe gpu stops in 15 min") and made.endswith("...")


def _queue(sqs: SQSClient, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def _received(sqs: SQSClient, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


class TestSns:
    @pytest.fixture
    def routed(self, aws: str) -> Iterator[tuple[SnsNotifier, SQSClient, str, str]]:
        """A topic with two SQS subscriptions: alice's, and the default route's."""
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="idle-watchdog")["TopicArn"]
        alice_url, alice_arn = _queue(sqs, "alice")
        rest_url, rest_arn = _queue(sqs, "rest")
        for arn, policy in (
            (alice_arn, {"owner": [ALICE]}),
            (rest_arn, {"owner": [{"exists": False}]}),
        ):
            sns.subscribe(
                TopicArn=topic,
                Protocol="sqs",
                Endpoint=arn,
                Attributes={"FilterPolicy": json.dumps(policy)},
            )
        notifier = SnsNotifier(
            sns, topic, account=ACCOUNT, owners={"i-0abc": ALICE}, links=SignedLinks()
        )
        yield notifier, sqs, alice_url, rest_url

    def test_a_warning_reaches_its_owner_s_subscription_with_attributes_and_links(
        self, routed: tuple[SnsNotifier, SQSClient, str, str]
    ) -> None:
        """The owner's filter takes it, the default route's does not; e-mail has plain URLs."""
        notifier, sqs, alice, rest = routed
        assert notifier.send(WARNING) is True
        [got] = _received(sqs, alice)
        assert _received(sqs, rest) == []
        attributes = {k: v["Value"] for k, v in got["MessageAttributes"].items()}
        assert attributes == {
            "owner": ALICE,
            "account": ACCOUNT,
            "region": "eu-west-1",
            "kind": "warn",
        }
        assert got["Subject"] == "gpu-box stops in 15 min"
        assert "Keep 1h: https://keep.example/i-0abc/keep:1h" in got["Message"]
        assert "Stop now: https://keep.example/i-0abc/stop" in got["Message"]
        assert WARNING.body in got["Message"]

    def test_an_unowned_instance_goes_to_the_default_route(
        self, routed: tuple[SnsNotifier, SQSClient, str, str]
    ) -> None:
        notifier, sqs, alice, rest = routed
        assert notifier.send(STOPPED) is True
        [got] = _received(sqs, rest)
        assert _received(sqs, alice) == []
        assert "owner" not in got["MessageAttributes"]
        assert got["MessageAttributes"]["kind"]["Value"] == "stopped"

    def test_links_that_cannot_be_signed_still_deliver_the_warning(
        self, routed: tuple[SnsNotifier, SQSClient, str, str]
    ) -> None:
        """A warning without its Keep link beats no warning before a stop."""
        notifier, sqs, alice, _ = routed
        notifier.links = BrokenLinks()
        assert notifier.send(WARNING) is True
        [got] = _received(sqs, alice)
        assert "https://" not in got["Message"] and WARNING.body in got["Message"]

    def test_a_missing_topic_is_false_not_an_exception(self, aws: str) -> None:
        """The outbox keeps it and tries again next tick."""
        sns = boto3.client("sns", region_name="us-east-1")
        gone = f"arn:aws:sns:us-east-1:{ACCOUNT}:nope"
        assert SnsNotifier(sns, gone, account=ACCOUNT, owners={}).send(WARNING) is False


class Webhook:
    """A Slack incoming webhook on loopback: answers from a script, records each post."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], str]] = []
        self.posts: list[dict[str, Any]] = []
        self.hold = threading.Event()  # set: answer; clear: hang (a read timeout)
        self.hold.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                outer.hold.wait()
                status, headers, text = outer.answers.pop(0) if outer.answers else (200, {}, "ok")
                body = text.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    yield hook
    hook.hold.set()
    hook.server.shutdown()
    hook.server.server_close()
    thread.join()


class TestSlack:
    def slack(self, hook: Webhook, waits: list[float], **kw: Any) -> SlackNotifier:
        return SlackNotifier(
            hook.url,
            owners={"i-0abc": "U024BE7LH"},
            links=SignedLinks(),
            sleep=waits.append,
            **kw,
        )

    def test_the_post_is_block_kit_text_owner_and_link_buttons(self, webhook: Webhook) -> None:
        """Keep and Stop now are URL buttons a person presses in Slack."""
        assert self.slack(webhook, []).send(WARNING) is True
        [post] = webhook.posts
        assert post["text"].startswith("gpu-box stops in 15 min: Idle for 45 min")
        section, context, actions = post["blocks"]
        assert section["text"]["text"].startswith("*gpu-box stops in 15 min*\nIdle for 45 min")
        assert context["elements"][0]["text"] == "for <@U024BE7LH> · eu-west-1 · i-0abc"
        assert [(b["text"]["text"], b["url"], b.get("style")) for b in actions["elements"]] == [
            ("Keep 1h", "https://keep.example/i-0abc/keep:1h", None),
            ("Stop now", "https://keep.example/i-0abc/stop", "danger"),
        ]

    def test_a_429_is_waited_out_for_its_retry_after_and_sent_once_more(
        self, webhook: Webhook
    ) -> None:
        """Slack's documented rate limit: wait Retry-After, then the retry is delivered."""
        webhook.answers.append((429, {"Retry-After": "2"}, "rate_limited"))
        waits: list[float] = []
        assert self.slack(webhook, waits).send(WARNING) is True
        assert waits == [2.0] and len(webhook.posts) == 2

    def test_a_long_retry_after_is_left_to_the_next_tick(self, webhook: Webhook) -> None:
        """The worker does not sleep through its time: False, the outbox retries."""
        webhook.answers.append((429, {"Retry-After": "30"}, "rate_limited"))
        waits: list[float] = []
        assert self.slack(webhook, waits).send(WARNING) is False
        assert waits == [] and len(webhook.posts) == 1

    def test_a_second_429_is_false(self, webhook: Webhook) -> None:
        webhook.answers += [(429, {"Retry-After": "1"}, ""), (429, {"Retry-After": "1"}, "")]
        assert self.slack(webhook, []).send(WARNING) is False
        assert len(webhook.posts) == 2

    def test_a_server_error_is_false(self, webhook: Webhook) -> None:
        webhook.answers.append((500, {}, "internal_error"))
        assert self.slack(webhook, []).send(STOPPED) is False

    def test_a_webhook_that_never_answers_times_out_as_false(self, webhook: Webhook) -> None:
        """The read timeout bounds the wait; the server holds its answer until released."""
        webhook.hold.clear()
        slack = self.slack(webhook, [], timeout=(3.0, 0.2))
        assert slack.send(STOPPED) is False
        assert len(webhook.posts) == 1

    def test_nobody_listening_is_false(self) -> None:
        with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
            url = f"http://127.0.0.1:{closed.server_address[1]}/x"
        assert SlackNotifier(url, owners={}).send(STOPPED) is False


class Recorder:
    def __init__(self, name: str, results: list[bool]) -> None:
        self.name = name
        self.results = results
        self.got: list[str] = []

    def send(self, message: Message) -> bool:
        self.got.append(message.key)
        return self.results.pop(0)


class TestFanout:
    def test_true_only_when_every_channel_took_it(self) -> None:
        sns, slack = Recorder("sns", [True]), Recorder("slack", [False, True])
        fanout = Fanout([sns, slack])
        assert fanout.send(WARNING) is False
        assert fanout.send(WARNING) is True

    def test_a_retry_goes_only_to_the_channel_that_missed_it(self) -> None:
        """Slack being down does not repeat the e-mail each tick."""
        sns, slack = Recorder("sns", [True]), Recorder("slack", [False, False, True])
        fanout = Fanout([sns, slack])
        for _ in range(3):
            fanout.send(WARNING)
        assert sns.got == ["warn:i-0abc"] and len(slack.got) == 3

    def test_a_channel_that_raises_does_not_stop_the_others(self) -> None:
        class Raises:
            name = "bad"

            def send(self, message: Message) -> bool:
                raise RuntimeError("boom")

        sns = Recorder("sns", [True])
        assert Fanout([Raises(), sns]).send(STOPPED) is False
        assert sns.got == ["stopped:i-0def"]
