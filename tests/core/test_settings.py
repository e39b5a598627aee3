"""The typed config's defaults and ranges: what ``watchdog.config`` checks a file against."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import fields
from types import ModuleType
from typing import Any

import pytest

from watchdog.core import settings


@pytest.fixture(scope="module")
def fresh() -> Iterator[ModuleType]:
    """The module executed anew, under its own name: its fields are built at import
    time, and mutation testing swaps code in only after the first import."""
    name = settings.__name__
    spec = importlib.util.spec_from_file_location(name, settings.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules[name] = settings  # everything else keeps the first import
    yield module


def ranges(cls: type[Any]) -> dict[str, tuple[Any, Any, Any]]:
    """Each key's (default, min, max)."""
    out = {}
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default
        out[f.name] = (default, f.metadata.get("min"), f.metadata.get("max"))
    return out


def test_the_idle_clock_keys_and_their_limits(fresh: ModuleType) -> None:
    assert ranges(fresh.IdleConfig) == {
        "minutes": (30, 1, 10080),
        "warn_minutes": (10, 0, 1440),
        "max_idle_usd": (0.0, 0.0, None),
    }
    billing = ranges(fresh.BillingConfig)
    assert billing["savings_horizon_hours"] == (24.0, 0.0, 24.0 * 365)
    assert billing["monthly_budget_usd"] == (0.0, 0.0, None)
    scheduler = ranges(fresh.SchedulerConfig)
    assert scheduler["poll_seconds"] == (60, 10, 3600)
    assert scheduler["agent_silent_minutes"] == (15, 2, 1440)
    assert scheduler["dry_run"] == (False, None, None)


def test_the_agent_keys_and_their_limits(fresh: ModuleType) -> None:
    agent = ranges(fresh.AgentConfig)
    assert agent["sample_seconds"] == (60, 5, 600)
    assert agent["gpu_util_percent"] == (5.0, 0.0, 100.0)
    assert agent["net_bytes_per_s"] == (500_000.0, 0.0, None)  # no upper limit
    assert agent["kernel_grace_seconds"] == (300, 0, 3600)


def test_choices_and_the_defaults_of_a_config_built_from_nothing(fresh: ModuleType) -> None:
    backend = next(f for f in fields(fresh.NotifyConfig) if f.name == "backend")
    assert backend.metadata["choices"] == ("auto", "desktop", "notify-send", "log")
    assert ranges(fresh.NotifyConfig)["long_running_hours"] == (12.0, 0.0, 24.0 * 365)
    assert ranges(fresh.AwsConfig)["max_workers"] == (8, 1, 64)
    cfg = fresh.Config()
    assert (cfg.aws.regions, cfg.aws.max_workers, cfg.idle.minutes) == (("us-east-1",), 8, 30)
