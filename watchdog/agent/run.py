"""The agent's shell: sample -> reduce -> publish -> look after the instance.

One ``step`` per ``[agent] sample_seconds``. Besides publishing, the agent
looks after its own instance with the same pure ``decide_instance`` the
scheduler runs, fed its own fresh report:

- on the scheduler's timeline it only *tells*: when the desktop would warn,
  it ``wall``s the logged-in terminals with when and how to keep the machine;
- on the backstop's timeline (``backstop_minutes``, well above the
  scheduler's threshold) it warns the same way and then stops its own
  instance, for when the desktop is asleep or gone. Never terminate; a
  one-time spot instance is never stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import structlog

from watchdog import sdnotify
from watchdog.agent.imds import Identity, Imds, ImdsError
from watchdog.agent.publish import HeartbeatTag, ReportServer
from watchdog.aws.ec2 import AwsError, Ec2Api
from watchdog.config import Config
from watchdog.core import heartbeat as hb
from watchdog.core.activity import ActivityReport, Thresholds, reduce
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_IDLE_MINUTES, TAG_STOPPED, Instance, SpotRequest
from watchdog.core.policy import Action, Decision, decide_instance
from watchdog.core.sample import ProbeError, Sample
from watchdog.core.timeutil import human, iso, parse_iso, utcnow

log = structlog.get_logger("watchdog.agent")

KEEP_HINT = "To keep it running: idle-watchdog keep --for 2h"


class SampleSource(Protocol):
    def read(self, now: datetime) -> Sample: ...


class Sampler:
    """Reads every probe into one ``Sample``; a probe that fails is unknown, never idle."""

    def __init__(self, cfg: Config, *, gpu: Any = None, jupyter: Any = None, system: Any = None):
        if gpu is None:
            from watchdog.agent.probes.gpu import auto_probe

            gpu = auto_probe()
        if jupyter is None:
            from watchdog.agent.probes.jupyter import JupyterProbe

            jupyter = JupyterProbe(cfg.agent.jupyter_runtime_dirs)
        if system is None:
            from watchdog.agent.probes.system import SystemProbe

            system = SystemProbe(ignore=cfg.agent.ignore_processes)
        self.gpu, self.jupyter, self.system = gpu, jupyter, system

    def read(self, now: datetime) -> Sample:
        gpus = _guard("gpu", self.gpu.read)
        jupyter = _guard("jupyter", self.jupyter.read)
        system = _guard("system", self.system.read)
        kernels, terminals = jupyter if jupyter is not None else (None, None)
        return Sample(
            at=now,
            gpus=gpus,
            kernels=kernels,
            terminals=terminals,
            ssh=system.ssh if system else None,
            processes=system.processes if system else None,
            cpu_percent=system.cpu_percent if system else None,
            net=system.net if system else None,
            disk=system.disk if system else None,
        )


def _guard(name: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ProbeError as exc:
        log.warning("probe unknown", probe=name, error=str(exc))
    except Exception:  # a probe's bug must not take the agent down
        log.exception("probe failed", probe=name)
    return None


@dataclass
class AgentState:
    """What survives an agent restart (``$STATE_DIRECTORY/agent.json``)."""

    last_active_at: datetime | None = None
    told_at: datetime | None = None  # last wall on the scheduler's timeline
    backstop_warned_at: datetime | None = None

    @classmethod
    def load(cls, path: Path) -> AgentState:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                **{
                    k: parse_iso(v) if v else None
                    for k, v in data.items()
                    if k in cls.__dataclass_fields__
                }
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("agent state unreadable; starting fresh", path=str(path), error=str(exc))
            return cls()

    def save(self, path: Path) -> None:
        data = {k: iso(v) if v else None for k, v in self.__dict__.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)


def wall(message: str) -> None:
    """Write ``message`` to every logged-in terminal."""
    if shutil.which("wall") is None:
        log.warning("wall not found; message not shown on terminals", message=message)
        return
    subprocess.run(["wall"], input=message, text=True, check=False, timeout=10)


class Agent:
    def __init__(
        self,
        cfg: Config,
        sampler: SampleSource,
        *,
        identity: Identity | None,
        ec2: Ec2Api | None,
        state_path: Path,
        started_at: datetime,
        tell: Callable[[str], None] = wall,
        server: ReportServer | None = None,
        imds: Imds | None = None,
    ):
        self.cfg, self.sampler, self.identity, self.ec2 = cfg, sampler, identity, ec2
        self.th = Thresholds.from_config(cfg.agent)
        self.state_path, self.tell, self.server, self.imds = state_path, tell, server, imds
        self._notice_seen = ""
        self.state = AgentState.load(state_path)
        self.started_at = started_at
        self.report: ActivityReport | None = None
        self.heartbeat = (
            HeartbeatTag(
                ec2,
                identity.region,
                identity.instance_id,
                active_every=timedelta(seconds=cfg.agent.heartbeat_active_seconds),
                idle_every=timedelta(seconds=cfg.agent.heartbeat_idle_seconds),
            )
            if ec2 is not None and identity is not None
            else None
        )

    @property
    def instance_id(self) -> str:
        return self.identity.instance_id if self.identity else "local"

    def observe(self, sample: Sample) -> ActivityReport:
        """Fold a sample into the running report (the restored state seeds the first)."""
        previous = self.report
        if previous is None and self.state.last_active_at is not None:
            previous = ActivityReport(
                self.instance_id, sample.at, "idle", min(self.state.last_active_at, sample.at)
            )
        self.report = reduce(
            sample,
            self.th,
            instance_id=self.instance_id,
            previous=previous,
            started_at=self.started_at,
        )
        self.state.last_active_at = self.report.last_active_at
        return self.report

    def step(self, now: datetime) -> ActivityReport:
        report = self.observe(self.sampler.read(now))
        self.publish(report)
        self.spot_notice()
        self.look_after(report, now)
        self.state.save(self.state_path)
        return report

    def publish(self, report: ActivityReport, *, force: bool = False) -> None:
        log.info(
            "report",
            state=report.state,
            reasons=list(report.reasons),
            unknown=list(report.unknown),
            last_active_at=iso(report.last_active_at),
        )
        if self.server is not None:
            self.server.update(report)
        if self.heartbeat is not None:
            self.heartbeat.publish(report, force=force)

    def spot_notice(self) -> None:
        """Tell terminals once when AWS announces it will interrupt this spot instance."""
        if self.imds is None or self.identity is None or self.identity.lifecycle != "spot":
            return
        try:
            notice = self.imds.spot_notice()
        except ImdsError as exc:
            log.warning("spot notice unreadable", error=str(exc))
            return
        if not notice or str(notice) == self._notice_seen:
            return
        self._notice_seen = str(notice)
        action, when = notice.get("action", "interrupt"), notice.get("time", "soon")
        text = f"AWS will {action} this spot instance at {when} (a spot interruption)."
        log.warning("spot interruption notice", action=action, time=when)
        try:
            self.tell(f"idle-watchdog: {text} Save your work now.\n")
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not tell terminals", error=str(exc))

    def look_after(self, report: ActivityReport, now: datetime) -> None:
        """Tell terminals before any stop; stop as the backstop. Never raises."""
        if self.ec2 is None or self.identity is None:
            return
        try:
            me = self.ec2.describe(self.identity.region, self.identity.instance_id)
            request = (
                self.ec2.spot_request(me.region, me.id)
                if me is not None and me.lifecycle == "spot"
                else None
            )
        except AwsError as exc:
            log.warning("cannot read own instance; backstop skipped", error=str(exc))
            return
        if me is None:
            return
        me = replace(me, tags={**me.tags, TAG_HEARTBEAT: hb.encode(report.heartbeat())})
        scheduler = decide_instance(
            me, now, self.cfg, request=request, warned_at=self.state.told_at
        )
        if scheduler.action is Action.WARN and scheduler.stop_at:
            self._tell(scheduler, now, "the idle-watchdog scheduler will stop it")
            self.state.told_at = now
        if scheduler.action is Action.NOTICE or self.cfg.agent.backstop_minutes <= 0:
            return  # a bad tag or an unknown signal: the backstop stays out of it too
        self._backstop(me, request, now)

    def backstop_minutes(self, me: Instance) -> int:
        """Well after the scheduler would have stopped it: twice its threshold at least."""
        tagged = me.tags.get(TAG_IDLE_MINUTES, "").strip()
        threshold = int(tagged) if tagged else self.cfg.idle.minutes  # valid: policy checked
        return max(self.cfg.agent.backstop_minutes, 2 * threshold)

    def _backstop(self, me: Instance, request: SpotRequest | None, now: datetime) -> None:
        ec2 = self.ec2
        if ec2 is None:
            return
        minutes = self.backstop_minutes(me)
        tags = {k: v for k, v in me.tags.items() if k != TAG_IDLE_MINUTES}
        lead = min(self.cfg.idle.warn_minutes, minutes)
        cfg = replace(self.cfg, idle=replace(self.cfg.idle, minutes=minutes, warn_minutes=lead))
        d = decide_instance(
            replace(me, tags=tags),
            now,
            cfg,
            request=request,
            warned_at=self.state.backstop_warned_at,
        )
        if d.action is Action.WARN and d.stop_at:
            self._tell(d, now, "no scheduler has stopped it, so the agent will stop it")
            self.state.backstop_warned_at = now
        elif d.action is Action.STOP:
            log.warning("backstop: stopping own instance", reason=d.reason)
            try:
                ec2.stop(me.region, me.id, hibernate=d.hibernate)
            except AwsError as exc:
                log.error("backstop stop failed", error=str(exc))
                return
            try:
                stamp = f"{iso(now)} by idle-watchdog agent backstop: {d.reason}"
                ec2.tag(me.region, me.id, {TAG_STOPPED: stamp[:256]})
            except AwsError as exc:
                log.warning("stopped, but the stopped tag was not written", error=str(exc))

    def _tell(self, d: Decision, now: datetime, who: str) -> None:
        idle = d.reason.split(";", 1)[0]
        at = d.stop_at or now
        text = f"this instance has been {idle}; {who} at {iso(at)} (in {human(at - now)})."
        log.warning("telling logged-in users", message=text)
        try:
            self.tell(f"idle-watchdog: {text}\n{KEEP_HINT}\n")
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not tell terminals", error=str(exc))

    @staticmethod
    def _wait(stop: threading.Event, seconds: float) -> None:
        """Sleep until the next sample, still pinging systemd's watchdog if it wants it
        more often than we sample (``WatchdogSec`` below twice ``sample_seconds``)."""
        ping = sdnotify.watchdog_interval()
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if stop.wait(min(left, ping) if ping else left) or not ping:
                continue
            sdnotify.notify("WATCHDOG=1")

    def serve(self, stop: threading.Event) -> None:
        """The live loop under systemd: READY once set up, then a sample and WATCHDOG
        every interval.

        The first sample too comes a full interval after the probes took their
        baseline (when they were built): over the few milliseconds until an
        immediate first read, one 10 ms scheduler tick of any process reads as
        tens of percent of a core, and the first report said "active"."""
        interval = self.cfg.agent.sample_seconds
        if self.server is not None:
            self.server.start()
        sdnotify.notify("READY=1")
        while True:
            self._wait(stop, interval)
            if stop.is_set():
                break
            try:
                report = self.step(utcnow())
                sdnotify.notify(
                    "WATCHDOG=1",
                    f"STATUS={report.state}: {', '.join(report.reasons) or 'no activity'}",
                )
            except Exception:  # the loop outlives a bad sample
                log.exception("sample failed")
        if self.server is not None:
            self.server.stop()


def state_path() -> Path:
    """``$STATE_DIRECTORY`` under systemd, else the desktop's state directory."""
    from watchdog import paths

    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return (Path(base) if base else paths.state_dir()) / "agent.json"


def boot_time() -> datetime:
    import psutil

    return datetime.fromtimestamp(psutil.boot_time(), tz=timezone.utc)
