"""Properties of the decision over arbitrary fleets, clocks, histories and configs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TypeVar

from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.core.conftest import examples
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
    CLOCK_SKEW,
    MAX_TAG_MINUTES,
    OWNER_TAGS,
    Action,
    Decision,
    decide_instance,
    decide_request,
)
from watchdog.core.timeutil import iso, parse_iso

T = TypeVar("T")
STATES = ["pending", "running", "stopping", "stopped", "shutting-down", "terminated"]

nows = st.datetimes(
    min_value=datetime(2024, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2027, 1, 1),  # noqa: DTZ001
    timezones=st.just(timezone.utc),
)


def seconds(lo: int, hi: int, near: int = 1800) -> st.SearchStrategy[timedelta]:
    """Offsets in seconds, often small (where the thresholds are), sometimes anything."""
    small = st.integers(max(lo, -near), min(hi, near))
    return st.one_of(small, st.integers(lo, hi)).map(lambda s: timedelta(seconds=s))


garbage = st.one_of(
    st.sampled_from(["", " ", "true", "0", "-1", "²", "None"]), st.text(max_size=20)
)
configs = st.builds(
    lambda minutes, warn, silent, hibernate, cancel, max_open: Config(
        idle=IdleConfig(minutes=minutes, warn_minutes=min(warn, minutes)),
        scheduler=SchedulerConfig(agent_silent_minutes=silent, hibernate=hibernate),
        spot=SpotConfig(cancel_orphaned=cancel, max_open_minutes=max_open),
    ),
    st.one_of(st.integers(1, 60), st.integers(1, 600)),
    st.one_of(st.just(0), st.integers(0, 30)),
    st.integers(2, 120),
    st.booleans(),
    st.booleans(),
    st.integers(1, 600),
)


def mostly(usual: st.SearchStrategy[T], *others: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``usual`` nine times in ten, so that stops happen often enough to be checked."""
    return st.integers(0, 9).flatmap(lambda i: usual if i else st.one_of(*others))


@st.composite
def heartbeats(draw: st.DrawFn, now: datetime, silent: int) -> str | None:
    mangled = st.sampled_from(
        ["v1 s=x a=0 l=0", "v2 s=1 a=0 l=0", "v1 s=1 a=0 l=2", "v1 a=0", "v1 s=1 a=0 l=0 x"]
    )
    kind = draw(mostly(st.just("beat"), st.just("missing"), st.just("garbage")))
    if kind == "missing":
        return None
    if kind == "garbage":
        return draw(st.one_of(garbage, mangled))
    sampled = now - draw(mostly(seconds(0, silent * 60), seconds(-3600, 3 * 86400)))
    last = sampled - draw(seconds(0, 2 * 86400, near=4 * 3600))
    active = draw(mostly(st.just(False), st.sampled_from([True, None])))
    return hb.encode(hb.Heartbeat(sampled, active, last, ("r",)))


Situation = tuple[
    Instance, datetime, Config, "SpotRequest | None", "datetime | None", "datetime | None"
]


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    now = draw(nows)
    cfg = draw(configs)
    tags: dict[str, str] = {"Name": "box"}
    managed = draw(mostly(st.just("true"), st.none(), garbage, st.sampled_from(["TRUE", " true"])))
    if managed is not None:
        tags[TAG_MANAGED] = managed
    # An empty or blank exempt value is covered by test_policy.test_exempt_is_never_stopped.
    exempt = draw(mostly(st.none(), garbage.filter(lambda s: s.strip() != ""), st.just("false")))
    if exempt is not None:
        tags[TAG_EXEMPT] = exempt
    keep = draw(
        mostly(
            st.none(),
            seconds(-2 * 86400, 2 * 86400, near=3 * 3600).map(lambda d: iso(now + d)),
            garbage,
            st.just("9999-12-31T23:59:59-05:00"),
        )
    )
    if keep is not None:
        tags[TAG_KEEP_UNTIL] = keep
    minutes = draw(
        mostly(
            st.none(),
            st.integers(0, 600).map(str),
            garbage,
            st.sampled_from(["99999999999", str(MAX_TAG_MINUTES), str(MAX_TAG_MINUTES + 1)]),
        )
    )
    if minutes is not None:
        tags[TAG_IDLE_MINUTES] = minutes
    raw = draw(heartbeats(now, cfg.scheduler.agent_silent_minutes))
    if raw is not None:
        tags[TAG_HEARTBEAT] = raw
    launch = draw(
        mostly(seconds(2 * 3600, 30 * 86400, near=6 * 3600), st.none(), seconds(-600, 86400))
    )
    lifecycle = draw(mostly(st.just("on-demand"), st.sampled_from(["spot", "capacity-block", ""])))
    inst = Instance(
        region="us-east-1",
        id="i-1",
        type="g5.xlarge",
        state=draw(mostly(st.just("running"), st.sampled_from(STATES))),
        launch_time=None if launch is None else now - launch,
        tags=tags,
        lifecycle=lifecycle,
        hibernation_configured=draw(st.booleans()),
    )
    request = None
    if draw(st.booleans()):
        request = SpotRequest(
            "us-east-1",
            "sir-1",
            "active",
            draw(st.sampled_from(["one-time", "persistent", ""])),
            "fulfilled",
            None,
            None,
            "i-1",
        )
    # The last stop warning and the last notice, drawn independently of each other.
    warned = draw(mostly(seconds(-600, 4 * 3600, near=3600), st.none()))
    noticed = draw(st.one_of(st.none(), seconds(-600, 4 * 3600, near=3600)))
    warned_at = None if warned is None else now - warned
    noticed_at = None if noticed is None else now - noticed
    return inst, now, cfg, request, warned_at, noticed_at


def _beat(inst: Instance) -> hb.Heartbeat | None:
    raw = inst.tags.get(TAG_HEARTBEAT)
    if raw is None:
        return None
    try:
        return hb.decode(raw)
    except ValueError:  # HeartbeatError, or a bug the heartbeat tests report
        return None


def _reasons_not_to_stop(
    inst: Instance, now: datetime, cfg: Config, request: SpotRequest | None
) -> list[str]:
    """Every reason the design gives for never stopping, computed from the inputs alone."""
    tags = inst.tags
    reasons = []
    if inst.state != "running":
        reasons.append("not running")
    if tags.get(TAG_MANAGED) != "true":
        reasons.append("unmanaged")
    if TAG_EXEMPT in tags and tags[TAG_EXEMPT].strip().lower() != "false":
        reasons.append("exempt")
    if TAG_KEEP_UNTIL in tags:
        try:
            keep = parse_iso(tags[TAG_KEEP_UNTIL])
            iso(keep)  # representable in UTC
            if keep > now:
                reasons.append("kept")
        except (ValueError, OverflowError):
            reasons.append("keep-until unreadable")
    text = tags.get(TAG_IDLE_MINUTES)
    if text is not None and not (
        text.strip().isascii() and text.strip().isdecimal() and 1 <= int(text) <= MAX_TAG_MINUTES
    ):
        reasons.append("idle-minutes unreadable")
    beat = _beat(inst)
    started = inst.launch_time or now
    if beat is None:
        reasons.append("heartbeat missing or garbled")
    else:
        if beat.sampled_at < started:
            reasons.append("heartbeat before the last start")
        if beat.sampled_at > now + CLOCK_SKEW:
            reasons.append("heartbeat from the future")
        if now - beat.sampled_at > timedelta(minutes=cfg.scheduler.agent_silent_minutes):
            reasons.append("agent silent")
        if beat.active is not False:
            reasons.append("active or unknown")
    if inst.lifecycle == "spot" and (request is None or request.type != "persistent"):
        reasons.append("one-time spot")
    return reasons


@settings(max_examples=examples(1000))
@given(situations())
def test_decide_instance_never_stops_what_it_must_not(
    situation: Situation,
) -> None:
    inst, now, cfg, request, warned_at, noticed_at = situation
    decision = decide_instance(
        inst, now, cfg, request=request, warned_at=warned_at, noticed_at=noticed_at
    )
    event(decision.action.value)
    assert isinstance(decision, Decision)
    assert decision.action in (Action.NONE, Action.WARN, Action.NOTICE, Action.STOP)
    assert (decision.region, decision.target) == (inst.region, inst.id)
    if decision.action is Action.WARN:  # a warning always announces a stop
        assert decision.stop_at is not None and decision.stop_at > now
        assert decision.episode is not None
        assert warned_at is None or warned_at < decision.episode
    if decision.action is Action.NOTICE:  # a notice stops nothing, and comes once
        assert decision.stop_at is None
        assert decision.episode is not None
        assert noticed_at is None or noticed_at < decision.episode
        assert _reasons_not_to_stop(inst, now, cfg, request) != []
    if decision.action is not Action.STOP:
        return
    assert _reasons_not_to_stop(inst, now, cfg, request) == []
    beat = _beat(inst)
    assert beat is not None
    assert decision.idle_since is not None and decision.episode is not None
    minutes = int(inst.tags.get(TAG_IDLE_MINUTES, cfg.idle.minutes))
    assert now >= decision.idle_since + timedelta(minutes=minutes)  # never before the threshold
    assert decision.idle_since >= beat.last_active_at
    assert decision.episode >= decision.idle_since
    if TAG_KEEP_UNTIL in inst.tags:
        assert decision.episode >= parse_iso(inst.tags[TAG_KEEP_UNTIL])
    assert decision.hibernate == (cfg.scheduler.hibernate and inst.hibernation_configured)
    if cfg.idle.warn_minutes == 0:
        return
    lead = timedelta(minutes=min(cfg.idle.warn_minutes, minutes))
    assert warned_at is not None
    assert warned_at >= decision.episode
    assert now >= warned_at + lead


@settings(max_examples=examples(1000))
@given(situations())
def test_notices_and_stop_warnings_do_not_stand_in_for_each_other(
    situation: Situation,
) -> None:
    """``noticed_at`` only silences a repeated notice; ``warned_at`` never silences one."""
    inst, now, cfg, request, warned_at, noticed_at = situation
    decision = decide_instance(
        inst, now, cfg, request=request, warned_at=warned_at, noticed_at=noticed_at
    )
    never_noticed = decide_instance(inst, now, cfg, request=request, warned_at=warned_at)
    never_warned = decide_instance(inst, now, cfg, request=request, noticed_at=noticed_at)
    if never_noticed.action is Action.NOTICE:
        # A notice situation: never a stop whatever the history holds, and a warning
        # does not count as having told the person.
        event("notice situation")
        assert decision.action in (Action.NOTICE, Action.NONE)
        assert decision.reason == never_noticed.reason
        assert never_warned.action is decision.action
        assert (decision.action is Action.NONE) == (
            noticed_at is not None
            and decision.episode is not None
            and noticed_at >= decision.episode
        )
    else:
        # Anything else does not depend on the notices at all.
        assert decision == never_noticed
        assert never_warned.action is not Action.NOTICE


@st.composite
def requests(draw: st.DrawFn) -> tuple[SpotRequest, datetime, Config, datetime | None]:
    now = draw(nows)
    tags: dict[str, str] = {}
    # A blank exempt value is covered by test_policy.test_exempt_request_is_left_alone.
    exempt = draw(mostly(st.none(), garbage.filter(lambda s: s.strip() != "")))
    if exempt is not None:
        tags[TAG_EXEMPT] = exempt
    for key in OWNER_TAGS:
        value = draw(mostly(st.none(), garbage))
        if value is not None:
            tags[key] = value
    status = draw(mostly(seconds(-600, 30 * 86400, near=4 * 3600), st.none()))
    created = draw(st.one_of(st.none(), seconds(-600, 30 * 86400, near=4 * 3600)))
    req = SpotRequest(
        region="us-west-2",
        id="sir-9",
        state=draw(mostly(st.just("open"), st.sampled_from(["active", "disabled", "closed"]))),
        type=draw(st.sampled_from(["one-time", "persistent", ""])),
        status_code=draw(
            st.sampled_from(
                [
                    "instance-terminated-by-user",
                    "pending-fulfillment",
                    "capacity-not-available",
                    "fulfilled",
                    "marked-for-stop",
                    "",
                ]
            )
        ),
        create_time=None if created is None else now - created,
        status_time=None if status is None else now - status,
        tags=tags,
    )
    noticed = draw(st.one_of(st.none(), seconds(-3600, 3 * 86400)))
    return req, now, draw(configs), None if noticed is None else now - noticed


@settings(max_examples=examples(400))
@given(requests())
def test_decide_request_never_stops_and_cancels_only_open_orphans(
    situation: tuple[SpotRequest, datetime, Config, datetime | None],
) -> None:
    req, now, cfg, noticed_at = situation
    decision = decide_request(req, now, cfg, noticed_at=noticed_at)
    event(decision.action.value)
    assert decision.action in (Action.NONE, Action.NOTICE, Action.CANCEL)
    if decision.action is Action.CANCEL:
        assert req.state == "open"
        assert cfg.spot.cancel_orphaned
        assert not any(tag in req.tags for tag in OWNER_TAGS)
        assert req.tags.get(TAG_EXEMPT, "false").strip().lower() == "false"
        assert decision == decide_request(req, now, cfg)  # a notice never holds back a cancel
    if decision.action is Action.NOTICE:
        assert not cfg.spot.cancel_orphaned
        assert req.state == "open"
        assert decision.episode is not None
        assert noticed_at is None or noticed_at < decision.episode


# --- arbitrary tag text: the policy never raises, whatever a person or a bug writes ----------

unicode_text = st.text(max_size=40)  # any code point but surrogates, incl. digits like '²' '٣'
digits = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=12)
numbers = st.integers(-(10**13), 10**13).map(str)
offsets = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))


def _heartbeat_texts(now: datetime) -> st.SearchStrategy[str]:
    """Free text, and heartbeats whose fields are plausible or free text (to parse deep)."""
    unix = int(now.timestamp())
    odd = st.one_of(numbers, digits, unicode_text, st.sampled_from(["0", "1", "?", ""]))
    assembled = st.builds(
        lambda s, a, last, r, extra: f"v1 s={s} a={a} l={last} r={r}{extra}",
        mostly(st.integers(unix - 600, unix).map(str), odd),
        mostly(st.sampled_from(["0", "0", "1", "?"]), odd),
        mostly(st.integers(unix - 86400, unix - 600).map(str), odd),
        unicode_text,
        st.sampled_from(["", " ", "  ", " x=", " =y", " z"]),
    )
    return st.one_of(assembled, assembled, unicode_text, st.text(max_size=300))


def _keep_until_texts(now: datetime) -> st.SearchStrategy[str]:
    moments = st.datetimes(timezones=offsets).map(lambda d: d.isoformat())
    near = seconds(-86400, 86400).map(lambda d: iso(now + d))
    edges = st.builds(
        lambda date, hours, sign: f"{date}T23:59:59{sign}{hours:02d}:00",
        st.sampled_from(["0001-01-01", "0001-01-02", "9999-12-30", "9999-12-31"]),
        st.integers(0, 23),
        st.sampled_from(["+", "-"]),
    )
    return st.one_of(near, unicode_text, digits, numbers, moments, edges)


@st.composite
def arbitrary_tags(draw: st.DrawFn) -> tuple[Instance, datetime, Config, datetime | None]:
    """Every tag the policy reads, as free text or close to what it expects."""
    now = draw(nows)
    minutes = st.one_of(st.integers(1, 120).map(str), unicode_text, digits, numbers)
    texts = {
        TAG_MANAGED: mostly(st.just("true"), unicode_text),
        TAG_EXEMPT: mostly(st.none(), unicode_text, st.just("false")),
        TAG_KEEP_UNTIL: st.one_of(st.none(), _keep_until_texts(now)),
        TAG_IDLE_MINUTES: st.one_of(st.none(), minutes),
        TAG_HEARTBEAT: mostly(_heartbeat_texts(now), st.none()),
    }
    tags = {key: value for key, text in texts.items() if (value := draw(text)) is not None}
    launch = draw(
        mostly(seconds(3600, 30 * 86400, near=6 * 3600), st.none(), seconds(-86400, 86400))
    )
    inst = Instance(
        region="us-east-1",
        id="i-1",
        type="g5.xlarge",
        state="running",
        launch_time=None if launch is None else now - launch,
        tags=tags,
        lifecycle=draw(mostly(st.just("on-demand"), st.just("spot"))),
    )
    history = draw(st.one_of(st.none(), seconds(-86400, 86400)))
    return inst, now, draw(configs), None if history is None else now - history


@settings(max_examples=examples(1000))
@given(arbitrary_tags())
def test_decide_instance_never_raises_on_arbitrary_tags(
    situation: tuple[Instance, datetime, Config, datetime | None],
) -> None:
    inst, now, cfg, history = situation
    for warned_at, noticed_at in ((None, None), (history, None), (None, history)):
        decision = decide_instance(inst, now, cfg, warned_at=warned_at, noticed_at=noticed_at)
        event(decision.action.value)
        assert decision.reason
        if decision.action is Action.STOP:
            assert _reasons_not_to_stop(inst, now, cfg, None) == []


@given(st.one_of(st.text(max_size=300), nows.flatmap(_heartbeat_texts)))
def test_decode_raises_only_heartbeat_error(text: str) -> None:
    try:
        beat = hb.decode(text)
    except hb.HeartbeatError:
        event("refused")
        return
    event("decoded")
    assert beat.last_active_at <= beat.sampled_at


def test_there_is_no_terminate() -> None:
    assert {action.value for action in Action} == {"none", "warn", "notice", "stop", "cancel"}
