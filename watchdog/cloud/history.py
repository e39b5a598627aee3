"""The pass's ``History`` in one DynamoDB table, one partition per (account, region).

Schema (the hub template creates exactly this; it reads the constants below):

- key ``pk`` (S, partition) + ``sk`` (S, sort); on-demand billing; no index;
  TTL on ``expires_at`` (N, epoch seconds).
- ``pk = "<account>#<region>"`` (a *scope*), ``sk`` one of:

  ======================  ==========================================  ==========
  sk                      what                                        TTL
  ======================  ==========================================  ==========
  ``lease``               holder, until: one worker per scope          until + 1 d
  ``tick#<tick>``         this tick's pass is done (redelivery skips)  2 d
  ``inst#<id>``           instance as last seen; running seconds       90 d after
  ``dec#<at>#<target>``   a decision that acted (warn/stop/...)        90 d
  ``act#<at>#<kind>#<t>`` an action and its outcome                    90 d
  ``out#<key>``           outbox: message, pending, attempts, told_at  90 d, once sent
  ``cond#<subject>``      the cause told of an ongoing problem         none
  ``pass#<at>``           one pass: regions ok and failed              14 d
  ======================  ==========================================  ==========

- ``pk = "scopes"``, ``sk = <scope>``: the last pass of every scope, so
  ``cloud status`` reads the fleet with queries, never a scan.

Safety: the lease (a conditional put that succeeds only when no unexpired
lease exists) lets one worker at a time write a scope, and it outlives the
worker's Lambda timeout, so a lease can only lapse once its holder is dead.
Inside it, ``transaction()`` buffers writes and commits them with one
TransactWriteItems (an action and its message land together or not at all).
Conditional writes (``attribute_not_exists``) keep a record from ever being
overwritten, a delivered warning from being marked delivered later than it
was, and a tick's pass from running twice when SQS redelivers its message.
Routine "nothing to do" decisions are logged, not stored, and an instance is
written only when it changed: an idle pass over an unchanged fleet writes a
few items per scope, not per instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import structlog
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from watchdog.core.fleet import Instance
from watchdog.core.policy import Action, Decision
from watchdog.scheduler.history import HistoryUnwritable
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.outbox import dumps, loads

log = structlog.get_logger("watchdog.cloud.history")

#: The table's key schema and attribute types (the template reads these).
TABLE_KEYS = {"pk": "S", "sk": "S"}
HASH_KEY, RANGE_KEY = "pk", "sk"
TTL_ATTRIBUTE = "expires_at"
SCOPES = "scopes"  # the partition listing every scope's last pass
#: The table as the template declares it and ``create_table`` makes it.
TABLE_SCHEMA: dict[str, Any] = {
    "BillingMode": "PAY_PER_REQUEST",
    "AttributeDefinitions": [
        {"AttributeName": k, "AttributeType": t} for k, t in TABLE_KEYS.items()
    ],
    "KeySchema": [
        {"AttributeName": HASH_KEY, "KeyType": "HASH"},
        {"AttributeName": RANGE_KEY, "KeyType": "RANGE"},
    ],
}
#: The worker's Lambda timeout; a lease outlives it, so it lapses only when its holder died.
WORKER_TIMEOUT_SECONDS = 300
LEASE_SECONDS = WORKER_TIMEOUT_SECONDS + 60
KEEP_RECORDS = timedelta(days=90)
KEEP_PASSES = timedelta(days=14)
KEEP_TICKS = timedelta(days=2)
_TRANSACT_LIMIT = 100  # items per TransactWriteItems


def create_table(client: Any, name: str) -> None:
    """Make the history table by hand, as the hub stack does (tests, benchmarks, trials)."""
    client.create_table(TableName=name, **TABLE_SCHEMA)
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )


_ser, _de = TypeSerializer(), TypeDeserializer()


def scope_of(account: str, region: str) -> str:
    return f"{account}#{region}"


@dataclass(frozen=True)
class _Write:
    item: dict[str, Any]
    condition: str = ""
    values: Mapping[str, Any] | None = None
    delete: bool = False


class DynamoHistory:
    """``scheduler.history.History`` for one scope; ``writes`` counts items written."""

    def __init__(self, client: Any, table: str, account: str, region: str):
        self.client, self.table = client, table
        self.account, self.region = account, region
        self.scope = scope_of(account, region)
        self.writes = 0  # items written (a transaction's items each count)
        self._buffer: dict[str, _Write] | None = None
        self._seen: dict[str, dict[str, Any]] | None = None  # inst# rows, read once
        self._out: dict[str, dict[str, Any]] | None = None  # out# rows, read once
        self._ids: dict[int, dict[str, Any]] = {}

    # -- lease and ticks ---------------------------------------------------------

    def take_lease(self, holder: str, now: datetime, seconds: int = LEASE_SECONDS) -> bool:
        """True when this worker now holds the scope; False when another holder does."""
        until = _epoch(now) + seconds
        item = {"holder": holder, "until": until, TTL_ATTRIBUTE: until + 86400}
        try:
            self._put(
                self._key("lease", item),
                condition="attribute_not_exists(pk) OR #u < :now OR holder = :me",
                values={":now": _epoch(now), ":me": holder},
                names={"#u": "until"},
            )
        except _Refused:
            return False
        return True

    def release_lease(self, holder: str) -> None:
        """Give the scope back (only if we still hold it): the next tick need not wait."""
        try:
            self._call(
                "delete_item",
                TableName=self.table,
                Key=_dump({"pk": self.scope, "sk": "lease"}),
                ConditionExpression="holder = :me",
                ExpressionAttributeValues=_dump({":me": holder}),
            )
        except _Refused:
            log.warning("lease was no longer ours", scope=self.scope)

    def tick_done(self, tick: str) -> bool:
        return self._get(f"tick#{tick}") is not None

    def mark_tick(self, tick: str, now: datetime) -> None:
        """This tick's pass finished; a redelivered message for it then changes nothing."""
        expires = _epoch(now + KEEP_TICKS)
        try:
            self._put(
                self._key(f"tick#{tick}", {"at": _t(now), TTL_ATTRIBUTE: expires}),
                condition="attribute_not_exists(sk)",
            )
        except _Refused:
            log.warning("tick already marked done", scope=self.scope, tick=tick)

    # -- History ---------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside are committed together (TransactWriteItems) at the end."""
        if self._buffer is not None:  # nested: the outer one commits
            yield
            return
        self._buffer = {}
        try:
            yield
            writes = list(self._buffer.values())
        except BaseException:
            self._forget()
            raise
        finally:
            self._buffer = None
        try:
            self._commit(writes)
        except BaseException as exc:
            self._forget()
            if not isinstance(exc, _Refused):
                raise
            # only a second writer despite the lease gets here
            raise HistoryUnwritable(
                f"DynamoDB table {self.table}", f"another worker wrote {self.scope} ({exc})"
            ) from exc

    def _forget(self) -> None:
        """A transaction rolled back: what was cached may hold its writes; read again."""
        self._seen = self._out = None

    def observe(self, now: datetime, instances: Iterable[Instance]) -> None:
        """Write an instance only when it is new or changed (state, start, name, type);
        running time is counted from ``since`` at read time, so it needs no write."""
        seen = self._instances()
        for inst in instances:
            row = seen.get(inst.id)
            launch = _t(inst.launch_time) if inst.launch_time else ""
            fields = {"name": inst.name, "type": inst.type, "lifecycle": inst.lifecycle}
            if (
                row is not None
                and row["state"] == inst.state
                and row["launch_time"] == launch
                and all(row.get(k) == v for k, v in fields.items())
            ):
                continue
            running = Decimal(str(_running_seconds(row, _parse(_t(now))))) if row else Decimal(0)
            new = {
                "id": inst.id,
                "state": inst.state,
                "launch_time": launch,
                **fields,
                "owner": inst.tags.get("idle-watchdog:owner") or inst.tags.get("Owner", ""),
                "first_seen": row["first_seen"] if row else _t(now),
                "since": _t(now),  # the state below holds since then
                "running_seconds": running,
                TTL_ATTRIBUTE: _epoch(now + KEEP_RECORDS),
            }
            seen[inst.id] = new
            self._put(self._key(f"inst#{inst.id}", new))

    def record_pass(
        self, started: datetime, finished: datetime, ok: int, failed: int, *, dry_run: bool
    ) -> None:
        row = {
            "started": _t(started),
            "finished": _t(finished),
            "regions_ok": ok,
            "regions_failed": failed,
            "dry_run": dry_run,
        }
        expires = _epoch(started + KEEP_PASSES)
        self._put(self._key(f"pass#{_t(started)}", {**row, TTL_ATTRIBUTE: expires}))
        scope = {"pk": SCOPES, "sk": self.scope, "account": self.account, "region": self.region}
        self._put({**scope, **row})

    def record_decision(self, now: datetime, decision: Decision, *, dry_run: bool) -> None:
        """Only decisions that act are stored; "nothing to do" goes to the log."""
        if decision.action is Action.NONE:
            return
        row = {
            "region": decision.region,
            "target": decision.target,
            "action": decision.action.value,
            "reason": decision.reason,
            "stop_at": _t(decision.stop_at) if decision.stop_at else "",
            "dry_run": dry_run,
            TTL_ATTRIBUTE: _epoch(now + KEEP_RECORDS),
        }
        sk = f"dec#{_t(now)}#{decision.target}"
        self._put(self._key(sk, row), condition="attribute_not_exists(sk)")

    def record_action(
        self,
        now: datetime,
        region: str,
        target: str,
        kind: str,
        *,
        ok: bool,
        detail: str,
        dry_run: bool,
    ) -> None:
        row = {
            "region": region,
            "target": target,
            "kind": kind,
            "ok": ok,
            "detail": detail,
            "dry_run": dry_run,
            "at": _t(now),
            TTL_ATTRIBUTE: _epoch(now + KEEP_RECORDS),
        }
        sk = f"act#{_t(now)}#{kind}#{target}"
        self._put(self._key(sk, row), condition="attribute_not_exists(sk)")

    def last_told(self, kind: str, *, dry_run: bool) -> dict[str, datetime]:
        """Delivered (``told_at``); a dry run: when a dry action of that kind was recorded."""
        if dry_run:
            out: dict[str, datetime] = {}
            for row in self._query("act#"):
                if row["kind"] == kind and row["ok"] and row["dry_run"]:
                    at = _parse(row["at"])
                    out[row["target"]] = max(at, out.get(row["target"], at))
            return out
        return {
            row["target"]: _parse(row["told_at"])
            for row in self._outbox().values()
            if row["key"].startswith(f"{kind}:") and row.get("told_at")
        }

    def told(self) -> set[str]:
        return {row["key"] for row in self._outbox().values()}

    def enqueue(self, message: Message, at: datetime) -> None:
        """One item per key: a pending one is replaced, a sent one becomes pending again
        (keeping when it was last told, which the policy reads)."""
        row = self._outbox().get(f"out#{message.key}") or {}
        new = {
            "key": message.key,
            "target": message.target,
            "message": dumps(message),
            "created_at": _t(at),
            "pending": True,
            "attempts": row.get("attempts", 0) if row.get("pending") else 0,
            "told_at": row.get("told_at", ""),
        }
        self._put(self._key(f"out#{message.key}", new))

    def discard_pending(self, key: str) -> None:
        row = self._outbox().get(f"out#{key}")
        if row is not None and row.get("pending"):
            self._put(self._key(f"out#{key}", {**_fields(row), "pending": False}))

    def pending(self) -> list[tuple[int, Message]]:
        """Oldest first. Ids are handles valid for this object (``mark_sent`` after)."""
        rows = sorted(
            (r for r in self._outbox().values() if r.get("pending")),
            key=lambda r: (r["created_at"], r["key"]),
        )
        self._ids = dict(enumerate(rows, start=1))
        return [(i, loads(row["message"])) for i, row in self._ids.items()]

    def mark_sent(self, outbox_id: int, at: datetime) -> None:
        """Only a pending message is marked: a delivery time never moves."""
        row = self._ids[outbox_id]
        told = at.astimezone(timezone.utc).isoformat(timespec="microseconds")
        new = {**_fields(row), "pending": False, "told_at": told}
        new.update(attempts=int(row.get("attempts", 0)) + 1, sent_at=told)
        new[TTL_ATTRIBUTE] = _epoch(at + KEEP_RECORDS)
        self._put(self._key(row["sk"], new), condition="pending = :yes", values={":yes": True})

    def mark_failed(self, outbox_id: int, at: datetime, error: str) -> None:
        row = self._ids[outbox_id]
        new = {**_fields(row), "attempts": int(row.get("attempts", 0)) + 1}
        new["last_error"] = f"{_t(at)} {error}"
        self._put(self._key(row["sk"], new))

    def condition(self, subject: str) -> str | None:
        row = self._get(f"cond#{subject}")
        return str(row["cause"]) if row else None

    def set_condition(self, subject: str, cause: str | None, at: datetime) -> None:
        key = {"pk": self.scope, "sk": f"cond#{subject}"}
        if cause is None:
            self._write(_Write(key, delete=True))
        else:
            self._put({**key, "cause": cause, "since": _t(at)})

    # -- reading, for status and tests --------------------------------------------

    def actions(self) -> list[dict[str, Any]]:
        """Every action row, oldest first."""
        return self._query("act#")

    def instances(self, now: datetime) -> list[dict[str, Any]]:
        """Every instance row, with ``running_seconds`` counted up to ``now``."""
        return [{**r, "running_seconds": _running_seconds(r, now)} for r in self._query("inst#")]

    # -- the table ----------------------------------------------------------------

    def _key(self, sk: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {"pk": self.scope, "sk": sk, **fields}

    def _outbox(self) -> dict[str, dict[str, Any]]:
        """Every outbox row by sort key: one query per pass, then kept up to date by our
        own writes (the lease makes them the only ones)."""
        if self._out is None:
            self._out = {row["sk"]: row for row in self._query("out#")}
        return self._out

    def _instances(self) -> dict[str, dict[str, Any]]:
        if self._seen is None:
            self._seen = {row["id"]: row for row in self._query("inst#")}
        return self._seen

    def _put(
        self,
        item: dict[str, Any],
        *,
        condition: str = "",
        values: Mapping[str, Any] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        if names:  # only the lease uses names, and never inside a transaction
            self.writes += 1
            self._call(
                "put_item",
                TableName=self.table,
                Item=_dump(item),
                ConditionExpression=condition,
                ExpressionAttributeValues=_dump(dict(values or {})),
                ExpressionAttributeNames=dict(names),
            )
            return
        self._write(_Write(item, condition, values))

    def _write(self, write: _Write) -> None:
        if self._buffer is not None:
            self._buffer[write.item["pk"] + "\0" + write.item["sk"]] = write
        else:
            self._commit([write])

    def _commit(self, writes: list[_Write]) -> None:
        if len(writes) == 1:
            self.writes += 1
            self._call(
                "put_item" if not writes[0].delete else "delete_item", **_single(self, writes[0])
            )
        else:
            for start in range(0, len(writes), _TRANSACT_LIMIT):
                chunk = writes[start : start + _TRANSACT_LIMIT]
                self.writes += len(chunk)
                items = [_transact(self, w) for w in chunk]
                self._call("transact_write_items", TransactItems=items)
        if self._out is not None:
            for w in writes:
                if w.item["sk"].startswith("out#"):
                    self._out[w.item["sk"]] = w.item

    def _get(self, sk: str) -> dict[str, Any] | None:
        answer = self._call(
            "get_item",
            TableName=self.table,
            Key=_dump({"pk": self.scope, "sk": sk}),
            ConsistentRead=True,
        )
        return _load(answer["Item"]) if "Item" in answer else None

    def _query(self, prefix: str) -> list[dict[str, Any]]:
        return query(self.client, self.table, self.scope, prefix, call=self._call)

    def _call(self, operation: str, **kw: Any) -> Any:
        try:
            return getattr(self.client, operation)(**kw)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ConditionalCheckFailedException", "TransactionCanceledException") and (
                "ConditionExpression" in kw or _conditional(kw)
            ):
                raise _Refused(code) from exc
            raise HistoryUnwritable(f"DynamoDB table {self.table}", f"{code}: {exc}") from exc
        except BotoCoreError as exc:
            raise HistoryUnwritable(f"DynamoDB table {self.table}", str(exc)) from exc


class _Refused(Exception):
    """A conditional write's condition did not hold."""


def query(
    client: Any, table: str, pk: str, prefix: str = "", *, call: Any = None
) -> list[dict[str, Any]]:
    """Every item of partition ``pk`` whose sort key starts with ``prefix`` (all pages)."""
    run = call or (lambda operation, **kw: getattr(client, operation)(**kw))
    values = {":pk": pk, ":p": prefix} if prefix else {":pk": pk}
    kw: dict[str, Any] = {
        "TableName": table,
        "ConsistentRead": True,
        "KeyConditionExpression": "pk = :pk" + (" AND begins_with(sk, :p)" if prefix else ""),
        "ExpressionAttributeValues": _dump(values),
    }
    out: list[dict[str, Any]] = []
    while True:
        answer = run("query", **kw)
        out.extend(_load(item) for item in answer.get("Items", []))
        if "LastEvaluatedKey" not in answer:
            return out
        kw["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def _single(history: DynamoHistory, write: _Write) -> dict[str, Any]:
    kw: dict[str, Any] = {"TableName": history.table}
    if write.delete:
        kw["Key"] = _dump({"pk": write.item["pk"], "sk": write.item["sk"]})
    else:
        kw["Item"] = _dump(write.item)
    if write.condition:
        kw["ConditionExpression"] = write.condition
        if write.values:
            kw["ExpressionAttributeValues"] = _dump(dict(write.values))
    return kw


def _transact(history: DynamoHistory, write: _Write) -> dict[str, Any]:
    return {"Delete" if write.delete else "Put": _single(history, write)}


def _conditional(kw: Mapping[str, Any]) -> bool:
    return any(
        "ConditionExpression" in next(iter(item.values())) for item in kw.get("TransactItems", [])
    )


def _running_seconds(row: Mapping[str, Any], now: datetime) -> float:
    total = float(row.get("running_seconds", 0))
    if row.get("state") == "running":
        total += max(0.0, (now - _parse(str(row["since"]))).total_seconds())
    return total


def _fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("pk", "sk")}


def _dump(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def _load(item: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _de.deserialize(v) for k, v in item.items()}
    return {k: int(v) if isinstance(v, Decimal) and v == int(v) else v for k, v in out.items()}


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _t(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
