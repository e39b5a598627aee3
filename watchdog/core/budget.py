"""Which share of ``[billing] monthly_budget_usd`` a month-to-date cost has reached and
not yet been told (pure).

The person hears once a month at each of 50, 80 and 100 %. A higher share
told covers the lower ones: a first look at 85 % says 80 %, not 50 % and
then 80 %. Amounts are compared in whole cents, so $50.00 of $100.00 is
exactly 50 %, whatever floats make of it. Months are UTC calendar months,
as AWS bills them.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import datetime, timezone

#: The shares of the budget, in percent, each told once a month.
THRESHOLDS = (50, 80, 100)


def cents(usd: float) -> int:
    """An amount in whole cents (half a cent rounds to even, as ``round`` does)."""
    return round(usd * 100)


def reached(spent_usd: float, budget_usd: float) -> int | None:
    """The highest threshold ``spent_usd`` has reached, or None (below 50 %, no budget, or
    an amount that is not a number)."""
    if not (math.isfinite(spent_usd) and math.isfinite(budget_usd)):
        return None
    budget = cents(budget_usd)
    if budget <= 0:
        return None
    spent = cents(spent_usd)
    top = None
    for share in THRESHOLDS:
        if spent * 100 >= budget * share:
            top = share
    return top


def to_tell(spent_usd: float, budget_usd: float, told: Collection[int]) -> int | None:
    """The threshold to tell now: the highest reached, unless it or a higher one was
    already told this month."""
    top = reached(spent_usd, budget_usd)
    if top is None or any(share >= top for share in told):
        return None
    return top


def share_of(spent_usd: float, budget_usd: float) -> int:
    """``spent`` as a whole percent of a budget of a cent or more, rounded down (79.99 %
    is 79 %), to tell with a threshold ``to_tell`` gave."""
    return cents(spent_usd) * 100 // cents(budget_usd)


def month_of(now: datetime) -> str:
    """``2026-11``: the UTC calendar month ``now`` falls in."""
    return f"{now.astimezone(timezone.utc):%Y-%m}"
