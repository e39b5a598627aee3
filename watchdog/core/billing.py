"""Billable time and cost: what a running instance has cost since its last start.

Only ``running`` is billed (and ``stopping`` while hibernating). Linux, Windows,
RHEL and Ubuntu Pro bill per second with a 60 s minimum per start; any other or
unknown platform bills per started hour. Prices come from a bundled on-demand
table (``prices.json``: per type, per region, with the date AWS's prices were
read; ``scripts/bundled_prices.py`` regenerates it) overridable in ``[billing]
prices``; a type or region neither knows costs ``None`` ("unknown"), never a
neighbour's price.
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
def _bundled() -> tuple[str, Mapping[str, Mapping[str, float]]]:
    data = json.loads(resources.files("watchdog.core").joinpath("prices.json").read_text("utf-8"))
    return str(data["read"]), data["prices"]


def bundled_as_of() -> str:
    """The date (ISO) the bundled table's prices were read from AWS."""
    return _bundled()[0]


def hourly_price(
    instance_type: str, region: str, overrides: Mapping[str, float] | None = None
) -> float | None:
    """USD per hour on demand; ``None`` when neither the config nor the table knows."""
    overrides = overrides or {}
    for key in (f"{region}/{instance_type}", instance_type):
        if key in overrides:
            return overrides[key]
    return _bundled()[1].get(instance_type, {}).get(region)


def cost(seconds: int, price: float | None) -> float | None:
    return None if price is None else round(seconds / 3600 * price, 4)
