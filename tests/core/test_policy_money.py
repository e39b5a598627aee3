"""Money as a threshold: ``max_idle_usd`` and the ``idle-usd`` tag, pinned at the cent and
the second, with the hourly rate given as data."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.conftest import examples
from tests.core.test_policy import (
    IDLE,
    NONE,
    NOTICE,
    START,
    STOP,
    WARN,
    M,
    beat,
    idle_at,
    inst,
)
from watchdog.config import Config, IdleConfig, SchedulerConfig
from watchdog.core.costs import Price
from watchdog.core.fleet import TAG_HEARTBEAT, TAG_IDLE_MINUTES, TAG_IDLE_USD, Instance
from watchdog.core.ledger import HourlyRates
from watchdog.core.policy import Action, decide_instance, decide_with_history, money_spell, plan

S = timedelta(seconds=1)
CENT_A_SECOND = 36.0  # $/h: each idle second costs exactly one cent


def cfg(max_usd: float = 5.0, minutes: int = 30, warn: int = 0) -> Config:
    return Config(
        idle=IdleConfig(minutes=minutes, warn_minutes=warn, max_idle_usd=max_usd),
        scheduler=SchedulerConfig(agent_silent_minutes=15),
    )


def fresh(seconds: float) -> tuple[Instance, datetime]:
    """An instance idle since IDLE whose agent sampled just now, and that now."""
    now = IDLE + timedelta(seconds=seconds)
    instance = inst({TAG_HEARTBEAT: beat(now, False, IDLE)})
    return instance, now


def action_at(
    seconds: float, rate: float | None, config: Config, warned_at: datetime | None = None
) -> Action:
    instance, now = fresh(seconds)
    return decide_instance(instance, now, config, usd_per_hour=rate, warned_at=warned_at).action


def rates(saves: float | None, compute: float | None = 1.0) -> HourlyRates:
    return HourlyRates(compute, 0.005, None, saves, Price(compute, "config"))


# --- the spell's length ----------------------------------------------------------------------


def test_a_spell_ends_at_the_first_second_it_has_cost_the_limit() -> None:
    assert money_spell(5.0, CENT_A_SECOND, 1800) == 500
    assert money_spell(1.0, 7.0, 1800) == 515  # 514.29 s: the next whole second


def test_float_noise_does_not_add_a_second() -> None:
    assert 0.07 * 3600 / 1.0 > 252  # what plain floats say
    assert money_spell(0.07, 1.0, 1800) == 252


def test_the_spell_is_rounded_to_the_microsecond_before_the_second() -> None:
    """500.0000004 s is 500 s to the microsecond: no extra second for it."""
    assert 5.0 * 3600 / 35.99999997 > 500.0000004
    assert money_spell(5.0, 35.99999997, 1800) == 500
    assert money_spell(5.0, 35.9999997, 1800) == 501  # 500.000004 s


def test_the_minutes_cap_the_spell_and_no_limit_or_price_means_the_cap() -> None:
    assert money_spell(5.0, 0.526, 1800) == 1800  # a g4dn would take 9.5 hours
    assert money_spell(0.0, CENT_A_SECOND, 1800) == 1800
    assert money_spell(5.0, 0.0, 1800) == 1800
    assert money_spell(-1.0, CENT_A_SECOND, 1800) == 1800
    assert money_spell(5.0, -1.0, 1800) == 1800
    assert money_spell(5.0, 1e-320, 1800) == 1800  # an infinite spell
    assert money_spell(math.nan, CENT_A_SECOND, 1800) == 1800


# --- the stop, at the cent and the second ------------------------------------------------


def test_stops_at_exactly_the_cent_the_spell_reaches_the_limit() -> None:
    assert action_at(499, CENT_A_SECOND, cfg()) is NONE  # $4.99
    assert action_at(500, CENT_A_SECOND, cfg()) is STOP  # $5.00


def test_a_limit_between_two_seconds_stops_at_the_later_one() -> None:
    assert action_at(514, 7.0, cfg(1.0)) is NONE
    assert action_at(515, 7.0, cfg(1.0)) is STOP


def test_the_warning_comes_warn_minutes_before_the_money_stop() -> None:
    config = cfg(warn=2)
    assert action_at(379, CENT_A_SECOND, config) is NONE
    instance, now = fresh(380)
    warning = decide_instance(instance, now, config, usd_per_hour=CENT_A_SECOND)
    assert warning.action is WARN
    assert warning.stop_at == IDLE + 500 * S
    assert action_at(499, CENT_A_SECOND, config, warned_at=now) is NONE
    assert action_at(500, CENT_A_SECOND, config, warned_at=now) is STOP


def test_a_spell_shorter_than_warn_minutes_is_warned_at_once_and_stopped_a_spell_later() -> None:
    """A p5 at $5: 5m28s of idle. The lead is the spell, as ``minutes`` under
    ``warn_minutes`` caps it: warned on the first idle pass, stopped a spell later."""
    config = cfg(warn=10)
    p5 = 55.04
    instance, now = fresh(60)
    warning = decide_instance(instance, now, config, usd_per_hour=p5)
    assert warning.action is WARN
    assert warning.stop_at == now + 328 * S
    assert action_at(60 + 327, p5, config, warned_at=now) is NONE
    assert action_at(60 + 328, p5, config, warned_at=now) is STOP


def test_whichever_comes_first_the_minutes_for_a_cheap_machine() -> None:
    config = cfg(minutes=30)
    assert action_at(30 * 60 - 1, 0.526, config) is NONE
    assert action_at(30 * 60, 0.526, config) is STOP


def test_what_a_stop_avoids_is_the_rate_not_the_compute_price() -> None:
    """Compute $30/h plus addresses: a stop avoids $36/h, so $5 is reached at 500 s."""
    instance, now = fresh(500)
    known = {instance.id: rates(CENT_A_SECOND, compute=30.0)}
    d = decide_with_history(instance, now, cfg(), requests={}, warned={}, noticed={}, rates=known)
    assert d.action is STOP
    early = IDLE + 499 * S
    d = decide_with_history(
        inst({TAG_HEARTBEAT: beat(early, False, IDLE)}),
        early,
        cfg(),
        requests={},
        warned={},
        noticed={},
        rates=known,
    )
    assert d.action is NONE


# --- unknown is never a guess ------------------------------------------------------------


@pytest.mark.parametrize("rate", [None, math.nan, math.inf])
def test_an_unknown_price_leaves_only_the_minutes_and_says_so(rate: float | None) -> None:
    assert action_at(29 * 60, rate, cfg()) is NONE
    instance, now = fresh(29 * 60)
    d = decide_instance(instance, now, cfg(), usd_per_hour=rate)
    assert d.reason == (
        "idle for 29m (threshold 30m; $5.00 not applied: its price is unknown); "
        f"stopping at {(IDLE + 30 * M).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    assert d.idle_usd is None and d.max_idle_usd == 5.0
    assert action_at(30 * 60, rate, cfg()) is STOP


def test_no_rates_at_all_is_unknown() -> None:
    instance, now = fresh(500)
    d = decide_with_history(instance, now, cfg(), requests={}, warned={}, noticed={})
    assert d.action is NONE and d.idle_usd is None


# --- what the decision says --------------------------------------------------------------


def test_the_reason_says_what_the_spell_cost_and_both_thresholds() -> None:
    instance, now = fresh(250)
    d = decide_instance(instance, now, cfg(), usd_per_hour=CENT_A_SECOND)
    assert d.reason == (
        "idle for 4m, $2.50 so far (threshold 30m or $5.00); stopping at 2025-06-01T09:08:20Z"
    )
    assert d.idle_usd == 2.5 and d.max_idle_usd == 5.0


def test_without_a_limit_the_reason_is_unchanged_and_the_cost_still_known() -> None:
    instance, now = fresh(250)
    d = decide_instance(instance, now, cfg(max_usd=0.0), usd_per_hour=CENT_A_SECOND)
    assert d.reason == "idle for 4m (threshold 30m); stopping at 2025-06-01T09:30:00Z"
    assert d.idle_usd == 2.5 and d.max_idle_usd == 0.0


def test_a_spell_dated_a_little_ahead_has_cost_nothing_yet() -> None:
    """The agent's clock may run up to CLOCK_SKEW ahead: never a negative amount."""
    now = IDLE + 30 * S
    ahead = now + M
    instance = inst({TAG_HEARTBEAT: beat(ahead, False, ahead)})
    d = decide_instance(instance, now, cfg(), usd_per_hour=CENT_A_SECOND)
    assert d.idle_usd == 0.0 and "$0.00 so far" in d.reason


def test_plan_carries_each_instance_s_rates_and_decides_with_them() -> None:
    instance, now = fresh(500)
    known = rates(CENT_A_SECOND)
    (item,) = plan(
        [instance], [], now, cfg(), warned={}, noticed={}, rates={"i-0123456789abcdef0": known}
    )
    assert item.rates is known and item.decision.action is STOP
    (unpriced,) = plan([instance], [], now, cfg(), warned={}, noticed={})
    assert unpriced.rates is None and unpriced.decision.action is NONE


# --- the idle-usd tag --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "limit"), [("5", 5.0), (" 2.50 ", 2.5), ("1234567.89", 1234567.89), ("0.5", 0.5)]
)
def test_the_idle_usd_tag_overrides_the_config(value: str, limit: float) -> None:
    instance, now = fresh(60)
    tagged = inst({**instance.tags, TAG_IDLE_USD: value})
    d = decide_instance(tagged, now, cfg(max_usd=0.0), usd_per_hour=CENT_A_SECOND)
    assert d.max_idle_usd == limit


def test_an_idle_usd_tag_stops_at_its_own_cent() -> None:
    now = IDLE + 150 * S
    tagged = inst({TAG_HEARTBEAT: beat(now, False, IDLE), TAG_IDLE_USD: "1.50"})
    assert decide_instance(tagged, now, cfg(), usd_per_hour=CENT_A_SECOND).action is STOP
    before = now - S
    tagged = inst({TAG_HEARTBEAT: beat(before, False, IDLE), TAG_IDLE_USD: "1.50"})
    assert decide_instance(tagged, before, cfg(), usd_per_hour=CENT_A_SECOND).action is NONE


def test_an_idle_usd_tag_of_zero_turns_the_money_rule_off_for_that_instance() -> None:
    now = IDLE + 500 * S
    tagged = inst({TAG_HEARTBEAT: beat(now, False, IDLE), TAG_IDLE_USD: "0"})
    d = decide_instance(tagged, now, cfg(), usd_per_hour=CENT_A_SECOND)
    assert d.action is NONE and d.max_idle_usd == 0.0
    assert "(threshold 30m)" in d.reason


def test_idle_usd_and_idle_minutes_tags_together_whichever_first() -> None:
    now = IDLE + 10 * M
    both = {TAG_HEARTBEAT: beat(now, False, IDLE), TAG_IDLE_USD: "100", TAG_IDLE_MINUTES: "10"}
    assert decide_instance(inst(both), now, cfg(), usd_per_hour=CENT_A_SECOND).action is STOP


@pytest.mark.parametrize(
    "value",
    ["$5", "5.123", "-1", "abc", "", "1e3", "5,00", ".5", "5.", "12345678", "inf", "nan", "+5"],
)
def test_a_bad_idle_usd_tag_notices_and_never_stops(value: str) -> None:
    now = IDLE + timedelta(hours=5)
    instance = idle_at(now, {TAG_IDLE_USD: value})
    d = decide_instance(instance, now, cfg(), warned_at=now - 20 * M, usd_per_hour=CENT_A_SECOND)
    assert d.action is NOTICE
    assert d.reason == (
        f"idle-usd tag {value.strip()!r} is not an amount in USD such as 5 or 2.50; "
        "not stopping until it is fixed or removed"
    )
    assert d.episode == START
    again = decide_instance(instance, now, cfg(), noticed_at=START, usd_per_hour=CENT_A_SECOND)
    assert again.action is NONE


def test_a_long_bad_idle_usd_tag_is_quoted_short() -> None:
    now = IDLE + timedelta(hours=1)
    d = decide_instance(idle_at(now, {TAG_IDLE_USD: "x" * 50}), now, cfg())
    assert f"{'x' * 20!r}" in d.reason and "x" * 21 not in d.reason


# --- a property: never before the money or the minutes -----------------------------------


@settings(max_examples=examples(300))
@given(
    rate=st.floats(0.01, 200.0),
    limit=st.floats(0.01, 50.0),
    minutes=st.integers(1, 120),
    seconds=st.integers(31, 3 * 3600),
)
def test_never_stops_before_the_spell_has_cost_the_limit_or_lasted_the_minutes(
    rate: float, limit: float, minutes: int, seconds: int
) -> None:
    instance, now = fresh(seconds)
    config = cfg(max_usd=round(limit, 2), minutes=minutes)
    d = decide_instance(instance, now, config, usd_per_hour=rate)
    spent = rate * seconds / 3600
    if d.action is STOP:
        assert spent >= round(limit, 2) - 1e-9 or seconds >= minutes * 60
    elif spent >= round(limit, 2) + rate / 3600 or seconds >= minutes * 60:
        raise AssertionError(f"not stopped: {d.reason}")
