"""What an instance costs per hour, as the pass needs it for warnings, stops and
``max_idle_usd``: one small interface, so a shell can bring its own prices.

``TableRates`` knows only the config's overrides and the bundled table; EBS it
cannot know (no volumes), so it says unknown. The desktop's price book adds the
Price List API, spot history, volumes and addresses behind the same interface.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from watchdog.core.costs import IPV4_USD_PER_HOUR, on_demand_price
from watchdog.core.fleet import Instance
from watchdog.core.ledger import HourlyRates
from watchdog.core.settings import Config


class Rates(Protocol):
    def hourly(self, instance: Instance, now: datetime) -> HourlyRates:
        """The instance's cost per hour at ``now`` if running; unknown parts are None."""
        ...


class TableRates:
    """Config overrides, then the bundled table; public IPv4 from the scan; EBS unknown."""

    def __init__(self, cfg: Config):
        self.overrides = cfg.billing.prices

    def hourly(self, instance: Instance, now: datetime) -> HourlyRates:
        price = on_demand_price(instance.type, instance.region, self.overrides)
        if instance.lifecycle == "spot":  # on-demand is not what a spot instance pays
            price = price.unknown()
        ipv4 = IPV4_USD_PER_HOUR if instance.public_ip else 0.0
        compute = price.usd_per_hour
        saves = None if compute is None else compute + ipv4
        return HourlyRates(compute, ipv4, None, saves, price)
