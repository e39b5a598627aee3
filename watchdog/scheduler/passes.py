"""One pass, whatever shell runs it: scan -> decide -> act -> record -> tell.

``run_pass`` is one full pass at an explicit ``now`` over a ``History``; what
it means to tell goes into the history's outbox. A shell (the desktop daemon,
a test, a demo) calls it on its own timer, then delivers the outbox through
its ``Notifier`` (``outbox.deliver``) or shows it itself (``tell``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from watchdog.aws.ec2 import AwsError, Ec2Api, iter_scans
from watchdog.core import coexist
from watchdog.core.fleet import TAG_STOPPED, Instance, RegionScan
from watchdog.core.ledger import HourlyRates
from watchdog.core.policy import Action, Decision, Planned, decide_with_history, plan
from watchdog.core.settings import Config
from watchdog.core.timeutil import iso, utcnow
from watchdog.scheduler import events
from watchdog.scheduler.history import History, HistoryUnwritable
from watchdog.scheduler.notifier import Message
from watchdog.scheduler.outbox import deliver
from watchdog.scheduler.rates import Rates, TableRates

log = structlog.get_logger("watchdog.scheduler")

#: The why of the ``stopped`` tag for every idle stop of a pass (one CreateTags for all).
IDLE_STOP = "idle past its threshold, after a warning"


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
    api: Ec2Api,
    store: History,
    cfg: Config,
    now: datetime,
    *,
    dry_run: bool | None = None,
    rates: Rates | None = None,
) -> PassReport:
    """One full pass over every configured region. Never raises for one bad target.

    ``rates`` prices each running instance for ``max_idle_usd`` and the messages
    (``TableRates``, the config and the bundled table, when not given).

    No SQLite transaction is held across an AWS call: the history is written
    in short transactions before and after, so ``status`` or a second
    process never waits on EC2's retries. Each message is put in the outbox
    in the transaction that records its cause; the shell delivers it after.
    A history that cannot be written raises ``HistoryUnwritable`` before the
    first AWS call, and at once if it happens mid-pass: nothing is acted on
    without a record.
    """
    dry = cfg.scheduler.dry_run if dry_run is None else dry_run
    report = PassReport(now=now, dry_run=dry)
    with store.transaction():  # a write probe: an unwritable history stops us here
        store.set_condition("", None, now)
    warned = store.last_told("warn", dry_run=dry)
    noticed = store.last_told("notice", dry_run=dry)
    told = store.told()
    prices = TableRates(cfg) if rates is None else rates
    # Each region is acted on as soon as its scan is in: a region whose
    # endpoint hangs delays only itself (its calls are bounded by [aws]).
    for scan in iter_scans(api, cfg.aws.regions, cfg.aws.max_workers):
        report.scans.append(scan)
        if not dry:
            _tell_region(store, scan, now)
        if scan.error:
            log.error("region skipped", region=scan.region, error=scan.error)
            continue
        try:
            with store.transaction():
                store.observe(now, scan.instances)
            hourly = hourly_rates(prices, scan.instances, now)
            warned = with_warned_tags(
                warned, scan.instances, now, cfg
            )  # another scheduler's warnings
            planned = plan(
                scan.instances,
                scan.spot_requests,
                now,
                cfg,
                warned=warned,
                noticed=noticed,
                rates=hourly,
            )
        except HistoryUnwritable:
            raise
        except Exception:  # one region's bad data or a busy database never blocks the next
            log.exception("region not decided", region=scan.region)
            continue
        try:
            decided = _act_on_region(
                api,
                store,
                scan,
                planned,
                now,
                cfg=cfg,
                dry=dry,
                warned=warned,
                noticed=noticed,
                rates=hourly,
            )
        except HistoryUnwritable:
            raise
        except Exception:  # one region's failure never blocks the next region
            log.exception("region not acted on", region=scan.region)
            continue
        report.done.extend(done for _, done in decided if done)
        report.planned.extend(item for item, _ in decided)
        try:
            with store.transaction():  # the routine rows: one commit per region
                for item, _ in decided:
                    store.record_decision(now, item.decision, dry_run=dry)
                if not dry:
                    _tell_routine(store, [item for item, _ in decided], now, cfg, told)
        except HistoryUnwritable:
            raise
        except Exception:  # a history that cannot write loses the rows, not the pass
            log.exception("decisions not recorded", region=scan.region)
    order = {region: i for i, region in enumerate(cfg.aws.regions)}
    report.scans.sort(key=lambda scan: order.get(scan.region, len(order)))
    with store.transaction():
        store.record_pass(
            now,
            utcnow(),
            len(report.scans) - len(report.failed_regions),
            len(report.failed_regions),
            dry_run=dry,
        )
    return report


def hourly_rates(
    rates: Rates, instances: Sequence[Instance], now: datetime
) -> dict[str, HourlyRates]:
    """Each running instance's hourly rates. One that cannot be priced (a price source
    that fails) is left out, which the policy and the messages treat as unknown."""
    out: dict[str, HourlyRates] = {}
    for inst in instances:
        if inst.state != "running":
            continue
        try:
            out[inst.id] = rates.hourly(inst, now)
        except Exception:  # one instance's price never blocks the others, nor its decision
            log.exception("price unknown", region=inst.region, target=inst.id)
    return out


def _tell_region(store: History, scan: RegionScan, now: datetime) -> None:
    """A region that cannot be scanned is told once per cause, and once when it recovers."""
    subject = f"region:{scan.region}"
    cause = _cause(scan.error) if scan.error else None
    with store.transaction():
        before = store.condition(subject)
        if cause == before:
            return
        if cause is not None and scan.error:
            store.enqueue(events.region_failed(scan.region, scan.error), now)
        elif before is not None:
            store.enqueue(events.region_recovered(scan.region), now)
        store.set_condition(subject, cause, now)


def _tell_routine(
    store: History, decided: list[Planned], now: datetime, cfg: Config, told: set[str]
) -> None:
    """What a region's decisions are worth telling besides actions (long-running, a stop
    while away), and pending warnings or notices the situation no longer supports."""
    for item in decided:
        d = item.decision
        for kind in ("warn", "notice"):
            if d.action.value != kind:
                store.discard_pending(f"{kind}:{d.target}")
    for message in events.messages(decided, [], now, cfg, told):
        store.enqueue(message, now)
        told.add(message.key)


def with_warned_tags(
    warned: Mapping[str, datetime], instances: Iterable[Instance], now: datetime, cfg: Config
) -> dict[str, datetime]:
    minutes = {"warn_minutes": cfg.idle.warn_minutes, "idle_minutes": cfg.idle.minutes}
    return coexist.merged(warned, instances, now, **minutes)


def _cause(error: str) -> str:
    """What a failure is, without what changes between tries (request ids, times)."""
    return error.split(":", 1)[0].strip() or error


def _act_on_region(
    api: Ec2Api,
    store: History,
    scan: RegionScan,
    planned: list[Planned],
    now: datetime,
    *,
    cfg: Config,
    dry: bool,
    warned: Mapping[str, datetime],
    noticed: Mapping[str, datetime],
    rates: Mapping[str, HourlyRates],
) -> list[tuple[Planned, Done | None]]:
    """Carry out one region's decisions, its stops in as few AWS calls as AWS allows.

    Every stop is decided again on one fresh read of all the candidates, sent
    in one StopInstances per hibernate choice and tagged in one CreateTags;
    each instance still gets its own result, record and message.
    """
    stops = [p for p in planned if p.decision.action is Action.STOP] if not dry else []
    confirmed = _confirm_stops(
        api, scan, stops, now, cfg, warned=warned, noticed=noticed, rates=rates
    )
    results = _stop_all(api, scan.region, list(confirmed.values()), now)
    decided: list[tuple[Planned, Done | None]] = []
    for first in planned:
        item = confirmed.get(first.decision.target, first)
        try:
            done = _carry_out(api, store, item, now, dry=dry, cfg=cfg, results=results)
        except HistoryUnwritable:
            raise
        except Exception:  # one bad target never blocks the others
            log.exception("target skipped", region=scan.region, target=first.decision.target)
            continue
        decided.append((item, done))
    return decided


def _confirm_stops(
    api: Ec2Api,
    scan: RegionScan,
    stops: list[Planned],
    now: datetime,
    cfg: Config,
    *,
    warned: Mapping[str, datetime],
    noticed: Mapping[str, datetime],
    rates: Mapping[str, HourlyRates],
) -> dict[str, Planned]:
    """Decide again on a fresh read of every candidate, just before stopping them.

    The scan may be seconds old: a "Keep" pressed, a tag set or a heartbeat
    written since then wins over the stale decision. If the re-read fails,
    no stop goes ahead this pass.
    """
    if not stops:
        return {}
    ids = [p.decision.target for p in stops]
    try:
        fresh = api.describe_many(scan.region, ids)
    except AwsError as exc:
        log.error("stops put off: the re-read failed", region=scan.region, error=str(exc))
        why = f"not stopped this pass: could not read it again ({exc.code})"
        return {
            p.decision.target: Planned(
                p.subject, replace(p.decision, action=Action.NONE, reason=why), p.rates
            )
            for p in stops
        }
    requests = {r.id: r for r in scan.spot_requests}
    warned = with_warned_tags(warned, fresh.values(), now, cfg)
    confirmed: dict[str, Planned] = {}
    for item in stops:
        target = item.decision.target
        inst = fresh.get(target)
        if inst is None:
            gone = replace(item.decision, action=Action.NONE, reason="gone since the scan")
            confirmed[target] = Planned(item.subject, gone, item.rates)
            continue
        again = decide_with_history(
            inst, now, cfg, requests=requests, warned=warned, noticed=noticed, rates=rates
        )
        if again.action is not Action.STOP:
            log.info("stop called off", target=target, reason=again.reason)
        confirmed[target] = Planned(inst, again, rates.get(target))
    return confirmed


def _stop_all(
    api: Ec2Api, region: str, confirmed: list[Planned], now: datetime
) -> dict[str, AwsError | None]:
    """StopInstances for every confirmed stop (one call per hibernate choice), then the
    ``stopped`` tag on those that stopped. ``None`` means stopping."""
    results: dict[str, AwsError | None] = {}
    for hibernate in (False, True):
        ids = [
            p.decision.target
            for p in confirmed
            if p.decision.action is Action.STOP and p.decision.hibernate is hibernate
        ]
        if ids:
            results.update(api.stop_many(region, ids, hibernate=hibernate))
    stopped = [target for target, error in results.items() if error is None]
    try:
        tagged = api.tag_many(region, stopped, {TAG_STOPPED: _stopped_tag(now)}) if stopped else {}
    except Exception as exc:  # the stops worked: a failed tag must not lose their records
        tagged = dict.fromkeys(stopped, AwsError("TagFailed", str(exc)))
    for target, error in tagged.items():
        if error is not None:
            log.warning(
                "stopped, but the stopped tag was not written", target=target, error=str(error)
            )
    return results


def _carry_out(
    api: Ec2Api,
    store: History,
    planned: Planned,
    now: datetime,
    *,
    dry: bool,
    cfg: Config,
    results: Mapping[str, AwsError | None],
) -> Done | None:
    """Act on one decision (a stop was already sent: ``results`` has its outcome);
    record it and its message in one transaction."""
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
    ok, detail, cause = True, d.reason, ""
    if not dry:
        try:
            _act(api, d, results)
        except AwsError as exc:
            ok, detail, cause = False, f"{exc} (decided: {d.reason})", exc.code
    if d.action is Action.STOP and d.hibernate:
        detail = "hibernate: " + detail
    done = Done(d.region, d.target, d.action.value, ok, detail)
    with store.transaction():
        store.record_action(now, d.region, d.target, done.kind, ok=ok, detail=detail, dry_run=dry)
        if not dry:
            _tell_action(store, planned, done, now, cause=cause, cfg=cfg)
    if ok:
        log.warning(
            _PAST[d.action] if not dry else f"would {d.action.value}",
            region=d.region,
            target=d.target,
            name=_name(planned),
            reason=d.reason,
        )
    else:
        log.error("action failed", region=d.region, target=d.target, action=done.kind, error=detail)
    return done


def _act(api: Ec2Api, d: Decision, results: Mapping[str, AwsError | None]) -> None:
    """The AWS call of one decision (warnings and notices make none; stops were batched)."""
    if d.action is Action.STOP:
        error = results.get(d.target, AwsError("NotSent", "the stop was not sent"))
        if error is not None:
            raise error
    elif d.action is Action.CANCEL:
        api.cancel_spot_requests(d.region, [d.target])


def _tell_action(
    store: History, planned: Planned, done: Done, now: datetime, *, cause: str, cfg: Config
) -> None:
    """The action's message into the outbox. A failure is told once per target and
    cause (retried quietly each pass); its success is the message that it recovered."""
    subject = f"{done.kind}:{done.target}"
    if not done.ok:
        if store.condition(subject) == cause:
            return
        store.set_condition(subject, cause, now)
    elif store.condition(subject) is not None:
        store.set_condition(subject, None, now)
    found = events.messages([planned], [(done.target, done.kind, done.ok, done.detail)], now, cfg)
    for message in found:
        if message.key.startswith(("long-running:", "backstop:")):
            continue  # told with the region's routine messages
        stop_at = planned.decision.stop_at
        if message.key.startswith("warn:") and stop_at:  # for the warned tag and links
            store.enqueue(replace(message, extra={**message.extra, "stop_at": iso(stop_at)}), now)
            continue
        store.enqueue(message, now)


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


def _stopped_tag(now: datetime, reason: str = IDLE_STOP) -> str:
    """One value for every idle stop of a pass, so one CreateTags tags them all; the
    full reason of each is in the history and in its notification."""
    return f"{iso(now)} by idle-watchdog: {reason}"[:256]


def tell(report: PassReport, store: History, cfg: Config) -> list[Message]:
    """Every pending message, marked delivered at the pass's ``now``: for a shell that
    shows them itself as it goes (the demo prints them; tests). The daemon and
    ``run --once`` use ``outbox.deliver`` through a real notifier instead.

    A dry run tells nothing: its decisions are in the log, and a desktop
    message "stopped" about a machine still running would be a lie.
    """
    if report.dry_run:
        return []
    return deliver(store, lambda _message: True, lambda: report.now).sent
