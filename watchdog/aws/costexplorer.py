"""What AWS says the fleet cost, per day: one Cost Explorer query, for ``report --reconcile``.

Cost Explorer is exact but late (8 to 24 hours) and billed: $0.01 per request,
each page a request. So it is asked only when the person passes ``--reconcile``,
and then once: ``GetCostAndUsage``, daily, ``UnblendedCost``, filtered to the
services the ledger counts and the configured regions, grouped by service:

- ``Amazon Elastic Compute Cloud - Compute``: instance hours (the ledger's compute);
- ``EC2 - Other``: EBS volumes (the ledger's EBS), but also snapshots, NAT gateways
  and data transfer, which the ledger does not count;
- ``Amazon Virtual Private Cloud``: public IPv4 addresses (the ledger's IPv4), with
  any other VPC charge.

Resource-level data (``GetCostAndUsageWithResources``, per instance id) needs an
opt-in in the Billing console, covers the last 14 days only and, without the opt-in,
fails after being billed; a fallback would be a second paid call. It is not used:
the service-level answer is available to every account with Cost Explorer on.

A refusal becomes one sentence that names the missing permission or setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from watchdog.aws.ec2 import AwsError, translated

CE_REGION = "us-east-1"  # Cost Explorer's one endpoint for the commercial partition
USD_PER_REQUEST = 0.01
MAX_PAGES = 5  # a 90-day window grouped by 3 services fits in one page; never run away
#: Cost Explorer's SERVICE dimension -> the ledger's amount it compares with.
SERVICES: Mapping[str, str] = {
    "Amazon Elastic Compute Cloud - Compute": "compute",
    "EC2 - Other": "ebs",
    "Amazon Virtual Private Cloud": "ipv4",
}
METRIC = "UnblendedCost"


@dataclass(frozen=True)
class DailyCost:
    """AWS's figure for one UTC day and one of the ledger's parts."""

    day: date
    part: str  # compute | ebs | ipv4
    usd: float
    estimated: bool  # AWS says the day is not final yet


@dataclass(frozen=True)
class CostAnswer:
    costs: tuple[DailyCost, ...]
    requests: int  # each one billed USD_PER_REQUEST


class CostExplorerError(Exception):
    """Cost Explorer could not answer; ``str()`` is one sentence for the person."""


def query(start: date, end: date, regions: Sequence[str]) -> dict[str, Any]:
    """``GetCostAndUsage`` parameters for the days ``[start, end)``."""
    services = {"Dimensions": {"Key": "SERVICE", "Values": list(SERVICES)}}
    where: dict[str, Any] = services
    if regions:
        in_regions = {"Dimensions": {"Key": "REGION", "Values": sorted(set(regions))}}
        where = {"And": [services, in_regions]}
    return {
        "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
        "Granularity": "DAILY",
        "Metrics": [METRIC],
        "Filter": where,
        "GroupBy": [{"Type": "DIMENSION", "Key": "SERVICE"}],
    }


def parse(pages: Iterable[Mapping[str, Any]]) -> tuple[DailyCost, ...]:
    """Each day's amount per part, from the answer's ``ResultsByTime`` groups."""
    found: dict[tuple[date, str], DailyCost] = {}
    for page in pages:
        for result in page.get("ResultsByTime", []):
            day = date.fromisoformat(result["TimePeriod"]["Start"])
            estimated = bool(result.get("Estimated", False))
            for group in result.get("Groups", []):
                part = SERVICES.get((group.get("Keys") or [""])[0])
                amount = group.get("Metrics", {}).get(METRIC, {})
                if part is None or amount.get("Unit", "USD") != "USD":
                    continue
                before = found.get((day, part))
                usd = float(amount.get("Amount", 0)) + (before.usd if before else 0.0)
                found[day, part] = DailyCost(day, part, usd, estimated)
    return tuple(sorted(found.values(), key=lambda c: (c.day, c.part)))


def explain(error: AwsError) -> str:
    """One sentence on what is missing, from Cost Explorer's error."""
    text = str(error).lower()
    if not error.answered:
        return f"Cost Explorer did not answer ({error}); the ledger is shown alone."
    if error.code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
        if "not enabled" in text:
            return (
                "Cost Explorer is not enabled for this account: open Billing and Cost "
                "Management, Cost Explorer, once (data appears within 24 hours)."
            )
        return (
            "Cost Explorer refused: the credentials need the IAM permission "
            "ce:GetCostAndUsage (see the README's IAM policy)."
        )
    if error.code == "DataUnavailableException":
        return "Cost Explorer has no data for these days yet (it lags 8 to 24 hours)."
    return f"Cost Explorer failed ({error}); the ledger is shown alone."


class Boto3CostExplorer:
    """``GetCostAndUsage`` over boto3; one query per call, every page of it counted."""

    def __init__(
        self,
        session: boto3.Session | None = None,
        *,
        profile: str = "",
        boto_config: BotoConfig | None = None,
    ):
        self._session = session or boto3.Session(profile_name=profile or None)
        self._config = boto_config

    def daily_costs(self, start: date, end: date, regions: Sequence[str]) -> CostAnswer:
        """AWS's cost of ``[start, end)`` per day and part; ``CostExplorerError`` if refused."""
        client = self._session.client("ce", region_name=CE_REGION, config=self._config)
        params = query(start, end, regions)
        pages: list[Mapping[str, Any]] = []
        try:
            with translated():
                while len(pages) < MAX_PAGES:
                    page = client.get_cost_and_usage(**params)
                    pages.append(page)
                    if not page.get("NextPageToken"):
                        break
                    params["NextPageToken"] = page["NextPageToken"]
        except AwsError as exc:
            raise CostExplorerError(explain(exc)) from exc
        try:
            return CostAnswer(parse(pages), len(pages))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CostExplorerError(f"Cost Explorer's answer was not understood ({exc}).") from exc


def window(since: datetime, until: datetime) -> tuple[date, date]:
    """The whole UTC days covering ``[since, until)``: Cost Explorer's ``End`` is exclusive."""
    start = since.date()
    midnight = until.replace(hour=0, minute=0, second=0, microsecond=0)
    end = until.date() if until == midnight else until.date() + timedelta(days=1)
    return start, max(end, start + timedelta(days=1))
