"""What a pass is worth telling the person, as ``Message`` data (pure).

- a warning before auto-stop: which machine, what it costs, how long it has
  been idle and why that counts as idle, when it stops; buttons to keep it
  and to stop it now;
- a stop, with what it saves per hour; a cancelled orphaned spot request and
  what it would have launched; an action that failed;
- a notice (agent silent, a bad tag, an idle one-time spot instance);
- an instance running longer than ``[notify] long_running_hours``, with its
  cost so far, once per start;
- a stop made while the desktop slept (the agent's backstop), once.

Warnings, notices, stops and cancels are already one per event: the policy
and the history see to that. The last two kinds are new here, so each
carries a ``key`` the history remembers (``told``) to say them only once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from watchdog.core import billing
from watchdog.core.fleet import TAG_STOPPED, Instance, SpotRequest
from watchdog.core.policy import Planned
from watchdog.core.settings import Config
from watchdog.core.timeutil import human, iso
from watchdog.scheduler.notifier import Button, Message

IDLE_WHY = "no GPU, notebook, terminal, process or transfer activity"


def keep_buttons(cfg: Config) -> tuple[Button, ...]:
    keeps = tuple(Button(f"Keep {d}", f"keep:{d}") for d in cfg.notify.keep_durations)
    return (*keeps, Button("Stop now", "stop"))


def messages(
    planned: Sequence[Planned],
    done: Sequence[tuple[str, str, bool, str]],
    now: datetime,
    cfg: Config,
    told: Collection[str] = (),
) -> list[Message]:
    """Messages for one pass. ``done``: (target, kind, ok, detail) of each action taken."""
    by_target = {p.decision.target: p for p in planned}
    out: list[Message] = []
    for target, kind, ok, detail in done:
        item = by_target.get(target)
        if item is None:
            continue
        if not ok:
            out.append(_failed(item, kind, detail))
        elif kind == "warn":
            out.append(_warning(item, now, cfg))
        elif kind == "stop":
            out.append(_stopped(item, cfg))
        elif kind == "cancel":
            out.append(_cancelled(item))
        elif kind == "notice":
            out.append(_notice(item))
    for item in planned:
        subject = item.subject
        if not isinstance(subject, Instance):
            continue
        long = _long_running(subject, now, cfg)
        if long is not None and long.key not in told:
            out.append(long)
        asleep = _stopped_while_away(subject, told)
        if asleep is not None:
            out.append(asleep)
    return out


def _label(subject: Instance | SpotRequest) -> str:
    name = subject.name if isinstance(subject, Instance) else ""
    return f"{name} ({subject.id})" if name else subject.id


def _price(inst: Instance | SpotRequest, cfg: Config) -> str | None:
    """``$1.01/h``, or None for a type and region the price table lacks."""
    itype = inst.type if isinstance(inst, Instance) else inst.instance_type
    price = billing.hourly_price(itype, inst.region, cfg.billing.prices)
    return None if price is None else f"${price:.2f}/h"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clock(at: datetime, now: datetime) -> str:
    """``at`` on this computer's wall clock: ``13:10``, with the date when not today."""
    local, today = at.astimezone(), now.astimezone()
    if local.date() == today.date():
        return f"{local:%H:%M}"
    return f"{local.day} {_MONTHS[local.month - 1]} {local:%H:%M}"


def _warning(item: Planned, now: datetime, cfg: Config) -> Message:
    inst, d = item.subject, item.decision
    assert isinstance(inst, Instance)
    at = d.stop_at or now
    since = clock(d.idle_since, now) if d.idle_since else "its start"
    price = _price(inst, cfg)
    stops = f"stops at {clock(at, now)} unless you keep it."
    body = f"Idle since {since}: {IDLE_WHY}.\n" + (
        f"Costs {price}; {stops}" if price else "S" + stops[1:]
    )
    return Message(
        f"warn:{inst.id}",
        f"{inst.name or inst.id} stops in {human(at - now)}",
        body,
        keep_buttons(cfg),
        urgent=True,
        target=inst.id,
        region=inst.region,
        extra={"hibernate": "1" if d.hibernate else "0"},  # what "Stop now" should do
    )


def _stopped(item: Planned, cfg: Config) -> Message:
    inst, d = item.subject, item.decision
    assert isinstance(inst, Instance)
    verb = "Hibernated" if d.hibernate else "Stopped"
    return Message(
        f"stopped:{inst.id}",
        f"{verb} {inst.name or inst.id}",
        f"{d.reason[:1].upper()}{d.reason[1:]}."
        + (f" Saves {price}." if (price := _price(inst, cfg)) else "")
        + "\nIts disks are kept: start it again when you need it.",
        target=inst.id,
        region=inst.region,
    )


def _cancelled(item: Planned) -> Message:
    req, d = item.subject, item.decision
    assert isinstance(req, SpotRequest)
    return Message(
        f"cancelled:{req.id}",
        f"Cancelled spot request {req.id}",
        f"{req.region}: {d.reason.removeprefix('orphaned: ')}. No instance was terminated.",
        target=req.id,
        region=req.region,
    )


def _notice(item: Planned) -> Message:
    subject, d = item.subject, item.decision
    label = _label(subject)
    return Message(
        f"notice:{subject.id}",
        f"{label}: not stopping",
        f"{subject.region}: {d.reason}.",
        target=subject.id,
        region=subject.region,
    )


def _failed(item: Planned, kind: str, detail: str) -> Message:
    subject = item.subject
    label = _label(subject)
    return Message(
        f"failed:{kind}:{subject.id}",
        f"Could not {kind} {label}",
        f"{subject.region}: {detail}",
        urgent=True,
        target=subject.id,
        region=subject.region,
    )


def _long_running(inst: Instance, now: datetime, cfg: Config) -> Message | None:
    hours = cfg.notify.long_running_hours
    if hours <= 0 or inst.state != "running" or inst.launch_time is None:
        return None
    up = now - inst.launch_time
    if up < timedelta(hours=hours):
        return None
    seconds = billing.billable_seconds(inst.state, inst.launch_time, now, inst.platform)
    cost = billing.cost(seconds, billing.hourly_price(inst.type, inst.region, cfg.billing.prices))
    spent = "cost unknown" if cost is None else f"${cost:.2f} so far"
    watched = "" if inst.managed else " It is not managed by idle-watchdog."
    return Message(
        f"long-running:{inst.id}:{iso(inst.launch_time)}",
        f"{_label(inst)} has run for {human(up)}",
        f"{inst.type} in {inst.region}, {spent}.{watched}",
        target=inst.id,
        region=inst.region,
    )


def _stopped_while_away(inst: Instance, told: Collection[str]) -> Message | None:
    """A stop this scheduler did not make (the agent's backstop), told once."""
    stamp = inst.tags.get(TAG_STOPPED, "")
    if "agent backstop" not in stamp or inst.state not in ("stopping", "stopped"):
        return None
    key = f"backstop:{inst.id}:{stamp[:20]}"
    if key in told:
        return None
    return Message(
        key,
        f"{_label(inst)} was stopped while you were away",
        f"{inst.region}: {stamp}",
        target=inst.id,
        region=inst.region,
    )
