"""What a pass is worth telling the person, as ``Message`` data (pure).

- a warning before auto-stop: which machine, what it costs, how long it has
  been idle, what that idle spell has cost and why it counts as idle, when it
  stops; buttons to keep it and to stop it now;
- a stop, with what it saves per hour (compute and public IPv4) and what its
  disks still cost; a cancelled orphaned spot request and what it would have
  launched; an action that failed;
- a notice (agent silent, a bad tag, an idle one-time spot instance);
- an instance running longer than ``[notify] long_running_hours``, with its
  cost so far, once per start;
- a stop made while the desktop slept (the agent's backstop), once.

Warnings, notices, stops and cancels are already one per event: the policy
and the history see to that. The last two kinds are new here, so each
carries a ``key`` the history remembers (``told``) to say them only once.

Every amount comes from the rates the decision was made with
(``Planned.rates``); a part not known is said to be unknown, never guessed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from watchdog.core import billing
from watchdog.core.fleet import TAG_STOPPED, Instance, SpotRequest
from watchdog.core.ledger import HourlyRates
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
            out.append(_stopped(item))
        elif kind == "cancel":
            out.append(_cancelled(item))
        elif kind == "notice":
            out.append(_notice(item))
    for item in planned:
        subject = item.subject
        if not isinstance(subject, Instance):
            continue
        long = _long_running(subject, item.rates, now, cfg)
        if long is not None and long.key not in told:
            out.append(long)
        asleep = _stopped_while_away(subject, told)
        if asleep is not None:
            out.append(asleep)
    return out


def _label(subject: Instance | SpotRequest) -> str:
    name = subject.name if isinstance(subject, Instance) else ""
    return f"{name} ({subject.id})" if name else subject.id


def _amount(usd: float) -> str:
    """``$1.01``; a third decimal where it matters (``$1.006``, ``$0.005``)."""
    return f"${usd:.2f}" if round(usd, 2) == round(usd, 3) else f"${usd:.3f}"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clock(at: datetime, now: datetime) -> str:
    """``at`` on this computer's wall clock: ``13:10``, with the date when not today."""
    local, today = at.astimezone(), now.astimezone()
    if local.date() == today.date():
        return f"{local:%H:%M}"
    return f"{local.day} {_MONTHS[local.month - 1]} {local:%H:%M}"


def _warning(item: Planned, now: datetime, cfg: Config) -> Message:
    inst, d, rates = item.subject, item.decision, item.rates
    assert isinstance(inst, Instance)
    at = d.stop_at or now
    idle = human(now - d.idle_since) if d.idle_since else "since its start"
    spent = ""
    if d.idle_usd is not None:
        limit = f" of ${d.max_idle_usd:.2f}" if d.max_idle_usd else ""
        spent = f", ${d.idle_usd:.2f}{limit} so far"
    since = clock(d.idle_since, now) if d.idle_since else "its start"
    stops = f"stops at {clock(at, now)} unless you keep it."
    saves = None if rates is None else rates.stop_saves_usd
    if saves is not None:
        costs = f"Costs ${saves:.2f}/h; {stops}"
    elif d.max_idle_usd:
        costs = f"Its price is unknown, so ${d.max_idle_usd:.2f} does not apply; {stops}"
    else:
        costs = f"Its price is unknown; {stops}"
    return Message(
        f"warn:{inst.id}",
        f"{inst.name or inst.id} stops in {human(at - now)}",
        f"Idle since {since} ({idle}{spent}): {IDLE_WHY}.\n{costs}",
        keep_buttons(cfg),
        urgent=True,
        target=inst.id,
        region=inst.region,
        extra={"hibernate": "1" if d.hibernate else "0"},  # what "Stop now" should do
    )


def _saves(rates: HourlyRates | None) -> str:
    """What a stop avoids per hour, and of what."""
    if rates is None or rates.stop_saves_usd is None or rates.compute_usd is None:
        return "What it saves per hour is unknown: its price is unknown."
    public = rates.stop_saves_usd - rates.compute_usd
    parts = f"compute {_amount(rates.compute_usd)}" + (
        f", public IPv4 {_amount(public)}" if public > 0 else ""
    )
    return f"Saves ${rates.stop_saves_usd:.2f}/h ({parts})."


def _kept(rates: HourlyRates | None) -> str:
    """What keeps billing while it is stopped: its disks, and Elastic IPs if any."""
    if rates is None or rates.ebs_usd is None:
        return "Its disks are kept (what they cost while stopped is unknown)"
    elastic = 0.0
    if rates.stop_saves_usd is not None and rates.compute_usd is not None:
        elastic = round(rates.ipv4_usd - (rates.stop_saves_usd - rates.compute_usd), 6)
    kept = "Its disks and Elastic IP are kept" if elastic > 0 else "Its disks are kept"
    still = rates.ebs_usd + max(0.0, elastic)
    return f"{kept}, still costing {_amount(still)}/h" if still > 0 else kept


def _stopped(item: Planned) -> Message:
    inst, d = item.subject, item.decision
    assert isinstance(inst, Instance)
    verb = "Hibernated" if d.hibernate else "Stopped"
    return Message(
        f"stopped:{inst.id}",
        f"{verb} {inst.name or inst.id}",
        f"{d.reason[:1].upper()}{d.reason[1:]}. {_saves(item.rates)}\n"
        f"{_kept(item.rates)}: start it again when you need it.",
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


def region_failed(region: str, error: str) -> Message:
    """A region that could not be scanned: nothing in it is watched until it recovers."""
    return Message(
        f"region-failed:{region}",
        f"Cannot watch {region}",
        f"Scanning {region} failed: {error[:200]}. Nothing there is stopped or warned about "
        "until it works again; `idle-watchdog status` lists it. You will be told when it does.",
        urgent=True,
        region=region,
    )


def region_recovered(region: str) -> Message:
    return Message(
        f"region-recovered:{region}",
        f"Watching {region} again",
        f"{region} scans again; its instances are watched as before.",
        region=region,
    )


def _long_running(
    inst: Instance, rates: HourlyRates | None, now: datetime, cfg: Config
) -> Message | None:
    hours = cfg.notify.long_running_hours
    if hours <= 0 or inst.state != "running" or inst.launch_time is None:
        return None
    up = now - inst.launch_time
    if up < timedelta(hours=hours):
        return None
    seconds = billing.billable_seconds(inst.state, inst.launch_time, now, inst.platform)
    cost = billing.cost(seconds, None if rates is None else rates.compute_usd)
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
