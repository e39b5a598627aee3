"""The decision: pure functions of what a scan saw, ``now``, the config and the history.

Nothing here performs I/O, reads the clock or raises on bad data: a tag that
does not parse becomes a notice and a reason, never a stop. Each decision
carries one human sentence, which becomes one log line and one history row.

A *warning* announces a stop and when; a *notice* tells the person of
something that stops nothing (an agent gone silent, a bad tag, an idle
one-time spot instance). ``warned_at`` and ``noticed_at`` are the last of each
the history holds for the target; they count only if given during the
current situation (``Decision.episode``), so a machine that went back to work
and then idle again is warned again before it is stopped, and a notice never
stands in for a warning.

Money is one more threshold: with ``max_idle_usd`` (or the ``idle-usd`` tag)
an idle spell ends in a stop once it has cost that much, if that comes before
``minutes``. What a spell costs is what a stop avoids (compute and
auto-assigned public IPv4), at the hourly rate the caller passes in; an
unknown rate leaves only the minutes, never a guess.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from watchdog.core import heartbeat as hb
from watchdog.core.fleet import (
    TAG_EXEMPT,
    TAG_HEARTBEAT,
    TAG_IDLE_MINUTES,
    TAG_IDLE_USD,
    TAG_KEEP_UNTIL,
    Instance,
    SpotRequest,
)
from watchdog.core.ledger import HourlyRates
from watchdog.core.settings import Config
from watchdog.core.timeutil import human, iso, parse_iso

#: Tags that mark a spot request as owned by a fleet or an Auto Scaling group: not ours to cancel.
OWNER_TAGS = ("aws:ec2spot:fleet-request-id", "aws:autoscaling:groupName", "aws:ec2:fleet-id")
#: How far in the future a heartbeat may be dated before a clock is presumed wrong.
CLOCK_SKEW = timedelta(minutes=2)
#: The longest per-instance threshold the idle-minutes tag may ask for (a year).
MAX_TAG_MINUTES = 366 * 24 * 60
_MINUTES = re.compile(r"[0-9]{1,7}")
#: An idle-usd tag: dollars and at most cents, no sign or currency symbol ("5", "2.50").
_USD = re.compile(r"[0-9]{1,7}(\.[0-9]{1,2})?")


def _exempt(tags: Mapping[str, str]) -> bool:
    """The tag alone exempts (consoles make empty values easy); only "false" does not."""
    return TAG_EXEMPT in tags and tags[TAG_EXEMPT].strip().lower() != "false"


class Action(str, enum.Enum):
    NONE = "none"
    WARN = "warn"  # announce a stop at ``stop_at``; nothing changes on AWS yet
    NOTICE = "notice"  # tell the person of something that stops nothing
    STOP = "stop"  # StopInstances (hibernate where asked and supported); never terminate
    CANCEL = "cancel"  # CancelSpotInstanceRequests; never terminates an instance


@dataclass(frozen=True)
class Decision:
    region: str
    target: str  # instance or spot request id
    action: Action
    reason: str
    idle_since: datetime | None = None
    stop_at: datetime | None = None  # when the target stops (or is cancelled) if nothing changes
    episode: datetime | None = None  # a warning given at or after this covers the situation
    hibernate: bool = False
    idle_usd: float | None = None  # what the idle spell has cost at ``now``; None: unknown
    max_idle_usd: float = 0.0  # the money threshold that applied (config or tag); 0 = none


def decide_instance(
    inst: Instance,
    now: datetime,
    cfg: Config,
    *,
    request: SpotRequest | None = None,
    warned_at: datetime | None = None,
    noticed_at: datetime | None = None,
    usd_per_hour: float | None = None,
) -> Decision:
    """One running instance's decision. ``usd_per_hour`` is what an hour of it costs that
    a stop would avoid (compute and auto-assigned IPv4); None when unknown."""

    def make(action: Action, reason: str, **kw: object) -> Decision:
        return Decision(inst.region, inst.id, action, reason, **kw)  # type: ignore[arg-type]

    def notice_once(reason: str, episode: datetime, **kw: object) -> Decision:
        already = noticed_at is not None and noticed_at >= episode
        return make(Action.NONE if already else Action.NOTICE, reason, episode=episode, **kw)

    if inst.state != "running":
        return make(Action.NONE, inst.state)
    if not inst.managed:
        return make(Action.NONE, "unmanaged: no idle-watchdog:managed=true tag")
    if _exempt(inst.tags):
        return make(Action.NONE, "exempt: idle-watchdog:exempt tag")
    started = inst.launch_time or now

    keep_until: datetime | None = None
    if TAG_KEEP_UNTIL in inst.tags:
        try:
            keep_until = parse_iso(inst.tags[TAG_KEEP_UNTIL])
            iso(keep_until)  # representable in UTC (year 9999 and an offset is not)
        except (ValueError, OverflowError):
            return notice_once(
                f"keep-until tag {inst.tags[TAG_KEEP_UNTIL][:40]!r} is not an ISO-8601 time; "
                "not stopping until it is fixed or removed",
                started,
            )
        if keep_until > now:
            return make(Action.NONE, f"kept until {iso(keep_until)}", stop_at=None)

    minutes = cfg.idle.minutes
    if TAG_IDLE_MINUTES in inst.tags:
        text = inst.tags[TAG_IDLE_MINUTES].strip()
        if not _MINUTES.fullmatch(text) or not 1 <= int(text) <= MAX_TAG_MINUTES:
            return notice_once(
                f"idle-minutes tag {text[:20]!r} is not a positive whole number; "
                "not stopping until it is fixed or removed",
                started,
            )
        minutes = int(text)

    max_usd = cfg.idle.max_idle_usd
    if TAG_IDLE_USD in inst.tags:
        text = inst.tags[TAG_IDLE_USD].strip()
        if not _USD.fullmatch(text):
            return notice_once(
                f"idle-usd tag {text[:20]!r} is not an amount in USD such as 5 or 2.50; "
                "not stopping until it is fixed or removed",
                started,
            )
        max_usd = float(text)

    silent_after = timedelta(minutes=cfg.scheduler.agent_silent_minutes)
    raw = inst.tags.get(TAG_HEARTBEAT)
    beat: hb.Heartbeat | None = None
    if raw is not None:
        try:
            beat = hb.decode(raw)
        except hb.HeartbeatError as exc:
            return notice_once(
                f"heartbeat tag unreadable ({exc}): agent treated as silent", started
            )
        if beat.sampled_at < started:
            beat = None  # written before the last start: says nothing about this run
    if beat is None:
        if now - started < silent_after:
            return make(Action.NONE, "waiting for the agent's first heartbeat since start")
        return notice_once(
            f"no agent heartbeat in {human(now - started)} since start; not stopping", started
        )
    if beat.sampled_at > now + CLOCK_SKEW:
        return notice_once(
            f"heartbeat dated {human(beat.sampled_at - now)} in the future (a clock is wrong); "
            "not stopping",
            started,
        )
    if now - beat.sampled_at > silent_after:
        return notice_once(
            f"agent silent for {human(now - beat.sampled_at)}; not stopping", beat.sampled_at
        )
    reasons = ", ".join(beat.reasons) or "no reason given"
    if beat.active is None:
        return notice_once(f"activity unknown ({reasons}); not stopping", beat.last_active_at)
    if beat.active:
        return make(Action.NONE, f"active: {reasons}")

    idle_since = max(beat.last_active_at, started)
    idle_for = now - idle_since
    due = idle_since + timedelta(minutes=minutes)
    rate = usd_per_hour if usd_per_hour is not None and math.isfinite(usd_per_hour) else None
    threshold, so_far = f"{minutes}m", ""
    spent: float | None = None  # what the spell has cost so far
    if rate is not None:
        spent = rate * max(0.0, idle_for.total_seconds()) / 3600
        if max_usd:
            threshold += f" or ${max_usd:.2f}"
            so_far = f", ${spent:.2f} so far"
            due = idle_since + timedelta(seconds=money_spell(max_usd, rate, minutes * 60))
    elif max_usd:
        threshold += f"; ${max_usd:.2f} not applied: its price is unknown"
    idle = f"idle for {human(idle_for)}{so_far} (threshold {threshold})"
    lead = min(timedelta(minutes=cfg.idle.warn_minutes), due - idle_since)
    episode = max(idle_since, keep_until) if keep_until else idle_since

    if inst.lifecycle == "spot" and (request is None or request.type != "persistent"):
        if now < due:
            return make(
                Action.NONE, idle + "; one-time spot, cannot be stopped", idle_since=idle_since
            )
        return notice_once(
            idle + "; a one-time spot instance cannot be stopped, terminate it if you are done",
            episode,
            idle_since=idle_since,
        )

    warned = warned_at is not None and warned_at >= episode
    hibernate = cfg.scheduler.hibernate and inst.hibernation_configured
    if warned and warned_at is not None:
        stop_at = max(due, warned_at + lead)
    elif lead:
        stop_at = max(due, now + lead)
    else:
        stop_at = due
    common = {
        "idle_since": idle_since,
        "stop_at": stop_at,
        "episode": episode,
        "hibernate": hibernate,  # how it will stop, for the warning's "Stop now" too
        "idle_usd": spent,
        "max_idle_usd": max_usd,
    }
    if now >= stop_at:
        if warned and warned_at is not None and beat.sampled_at < warned_at:
            # Idleness must be confirmed after the warning: a heartbeat from before
            # it may predate work that resumed (a write that failed or is throttled).
            return make(
                Action.NONE,
                f"{idle}; waiting for a heartbeat newer than the warning before stopping",
                **common,
            )
        return make(Action.STOP, idle, **common)
    if now >= due - lead and not warned:
        return make(Action.WARN, f"{idle}; stopping at {iso(stop_at)}", **common)
    return make(Action.NONE, f"{idle}; stopping at {iso(stop_at)}", **common)


def money_spell(max_usd: float, usd_per_hour: float, cap_seconds: int) -> int:
    """Whole seconds until an idle spell at ``usd_per_hour`` has cost ``max_usd``: the
    first second at which it has (at $36/h, $5 is reached at exactly 500 s), and at most
    ``cap_seconds`` (the minutes threshold). Rounded to the microsecond first, so float
    noise (0.07 x 3600 / 1.0 = 252.00000000000003) does not add a second."""
    if max_usd <= 0 or usd_per_hour <= 0:
        return cap_seconds
    seconds = round(max_usd * 3600 / usd_per_hour, 6)
    if not math.isfinite(seconds):
        return cap_seconds
    return min(cap_seconds, math.ceil(seconds))


def decide_request(
    req: SpotRequest,
    now: datetime,
    cfg: Config,
    *,
    noticed_at: datetime | None = None,
) -> Decision:
    """Cancel a spot request that can launch (again) an instance nobody uses."""

    def make(action: Action, reason: str, **kw: object) -> Decision:
        return Decision(req.region, req.id, action, reason, **kw)  # type: ignore[arg-type]

    if req.state != "open":
        return make(Action.NONE, f"{req.state} ({req.status_code})")
    if _exempt(req.tags):
        return make(Action.NONE, "exempt: idle-watchdog:exempt tag")
    if any(tag in req.tags for tag in OWNER_TAGS):
        return make(Action.NONE, "owned by a fleet or Auto Scaling group")

    since = req.status_time or req.create_time or now
    limit = since + timedelta(minutes=cfg.spot.max_open_minutes)
    what = f"would launch a {req.instance_type or 'new instance'}"
    if req.type == "persistent" and req.status_code == "instance-terminated-by-user":
        orphan = f"persistent request reopened after its instance was terminated; {what}"
    elif now >= limit:
        orphan = f"open for {human(now - since)} ({req.status_code}); {what}"
    else:
        return make(Action.NONE, f"open for {human(now - since)}", stop_at=limit, episode=since)
    if not cfg.spot.cancel_orphaned:
        already = noticed_at is not None and noticed_at >= since
        return make(
            Action.NONE if already else Action.NOTICE,
            f"orphaned: {orphan} (spot.cancel_orphaned = false)",
            episode=since,
        )
    return make(Action.CANCEL, f"orphaned: {orphan}", episode=since)


def decide_with_history(
    inst: Instance,
    now: datetime,
    cfg: Config,
    *,
    requests: Mapping[str, SpotRequest],
    warned: Mapping[str, datetime],
    noticed: Mapping[str, datetime],
    rates: Mapping[str, HourlyRates] | None = None,
) -> Decision:
    """``decide_instance`` with its spot request, what the history says was told and
    what it costs an hour (``rates`` by instance id; a missing one is unknown)."""
    hourly = (rates or {}).get(inst.id)
    return decide_instance(
        inst,
        now,
        cfg,
        request=requests.get(inst.spot_request_id),
        warned_at=warned.get(inst.id),
        noticed_at=noticed.get(inst.id),
        usd_per_hour=None if hourly is None else hourly.stop_saves_usd,
    )


@dataclass(frozen=True)
class Planned:
    """One target of a pass and what to do with it (and, for an instance, the hourly
    rates it was decided with, which its messages quote)."""

    subject: Instance | SpotRequest
    decision: Decision
    rates: HourlyRates | None = None


def plan(
    instances: Sequence[Instance],
    requests: Sequence[SpotRequest],
    now: datetime,
    cfg: Config,
    *,
    warned: Mapping[str, datetime],
    noticed: Mapping[str, datetime],
    rates: Mapping[str, HourlyRates] | None = None,
) -> list[Planned]:
    """Every decision of one pass over one region's scan, instances first."""
    by_id = {r.id: r for r in requests}
    known = rates or {}
    out = [
        Planned(
            inst,
            decide_with_history(
                inst, now, cfg, requests=by_id, warned=warned, noticed=noticed, rates=known
            ),
            known.get(inst.id),
        )
        for inst in instances
    ]
    out.extend(
        Planned(req, decide_request(req, now, cfg, noticed_at=noticed.get(req.id)))
        for req in requests
    )
    return out
