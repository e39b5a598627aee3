"""The imperative shell of the desktop side: scan -> decide -> act -> remember.

``run_pass`` is one full pass at an explicit ``now``; the daemon (``serve``)
only calls it on a timer. APScheduler runs the first pass at start, never
runs two at once, and runs a late pass at once instead of skipping it (a
laptop waking from sleep), because idleness comes from the agents'
timestamps, not from counting ticks.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import structlog

from watchdog import events, notify, sdnotify
from watchdog.aws.ec2 import AwsError, Ec2Api, scan_regions
from watchdog.config import Config
from watchdog.fleet import TAG_KEEP_UNTIL, TAG_STOPPED, Instance, RegionScan, SpotRequest
from watchdog.notify import Message, Notifier
from watchdog.policy import Action, Planned, decide_with_history, plan
from watchdog.store import Store
from watchdog.timeutil import iso, parse_duration, utcnow

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
    api: Ec2Api, store: Store, cfg: Config, now: datetime, *, dry_run: bool | None = None
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
        except sqlite3.Error:
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
    api: Ec2Api, store: Store, planned: Planned, now: datetime, dry: bool
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
            _mark_stopped(api, d.region, d.target, now, d.reason)
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


def _mark_stopped(api: Ec2Api, region: str, target: str, now: datetime, why: str) -> None:
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


def tell(report: PassReport, store: Store, cfg: Config) -> list[Message]:
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


class Daemon:
    """``idle-watchdog run``: passes every ``poll_seconds`` on an asyncio loop.

    Passes run in the loop's thread pool (boto3 blocks); notifications are
    sent on the loop, which stays free between passes, so a button pressed
    at any time acts at once.
    """

    def __init__(
        self,
        api: Ec2Api,
        store: Store,
        cfg: Config,
        *,
        dry_run: bool | None = None,
        notifier: Notifier | None = None,
    ):
        self.api, self.store, self.cfg, self.dry_run = api, store, cfg, dry_run
        self.notifier = notifier
        self._pass_started: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # passes and button actions share the store

    def tick(self) -> None:
        self._pass_started = time.monotonic()
        try:
            now = utcnow()
            with self._lock:
                report = run_pass(self.api, self.store, self.cfg, now, dry_run=self.dry_run)
                self.store.prune(now)
                messages = tell(report, self.store, self.cfg)
            for message in messages:
                self._send(message)
            sdnotify.notify(
                "WATCHDOG=1",
                f"STATUS=last pass {iso(now)}: {len(report.planned)} targets, "
                f"{len(report.done)} actions, {len(report.failed_regions)} regions failed",
            )
        except Exception:
            log.exception("pass failed")
        finally:
            self._pass_started = None

    def _send(self, message: Message) -> None:
        """From the pass's thread: hand the message to the loop."""
        if self.notifier is None or self._loop is None:
            return
        on_action = functools.partial(self._pressed, message)
        asyncio.run_coroutine_threadsafe(self.notifier.send(message, on_action), self._loop)

    def _pressed(self, message: Message, action: str) -> None:
        """On the loop: a button was pressed; act in the thread pool (boto3 blocks)."""
        assert self._loop is not None
        self._loop.run_in_executor(None, self.act, message, action)

    def act(self, message: Message, action: str) -> None:
        """What a button does: keep writes the keep-until tag, stop stops. Never raises."""
        now = utcnow()
        region, target = message.region, message.target
        try:
            if action.startswith("keep:"):
                until = now + parse_duration(action.removeprefix("keep:"))
                self.api.tag(region, target, {TAG_KEEP_UNTIL: iso(until)})
                kind, detail = "keep", f"kept until {iso(until)} from a notification"
            elif action == "stop":
                self.api.stop(region, target, hibernate=message.extra.get("hibernate") == "1")
                _mark_stopped(self.api, region, target, now, "stop pressed")
                kind, detail = "stop", "stopped from a notification"
            else:
                log.warning("unknown notification action", action=action, target=target)
                return
            ok = True
        except (AwsError, ValueError, OverflowError) as exc:
            kind = "keep" if action.startswith("keep:") else "stop"
            ok, detail = False, f"{action} from a notification failed: {exc}"
        with self._lock:
            self.store.record_action(now, region, target, kind, ok=ok, detail=detail, dry_run=False)
        log.warning("button pressed", target=target, action=action, ok=ok, detail=detail)

    def healthy(self) -> bool:
        """False when a pass has hung; systemd's watchdog then restarts us."""
        limit = max(600.0, 3.0 * self.cfg.scheduler.poll_seconds)
        started = self._pass_started
        return started is None or time.monotonic() - started < limit

    def _ping(self) -> None:
        if self.healthy():
            sdnotify.notify("WATCHDOG=1")

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        stop = stop or asyncio.Event()
        self._loop = loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.notifier is None:
            self.notifier = await notify.choose(self.cfg.notify.backend)
        scheduler = AsyncIOScheduler(
            timezone=timezone.utc,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.cfg.scheduler.poll_seconds,
            id="pass",
            next_run_time=datetime.now(timezone.utc),
        )
        interval = sdnotify.watchdog_interval()
        if interval:
            scheduler.add_job(self._ping, "interval", seconds=interval, id="watchdog")
        scheduler.start()
        sdnotify.notify("READY=1", "STATUS=first pass running")
        log.info(
            "scheduler started",
            regions=list(self.cfg.aws.regions),
            poll_seconds=self.cfg.scheduler.poll_seconds,
            dry_run=self.cfg.scheduler.dry_run if self.dry_run is None else self.dry_run,
            notifications=self.notifier.name,
        )
        try:
            await stop.wait()
        finally:
            sdnotify.notify("STOPPING=1")
            scheduler.shutdown(wait=False)
            await self.notifier.aclose()
            log.info("scheduler stopped")
