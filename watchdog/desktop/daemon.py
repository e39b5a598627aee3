"""The desktop daemon: passes every ``poll_seconds`` on APScheduler's asyncio loop.

APScheduler runs the first pass at start, never runs two at once, and runs
a late pass at once instead of skipping it (a laptop waking from sleep),
because idleness comes from the agents' timestamps, not from counting ticks.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
import time
from datetime import datetime, timezone

import structlog

from watchdog import sdnotify
from watchdog.aws.ec2 import AwsError, Ec2Api
from watchdog.config import Config
from watchdog.core.fleet import TAG_KEEP_UNTIL
from watchdog.core.timeutil import iso, parse_duration, utcnow
from watchdog.desktop import notify
from watchdog.desktop.store import Store
from watchdog.scheduler import mark_stopped, run_pass, tell
from watchdog.scheduler.notifier import Message, Notifier

log = structlog.get_logger("watchdog.desktop.daemon")


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
                mark_stopped(self.api, region, target, now, "stop pressed")
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
