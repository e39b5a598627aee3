"""The heartbeat tag: what the agent writes and the scheduler reads."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from watchdog.core.heartbeat import MAX_LENGTH, Heartbeat, HeartbeatError, decode, encode

T = datetime.fromtimestamp(1795420800, tz=timezone.utc)
# The documented tag alphabet, plus the "?" of "a=?" (which EC2 accepts in tag values).
SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 +-=._:/@?")
CODE = {True: "1", False: "0", None: "?"}
REASON_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._:/@")


@pytest.mark.parametrize("active", [True, False, None])
def test_round_trip(active: bool | None) -> None:
    beat = Heartbeat(T, active, T - timedelta(seconds=10), ("gpu:0", "kernel:1a2b3c4d"))
    text = encode(beat)
    assert text == f"v1 s=1795420800 a={CODE[active]} l=1795420790 r=gpu:0+kernel:1a2b3c4d"
    assert decode(text) == beat


def test_round_trip_without_reasons_and_fractions_dropped() -> None:
    beat = Heartbeat(T + timedelta(microseconds=900_000), False, T - timedelta(hours=3))
    text = encode(beat)
    assert "r=" not in text
    assert decode(text) == Heartbeat(T, False, T - timedelta(hours=3))


def test_documented_example_decodes() -> None:
    beat = decode("v1 s=1795440000 a=1 l=1795439990 r=gpu:0+kernel:1a2b3c4d")
    assert beat.active is True
    assert beat.sampled_at == datetime.fromtimestamp(1795440000, tz=timezone.utc)
    assert beat.sampled_at - beat.last_active_at == timedelta(seconds=10)
    assert beat.reasons == ("gpu:0", "kernel:1a2b3c4d")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("tty:pts/0", "tty:pts/0"),
        ("proc:python3+x", "proc:python3_x"),  # '+' separates reasons
        ("kernel:ä#1", "kernel:__1"),
        ("net:eth0,rx", "net:eth0_rx"),
        ("tab\tnew\nline", "tab_new_line"),
        ("user@host:~/x", "user@host:_/x"),
        ("x" * 100, "x" * 64),
        ("tty pts/0", "tty_pts/0"),  # a space separates fields
        ("proc:train a=0", "proc:train_a_0"),  # must not smuggle in a field
    ],
)
def test_reasons_are_sanitised(reason: str, expected: str) -> None:
    beat = Heartbeat(T, True, T, ("gpu:0", reason))
    text = encode(beat)
    assert set(text) <= SAFE
    decoded = decode(text)
    assert decoded.active is True
    assert decoded.reasons[0] == "gpu:0"
    assert decoded.reasons[1].replace("=", "_") == expected


def test_many_reasons_are_cut_to_fit() -> None:
    reasons = tuple(f"kernel:{i:08x}" for i in range(100))
    text = encode(Heartbeat(T, True, T, reasons))
    assert len(text) <= MAX_LENGTH
    decoded = decode(text)
    assert 0 < len(decoded.reasons) < 100
    assert decoded.reasons == reasons[: len(decoded.reasons)]  # cut from the end


def test_long_reasons_never_push_out_the_head() -> None:
    text = encode(Heartbeat(T, False, T, ("y" * 300,) * 10))
    assert len(text) <= MAX_LENGTH
    assert decode(text).active is False


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "v1",
        "v2 s=1795420800 a=1 l=1795420790",
        "V1 s=1795420800 a=1 l=1795420790",
        "s=1795420800 a=1 l=1795420790",
        "v1 a=1 l=1795420790",  # no s
        "v1 s=1795420800 l=1795420790",  # no a
        "v1 s=1795420800 a=1",  # no l
        "v1 s=1795420800 a=yes l=1795420790",
        "v1 s=1795420800 a= l=1795420790",
        "v1 s=17954208x0 a=1 l=1795420790",
        "v1 s=-1795420800 a=1 l=0",
        "v1 s=1795420800.5 a=1 l=1795420790",
        "v1 s=1795420800 a=1 l=",
        "v1 s=1795420800 a=1 l=1795420801",  # last active after the sample
        "v1 s=1795420800 a=1 l=1795420790 garbage",
        "v1 s=1795420800 a=1 l=1795420790 =x",
        "v1 s=999999999999 a=1 l=0",  # twelve digits
        "v1 s=1795420800 a=0 l=1795420790 r=" + "x" * 250,  # longer than 256
        "v1 s=² a=0 l=0",  # str.isdigit() is true for '²', int() is not
        "v1 s=1795420800 a=0 l=¹",
        '{"version": 1, "active": false}',
    ],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(HeartbeatError):
        decode(text)


@pytest.mark.parametrize(
    "text",
    [
        "v1 s=1795420800 a=1 l=1795420790 a=0",  # active, then idle: which?
        "v1 s=1795420800 a=0 l=1795420790 a=0",  # even when both agree
        "v1 s=1795420800 a=0 l=1795420790 s=1795420801",
        "v1 s=1795420800 a=0 l=1795420790 l=1795420700",
        "v1 s=1795420800 a=0 l=1795420790 r=gpu:0 r=tty:pts/0",
        "v1 s=1795420800 a=0 l=1795420790 x=1 x=2",
    ],
)
def test_a_field_given_twice_is_no_heartbeat(text: str) -> None:
    """`v1 s=S a=1 l=S a=0` must not count as idle: a doubled field is malformed."""
    with pytest.raises(HeartbeatError, match="given twice"):
        decode(text)


# Head "v1 s=1795420800 a=1 l=1795420790" (32) + " r=" (3) + reasons 64+1+64+1+64+1+n.
FILL = ("a" * 64, "b" * 64, "c" * 64)


def test_a_heartbeat_of_exactly_256_characters_is_written_and_read_whole() -> None:
    beat = Heartbeat(T, True, T - timedelta(seconds=10), (*FILL, "d" * 26))
    text = encode(beat)
    assert len(text) == MAX_LENGTH == 256
    assert decode(text) == beat


def test_one_character_more_drops_the_last_reason() -> None:
    text = encode(Heartbeat(T, True, T - timedelta(seconds=10), (*FILL, "d" * 27)))
    assert len(text) == 256 - 1 - 26  # the fourth reason and its '+' are gone
    assert decode(text).reasons == FILL
    with pytest.raises(HeartbeatError, match="longer than 256"):
        decode(f"{text}+{'d' * 27}")  # 257: what the encoder refused to write


HEAD = "v1 s=1795420800 a=0 l=1795420790"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v2 s=1 a=0 l=0", "unsupported heartbeat version 'v2'"),
        ("version-two-and-then-some s=1", "unsupported heartbeat version 'version-two-and-'"),
        (f"{HEAD} r={'x' * 230}", "longer than 256 characters"),
        (f"{HEAD} {'garbage' * 6}", f"malformed field {('garbage' * 6)[:32]!r}"),
        (f"{HEAD} {'k' * 20}=1 {'k' * 20}=2", "field 'kkkkkkkkkkkkkkkk' given twice"),
        ("v1 s=1795420800 a=1", "missing or bad field 'l'"),
        ("v1 s=17954208001234567890 a=1 l=0", "missing or bad field '1795420800123456'"),
        ("v1 s=1795420800 a=1 l=1795420801", "last activity after the sample time"),
    ],
)
def test_why_a_heartbeat_is_unreadable_is_said_in_the_notice(text: str, message: str) -> None:
    """The scheduler's notice quotes this: "heartbeat tag unreadable (...)"."""
    with pytest.raises(HeartbeatError) as caught:
        decode(text)
    assert str(caught.value) == message


def test_an_equals_sign_inside_a_value_belongs_to_the_value() -> None:
    assert decode(f"{HEAD} r=gpu:0=x+tty").reasons == ("gpu:0=x", "tty")


def test_unknown_fields_are_ignored() -> None:
    beat = decode("v1 s=1795420800 x=42 a=0 gpu=3 l=1795420790 r=gpu:0 zz=")
    assert beat == Heartbeat(T, False, T - timedelta(seconds=10), ("gpu:0",))


# Whole seconds from 1970 to 2200: the range the format (at most 11 digits) is meant for.
moments = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(timezone.utc),
)


@given(
    sampled=moments,
    back=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)),
    active=st.sampled_from([True, False, None]),
    reasons=st.lists(st.text(max_size=80), max_size=30),
)
def test_round_trip_property(
    sampled: datetime, back: timedelta, active: bool | None, reasons: list[str]
) -> None:
    last = max(sampled - back, datetime(1970, 1, 1, tzinfo=timezone.utc))
    text = encode(Heartbeat(sampled, active, last, tuple(reasons)))
    assert len(text) <= MAX_LENGTH
    assert set(text) <= SAFE
    decoded = decode(text)
    assert decoded.active is active
    assert decoded.sampled_at == sampled.replace(microsecond=0)
    assert decoded.last_active_at == last.replace(microsecond=0)


def _sanitised(reasons: list[str]) -> list[str]:
    """What the format says a reason becomes on the tag."""
    return ["".join(c if c in REASON_CHARS else "_" for c in r)[:64] for r in reasons if r]


@given(
    sampled=moments,
    active=st.sampled_from([True, False, None]),
    reasons=st.lists(st.text(min_size=1, max_size=70), max_size=12),
)
def test_reasons_survive_the_round_trip_cut_only_at_the_limit(
    sampled: datetime, active: bool | None, reasons: list[str]
) -> None:
    """The scheduler reads every reason the agent wrote, in order; the cut drops only
    those that would have pushed the tag past 256 characters."""
    text = encode(Heartbeat(sampled, active, sampled, tuple(reasons)))
    decoded = decode(text)
    expected = _sanitised(reasons)
    kept = len(decoded.reasons)
    assert list(decoded.reasons) == expected[:kept]
    if kept < len(expected):  # the next reason would not have fitted
        assert len(f"{text}{'+' if kept else ' r='}{expected[kept]}") > MAX_LENGTH


# Field values as an agent, a person or a console might write them (no spaces: a space
# separates fields).
values = st.one_of(
    st.sampled_from(["0", "1", "?", "", "1795420800", "1795420790", "1795420801", "gpu:0"]),
    st.text(st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), max_size=12),
)


@given(st.lists(st.tuples(st.sampled_from(["s", "a", "l", "r", "x"]), values), max_size=6))
@example([("s", "1795420800"), ("a", "0"), ("l", "1795420790"), ("r", "gpu:0+")])
@example([("s", "1795420800"), ("a", "1"), ("l", "1795420790"), ("a", "0")])
def test_decode_reads_each_field_exactly_once(fields: list[tuple[str, str]]) -> None:
    """A model of the format: a tag decodes iff each field is given once and reads right,
    and then to exactly what its fields say; otherwise it is no heartbeat at all."""
    text = " ".join(["v1", *(f"{k}={v}" for k, v in fields)])
    given_ = dict(fields)
    unix = re.compile(r"[0-9]{1,11}")
    readable = (
        len(given_) == len(fields)  # no field twice
        and given_.get("a") in CODE.values()
        and all(unix.fullmatch(given_.get(k, "")) for k in "sl")
        and int(given_["l"]) <= int(given_["s"])
        and len(text) <= MAX_LENGTH
    )
    if not readable:
        with pytest.raises(HeartbeatError):
            decode(text)
        return
    beat = decode(text)
    state = {code: active for active, code in CODE.items()}[given_["a"]]
    assert beat == Heartbeat(
        datetime.fromtimestamp(int(given_["s"]), tz=timezone.utc),
        state,
        datetime.fromtimestamp(int(given_["l"]), tz=timezone.utc),
        tuple(r for r in given_.get("r", "").split("+") if r),
    )
