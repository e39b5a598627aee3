"""Tell the person when this month's cost passes 50, 80 and 100 % of the budget.

``tell_budget`` is called by a shell after a pass with the month-to-date cost
of the instances it watches (the ledger's figure). Each threshold is one
outbox message a month, keyed ``budget:2026-11:80``: the history's ``told``
keys are the memory, so a restart or a second process never says it twice.
An unknown cost tells nothing (never a guess); a partial one says it is at
least that much.
"""

from __future__ import annotations

from datetime import datetime

from watchdog.core import budget
from watchdog.core.settings import Config
from watchdog.scheduler.history import History
from watchdog.scheduler.notifier import Message

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def tell_budget(
    store: History, cfg: Config, now: datetime, spent_usd: float | None, partial: bool
) -> None:
    """Put the budget message due at ``now`` in the outbox, if one is due and not yet told.

    ``spent_usd`` is the month-to-date cost (None: unknown); ``partial`` means some of
    it is unknown, so the real figure is higher.
    """
    limit = cfg.billing.monthly_budget_usd
    if not limit or spent_usd is None:
        return
    month = budget.month_of(now)
    prefix = f"budget:{month}:"
    with store.transaction():
        told = {
            int(key.removeprefix(prefix))
            for key in store.told()
            if key.startswith(prefix) and key.removeprefix(prefix).isdigit()
        }
        share = budget.to_tell(spent_usd, limit, told)
        if share is not None:
            store.enqueue(message(month, share, spent_usd, limit, partial=partial), now)


def message(
    month: str, share: int, spent_usd: float, limit_usd: float, *, partial: bool
) -> Message:
    """What the person reads: the threshold, the amounts, and where to look."""
    year, number = month.split("-")
    when = f"{_MONTHS[int(number) - 1]} {year}"
    title = (
        f"AWS spend reached this month's budget (${limit_usd:.2f})"
        if share >= 100
        else f"AWS spend passed {share} % of this month's budget"
    )
    amount = f"at least ${spent_usd:.2f}" if partial else f"${spent_usd:.2f}"
    body = (
        f"{when} so far: {amount} of ${limit_usd:.2f} "
        f"({budget.share_of(spent_usd, limit_usd)} %) on the instances idle-watchdog watches."
    )
    if partial:
        body += " Some prices are unknown, so the real figure is higher."
    body += "\n`idle-watchdog report` shows where it went."
    return Message(f"budget:{month}:{share}", title, body, urgent=share >= 100)
