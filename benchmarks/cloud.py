"""What the team shell costs: a worker per region and per instance, the fan-out, DynamoDB
writes per instance per pass; projected to a tick's wall time and a month's bill.

Runs the real handlers (``watchdog.cloud.handler.work`` and ``tick``, called as
Lambda calls them) against a moto server on loopback: EC2 in a member account
entered with AssumeRole, the DynamoDB history, SSM for the config. For each
fleet size it times three passes over one (account, region):

- first: every instance new to the history (each written once);
- steady: the same fleet again, nothing changed (the pass of almost every tick);
- warn: every instance idle past its warning point (a warning each: decision,
  action, outbox and its delivery, and the ``warned`` tag); up to ``--warn-max``
  instances (100), as its cost is one set of calls per warning.

AWS calls are HTTP requests per service, counted on every client boto3 makes;
DynamoDB units are computed from the requests (a write unit per started KB of
an item, two per item in a TransactWriteItems; a read unit per started 4 KB of
a consistent read). Log bytes are the JSON lines the handler writes. The
projection uses the steady pass (per region + per instance, fitted over the
sizes) and the list prices in ``PRICES``.

    python benchmarks/cloud.py                 # 10, 100 and 1,000 instances, median of 3
    python benchmarks/cloud.py --quick         # 10 and 100, one repeat
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import boto3
import requests
import structlog

from watchdog.aws.fake import moto_server
from watchdog.cloud.handler import Runtime, tick, work
from watchdog.cloud.history import create_table
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_MANAGED
from watchdog.scheduler.notifier import Message

HUB, MEMBER, REGION = "123456789012", "222222222222", "us-east-1"
TABLE, CONFIG_PARAMETER = "idle-watchdog", "/idle-watchdog/config"
RESERVATION = 100
TICKS_PER_MONTH = 30 * 24 * 60  # poll_seconds = 60 (the default), 30 days
BATCH_SIZE = 10  # the template's SQS batch: one worker runs up to 10 scopes in turn
MEMORY_GB = {"tick": 0.25, "work": 0.5}  # the template's MemorySize
#: Messages per managed instance per month: warned and stopped once a working day.
MESSAGES_PER_INSTANCE_MONTH = 2 * 22
#: (instances, account-regions) priced: a lab, a department, the issue's target.
DEPLOYMENTS = ((100, 2), (1_000, 10), (10_000, 50))

#: List prices, us-east-1, USD, free tiers left out. From the AWS pricing pages as of
#: 2024-11 (DynamoDB's on-demand prices after the 2024-11-01 cut); no internet here
#: to recheck, so check them before budgeting.
PRICES: dict[str, tuple[float, str, str]] = {
    "lambda_request": (0.20 / 1e6, "per request", "aws.amazon.com/lambda/pricing"),
    "lambda_gb_s_arm": (0.0000133334, "per GB-second, arm64", "aws.amazon.com/lambda/pricing"),
    "sqs_request": (
        0.40 / 1e6,
        "per request (64 KB chunk), standard queue",
        "aws.amazon.com/sqs/pricing",
    ),
    "ddb_wru": (
        0.625 / 1e6,
        "per write request unit, on-demand",
        "aws.amazon.com/dynamodb/pricing/on-demand",
    ),
    "ddb_rru": (
        0.125 / 1e6,
        "per read request unit, on-demand",
        "aws.amazon.com/dynamodb/pricing/on-demand",
    ),
    "ddb_gb_month": (0.25, "per GB-month stored", "aws.amazon.com/dynamodb/pricing/on-demand"),
    "scheduler": (1.00 / 1e6, "per schedule invocation", "aws.amazon.com/eventbridge/pricing"),
    "sns_publish": (0.50 / 1e6, "per publish (64 KB chunk)", "aws.amazon.com/sns/pricing"),
    "sns_email": (2.00 / 1e5, "per e-mail delivery", "aws.amazon.com/sns/pricing"),
    "logs_gb": (0.50, "per GB of CloudWatch Logs ingested", "aws.amazon.com/cloudwatch/pricing"),
}
#: Lambda's SQS pollers long-poll an empty queue: 5 pollers, one 20 s receive each.
IDLE_RECEIVES_PER_MINUTE = 5 * 3


class Meter:
    """Counts every HTTP request boto3 sends, and DynamoDB units, on every client made."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.wru = 0
        self.rru = 0

    def reset(self) -> None:
        self.calls.clear()
        self.wru = self.rru = 0

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-send", self._sent)
        events.register("provide-client-params.dynamodb", self._writes)
        events.register("after-call.dynamodb", self._reads)

    def _sent(self, event_name: str, **_: Any) -> None:
        self.calls[event_name.split(".")[1]] += 1  # before-send.<service>.<operation>

    def _writes(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        op = model.name
        if op == "PutItem":
            self.wru += _kb(params["Item"])
        elif op == "DeleteItem":
            self.wru += 1
        elif op == "TransactWriteItems":
            for item in params["TransactItems"]:
                body = item.get("Put", {}).get("Item")
                self.wru += 2 * (_kb(body) if body else 1)

    def _reads(self, parsed: Mapping[str, Any], model: Any, **_: Any) -> None:
        if model.name == "GetItem":
            self.rru += max(1, math.ceil(len(json.dumps(parsed.get("Item", {}))) / 4096))
        elif model.name == "Query":
            self.rru += max(1, math.ceil(len(json.dumps(parsed.get("Items", []))) / 4096))


def _kb(item: Mapping[str, Any]) -> int:
    return max(1, math.ceil(len(json.dumps(item)) / 1024))


@contextmanager
def metered(meter: Meter) -> Iterator[None]:
    original = boto3.Session.client

    def client(self: boto3.Session, *args: Any, **kw: Any) -> Any:
        made = original(self, *args, **kw)
        meter.attach(made)
        return made

    boto3.Session.client = client  # type: ignore[method-assign]
    try:
        yield
    finally:
        boto3.Session.client = original  # type: ignore[method-assign]


class LogBytes(io.StringIO):
    """Counts what the handler logs (as CloudWatch Logs would ingest it), keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


def json_logs(sink: LogBytes) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sink),
        cache_logger_on_first_use=False,
    )


def make_hub(accounts: list[str], regions: list[str]) -> str:
    session = boto3.Session(region_name=REGION)
    create_table(session.client("dynamodb"), TABLE)
    config = (
        f"[aws]\nregions = {json.dumps(regions)}\n[idle]\nminutes = 30\nwarn_minutes = 10\n"
        f'[cloud]\naccounts = {json.dumps(accounts)}\nexternal_id = "bench"\n'
    )
    session.client("ssm").put_parameter(Name=CONFIG_PARAMETER, Value=config, Type="String")
    url: str = session.client("sqs").create_queue(QueueName="work")["QueueUrl"]
    return url


def member_session() -> boto3.Session:
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{MEMBER}:role/setup", RoleSessionName="bench-setup"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )


def populate(session: boto3.Session, count: int, now: datetime) -> list[str]:
    busy = hb.encode(hb.Heartbeat(now, True, now, ("gpu:0",)))
    ec2 = session.client("ec2", region_name=REGION)
    ids: list[str] = []
    while len(ids) < count:
        n = min(RESERVATION, count - len(ids))
        tags: Any = [{"Key": TAG_MANAGED, "Value": "true"}, {"Key": TAG_HEARTBEAT, "Value": busy}]
        answer = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=n,
            MaxCount=n,
            InstanceType="g5.xlarge",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        ids += [i["InstanceId"] for i in answer["Instances"]]
    return ids


def go_idle(session: boto3.Session, ids: list[str], now: datetime) -> None:
    idle = hb.encode(hb.Heartbeat(now, False, now - timedelta(minutes=24)))
    ec2 = session.client("ec2", region_name=REGION)
    for start in range(0, len(ids), 1000):
        ec2.create_tags(
            Resources=ids[start : start + 1000], Tags=[{"Key": TAG_HEARTBEAT, "Value": idle}]
        )


def record(account: str, tick_id: str) -> dict[str, Any]:
    body = json.dumps({"account": account, "region": REGION, "tick": tick_id})
    return {"messageId": f"m-{tick_id}", "receiptHandle": "r", "body": body}


def measure_worker(
    endpoint: str, count: int, meter: Meter, *, warn: bool
) -> dict[str, dict[str, float]]:
    requests.post(f"{endpoint}/moto-api/reset", timeout=600).raise_for_status()
    make_hub([MEMBER], [REGION])
    member = member_session()
    clock = SimpleNamespace(now=datetime.now(timezone.utc))
    ids = populate(member, count, clock.now)
    told: list[Message] = []

    def factory(*_: Any) -> Callable[[Message], bool]:
        def send(message: Message) -> bool:
            told.append(message)
            return True

        return send

    rt = Runtime(
        session=boto3.Session(region_name=REGION),
        table=TABLE,
        config_parameter=CONFIG_PARAMETER,
        send_factory=factory,
        clock=lambda: clock.now,
    )
    rt.hub  # noqa: B018 - once per container, not per pass: not measured
    out: dict[str, dict[str, float]] = {}
    for name in ("first", "steady", "warn") if warn else ("first", "steady"):
        if name == "warn":  # 25 minutes on, idle for 24 of them: every one is warned
            clock.now += timedelta(minutes=25)
            go_idle(member, ids, clock.now)
        sink = LogBytes()
        json_logs(sink)
        meter.reset()
        started = time.perf_counter()
        answer = work({"Records": [record(MEMBER, f"{name}-{count}")]}, None, runtime=rt)
        elapsed = time.perf_counter() - started
        structlog.reset_defaults()
        print(f"{count} instances, {name} pass: {elapsed:.2f} s", file=sys.stderr)
        assert answer == {"batchItemFailures": []}, answer
        out[name] = {
            "seconds": elapsed,
            "calls": sum(meter.calls.values()),
            "ec2": meter.calls["ec2"],
            "dynamodb": meter.calls["dynamodb"],
            "other": sum(v for k, v in meter.calls.items() if k not in ("ec2", "dynamodb")),
            "wru": meter.wru,
            "rru": meter.rru,
            "log_bytes": sink.bytes,
        }
        clock.now += timedelta(minutes=1)
    assert len([m for m in told if m.key.startswith("warn:")]) == (count if warn else 0)
    size = table_bytes()
    out["table"] = {"bytes": size}
    return out


def table_bytes() -> int:
    ddb = boto3.client("dynamodb", region_name=REGION)
    total, kw = 0, {"TableName": TABLE}
    while True:
        page = ddb.scan(**kw)
        total += sum(len(json.dumps(item)) for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return total
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def measure_tick(endpoint: str, scopes: int, meter: Meter) -> dict[str, float]:
    requests.post(f"{endpoint}/moto-api/reset", timeout=600).raise_for_status()
    accounts = [f"{100000000000 + n:012d}" for n in range(scopes // 2)]
    queue = make_hub(accounts, ["us-east-1", "eu-west-1"])
    rt = Runtime(
        session=boto3.Session(region_name=REGION),
        table=TABLE,
        queue_url=queue,
        config_parameter=CONFIG_PARAMETER,
    )
    rt.hub  # noqa: B018
    meter.reset()
    started = time.perf_counter()
    answer = tick({"tick": "2026-11-30T17:00:00Z"}, None, runtime=rt)
    elapsed = time.perf_counter() - started
    assert answer["messages"] == scopes
    return {"seconds": elapsed, "calls": sum(meter.calls.values()), "sqs": meter.calls["sqs"]}


def fit(sizes: list[int], values: list[float]) -> tuple[float, float]:
    """Least squares ``a + b * n``: per scope, per instance."""
    mean_n, mean_v = statistics.fmean(sizes), statistics.fmean(values)
    b = sum((n - mean_n) * (v - mean_v) for n, v in zip(sizes, values, strict=True)) / sum(
        (n - mean_n) ** 2 for n in sizes
    )
    return mean_v - b * mean_n, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 instances, one repeat")
    parser.add_argument(
        "--warn-max",
        type=int,
        default=100,
        help="the warn pass (one warning per instance) only up to this size; it is linear",
    )
    args = parser.parse_args()
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    repeat = 1 if args.quick else 3
    meter = Meter()
    runs: dict[int, list[dict[str, dict[str, float]]]] = {}
    with moto_server() as endpoint, metered(meter):
        for _ in range(repeat):
            for n in sizes:
                warn = n <= args.warn_max
                runs.setdefault(n, []).append(measure_worker(endpoint, n, meter, warn=warn))
        ticks = [measure_tick(endpoint, 50, meter) for _ in range(repeat)]
    report(sizes, runs, ticks, repeat)


def median(rows: list[dict[str, dict[str, float]]], phase: str, key: str) -> float:
    return statistics.median(r[phase][key] for r in rows)


def report(
    sizes: list[int],
    runs: Mapping[int, list[dict[str, dict[str, float]]]],
    ticks: list[dict[str, float]],
    repeat: int,
) -> None:
    day = f"{datetime.now(timezone.utc):%Y-%m-%d}"
    print(f"### A worker's pass over one (account, region), median of {repeat} ({day})\n")
    print(
        "| instances | pass | wall (s) | AWS calls | EC2 | DynamoDB | other | WRU | RRU | log KB |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        for phase in ("first", "steady", "warn"):
            if phase not in runs[n][0]:
                continue
            m = {k: median(runs[n], phase, k) for k in runs[n][0][phase]}
            cells = [f"{n:,}", phase, f"{m['seconds']:.3f}"]
            cells += [f"{m[k]:.0f}" for k in ("calls", "ec2", "dynamodb", "other", "wru", "rru")]
            print("| " + " | ".join([*cells, f"{m['log_bytes'] / 1024:.1f}"]) + " |")
    keys = ("seconds", "wru", "rru", "log_bytes")
    per = {k: fit(sizes, [median(runs[n], "steady", k) for n in sizes]) for k in keys}
    warned = [n for n in sizes if "warn" in runs[n][0]]
    warn = fit(warned, [median(runs[n], "warn", "wru") for n in warned])[1]
    stored = fit(warned, [median(runs[n], "table", "bytes") for n in warned])[1]
    t = {k: statistics.median(x[k] for x in ticks) for k in ticks[0]}
    print(
        f"\n- steady pass, fitted: {per['seconds'][0]:.3f} s per region + "
        f"{per['seconds'][1] * 1000:.2f} ms per instance; {per['wru'][0]:.1f} WRU per region + "
        f"{per['wru'][1]:.3f} per instance; {per['rru'][0]:.1f} RRU per region + "
        f"{per['rru'][1]:.4f} per instance; {per['log_bytes'][1]:.0f} log bytes per instance"
    )
    print(
        f"- a warning costs {warn:.2f} WRU; the table holds {stored:.0f} bytes per instance after"
    )
    print(
        f"- the tick for 50 account-regions: {t['seconds']:.3f} s, {t['calls']:.0f} AWS calls "
        f"({t['sqs']:.0f} SQS)"
    )
    projection(per["seconds"], t["seconds"])
    bill(per, warn, stored, t["seconds"])


def projection(seconds: tuple[float, float], tick_s: float) -> None:
    """Lambda wall time per tick: the workers run side by side, each its batch in turn."""
    print("\n### Lambda wall time per tick (steady passes, side by side per batch size)\n")
    print("| instances | account-regions | batch | workers per tick | tick + slowest worker (s) |")
    print("|---:|---:|---:|---:|---:|")
    for instances, scopes in DEPLOYMENTS:
        scope_s = seconds[0] + seconds[1] * instances / scopes
        for batch in (BATCH_SIZE, 1):
            wall = tick_s + min(batch, scopes) * scope_s
            ok = "" if wall < 60 else " (over one tick)"
            print(
                f"| {instances:,} | {scopes} | {batch} | {math.ceil(scopes / batch)} | "
                f"{wall:.1f}{ok} |"
            )


def bill(per: Mapping[str, tuple[float, float]], warn: float, stored: float, tick_s: float) -> None:
    print("\n### Monthly cost, USD (list prices below; free tiers left out)\n")
    print("| instances | Lambda | SQS | DynamoDB | Scheduler | SNS | total | Logs at info |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    p = {k: v[0] for k, v in PRICES.items()}
    for instances, scopes in DEPLOYMENTS:
        scope_s = per["seconds"][0] + per["seconds"][1] * instances / scopes
        workers = math.ceil(scopes / BATCH_SIZE)
        gb_s = tick_s * MEMORY_GB["tick"] + scopes * scope_s * MEMORY_GB["work"]
        lam = TICKS_PER_MONTH * ((1 + workers) * p["lambda_request"] + gb_s * p["lambda_gb_s_arm"])
        sqs = TICKS_PER_MONTH * (3 * workers + IDLE_RECEIVES_PER_MINUTE) * p["sqs_request"]
        wru = TICKS_PER_MONTH * (scopes * per["wru"][0] + instances * per["wru"][1])
        wru += instances * MESSAGES_PER_INSTANCE_MONTH / 2 * warn
        rru = TICKS_PER_MONTH * (scopes * per["rru"][0] + instances * per["rru"][1])
        ddb = wru * p["ddb_wru"] + rru * p["ddb_rru"] + instances * stored / 1e9 * p["ddb_gb_month"]
        sched = TICKS_PER_MONTH * p["scheduler"]
        sns = instances * MESSAGES_PER_INSTANCE_MONTH * (p["sns_publish"] + p["sns_email"])
        logs = TICKS_PER_MONTH * instances * per["log_bytes"][1] / 1e9 * p["logs_gb"]
        total = lam + sqs + ddb + sched + sns
        cells = [f"{x:.2f}" for x in (lam, sqs, ddb, sched, sns)]
        print(f"| {instances:,} | " + " | ".join(cells) + f" | **{total:.2f}** | {logs:.2f} |")
    print("\n| price | USD | unit | source (as of 2024-11) |\n|---|---:|---|---|")
    for name, (value, unit, source) in PRICES.items():
        print(f"| {name} | {value:.10g} | {unit} | {source} |")


if __name__ == "__main__":
    main()
