"""Billable time and cost: what a running instance has cost since its last start.

Only ``running`` is billed (and ``stopping`` while hibernating). Linux, Windows,
RHEL and Ubuntu Pro bill per second with a 60 s minimum per start; any other or
unknown platform bills per started hour. Prices come from a bundled on-demand
table (``prices.json``) overridable in ``[billing] prices``; a type neither
knows costs ``None`` ("unknown"), never a guess.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from importlib import resources

_PER_SECOND = ("linux/unix", "windows", "red hat enterprise linux", "ubuntu pro")


def per_second(platform: str) -> bool:
    lowered = platform.strip().lower()
    return any(lowered.startswith(prefix) for prefix in _PER_SECOND)


def billable_seconds(
    state: str,
    launch_time: datetime | None,
    now: datetime,
    platform: str,
    *,
    hibernating: bool = False,
) -> int:
    """Seconds billed for the current run (``LaunchTime`` resets at every start)."""
    billed = state == "running" or (state == "stopping" and hibernating)
    if not billed or launch_time is None:
        return 0
    elapsed = max(0, int((now - launch_time).total_seconds()))
    if per_second(platform):
        return max(60, elapsed)
    return max(1, math.ceil(elapsed / 3600)) * 3600


@cache
def _bundled() -> tuple[frozenset[str], Mapping[str, float]]:
    data = json.loads(resources.files("watchdog.core").joinpath("prices.json").read_text("utf-8"))
    return frozenset(data["regions"]), data["prices"]


def hourly_price(
    instance_type: str, region: str, overrides: Mapping[str, float] | None = None
) -> float | None:
    """USD per hour on demand; ``None`` when neither the config nor the table knows."""
    overrides = overrides or {}
    for key in (f"{region}/{instance_type}", instance_type):
        if key in overrides:
            return overrides[key]
    regions, prices = _bundled()
    return prices.get(instance_type) if region in regions else None


def cost(seconds: int, price: float | None) -> float | None:
    return None if price is None else round(seconds / 3600 * price, 4)
