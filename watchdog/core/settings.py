"""The typed config: every key, its type, default and range, as frozen dataclasses.

Pure data, so the core's decisions can take it; ``watchdog.config`` reads TOML
into it and says where a file is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _opt(default: Any, lo: float | None = None, hi: float | None = None, **kw: Any) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi, **kw})


@dataclass(frozen=True)
class AwsConfig:
    regions: tuple[str, ...] = field(default=("us-east-1",), metadata={"non_empty": True})
    profile: str = ""
    max_workers: int = _opt(8, 1, 64)
    # One EC2 call gives up after max_attempts x (connect + read) seconds plus
    # backoff: a hung region is skipped within one pass instead of ~5 minutes.
    connect_timeout_seconds: int = _opt(5, 1, 60)
    read_timeout_seconds: int = _opt(15, 1, 300)
    max_attempts: int = _opt(3, 1, 10)


@dataclass(frozen=True)
class IdleConfig:
    minutes: int = _opt(30, 1, 7 * 24 * 60)
    warn_minutes: int = _opt(10, 0, 24 * 60)
    # Stop once an idle spell has cost this much (USD), if sooner than
    # ``minutes``; 0 turns it off. A p5 at $5 stops after ~5 idle minutes.
    max_idle_usd: float = _opt(0.0, 0.0)


@dataclass(frozen=True)
class SchedulerConfig:
    poll_seconds: int = _opt(60, 10, 3600)
    dry_run: bool = False
    hibernate: bool = False
    agent_silent_minutes: int = _opt(15, 2, 24 * 60)
    database: str = ""


@dataclass(frozen=True)
class SpotConfig:
    cancel_orphaned: bool = True
    max_open_minutes: int = _opt(60, 1, 30 * 24 * 60)


@dataclass(frozen=True)
class BillingConfig:
    prices: Mapping[str, float] = field(default_factory=dict, metadata={"min": 0.0})
    # A stop's saving counts until the instance next starts, at most this long.
    savings_horizon_hours: float = _opt(24.0, 0.0, 24.0 * 365)
    # Tell once at 50, 80 and 100 % of this month-to-date cost; 0 turns it off.
    monthly_budget_usd: float = _opt(0.0, 0.0)


@dataclass(frozen=True)
class NotifyConfig:
    """Desktop notifications from the scheduler."""

    backend: str = field(
        default="auto", metadata={"choices": ("auto", "desktop", "notify-send", "log")}
    )
    keep_durations: tuple[str, ...] = ("1h", "4h")
    long_running_hours: float = _opt(12.0, 0.0, 24.0 * 365)


@dataclass(frozen=True)
class AgentConfig:
    """The on-instance agent: what counts as activity, and how it publishes."""

    sample_seconds: int = _opt(60, 5, 600)
    gpu_util_percent: float = _opt(5.0, 0.0, 100.0)
    process_cpu_percent: float = _opt(20.0, 0.0, 10000.0)
    net_bytes_per_s: float = _opt(500_000.0, 0.0)
    disk_bytes_per_s: float = _opt(1_000_000.0, 0.0)
    kernel_grace_seconds: int = _opt(300, 0, 3600)
    tty_grace_seconds: int = _opt(120, 0, 3600)
    ignore_processes: tuple[str, ...] = ()
    backstop_minutes: int = _opt(120, 0, 30 * 24 * 60)
    heartbeat_active_seconds: int = _opt(60, 10, 3600)
    heartbeat_idle_seconds: int = _opt(300, 30, 3600)
    http_listen: str = "127.0.0.1:8477"
    token_file: str = "/etc/idle-watchdog/token"  # noqa: S105 - a path, not a secret
    jupyter_runtime_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloudConfig:
    """The team scheduler on AWS (``watchdog.cloud``); the desktop ignores it."""

    # Member account ids to watch, or ["organization"] to list them with
    # Organizations; empty = the hub's own account only.
    accounts: tuple[str, ...] = ()
    role_name: str = "idle-watchdog-member"  # the role assumed in each member account
    external_id: str = ""  # the member role's sts:ExternalId condition
    topic_arn: str = ""  # SNS topic for every message (e-mail, SQS, ...)
    slack_webhook_parameter: str = ""  # SSM SecureString holding a Slack webhook URL
    link_secret_parameter: str = "/idle-watchdog/link-secret"  # noqa: S105 - a name


@dataclass(frozen=True)
class Config:
    aws: AwsConfig = field(default_factory=AwsConfig)
    idle: IdleConfig = field(default_factory=IdleConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    spot: SpotConfig = field(default_factory=SpotConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    source: str = field(default="", compare=False)
