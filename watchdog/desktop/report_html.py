"""Placeholder for the ``html`` helper's module (the lead replaces it at merge)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from watchdog.core.ledger import InstanceRecord, Ledger


def render(ledger: Ledger, records: Sequence[InstanceRecord], now: datetime) -> str:
    """The self-contained HTML report page (written by the ``html`` helper)."""
    raise NotImplementedError("report --html arrives with the html branch")
