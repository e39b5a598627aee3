"""One pass, whatever shell runs it: scan -> decide -> act -> record -> tell.

``run_pass`` is one full pass at an explicit ``now`` over a ``History``; a
shell (the desktop daemon, a test, a demo) calls it on its own timer and
sends what ``tell`` returns through its ``Notifier``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from watchdog.aws.ec2 import AwsError, Ec2Api, scan_regions
from watchdog.core.fleet import TAG_STOPPED, Instance, RegionScan, SpotRequest
from watchdog.core.policy import Action, Planned, decide_with_history, plan
from watchdog.core.settings import Config
from watchdog.core.timeutil import iso, utcnow
from watchdog.scheduler import events
from watchdog.scheduler.history import History
from watchdog.scheduler.notifier import Message

log = structlog.get_logger("watchdog.scheduler")


@dataclass(frozen=True)
class Done:
    """One action taken (or, in a dry run, that would have been taken)."""

    region: str
    target: str
    kind: str  # warn | notice | stop | cancel
    ok: bool
    detail: str


@dataclass
class PassReport:
    now: datetime
    dry_run: bool
    scans: list[RegionScan] = field(default_factory=list)
    planned: list[Planned] = field(default_factory=list)
    done: list[Done] = field(default_factory=list)

    @property
    def failed_regions(self) -> list[RegionScan]:
        return [s for s in self.scans if s.error]


def run_pass(
    api: Ec2Api, store: History, cfg: Config, now: datetime, *, dry_run: bool | None = None
) -> PassReport:
    """One full pass over every configured region. Never raises for one bad target.

    No SQLite transaction is held across an AWS call: the history is written
    in short transactions before and after, so ``status`` or a second
    process never waits on EC2's retries.
    """
    dry = cfg.scheduler.dry_run if dry_run is None else dry_run
    report = PassReport(now=now, dry_run=dry)
    report.scans = scan_regions(api, cfg.aws.regions, cfg.aws.max_workers)
    warned = store.last_told("warn", dry_run=dry)
    noticed = store.last_told("notice", dry_run=dry)
    for scan in report.scans:
        if scan.error:
            log.error("region skipped", region=scan.region, error=scan.error)
            continue
        try:
            with store.transaction():
                store.observe(now, scan.instances)
            planned = plan(
                scan.instances, scan.spot_requests, now, cfg, warned=warned, noticed=noticed
            )
        except Exception:  # one region's bad data or a busy database never blocks the next
            log.exception("region not decided", region=scan.region)
            continue
        requests = {r.id: r for r in scan.spot_requests}
        decided: list[Planned] = []
        for first in planned:
            try:
                item = first
                if not dry and first.decision.action is Action.STOP:
                    item = _confirm_stop(
                        api, first, now, cfg, requests=requests, warned=warned, noticed=noticed
                    )
                decided.append(item)
                done = _carry_out(api, store, item, now, dry)
            except Exception:  # one bad target never blocks the others
                log.exception("target skipped", region=scan.region, target=first.decision.target)
                continue
            if done:
                report.done.append(done)
        report.planned.extend(decided)
        try:
            with store.transaction():  # the routine rows: one commit per region
                for item in decided:
                    store.record_decision(now, item.decision, dry_run=dry)
        except Exception:  # a history that cannot write loses the rows, not the pass
            log.exception("decisions not recorded", region=scan.region)
    store.record_pass(
        now,
        utcnow(),
        len(report.scans) - len(report.failed_regions),
        len(report.failed_regions),
        dry_run=dry,
    )
    return report


def _confirm_stop(
    api: Ec2Api,
    item: Planned,
    now: datetime,
    cfg: Config,
    *,
    requests: Mapping[str, SpotRequest],
    warned: Mapping[str, datetime],
    noticed: Mapping[str, datetime],
) -> Planned:
    """Decide again on a fresh read of the one instance, just before stopping it.

    The scan may be seconds old: a "Keep" pressed, a tag set or a heartbeat
    written since then wins over the stale decision.
    """
    fresh = api.describe(item.decision.region, item.decision.target)
    if fresh is None:
        return Planned(
            item.subject, replace(item.decision, action=Action.NONE, reason="gone since the scan")
        )
    again = decide_with_history(fresh, now, cfg, requests=requests, warned=warned, noticed=noticed)
    if again.action is not Action.STOP:
        log.info("stop called off", target=fresh.id, reason=again.reason)
    return Planned(fresh, again)


def _carry_out(
    api: Ec2Api, store: History, planned: Planned, now: datetime, dry: bool
) -> Done | None:
    d = planned.decision
    log.info(
        "decision",
        region=d.region,
        target=d.target,
        action=d.action.value,
        reason=d.reason,
        stop_at=iso(d.stop_at) if d.stop_at else None,
        dry_run=dry or None,
    )
    if d.action is Action.NONE:
        return None
    ok, detail = True, d.reason
    if not dry:
        try:
            if d.action is Action.STOP:
                api.stop(d.region, d.target, hibernate=d.hibernate)
            elif d.action is Action.CANCEL:
                api.cancel_spot_requests(d.region, [d.target])
        except AwsError as exc:
            ok, detail = False, f"{exc} (decided: {d.reason})"
            log.error(
                "action failed",
                region=d.region,
                target=d.target,
                action=d.action.value,
                error=str(exc),
            )
        if ok and d.action is Action.STOP:
            mark_stopped(api, d.region, d.target, now, d.reason)
    if d.action is Action.STOP and d.hibernate:
        detail = "hibernate: " + detail
    done = Done(d.region, d.target, d.action.value, ok, detail)
    store.record_action(now, d.region, d.target, done.kind, ok=ok, detail=detail, dry_run=dry)
    if ok:
        log.warning(
            _PAST[d.action] if not dry else f"would {d.action.value}",
            region=d.region,
            target=d.target,
            name=_name(planned),
            reason=d.reason,
        )
    return done


def mark_stopped(api: Ec2Api, region: str, target: str, now: datetime, why: str) -> None:
    """The ``stopped`` tag says when and why; a failure to write it is only logged
    (the stop itself worked)."""
    try:
        api.tag(region, target, {TAG_STOPPED: _stopped_tag(now, why)})
    except AwsError as exc:
        log.warning("stopped, but the stopped tag was not written", target=target, error=str(exc))


_PAST = {
    Action.WARN: "warning",
    Action.NOTICE: "notice",
    Action.STOP: "stopped",
    Action.CANCEL: "cancelled",
}


def _name(planned: Planned) -> str:
    return planned.subject.name if isinstance(planned.subject, Instance) else ""


def _stopped_tag(now: datetime, reason: str) -> str:
    return f"{iso(now)} by idle-watchdog: {reason}"[:256]


def tell(report: PassReport, store: History, cfg: Config) -> list[Message]:
    """The messages a pass is worth, each recorded so it is told once (across restarts).

    A dry run tells nothing: its decisions are in the log, and a desktop
    message "stopped" about a machine still running would be a lie.
    """
    if report.dry_run:
        return []
    done = [(d.target, d.kind, d.ok, d.detail) for d in report.done]
    found = events.messages(report.planned, done, report.now, cfg, store.told())
    for message in found:
        store.mark_told(message.key, report.now, message.title)
    return found
