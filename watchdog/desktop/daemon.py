"""The desktop daemon: passes every ``poll_seconds`` on APScheduler's asyncio loop.

APScheduler runs the first pass at start, never runs two at once, and runs
a late pass at once instead of skipping it (a laptop waking from sleep),
because idleness comes from the agents' timestamps, not from counting ticks.

Each pass holds the history's file lock (``watchdog.desktop.lock``: one pass
per history, whatever process), then delivers the outbox through the
notifier. A history that cannot be written is told once, and its recovery
once; a history deleted under us is reopened. SIGHUP reloads the config: a
valid file takes effect at the next pass, an invalid one is told and ignored.

The pass prices each instance's hour through the price book (``self.book``);
after it, the ledger's facts are recorded (``watchdog.desktop.ledger``), and
with ``[billing] monthly_budget_usd`` the month-to-date cost is checked against it.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import structlog

from watchdog import config as configmod
from watchdog import sdnotify
from watchdog.aws.ec2 import AwsError, Ec2Api
from watchdog.config import Config, ConfigError
from watchdog.core.fleet import TAG_KEEP_UNTIL
from watchdog.core.timeutil import iso, parse_duration, utcnow
from watchdog.desktop import ledger, notify
from watchdog.desktop.lock import pass_lock
from watchdog.desktop.store import Store
from watchdog.scheduler import PassReport, mark_stopped, run_pass
from watchdog.scheduler.budget import tell_budget
from watchdog.scheduler.coexist import tag_warned
from watchdog.scheduler.history import HistoryUnwritable
from watchdog.scheduler.notifier import Message, Notifier
from watchdog.scheduler.outbox import deliver
from watchdog.scheduler.pricebook import PriceBook, PriceSource

log = structlog.get_logger("watchdog.desktop.daemon")


class Prices(PriceSource, ledger.Inventory, Protocol):
    """What the daemon asks AWS about money (``watchdog.aws.pricing.Boto3Prices``)."""


#: How long a pass waits for one notification to be shown before trying it next pass.
SEND_TIMEOUT = 30.0


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
        config_path: str | Path | None = None,
        prices: Prices | None = None,
    ):
        self.api, self.store, self.cfg, self.dry_run = api, store, cfg, dry_run
        self.prices = prices if prices is not None else ledger.aws_prices(cfg)
        #: What an instance's hour costs (``Rates``), for the pass and for the ledger.
        self.book = PriceBook(cfg, self.prices, store)
        self.notifier = notifier
        self.config_path = config_path  # what SIGHUP reloads (None: the default location)
        self._pass_started: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: Any = None
        self._lock = threading.Lock()  # passes and button actions share the store
        self._history_problem: str | None = None  # told once; its recovery told once
        self._tasks: set[asyncio.Future[bool]] = set()

    def tick(self) -> None:
        self._pass_started = time.monotonic()
        try:
            report = self.run(wait=True)
            self._history_fine()
            sdnotify.notify(
                "WATCHDOG=1",
                f"STATUS=last pass {iso(report.now)}: {len(report.planned)} targets, "
                f"{len(report.done)} actions, {len(report.failed_regions)} regions failed",
            )
        except HistoryUnwritable as exc:
            self._history_broken(exc)
        except Exception:
            log.exception("pass failed")
        finally:
            self._pass_started = None

    def run(self, *, wait: bool) -> PassReport:
        """One pass under the history's lock, then its outbox delivered (in a worker thread).

        ``wait=False`` raises ``lock.Busy`` when another process is in a pass.
        """
        with pass_lock(self.store.path, wait=wait), self._lock:
            if self._history_problem is not None:
                self.store.reopen()  # a read-only connection never becomes writable
            else:
                self.store.reopen_if_replaced()
            now = utcnow()
            report = run_pass(
                self.api, self.store, self.cfg, now, dry_run=self.dry_run, rates=self.book
            )
            ledger.record(self.store, self.prices, self.book, report.scans, now)
            if self.cfg.billing.monthly_budget_usd:
                spent = ledger.month_to_date(self.store, self.cfg, now)
                tell_budget(self.store, self.cfg, now, spent.total_usd, spent.partial)
            self.store.prune(now)
            deliver(self.store, self._send_and_wait, utcnow, on_sent=tag_warned(self.api))
        return report

    async def once(self) -> PassReport:
        """``run --once``: one pass, its outbox sent before returning; never waits for
        another process's pass (``lock.Busy``)."""
        self._loop = loop = asyncio.get_running_loop()
        if self.notifier is None:
            self.notifier = await notify.choose(self.cfg.notify.backend)
        try:
            return await loop.run_in_executor(None, functools.partial(self.run, wait=False))
        finally:
            await self.notifier.aclose()

    def _send_and_wait(self, message: Message) -> bool:
        """From the pass's thread: show it on the loop, and say whether it was delivered."""
        if self.notifier is None or self._loop is None:
            return False
        on_action = functools.partial(self._pressed, message)
        sent = asyncio.run_coroutine_threadsafe(self.notifier.send(message, on_action), self._loop)
        try:
            return bool(sent.result(SEND_TIMEOUT))
        except Exception as exc:  # timed out or broke its promise: pending, tried again
            sent.cancel()
            log.warning("notification not delivered", key=message.key, error=repr(exc))
            return False

    def _history_broken(self, exc: HistoryUnwritable) -> None:
        if self._history_problem == str(exc):
            return  # told already; each pass tries again quietly
        self._history_problem = str(exc)
        log.error("history cannot be written; nothing is stopped until it can", error=str(exc))
        self._send_and_wait(
            Message(
                "history-unwritable",
                "idle-watchdog is paused: it cannot write its history",
                f"{str(exc)[0].upper()}{str(exc)[1:]}",
                urgent=True,
            )
        )

    def _history_fine(self) -> None:
        if self._history_problem is None:
            return
        self._history_problem = None
        log.warning("history writable again; passes resume", path=self.store.path)
        self._send_and_wait(
            Message(
                "history-writable",
                "idle-watchdog works again",
                f"Its history {self.store.path} can be written again; idle machines are "
                "warned and stopped as before.",
            )
        )

    def reload(self) -> None:
        """On SIGHUP (on the loop): a valid file takes effect at the next pass; an invalid
        one is told, in the log and as a notification, and the running config is kept."""
        try:
            new = configmod.load(self.config_path)
        except ConfigError as exc:
            log.error("config not reloaded; keeping the running one", error=str(exc))
            if self.notifier is not None:
                message = Message(
                    "config-invalid",
                    "idle-watchdog kept its previous settings",
                    f"The new config was not loaded: {exc}. Fix it, then reload again "
                    "(systemctl --user reload idle-watchdog).",
                    urgent=True,
                )
                task = asyncio.ensure_future(self.notifier.send(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        old, self.cfg = self.cfg, new
        self.book = PriceBook(new, self.prices, self.store)  # new [billing] prices
        if new.scheduler.poll_seconds != old.scheduler.poll_seconds and self._scheduler:
            self._scheduler.reschedule_job(
                "pass", trigger="interval", seconds=new.scheduler.poll_seconds
            )
        restart = [
            key
            for key, before, after in (
                ("notify.backend", old.notify.backend, new.notify.backend),
                ("aws.profile", old.aws.profile, new.aws.profile),
                ("scheduler.database", old.scheduler.database, new.scheduler.database),
            )
            if before != after
        ]
        log.info(
            "config reloaded",
            path=str(self.config_path or configmod.default_path() or ""),
            regions=list(new.aws.regions),
            poll_seconds=new.scheduler.poll_seconds,
            dry_run=new.scheduler.dry_run if self.dry_run is None else self.dry_run,
            needs_restart=restart or None,
        )

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
        log.warning("button pressed", target=target, action=action, ok=ok, detail=detail)
        try:
            with self._lock:
                self.store.record_action(
                    now, region, target, kind, ok=ok, detail=detail, dry_run=False
                )
        except HistoryUnwritable as exc:  # done on AWS; only the record is missing
            log.error("button action not recorded", target=target, error=str(exc))

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
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.notifier is None:
            self.notifier = await notify.choose(self.cfg.notify.backend)
        self._scheduler = scheduler = AsyncIOScheduler(
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
