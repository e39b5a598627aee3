"""The decision, one situation at a time, with the clock moved by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from watchdog.config import Config, IdleConfig, SchedulerConfig, SpotConfig
from watchdog.core import heartbeat as hb
from watchdog.core.fleet import (
    TAG_EXEMPT,
    TAG_HEARTBEAT,
    TAG_IDLE_MINUTES,
    TAG_KEEP_UNTIL,
    TAG_MANAGED,
    Instance,
    SpotRequest,
)
from watchdog.core.policy import (
    MAX_TAG_MINUTES,
    OWNER_TAGS,
    Action,
    decide_instance,
    decide_request,
    plan,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

START = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)  # the instance's last start
IDLE = START + timedelta(hours=1)  # the last moment anything counted as activity
M = timedelta(minutes=1)
NONE, WARN, NOTICE = Action.NONE, Action.WARN, Action.NOTICE
STOP, CANCEL = Action.STOP, Action.CANCEL


def cfg(
    minutes: int = 30,
    warn: int = 10,
    silent: int = 15,
    *,
    hibernate: bool = False,
    cancel: bool = True,
    max_open: int = 60,
) -> Config:
    return Config(
        idle=IdleConfig(minutes=minutes, warn_minutes=warn),
        scheduler=SchedulerConfig(agent_silent_minutes=silent, hibernate=hibernate),
        spot=SpotConfig(cancel_orphaned=cancel, max_open_minutes=max_open),
    )


CFG = cfg()


def beat(at: datetime, active: bool | None = False, last: datetime | None = None) -> str:
    return hb.encode(hb.Heartbeat(at, active, at if last is None else last, ("test",)))


def inst(
    tags: Mapping[str, str] | None = None,
    *,
    state: str = "running",
    lifecycle: str = "on-demand",
    hibernation: bool = False,
    launch: datetime | None = START,
) -> Instance:
    return Instance(
        region="us-east-1",
        id="i-0123456789abcdef0",
        type="g5.xlarge",
        state=state,
        launch_time=launch,
        tags={TAG_MANAGED: "true", **(tags or {})},
        lifecycle=lifecycle,
        platform="Linux/UNIX",
        spot_request_id="sir-1" if lifecycle == "spot" else "",
        hibernation_configured=hibernation,
    )


def idle_at(
    now: datetime,
    tags: Mapping[str, str] | None = None,
    *,
    state: str = "running",
    lifecycle: str = "on-demand",
    hibernation: bool = False,
) -> Instance:
    """A managed instance whose agent, 30 s ago, reported it idle since IDLE."""
    # The agent cannot have seen activity after it sampled: decode refuses such a heartbeat.
    assert now - M / 2 >= IDLE, "idle_at needs now >= IDLE + 30s"
    beat_tag = {TAG_HEARTBEAT: beat(now - M / 2, False, IDLE)}
    return inst(
        {**beat_tag, **(tags or {})}, state=state, lifecycle=lifecycle, hibernation=hibernation
    )


def spot_request(
    rtype: str = "persistent",
    *,
    state: str = "open",
    code: str = "instance-terminated-by-user",
    since: datetime | None = IDLE,
    tags: Mapping[str, str] | None = None,
    created: datetime | None = START,
) -> SpotRequest:
    return SpotRequest(
        region="us-east-1",
        id="sir-1",
        state=state,
        type=rtype,
        status_code=code,
        create_time=created,
        status_time=since,
        instance_id="" if state == "open" else "i-0123456789abcdef0",
        instance_type="g5.xlarge",
        tags=tags or {},
    )


# --- who is never touched ------------------------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "stopping", "stopped", "shutting-down", "terminated"])
def test_not_running_is_left_alone(state: str) -> None:
    now = IDLE + timedelta(hours=5)
    decision = decide_instance(idle_at(now, state=state), now, CFG, warned_at=now - 20 * M)
    assert decision.action is NONE
    assert decision.reason == state


# Exactly "true": the IAM policy's condition that allows StopInstances matches only that.
@pytest.mark.parametrize("managed", [None, "false", "yes", "1", "", "TRUE", " true"])
def test_unmanaged_is_never_stopped(managed: str | None) -> None:
    now = IDLE + timedelta(hours=5)
    instance = idle_at(now)
    tags = dict(instance.tags)
    del tags[TAG_MANAGED]
    if managed is not None:
        tags[TAG_MANAGED] = managed
    instance = Instance(instance.region, instance.id, instance.type, "running", START, tags)
    decision = decide_instance(instance, now, CFG, warned_at=now - 20 * M)
    assert decision.action is NONE
    assert decision.reason == "unmanaged: no idle-watchdog:managed=true tag"


# The contract: the *presence* of idle-watchdog:exempt means "never stop". EC2 consoles let a
# person add a tag with an empty value, so "" must exempt too.
@pytest.mark.parametrize("value", ["true", "yes", "1", "until friday", "True", ""])
def test_exempt_is_never_stopped(value: str) -> None:
    now = IDLE + timedelta(hours=5)
    decision = decide_instance(idle_at(now, {TAG_EXEMPT: value}), now, CFG, warned_at=now - 20 * M)
    assert decision.action is NONE
    assert decision.reason == "exempt: idle-watchdog:exempt tag"


@pytest.mark.parametrize("value", ["false", "FALSE"])
def test_exempt_false_is_not_exempt(value: str) -> None:
    now = IDLE + 30 * M
    decision = decide_instance(idle_at(now, {TAG_EXEMPT: value}), now, CFG, warned_at=IDLE)
    assert decision.action is STOP


# --- keep-until ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "until", ["2025-06-01T12:00:00Z", "2025-06-01T14:00:00+02:00", "2025-06-01T12:00:00"]
)
def test_kept_until_a_future_time(until: str) -> None:
    now = IDLE + timedelta(hours=2, minutes=59)  # 11:59
    decision = decide_instance(
        idle_at(now, {TAG_KEEP_UNTIL: until}), now, CFG, warned_at=IDLE + 20 * M
    )
    assert decision.action is NONE
    assert "kept until 2025-06-01T12:00:00Z" in decision.reason


def test_expired_keep_needs_a_new_warning() -> None:
    keep = {TAG_KEEP_UNTIL: "2025-06-01T10:25:00Z"}  # snoozed at IDLE+25m for an hour
    warned = IDLE + 20 * M  # the warning before the snooze
    assert (
        decide_instance(idle_at(IDLE + 60 * M, keep), IDLE + 60 * M, CFG, warned_at=warned).action
        is NONE
    )
    after = IDLE + 86 * M
    first = decide_instance(idle_at(after, keep), after, CFG, warned_at=warned)
    assert first.action is WARN
    assert first.stop_at == after + 10 * M
    assert first.episode == IDLE + 85 * M
    early = after + 9 * M
    assert decide_instance(idle_at(early, keep), early, CFG, warned_at=after).action is NONE
    due = after + 10 * M
    assert decide_instance(idle_at(due, keep), due, CFG, warned_at=after).action is STOP


@pytest.mark.parametrize(
    "until",
    [
        "tomorrow",
        "",
        "2025-13-01T00:00:00Z",
        "1717243200",
        "9999-12-31T23:59:59-05:00",  # 10000-01-01T04:59:59Z in UTC: past datetime.max
        "0001-01-01T00:00:00+01:00",  # before datetime.min in UTC
    ],
)
def test_bad_keep_until_notices_and_never_stops(until: str) -> None:
    now = IDLE + timedelta(hours=5)
    instance = idle_at(now, {TAG_KEEP_UNTIL: until})
    first = decide_instance(instance, now, CFG, warned_at=IDLE)
    assert first.action is NOTICE
    assert "keep-until" in first.reason
    assert first.stop_at is None
    assert first.episode == START
    later = now + 20 * M
    assert decide_instance(instance, later, CFG, noticed_at=now).action is NONE
    # a stop warning is not a notice: it does not silence one
    assert decide_instance(instance, later, CFG, warned_at=now).action is NOTICE


# --- per-instance threshold ----------------------------------------------------------------


def test_idle_minutes_tag_overrides_the_config() -> None:
    tags = {TAG_IDLE_MINUTES: "120"}
    at_60 = decide_instance(idle_at(IDLE + 60 * M, tags), IDLE + 60 * M, CFG)
    assert at_60.action is NONE
    assert at_60.stop_at == IDLE + 120 * M
    assert decide_instance(idle_at(IDLE + 110 * M, tags), IDLE + 110 * M, CFG).action is WARN
    stop = decide_instance(
        idle_at(IDLE + 120 * M, tags), IDLE + 120 * M, CFG, warned_at=IDLE + 110 * M
    )
    assert stop.action is STOP
    assert "threshold 120m" in stop.reason


def test_short_idle_minutes_tag_caps_the_lead_time() -> None:
    tags = {TAG_IDLE_MINUTES: "5"}  # shorter than warn_minutes = 10
    seen = IDLE + M / 2  # the first scan after the agent's first idle sample (at IDLE)
    first = decide_instance(idle_at(seen, tags), seen, CFG)
    assert first.action is WARN
    assert "threshold 5m" in first.reason
    assert first.stop_at == seen + 5 * M  # the lead is the 5 minutes, not warn_minutes' 10
    almost = seen + 5 * M - timedelta(seconds=1)
    assert decide_instance(idle_at(almost, tags), almost, CFG, warned_at=seen).action is NONE
    due = seen + 5 * M
    stop = decide_instance(idle_at(due, tags), due, CFG, warned_at=seen)
    assert stop.action is STOP
    assert "threshold 5m" in stop.reason


def test_idle_minutes_tag_up_to_a_year() -> None:
    tags = {TAG_IDLE_MINUTES: str(MAX_TAG_MINUTES)}
    now = IDLE + timedelta(days=300)
    decision = decide_instance(idle_at(now, tags), now, CFG)
    assert decision.action is NONE
    assert decision.stop_at == IDLE + MAX_TAG_MINUTES * M


@pytest.mark.parametrize(
    "minutes",
    [
        "",
        "abc",
        "0",
        "-5",
        "1.5",
        "30m",
        "²",
        "三十",
        "٣٠",  # Arabic-Indic digits: int() reads them, the tag does not
        str(MAX_TAG_MINUTES + 1),  # more than a year
        "99999999999",  # about 190,000 years
    ],
)
def test_bad_idle_minutes_tag_notices_and_never_stops(minutes: str) -> None:
    now = IDLE + timedelta(hours=5)
    instance = idle_at(now, {TAG_IDLE_MINUTES: minutes})
    first = decide_instance(instance, now, CFG, warned_at=IDLE)
    assert first.action is NOTICE
    assert "idle-minutes" in first.reason
    assert first.stop_at is None
    later = now + 20 * M
    assert decide_instance(instance, later, CFG, noticed_at=now).action is NONE
    assert decide_instance(instance, later, CFG, warned_at=now).action is NOTICE


# --- the agent -----------------------------------------------------------------------------


def test_no_heartbeat_yet_waits_then_notices() -> None:
    instance = inst()
    waiting = decide_instance(instance, START + 14 * M, CFG)
    assert waiting.action is NONE
    assert "waiting" in waiting.reason
    silent = decide_instance(instance, START + 15 * M, CFG)
    assert silent.action is NOTICE
    assert "no agent heartbeat" in silent.reason
    assert silent.episode == START
    assert silent.stop_at is None
    later = START + timedelta(hours=6)
    assert decide_instance(instance, later, CFG, noticed_at=START + 15 * M).action is NONE
    assert decide_instance(instance, later, CFG, warned_at=START + 15 * M).action is NOTICE


def test_heartbeat_from_before_the_last_start_is_ignored() -> None:
    old = {TAG_HEARTBEAT: beat(START - M, False, START - timedelta(days=2))}
    assert decide_instance(inst(old), START + 5 * M, CFG).action is NONE
    decision = decide_instance(inst(old), START + timedelta(hours=3), CFG)
    assert decision.action is NOTICE
    assert "no agent heartbeat" in decision.reason


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "garbage",
        "v2 s=1 a=0 l=0",
        "v1 s=1748770000 a=0",
        "v1 s=² a=0 l=0",
        "v1 s=1748770000 a=0 l=1748770001",  # last activity after the sample
    ],
)
def test_garbled_heartbeat_notices_and_never_stops(raw: str) -> None:
    now = IDLE + timedelta(hours=5)
    first = decide_instance(inst({TAG_HEARTBEAT: raw}), now, CFG, warned_at=IDLE)
    assert first.action is NOTICE
    assert "heartbeat tag unreadable" in first.reason
    assert first.stop_at is None
    again = decide_instance(inst({TAG_HEARTBEAT: raw}), now + M, CFG, noticed_at=now)
    assert again.action is NONE
    warned = decide_instance(inst({TAG_HEARTBEAT: raw}), now + M, CFG, warned_at=now)
    assert warned.action is NOTICE


@pytest.mark.parametrize("active", [True, False])
def test_silent_agent_notices_once(active: bool) -> None:
    last_beat = IDLE + 5 * M
    instance = inst({TAG_HEARTBEAT: beat(last_beat, active, last_beat)})
    assert decide_instance(instance, last_beat + 15 * M, CFG).action is NONE
    first = decide_instance(instance, last_beat + 16 * M, CFG)
    assert first.action is NOTICE
    assert "agent silent" in first.reason
    assert first.episode == last_beat
    assert first.stop_at is None
    for hours in (1, 5, 48):
        now = last_beat + timedelta(hours=hours)
        again = decide_instance(instance, now, CFG, noticed_at=last_beat + 16 * M)
        assert again.action is NONE
        warned = decide_instance(instance, now, CFG, warned_at=last_beat + 16 * M)
        assert warned.action is NOTICE


def test_unknown_activity_notices_and_never_stops() -> None:
    now = IDLE + timedelta(hours=5)
    instance = inst({TAG_HEARTBEAT: beat(now - M, None, IDLE)})
    first = decide_instance(instance, now, CFG, warned_at=IDLE)
    assert first.action is NOTICE
    assert "activity unknown" in first.reason
    assert first.episode == IDLE
    assert first.stop_at is None
    assert decide_instance(instance, now + 5 * M, CFG, noticed_at=now).action is NONE
    assert decide_instance(instance, now + 5 * M, CFG, warned_at=now).action is NOTICE


def test_active_is_left_alone() -> None:
    now = IDLE + timedelta(hours=5)
    instance = inst({TAG_HEARTBEAT: beat(now - M, True, IDLE)})
    decision = decide_instance(instance, now, CFG, warned_at=now - timedelta(hours=1))
    assert decision.action is NONE
    assert decision.reason.startswith("active")


# --- the idle clock ------------------------------------------------------------------------


def test_idle_below_the_warn_point() -> None:
    now = IDLE + 19 * M
    decision = decide_instance(idle_at(now), now, CFG)
    assert decision.action is NONE
    assert decision.idle_since == IDLE
    assert decision.stop_at == IDLE + 30 * M
    assert "2025-06-01T09:30:00Z" in decision.reason


def test_warn_point_then_stop() -> None:
    warn_at = IDLE + 20 * M
    warning = decide_instance(idle_at(warn_at), warn_at, CFG)
    assert warning.action is WARN
    assert warning.stop_at == IDLE + 30 * M
    assert warning.episode == IDLE
    assert (
        decide_instance(idle_at(warn_at + 5 * M), warn_at + 5 * M, CFG, warned_at=warn_at).action
        is NONE
    )
    almost = IDLE + 30 * M - timedelta(seconds=1)
    assert decide_instance(idle_at(almost), almost, CFG, warned_at=warn_at).action is NONE
    stop = decide_instance(idle_at(IDLE + 30 * M), IDLE + 30 * M, CFG, warned_at=warn_at)
    assert stop.action is STOP
    assert stop.hibernate is False


def test_found_far_past_the_threshold_warns_first() -> None:
    found = IDLE + timedelta(hours=3)  # the laptop slept
    first = decide_instance(idle_at(found), found, CFG)
    assert first.action is WARN
    assert first.stop_at == found + 10 * M
    early = found + 9 * M
    assert decide_instance(idle_at(early), early, CFG, warned_at=found).action is NONE
    late = found + 10 * M
    assert decide_instance(idle_at(late), late, CFG, warned_at=found).action is STOP


def test_no_warning_step_stops_at_the_threshold() -> None:
    no_warn = cfg(warn=0)
    before = IDLE + 29 * M
    assert decide_instance(idle_at(before), before, no_warn).action is NONE
    due = IDLE + 30 * M
    assert decide_instance(idle_at(due), due, no_warn).action is STOP


def test_warning_from_an_earlier_idle_episode_does_not_count() -> None:
    now = IDLE + timedelta(hours=2)
    decision = decide_instance(idle_at(now), now, CFG, warned_at=IDLE - 5 * M)
    assert decision.action is WARN
    assert decision.stop_at == now + 10 * M


def test_idle_clock_starts_at_the_last_start() -> None:
    # last activity before the instance was (re)started: idle since the start
    now = START + 25 * M
    instance = inst({TAG_HEARTBEAT: beat(now - M, False, START - timedelta(days=1))})
    decision = decide_instance(instance, now, CFG)
    assert decision.action is WARN
    assert decision.idle_since == START
    assert decision.stop_at == START + 35 * M


@pytest.mark.parametrize("kind", ["silent", "unknown"])
def test_a_not_stopping_warning_is_not_a_stop_warning(kind: str) -> None:
    # The person is told "agent silent (or activity unknown); not stopping" at IDLE+21m.
    # When the agent reports idle again, that warning must not count as the stop warning.
    last_beat = IDLE + 5 * M
    told = IDLE + 21 * M
    raw = beat(last_beat, False, IDLE) if kind == "silent" else beat(told - M, None, IDLE)
    told_decision = decide_instance(inst({TAG_HEARTBEAT: raw}), told, CFG)
    assert told_decision.action is NOTICE
    assert "not stopping" in told_decision.reason
    back = IDLE + 50 * M  # past the threshold, idle since IDLE: the notice is in this episode
    decision = decide_instance(idle_at(back), back, CFG, noticed_at=told)
    assert decision.action is WARN
    assert decision.episode == IDLE
    assert decision.stop_at == back + 10 * M
    # what a real stop warning given at the same moment would have done
    warned = decide_instance(idle_at(back), back, CFG, warned_at=told, noticed_at=told)
    assert warned.action is STOP


# --- spot and hibernation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_", [None, spot_request("one-time", state="active", code="fulfilled")]
)
def test_one_time_spot_is_never_stopped(request_: SpotRequest | None) -> None:
    before = IDLE + 25 * M
    early = decide_instance(idle_at(before, lifecycle="spot"), before, CFG, request=request_)
    assert early.action is NONE
    assert "one-time spot" in early.reason
    now = IDLE + timedelta(hours=5)
    instance = idle_at(now, lifecycle="spot")
    first = decide_instance(instance, now, CFG, request=request_, warned_at=IDLE)
    assert first.action is NOTICE
    assert "one-time spot" in first.reason
    assert first.stop_at is None
    assert first.episode == IDLE
    for later in (now + 10 * M, now + timedelta(days=2)):
        spot = idle_at(later, lifecycle="spot")
        again = decide_instance(spot, later, CFG, request=request_, noticed_at=now)
        assert again.action is NONE
        warned = decide_instance(spot, later, CFG, request=request_, warned_at=now)
        assert warned.action is NOTICE


def test_persistent_spot_can_be_stopped() -> None:
    request = spot_request("persistent", state="active", code="fulfilled")
    now = IDLE + 30 * M
    decision = decide_instance(
        idle_at(now, lifecycle="spot"), now, CFG, request=request, warned_at=IDLE + 20 * M
    )
    assert decision.action is STOP


@pytest.mark.parametrize(
    ("asked", "configured", "hibernate"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_hibernate_only_when_asked_and_supported(
    asked: bool, configured: bool, hibernate: bool
) -> None:
    now = IDLE + 30 * M
    decision = decide_instance(
        idle_at(now, hibernation=configured), now, cfg(hibernate=asked), warned_at=IDLE + 20 * M
    )
    assert decision.action is STOP
    assert decision.hibernate is hibernate


# --- spot requests -------------------------------------------------------------------------


def test_reopened_persistent_request_is_cancelled_at_once() -> None:
    decision = decide_request(spot_request(since=IDLE), IDLE + M, CFG)
    assert decision.action is CANCEL
    assert decision.target == "sir-1"
    assert "terminated" in decision.reason


@pytest.mark.parametrize(
    ("rtype", "code"),
    [
        ("one-time", "capacity-not-available"),
        ("persistent", "pending-fulfillment"),
        ("one-time", "price-too-low"),
    ],
)
def test_request_open_too_long_is_cancelled(rtype: str, code: str) -> None:
    request = spot_request(rtype, state="open", code=code, since=IDLE)
    waiting = decide_request(request, IDLE + 59 * M, CFG)
    assert waiting.action is NONE
    assert waiting.stop_at == IDLE + 60 * M
    assert decide_request(request, IDLE + 60 * M, CFG).action is CANCEL
    assert decide_request(request, IDLE + timedelta(days=3), CFG).action is CANCEL


def test_request_open_time_falls_back_to_creation() -> None:
    request = spot_request(
        "one-time", state="open", code="pending-fulfillment", since=None, created=IDLE
    )
    assert decide_request(request, IDLE + 59 * M, CFG).action is NONE
    assert decide_request(request, IDLE + 60 * M, CFG).action is CANCEL


@pytest.mark.parametrize("state", ["active", "disabled", "closed", "cancelled", "failed"])
def test_request_not_open_is_left_alone(state: str) -> None:
    request = spot_request(
        "persistent", state=state, code="instance-terminated-by-user", since=START
    )
    assert decide_request(request, START + timedelta(days=3), CFG).action is NONE


@pytest.mark.parametrize("value", ["true", "yes", ""])
def test_exempt_request_is_left_alone(value: str) -> None:
    request = spot_request(tags={TAG_EXEMPT: value})
    decision = decide_request(request, IDLE + timedelta(days=3), CFG)
    assert decision.action is NONE


@pytest.mark.parametrize("tag", OWNER_TAGS)
def test_fleet_owned_request_is_left_alone(tag: str) -> None:
    request = spot_request(tags={tag: "fleet-123"})
    assert decide_request(request, IDLE + timedelta(days=3), CFG).action is NONE


def test_orphan_only_noticed_when_cancelling_is_off() -> None:
    off = cfg(cancel=False)
    request = spot_request(since=IDLE)
    first = decide_request(request, IDLE + M, off)
    assert first.action is NOTICE
    assert "cancel_orphaned" in first.reason
    assert first.episode == IDLE
    later = IDLE + timedelta(days=2)
    assert decide_request(request, later, off, noticed_at=IDLE + M).action is NONE
    # a notice about an earlier time it was open does not cover this one
    assert decide_request(request, IDLE + M, off, noticed_at=IDLE - M).action is NOTICE


def test_a_heartbeat_from_the_future_is_a_notice_never_a_stop() -> None:
    ahead = IDLE + 180 * M
    tags = {TAG_HEARTBEAT: beat(ahead, False, IDLE)}
    decision = decide_instance(inst(tags), IDLE + 60 * M, CFG)
    assert decision.action is NOTICE and "in the future" in decision.reason


def test_the_stop_waits_for_a_heartbeat_newer_than_the_warning() -> None:
    """A write that failed after work resumed must not let a stale idle report stop it."""
    warned = IDLE + 20 * M
    stale = {TAG_HEARTBEAT: beat(warned - M, False, IDLE)}
    waiting = decide_instance(inst(stale), warned + 10 * M, CFG, warned_at=warned)
    assert waiting.action is NONE and "newer than the warning" in waiting.reason
    fresh = {TAG_HEARTBEAT: beat(warned + M, False, IDLE)}
    assert decide_instance(inst(fresh), warned + 10 * M, CFG, warned_at=warned).action is STOP


# --- boundaries, to the second ---------------------------------------------------------------


def test_the_waiting_decision_keeps_when_and_why_it_would_stop() -> None:
    """The pass shows (and the history records) the stop time while it waits."""
    warned = IDLE + 20 * M
    stale = {TAG_HEARTBEAT: beat(warned - M, False, IDLE)}
    waiting = decide_instance(inst(stale), warned + 10 * M, CFG, warned_at=warned)
    assert waiting.action is NONE
    assert waiting.reason == (
        "idle for 30m (threshold 30m); waiting for a heartbeat newer than the warning "
        "before stopping"
    )
    assert (waiting.idle_since, waiting.stop_at, waiting.episode) == (IDLE, IDLE + 30 * M, IDLE)


def test_a_heartbeat_sampled_at_the_very_second_of_the_warning_confirms_the_stop() -> None:
    warned = IDLE + 20 * M
    at_warning = {TAG_HEARTBEAT: beat(warned, False, IDLE)}
    stop = decide_instance(inst(at_warning), warned + 10 * M, CFG, warned_at=warned)
    assert stop.action is STOP
    assert stop.reason == "idle for 30m (threshold 30m)"


def test_idle_minutes_tag_of_one_minute_is_accepted() -> None:
    tags = {TAG_IDLE_MINUTES: "1"}
    seen = IDLE + M / 2
    first = decide_instance(idle_at(seen, tags), seen, CFG)
    assert first.action is WARN
    assert first.reason == "idle for 30s (threshold 1m); stopping at 2025-06-01T09:01:30Z"
    assert first.stop_at == seen + M


def test_keep_until_exactly_now_has_expired() -> None:
    now = IDLE + 60 * M
    kept = decide_instance(
        idle_at(now, {TAG_KEEP_UNTIL: "2025-06-01T10:00:01Z"}), now, CFG, warned_at=IDLE
    )
    assert kept.action is NONE
    assert kept.reason == "kept until 2025-06-01T10:00:01Z"
    assert kept.stop_at is None
    expired = decide_instance(
        idle_at(now, {TAG_KEEP_UNTIL: "2025-06-01T10:00:00Z"}), now, CFG, warned_at=IDLE
    )
    assert expired.action is WARN  # the warning before the keep does not count
    assert (expired.episode, expired.stop_at) == (now, now + 10 * M)


def test_a_warning_given_at_the_very_start_of_the_episode_counts() -> None:
    now = IDLE + 30 * M
    assert decide_instance(idle_at(now), now, CFG, warned_at=IDLE).action is STOP
    early = IDLE - timedelta(seconds=1)
    assert decide_instance(idle_at(now), now, CFG, warned_at=early).action is WARN


def test_a_notice_given_at_the_very_start_of_the_situation_counts() -> None:
    now = START + timedelta(hours=2)
    instance = inst()  # no heartbeat since the start
    assert decide_instance(instance, now, CFG, noticed_at=START).action is NONE
    before = START - timedelta(seconds=1)
    again = decide_instance(instance, now, CFG, noticed_at=before)
    assert again.action is NOTICE
    assert again.reason == "no agent heartbeat in 2h00m since start; not stopping"


def test_a_heartbeat_exactly_at_the_clock_skew_allowance_is_believed() -> None:
    now = IDLE + 60 * M
    within = decide_instance(inst({TAG_HEARTBEAT: beat(now + 2 * M, False, IDLE)}), now, CFG)
    assert within.action is WARN
    beyond = now + 2 * M + timedelta(seconds=1)
    ahead = decide_instance(inst({TAG_HEARTBEAT: beat(beyond, False, IDLE)}), now, CFG)
    assert ahead.action is NOTICE
    assert ahead.reason == "heartbeat dated 2m in the future (a clock is wrong); not stopping"
    assert ahead.episode == START


def test_the_agent_is_silent_one_second_after_the_allowance() -> None:
    last_beat = IDLE + 5 * M
    instance = inst({TAG_HEARTBEAT: beat(last_beat, True, last_beat)})
    assert decide_instance(instance, last_beat + 15 * M, CFG).action is NONE
    late = decide_instance(instance, last_beat + 15 * M + timedelta(seconds=1), CFG)
    assert late.action is NOTICE
    assert late.reason == "agent silent for 15m; not stopping"
    waiting = decide_instance(inst(), START + 15 * M - timedelta(seconds=1), CFG)
    assert waiting.reason == "waiting for the agent's first heartbeat since start"


def test_one_time_spot_is_noticed_exactly_at_the_threshold() -> None:
    due = IDLE + 30 * M
    before = due - timedelta(seconds=1)
    early = decide_instance(idle_at(before, lifecycle="spot"), before, CFG)
    assert early.action is NONE
    assert early.reason == "idle for 29m (threshold 30m); one-time spot, cannot be stopped"
    assert early.idle_since == IDLE
    notice = decide_instance(idle_at(due, lifecycle="spot"), due, CFG)
    assert notice.action is NOTICE
    assert notice.reason == (
        "idle for 30m (threshold 30m); a one-time spot instance cannot be stopped, "
        "terminate it if you are done"
    )
    assert notice.idle_since == IDLE


def test_the_warning_says_since_when_why_and_when_it_stops() -> None:
    warn_at = IDLE + 20 * M
    warning = decide_instance(idle_at(warn_at, hibernation=True), warn_at, cfg(hibernate=True))
    assert warning.action is WARN
    assert warning.reason == "idle for 20m (threshold 30m); stopping at 2025-06-01T09:30:00Z"
    assert (warning.region, warning.target) == ("us-east-1", "i-0123456789abcdef0")
    assert warning.hibernate is True  # the warning's "Stop now" hibernates too
    before = warn_at - timedelta(seconds=1)
    assert decide_instance(idle_at(before), before, CFG).action is NONE


def test_unknown_activity_and_garbled_tags_say_why() -> None:
    now = IDLE + timedelta(hours=5)
    unknown = decide_instance(inst({TAG_HEARTBEAT: beat(now - M, None, IDLE)}), now, CFG)
    assert unknown.reason == "activity unknown (test); not stopping"
    two = hb.encode(hb.Heartbeat(now - M, True, now - M, ("gpu:0", "tty:pts/0")))
    assert decide_instance(inst({TAG_HEARTBEAT: two}), now, CFG).reason == (
        "active: gpu:0, tty:pts/0"
    )
    active = hb.encode(hb.Heartbeat(now - M, True, now - M))
    assert decide_instance(inst({TAG_HEARTBEAT: active}), now, CFG).reason == (
        "active: no reason given"
    )
    garbled = decide_instance(inst({TAG_HEARTBEAT: "v2 s=1 a=0 l=0"}), now, CFG)
    assert garbled.reason == (
        "heartbeat tag unreadable (unsupported heartbeat version 'v2'): agent treated as silent"
    )
    assert garbled.episode == START
    bad_minutes = decide_instance(idle_at(now, {TAG_IDLE_MINUTES: " 0 "}), now, CFG)
    assert bad_minutes.reason == (
        "idle-minutes tag '0' is not a positive whole number; "
        "not stopping until it is fixed or removed"
    )
    bad_keep = decide_instance(idle_at(now, {TAG_KEEP_UNTIL: "soon"}), now, CFG)
    assert bad_keep.reason == (
        "keep-until tag 'soon' is not an ISO-8601 time; not stopping until it is fixed or removed"
    )
    # a long tag value is quoted cut short: 40 characters of keep-until, 20 of idle-minutes
    long_keep = decide_instance(idle_at(now, {TAG_KEEP_UNTIL: "k" * 60}), now, CFG)
    assert long_keep.reason.startswith(f"keep-until tag {'k' * 40!r} is not")
    long_minutes = decide_instance(idle_at(now, {TAG_IDLE_MINUTES: "9" * 30}), now, CFG)
    assert long_minutes.reason.startswith(f"idle-minutes tag {'9' * 20!r} is not")


def test_a_doubled_heartbeat_field_is_unreadable_never_idle() -> None:
    """`a=1 ... a=0` once counted as idle (last one won)."""
    now = IDLE + timedelta(hours=5)
    sampled = int((now - M).timestamp())
    raw = f"v1 s={sampled} a=1 l={sampled} a=0"
    decision = decide_instance(inst({TAG_HEARTBEAT: raw}), now, CFG, warned_at=IDLE)
    assert decision.action is NOTICE
    assert "heartbeat tag unreadable (field 'a' given twice)" in decision.reason


def test_a_heartbeat_sampled_in_the_very_second_of_the_start_is_of_this_run() -> None:
    now = START + 10 * M
    at_start = inst({TAG_HEARTBEAT: beat(START, False, START - timedelta(days=1))})
    decision = decide_instance(at_start, now, CFG)
    assert decision.action is NONE
    assert decision.reason == "idle for 10m (threshold 30m); stopping at 2025-06-01T08:30:00Z"
    assert decision.idle_since == START


def test_an_instance_without_a_launch_time_counts_from_now() -> None:
    now = IDLE + timedelta(hours=5)
    decision = decide_instance(inst(launch=None), now, CFG)
    assert decision.action is NONE
    assert decision.reason == "waiting for the agent's first heartbeat since start"


# --- spot requests at the boundary -------------------------------------------------------------


def test_an_orphan_noticed_at_the_very_moment_it_opened_is_not_noticed_again() -> None:
    off = cfg(cancel=False)
    request = spot_request(since=IDLE)
    assert decide_request(request, IDLE + timedelta(days=2), off, noticed_at=IDLE).action is NONE
    before = IDLE - timedelta(seconds=1)
    again = decide_request(request, IDLE + timedelta(days=2), off, noticed_at=before)
    assert again.action is NOTICE
    assert again.reason == (
        "orphaned: persistent request reopened after its instance was terminated; "
        "would launch a g5.xlarge (spot.cancel_orphaned = false)"
    )


def test_a_request_is_an_orphan_exactly_at_its_open_limit() -> None:
    request = spot_request("one-time", code="capacity-not-available", since=IDLE)
    waiting = decide_request(request, IDLE + 60 * M - timedelta(seconds=1), CFG)
    assert waiting.action is NONE
    assert waiting.reason == "open for 59m"
    assert (waiting.stop_at, waiting.episode) == (IDLE + 60 * M, IDLE)
    assert (waiting.region, waiting.target) == ("us-east-1", "sir-1")
    cancel = decide_request(request, IDLE + 60 * M, CFG)
    assert cancel.action is CANCEL
    assert cancel.reason == (
        "orphaned: open for 1h00m (capacity-not-available); would launch a g5.xlarge"
    )
    assert cancel.episode == IDLE


def test_request_without_any_time_or_type() -> None:
    request = SpotRequest(
        "us-east-1", "sir-2", "open", "one-time", "pending-evaluation", None, None
    )
    now = IDLE
    waiting = decide_request(request, now, CFG)
    assert waiting.action is NONE and waiting.stop_at == now + 60 * M
    closed = decide_request(replace(request, state="closed"), now, CFG)
    assert closed.reason == "closed (pending-evaluation)"
    typeless = replace(request, status_time=IDLE)
    assert decide_request(typeless, IDLE + 60 * M, CFG).reason.endswith(
        "would launch a new instance"
    )


def test_exempt_and_owned_requests_say_why() -> None:
    exempt = decide_request(spot_request(tags={TAG_EXEMPT: "false"}), IDLE + M, CFG)
    assert exempt.action is CANCEL  # only "false" does not exempt
    assert decide_request(spot_request(tags={TAG_EXEMPT: ""}), IDLE + M, CFG).reason == (
        "exempt: idle-watchdog:exempt tag"
    )
    owned = spot_request(tags={OWNER_TAGS[0]: "sfr-1"})
    assert decide_request(owned, IDLE + M, CFG).reason == "owned by a fleet or Auto Scaling group"


# --- a whole pass -------------------------------------------------------------------------------


def test_plan_decides_every_instance_with_its_request_and_history_then_every_request() -> None:
    now = IDLE + 30 * M
    on_demand = idle_at(now)
    spot = replace(idle_at(now, lifecycle="spot"), id="i-spot", spot_request_id="sir-p")
    one_time = replace(idle_at(now, lifecycle="spot"), id="i-once", spot_request_id="sir-o")
    persistent = replace(spot_request("persistent", state="active", code="fulfilled"), id="sir-p")
    one_time_req = replace(spot_request("one-time", state="active", code="fulfilled"), id="sir-o")
    orphan = replace(spot_request(since=IDLE), id="sir-x")
    young = replace(
        spot_request("one-time", code="pending-fulfillment", since=IDLE + M), id="sir-y"
    )
    planned = plan(
        [on_demand, spot, one_time],
        [persistent, one_time_req, orphan, young],
        now,
        cfg(cancel=False),
        warned={on_demand.id: IDLE + 20 * M, spot.id: IDLE + 20 * M},
        noticed={orphan.id: IDLE + M, one_time.id: now},
    )
    got = [(p.subject.id, p.decision.action) for p in planned]
    assert got == [
        (on_demand.id, STOP),  # warned ten minutes ago
        ("i-spot", STOP),  # persistent: stoppable, and warned
        ("i-once", NONE),  # one-time: noticed already
        ("sir-p", NONE),
        ("sir-o", NONE),
        ("sir-x", NONE),  # noticed already (cancelling is off)
        ("sir-y", NONE),  # open for 29 minutes of its 60
    ]
    assert planned[-1].decision.reason == "open for 29m"
    assert [p.decision.target for p in planned] == [s for s, _ in got]
    unwarned = plan([on_demand], [], now, CFG, warned={}, noticed={})
    assert unwarned[0].decision.action is WARN
