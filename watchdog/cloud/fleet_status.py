"""What ``idle-watchdog cloud status`` prints: the fleet as the workers last saw it.

Read from the table with queries only (the ``scopes`` partition lists every
(account, region) and its last pass; each scope's partition holds its
instances and outbox), so its cost does not grow with the table's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from watchdog.cloud.history import SCOPES, query
from watchdog.core.timeutil import human


@dataclass(frozen=True)
class ScopeStatus:
    account: str
    region: str
    last_pass: str  # ISO time the last pass started, "" if never
    regions_failed: int
    instances: list[dict[str, Any]]
    pending: list[str]  # keys of messages not yet delivered
    warned: dict[str, str]  # instance -> when its last warning was delivered


def read(client: Any, table: str, *, now: datetime) -> list[ScopeStatus]:
    """Every scope the workers ever passed over, by account then region."""
    out: list[ScopeStatus] = []
    for scope in sorted(query(client, table, SCOPES), key=lambda s: (s["account"], s["region"])):
        pk = scope["sk"]
        outbox = query(client, table, pk, "out#")
        instances = []
        for row in query(client, table, pk, "inst#"):
            running = float(row.get("running_seconds", 0))
            if row.get("state") == "running":
                since = datetime.fromisoformat(str(row["since"]))
                running += max(0.0, (now - since).total_seconds())
            instances.append({**row, "running_seconds": running})
        out.append(
            ScopeStatus(
                account=scope["account"],
                region=scope["region"],
                last_pass=str(scope.get("started", "")),
                regions_failed=int(scope.get("regions_failed", 0)),
                instances=sorted(instances, key=lambda r: str(r["id"])),
                pending=[r["key"] for r in outbox if r.get("pending")],
                warned={
                    r["target"]: str(r["told_at"])[:19] + "Z"
                    for r in outbox
                    if str(r["key"]).startswith("warn:") and r.get("told_at")
                },
            )
        )
    return out


def render(client: Any, table: str, *, now: datetime) -> str:
    """The fleet as text: one block per (account, region), one line per instance.

    ``client`` is a boto3 DynamoDB client of the hub account; ``table`` the
    hub stack's table (``cloud.history``'s schema).
    """
    scopes = read(client, table, now=now)
    if not scopes:
        return f"No pass recorded yet in table {table}: the first tick has not run.\n"
    lines: list[str] = []
    for s in scopes:
        ago = human(now - datetime.fromisoformat(s.last_pass)) + " ago" if s.last_pass else "never"
        failed = "; its scan FAILED" if s.regions_failed else ""
        lines.append(f"{s.account} {s.region}: last pass {ago}{failed}")
        for row in s.instances:
            owner = row.get("owner") or "-"
            warned = f"  warned {s.warned[row['id']]}" if row["id"] in s.warned else ""
            lines.append(
                f"  {row['id']:<20} {row.get('name') or '-':<20} {row.get('type', ''):<14} "
                f"{row.get('state', ''):<9} {human_seconds(row['running_seconds']):>8} "
                f"{owner}{warned}"
            )
        if s.pending:
            lines.append(f"  {len(s.pending)} message(s) not yet delivered: {', '.join(s.pending)}")
    return "\n".join(lines) + "\n"  # whole lines: the CLI prints it as is


def human_seconds(seconds: float) -> str:
    return human(timedelta(seconds=seconds))
