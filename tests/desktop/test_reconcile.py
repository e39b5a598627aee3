"""``report --reconcile``: the ledger beside Cost Explorer's answer, over HTTP to the moto
server (answers seeded through its moto-api) or to a loopback stub for the refusals moto
never gives; and no Cost Explorer request at all without the flag."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from tests.aws.test_pricing import PriceListServer
from tests.helpers import config
from watchdog.aws.costexplorer import (
    SERVICES,
    Boto3CostExplorer,
    CostAnswer,
    CostExplorerError,
    DailyCost,
    query,
    window,
)
from watchdog.core.costs import Price
from watchdog.core.ledger import InstanceRecord, Ledger, StateChange, build
from watchdog.core.ledger_report import report_json
from watchdog.desktop.reconcile import reconcile, reconcile_json, reconcile_text

JUNE1 = datetime(2026, 6, 1, tzinfo=timezone.utc)
NOW = JUNE1 + timedelta(days=2, hours=6)  # June 1 ended 30 h ago, June 2 only 6 h ago
COMPUTE, OTHER, VPC = SERVICES


def ledger() -> Ledger:
    """A g5.xlarge ($1.006/h) with one public IPv4, running 08:00-18:00 on June 1."""
    record = InstanceRecord(
        region="us-east-1",
        id="i-od",
        type="g5.xlarge",
        platform="Linux/UNIX",
        on_demand=Price(1.006, "bundled"),
        changes=(
            StateChange(JUNE1 + timedelta(hours=8), "running", public_ipv4=1),
            StateChange(JUNE1 + timedelta(hours=18), "stopped"),
        ),
    )
    return build([record], JUNE1, JUNE1 + timedelta(days=2), NOW)


def _day(day: str, estimated: bool, **by_service: str) -> dict[str, Any]:
    end = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return {
        "TimePeriod": {"Start": day, "End": end},
        "Total": {},
        "Groups": [
            {"Keys": [service], "Metrics": {"UnblendedCost": {"Amount": usd, "Unit": "USD"}}}
            for service, usd in by_service.items()
        ],
        "Estimated": estimated,
    }


AWS_ANSWER = {
    "ResultsByTime": [
        _day("2026-06-01", False, **{COMPUTE: "10.0000", VPC: "0.0500", OTHER: "0.0000"}),
        _day("2026-06-02", True, **{COMPUTE: "0.0000"}),
    ],
    "DimensionValueAttributes": [],
}


def seed(endpoint: str, *answers: dict[str, Any]) -> None:
    url = f"{endpoint}/moto-api/static/ce/cost-and-usage-results"
    requests.post(url, json={"results": list(answers)}, timeout=10).raise_for_status()


def test_each_day_shows_the_ledger_beside_aws_and_the_difference(aws: str) -> None:
    seed(aws, AWS_ANSWER)
    cfg = config(aws={"regions": ["us-east-1"]})
    doc = reconcile_json(ledger(), cfg, now=NOW)["reconcile"]
    june1, june2 = doc["days"]
    # ledger: 10 h x $1.006 + 10 h x $0.005 = $10.11; AWS billed $10.05
    assert june1["ledger"] == {
        "compute_usd": 10.06,
        "ebs_usd": 0.0,
        "ipv4_usd": 0.05,
        "total_usd": 10.11,
    }
    assert june1["aws"] == {
        "compute_usd": 10.0,
        "ebs_usd": 0.0,
        "ipv4_usd": 0.05,
        "total_usd": 10.05,
    }
    assert june1["difference_usd"] == pytest.approx(0.06)
    assert june1["final"] is True
    assert june2["day"] == "2026-06-02" and june2["difference_usd"] == 0.0
    assert june2["final"] is False  # AWS says estimated, and it ended only 6 h ago
    assert doc["totals"] == {"ledger_usd": 10.11, "aws_usd": 10.05, "difference_usd": 0.06}
    assert doc["requests"] == 1 and doc["error"] is None
    assert any("8 to 24 hours" in note for note in doc["notes"])

    text = reconcile_text(ledger(), cfg, now=NOW)
    assert "(1 request, $0.01)" in text
    assert "2026-06-01" in text and "$10.11" in text and "$10.05" in text and "+$0.06" in text
    assert "not final" in text.splitlines()[3]


class Recorder(PriceListServer):
    """A loopback AWS JSON endpoint: answers from a queue, keeps every request."""

    @property
    def targets(self) -> list[str]:
        return [headers["X-Amz-Target"] for headers, _ in self.requests]

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.requests]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    fake = Recorder()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", fake.url)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join()


def test_a_plain_report_never_asks_cost_explorer_and_reconcile_asks_once(
    recorder: Recorder,
) -> None:
    plain = report_json(ledger())
    assert recorder.targets == []  # the report alone costs nothing
    assert "reconcile" not in plain and list(plain) == [
        "version",
        "since",
        "until",
        "currency",
        "instances",
        "totals",
        "notes",
    ]
    cfg = config(aws={"regions": ["us-east-1", "eu-west-1"]})
    recorder.answers.append((200, AWS_ANSWER))
    extra = reconcile_json(ledger(), cfg, now=NOW)
    assert list(extra) == ["reconcile"]  # one key, beside the v1 document's own
    assert recorder.targets == ["AWSInsightsIndexService.GetCostAndUsage"]
    (body,) = recorder.bodies
    assert body["TimePeriod"] == {"Start": "2026-06-01", "End": "2026-06-03"}
    assert body["Granularity"] == "DAILY" and body["Metrics"] == ["UnblendedCost"]
    assert body["GroupBy"] == [{"Type": "DIMENSION", "Key": "SERVICE"}]
    services, regions = body["Filter"]["And"]
    assert services["Dimensions"]["Values"] == list(SERVICES)
    assert regions["Dimensions"] == {"Key": "REGION", "Values": ["eu-west-1", "us-east-1"]}


@pytest.mark.parametrize(
    ("code", "message", "sentence"),
    [
        (
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/me is not authorized to perform: "
            "ce:GetCostAndUsage",
            "the credentials need the IAM permission ce:GetCostAndUsage",
        ),
        (
            "AccessDeniedException",
            "User not enabled for cost explorer access",
            "Cost Explorer is not enabled for this account",
        ),
        ("DataUnavailableException", "Data is not available.", "has no data for these days"),
    ],
)
def test_a_refusal_is_one_sentence_and_the_ledger_still_shows(
    recorder: Recorder, code: str, message: str, sentence: str
) -> None:
    recorder.answers.append((400, {"__type": code, "Message": message}))
    cfg = config()
    doc = reconcile_json(ledger(), cfg, now=NOW)["reconcile"]
    assert sentence in doc["error"]
    assert doc["requests"] == 0
    assert [d["aws"] for d in doc["days"]] == [None, None]
    assert doc["days"][0]["ledger"]["total_usd"] == 10.11
    recorder.answers.append((400, {"__type": code, "Message": message}))
    text = reconcile_text(ledger(), cfg, now=NOW)
    assert sentence in text and "Traceback" not in text and "$10.11" in text


def test_every_page_is_read_and_counted(recorder: Recorder) -> None:
    first = {**AWS_ANSWER, "ResultsByTime": AWS_ANSWER["ResultsByTime"][:1], "NextPageToken": "p2"}
    second = {**AWS_ANSWER, "ResultsByTime": AWS_ANSWER["ResultsByTime"][1:]}
    recorder.answers += [(200, first), (200, second)]
    answer = Boto3CostExplorer().daily_costs(date(2026, 6, 1), date(2026, 6, 3), ["us-east-1"])
    assert answer.requests == 2
    assert [b.get("NextPageToken") for b in recorder.bodies] == [None, "p2"]
    assert DailyCost(date(2026, 6, 2), "compute", 0.0, True) in answer.costs


def test_an_unanswered_call_is_a_sentence_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens
    from botocore.config import Config as BotoConfig

    quick = BotoConfig(connect_timeout=1, retries={"total_max_attempts": 1})
    with pytest.raises(CostExplorerError, match="did not answer"):
        Boto3CostExplorer(boto_config=quick).daily_costs(date(2026, 6, 1), date(2026, 6, 2), [])


def test_the_window_covers_whole_days_and_end_is_exclusive() -> None:
    assert window(JUNE1, JUNE1 + timedelta(days=2)) == (date(2026, 6, 1), date(2026, 6, 3))
    assert window(JUNE1, JUNE1 + timedelta(days=1, hours=3)) == (
        date(2026, 6, 1),
        date(2026, 6, 3),
    )
    assert window(JUNE1, JUNE1) == (date(2026, 6, 1), date(2026, 6, 2))
    assert "Filter" in query(date(2026, 6, 1), date(2026, 6, 2), [])
    assert query(date(2026, 6, 1), date(2026, 6, 2), [])["Filter"] == {
        "Dimensions": {"Key": "SERVICE", "Values": list(SERVICES)}
    }


def test_a_day_with_an_unknown_price_adds_the_known_amounts_and_says_partial() -> None:
    record = InstanceRecord(
        region="ap-southeast-4",
        id="i-unknown",
        type="g5.xlarge",
        platform="Linux/UNIX",
        changes=(StateChange(JUNE1 + timedelta(hours=8), "running"),),
    )
    unpriced = build([record], JUNE1, JUNE1 + timedelta(days=1), NOW)
    answer = CostAnswer((DailyCost(date(2026, 6, 1), "compute", 12.0, False),), 1)
    (day,) = reconcile(unpriced, answer, now=NOW)["days"]
    assert day["partial"] is True and day["aws"]["total_usd"] == 12.0
    assert day["ledger"]["compute_usd"] == 0.0 and day["difference_usd"] == -12.0
