"""Trace replay in virtual time: the real reducer and policy, every real delay.

For the ``idle-watchdog`` policy the simulation runs what the live system
runs: the agent samples at the trace's interval and reduces with
``activity.reduce``; it writes the heartbeat tag on the cadence of
``agent.publish.due``; the scheduler polls every ``poll_seconds``, sees only
the last heartbeat written, and decides with ``policy.decide_instance``
(warning lead time included); its warnings are remembered as the history
would. The ``work`` labels are never read here, only by ``trace.score``.

Baselines stand for what people use today, each as faithfully as a trace
allows (sources in their docstrings).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from watchdog.agent.publish import Written, due
from watchdog.config import Config
from watchdog.core import heartbeat as hb
from watchdog.core.activity import Thresholds, reduce
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_MANAGED, Instance, SpotRequest
from watchdog.core.policy import Action, decide_instance
from watchdog.core.sample import Sample
from watchdog.sim.trace import Trace, score

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)  # virtual time: any fixed instant will do


@dataclass(frozen=True)
class Outcome:
    """When a policy stopped (and first warned), in seconds from the trace start."""

    stopped_at: float | None
    warned_at: float | None = None


@dataclass(frozen=True)
class Result:
    trace: str
    policy: str
    stopped_at: float | None
    warned_at: float | None
    false_stop: bool | None  # None: the trace has no labels
    waste_seconds: float | None
    waste_usd: float | None

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


Policy = Callable[[Trace, Config], Outcome]


def simulate(trace: Trace, policy: str = "idle-watchdog", cfg: Config | None = None) -> Result:
    cfg = _for_trace(trace, cfg or Config())
    outcome = POLICIES[policy](trace, cfg)
    labelled = any(w is not None for w in trace.work)
    scored = score(trace, outcome.stopped_at) if labelled else None
    return Result(
        trace=trace.name,
        policy=policy,
        stopped_at=outcome.stopped_at,
        warned_at=outcome.warned_at,
        false_stop=scored.false_stop if scored else None,
        waste_seconds=scored.waste_seconds if scored else None,
        waste_usd=scored.waste_usd if scored else None,
    )


def _for_trace(trace: Trace, cfg: Config) -> Config:
    """The trace's own threshold and sample interval, everything else as configured."""
    return replace(
        cfg,
        idle=replace(
            cfg.idle,
            minutes=trace.idle_minutes,
            warn_minutes=min(cfg.idle.warn_minutes, trace.idle_minutes),
        ),
        agent=replace(cfg.agent, sample_seconds=trace.sample_seconds),
    )


def _seconds(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds()


def idle_watchdog(trace: Trace, cfg: Config) -> Outcome:
    """The real thing: agent samples -> heartbeat tag -> scheduler polls -> decide."""
    th = Thresholds.from_config(cfg.agent)
    active_every = timedelta(seconds=cfg.agent.heartbeat_active_seconds)
    idle_every = timedelta(seconds=cfg.agent.heartbeat_idle_seconds)
    poll = timedelta(seconds=cfg.scheduler.poll_seconds)
    header = trace.header.get("instance", {})
    lifecycle = str(header.get("lifecycle", "on-demand"))
    # A spot instance that can be stopped came from a persistent request (one-time
    # spot instances cannot be stopped by anyone), so the simulation assumes one.
    request = (
        SpotRequest("sim", "sir-sim", "active", "persistent", "fulfilled", EPOCH, EPOCH, "i-sim")
        if lifecycle == "spot"
        else None
    )
    instance = Instance(
        "sim",
        "i-sim",
        str(header.get("type", "unknown")),
        "running",
        EPOCH,
        {TAG_MANAGED: "true"},
        lifecycle=lifecycle,
        spot_request_id="sir-sim" if request else "",
    )
    samples = trace.samples(EPOCH)
    end = EPOCH + timedelta(seconds=trace.duration)
    report = None
    written: Written | None = None
    seen = instance  # as the scheduler sees it: with the last heartbeat written
    warned_at: datetime | None = None
    noticed_at: datetime | None = None
    first_warning: datetime | None = None
    next_poll = EPOCH + poll
    index = 0
    while next_poll <= end:
        while index < len(samples) and samples[index].at <= next_poll:
            report = reduce(
                samples[index], th, instance_id="i-sim", previous=report, started_at=EPOCH
            )
            if due(written, report, active_every=active_every, idle_every=idle_every):
                written = Written(report.sampled_at, report.state)
                tag = hb.encode(report.heartbeat())
                seen = replace(instance, tags={**instance.tags, TAG_HEARTBEAT: tag})
            index += 1
        d = decide_instance(
            seen, next_poll, cfg, request=request, warned_at=warned_at, noticed_at=noticed_at
        )
        if d.action is Action.STOP:
            return Outcome(_seconds(next_poll), _seconds(first_warning) if first_warning else None)
        if d.action is Action.WARN:
            warned_at = next_poll
            first_warning = first_warning or next_poll
        elif d.action is Action.NOTICE:
            noticed_at = next_poll
        next_poll += poll
    return Outcome(None, _seconds(first_warning) if first_warning else None)


def _window_stop(
    trace: Trace, period: int, idle: Callable[[Sequence[Sample]], bool], windows: int
) -> Outcome:
    """Stop at the first period boundary after ``windows`` consecutive idle periods."""
    samples = trace.samples(EPOCH)
    step = trace.sample_seconds
    per = max(1, period // step)
    quiet = 0
    for start in range(0, len(samples) - per + 1, per):
        chunk = samples[start : start + per]
        quiet = quiet + 1 if idle(chunk) else 0
        if quiet >= windows:
            return Outcome(_seconds(chunk[-1].at))
    return Outcome(None)


def cpu_alarm(trace: Trace, cfg: Config) -> Outcome:
    """A CloudWatch alarm on ``CPUUtilization`` < 10 % with the EC2 stop action.

    As AWS documents it (CloudWatch User Guide, "Create alarms to stop,
    terminate, reboot, or recover an instance": average CPUUtilization below
    10 % for consecutive periods, action ``arn:aws:automate:REGION:ec2:stop``),
    with basic monitoring's 5-minute periods and as many periods as make the
    idle window. Sees only whole-machine CPU: not the GPU, not Jupyter.
    """
    windows = math.ceil(trace.idle_minutes * 60 / 300)

    def idle(chunk: Sequence[Sample]) -> bool:
        values = [s.cpu_percent for s in chunk if s.cpu_percent is not None]
        return bool(values) and sum(values) / len(values) < 10.0

    return _window_stop(trace, 300, idle, windows)


def jupyter_only(trace: Trace, cfg: Config) -> Outcome:
    """SageMaker notebook instances' auto-stop-idle rule.

    aws-samples/amazon-sagemaker-notebook-instance-lifecycle-config-samples,
    ``scripts/auto-stop-idle/autostop.py``, run from cron every 5 minutes
    with ``--ignore-connections``: idle when every kernel is ``idle`` and its
    ``last_activity`` is older than the timeout; a ``busy`` kernel vetoes;
    with no kernels at all, time counts from the instance's start. Terminals,
    SSH, processes and the GPU are not looked at.
    """
    timeout = timedelta(minutes=trace.idle_minutes)
    for sample in trace.samples(EPOCH)[4::5]:  # cron */5
        kernels = sample.kernels or ()
        if any(k.execution_state != "idle" for k in kernels):
            continue
        last = max((k.last_activity for k in kernels if k.last_activity), default=EPOCH)
        if sample.at - last > timeout:
            return Outcome(_seconds(sample.at))
    return Outcome(None)


def gpu_only(trace: Trace, cfg: Config) -> Outcome:
    """GPU utilisation below 5 % for the whole idle window, as GPU-metric alarms do.

    The CloudWatch agent's ``nvidia_smi_utilization_gpu`` metric with a stop
    alarm (or a cron script around ``nvidia-smi``): every GPU below the
    threshold for every minute of the window. Blind to CPU work, terminals,
    downloads and people.
    """
    windows = trace.idle_minutes * 60 // trace.sample_seconds

    def idle(chunk: Sequence[Sample]) -> bool:
        return all((g.util or 0.0) < 5.0 for s in chunk for g in (s.gpus or ()))

    return _window_stop(trace, trace.sample_seconds, idle, windows)


def never(trace: Trace, cfg: Config) -> Outcome:
    """No watchdog at all: the bill runs until someone remembers."""
    return Outcome(None)


POLICIES: dict[str, Policy] = {
    "idle-watchdog": idle_watchdog,
    "cpu-alarm": cpu_alarm,
    "jupyter-only": jupyter_only,
    "gpu-only": gpu_only,
    "never": never,
}
