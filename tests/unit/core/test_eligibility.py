"""The six eligibility layers: every reason, their order, hours across zones and DST, groups,
the columnar filter against the per-row loop on random directories, and its masks kept
current through changes against a fresh evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.accounts import Preferences, StoredApiKey, Tier, User, local_day, next_active_start
from core.eligibility import (
    DIRECTORY_SCHEMA,
    NO_EXPIRY_MS,
    OUT_OF_SCOPE,
    RESULT_SCHEMA,
    DirectoryMasks,
    EligibilityPolicy,
    Layer,
    OpportunityView,
    Reason,
    cooled_mask,
    day_bucket,
    directory_frame,
    evaluate,
    evaluate_loop,
    explain,
    group_row,
    hour_bucket,
    next_opening,
    to_ms,
    user_row,
)
from core.eligibility.masks import SYMBOL_KEYS
from core.models import OpportunityKind, Priority
from core.settings import Settings

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # 14:00 in Berlin (CEST)


def policy(**overrides: Any) -> EligibilityPolicy:
    return EligibilityPolicy.from_settings(Settings(**overrides))


def opp(
    kind: OpportunityKind = OpportunityKind.SPOT_SPREAD,
    *,
    symbol: str = "BTC/USDT",
    buy: str | None = "binance",
    sell: str | None = "okx",
    net_bps: float = 20.0,
    ai: bool = False,
    beta: str | None = None,
    net_apr: float = float("nan"),
    confidence: float = 0.9,
) -> OpportunityView:
    return OpportunityView(
        opportunity_id="o-1",
        kind=kind,
        symbol=symbol,
        buy_exchange=buy,
        sell_exchange=sell,
        net_bps=net_bps,
        priority=Priority.HIGH,
        confidence=confidence,
        dedup_key=OpportunityView.make_dedup_key(kind.value, symbol, buy, sell),
        detected_at=NOW,
        ai_enhanced=ai,
        beta_flag=beta,
        net_apr=net_apr,
    )


def make_user(uid: int = 1, tier: Tier = Tier.PREMIUM, **prefs: Any) -> User:
    user = User.new(uid, NOW - timedelta(days=1), tier=tier)
    user.preferences = Preferences(**prefs)
    return user


def row(
    user: User,
    pol: EligibilityPolicy,
    *,
    session: int | str | None = "active",
    now: datetime = NOW,
    day_used: int = 0,
    hour_used: int = 0,
    blocked: bool = False,
    day: int | None = None,
) -> dict[str, Any]:
    """``day``: the local day ``day_used`` was counted on (default: the user's today)."""
    expires = to_ms(now + timedelta(days=3)) if session == "active" else session
    assert expires is None or isinstance(expires, int)
    return user_row(
        user,
        pol,
        session_expires_ms=expires,
        blocked=blocked,
        day_bucket=local_day(now, user.preferences.timezone) if day is None else day,
        day_used=day_used,
        hour_bucket=hour_bucket(now),
        hour_used=hour_used,
    )


def decide(
    rows: list[dict[str, Any]],
    pol: EligibilityPolicy,
    o: OpportunityView | None = None,
    now: datetime = NOW,
    cooled: Any = (),
) -> pl.DataFrame:
    directory = directory_frame(rows)
    o = o or opp()
    res = evaluate(directory, o, now, pol, cooled)
    assert res.schema == RESULT_SCHEMA
    # the loop must agree on every hand-built case too
    assert res.equals(evaluate_loop(directory.to_dicts(), o, now, pol, cooled))
    return res


def reason_of(user: User, pol: EligibilityPolicy | None = None, **kw: Any) -> tuple[int, str]:
    pol = pol or policy()
    o = kw.pop("o", None)
    cooled = kw.pop("cooled", ())
    now = kw.get("now", NOW)
    res = decide([row(user, pol, **kw)], pol, o, now, cooled)
    return int(res["layer"][0]), str(res["reason"][0])


# ---------------------------------------------------------------------------- every reason


def test_a_plain_premium_user_in_session_is_eligible_now() -> None:
    pol = policy()
    res = decide([row(make_user(), pol)], pol)
    assert res.row(0, named=True) == {
        "user_id": 1,
        "chat_id": 1,
        "audience": "user",
        "tier": "premium",
        "layer": 0,
        "reason": "eligible",
        "silent": False,
        "due_at": NOW,
        "tz": 0,  # UTC: index 0 of the vocabulary
        "lang": 0,  # English: index 0 of the vocabulary
    }


def test_session_layer() -> None:
    assert reason_of(make_user(), session=None) == (1, "session.none")
    assert reason_of(make_user(), session=to_ms(NOW)) == (1, "session.expired")
    assert reason_of(make_user(), session=to_ms(NOW) + 1) == (0, "eligible")


def test_subscription_kinds_per_tier_defaults() -> None:
    funding = opp(OpportunityKind.FUNDING_RATE)
    technical = opp(OpportunityKind.TECHNICAL, sell=None)
    assert reason_of(make_user(tier=Tier.FREE), o=opp()) == (0, "eligible")
    assert reason_of(make_user(tier=Tier.FREE), o=funding) == (2, "subscription.kind")
    assert reason_of(make_user(tier=Tier.BASIC), o=funding) == (0, "eligible")
    assert reason_of(make_user(tier=Tier.BASIC), o=technical) == (2, "subscription.kind")
    for tier in (Tier.PREMIUM, Tier.ENTERPRISE):
        assert reason_of(make_user(tier=tier), o=technical) == (0, "eligible")
    assert reason_of(make_user(1), policy(superadmin_ids="1"), o=technical) == (0, "eligible")
    # a SuperAdmin tier stored earlier, not in ARBFLOW_SUPERADMIN_IDS, is Free
    assert reason_of(make_user(tier=Tier.SUPERADMIN), o=technical) == (2, "subscription.kind")


def test_subscription_kinds_follow_tier_overrides() -> None:
    pol = policy(distribution={"tiers": {"free": {"kinds": ["spot_spread", "funding_rate"]}}})
    assert reason_of(make_user(tier=Tier.FREE), pol, o=opp(OpportunityKind.FUNDING_RATE)) == (0, "eligible")


def test_beta_flags_from_the_opportunity_or_the_kind() -> None:
    user = make_user()
    assert reason_of(user, o=opp(beta="ai")) == (2, "subscription.beta")
    user.beta_flags = {"ai"}
    assert reason_of(user, o=opp(beta="ai")) == (0, "eligible")
    pol = policy(superadmin_ids="9")
    pol.beta_kinds = {OpportunityKind.TECHNICAL: "ta"}
    tech = opp(OpportunityKind.TECHNICAL, sell=None)
    assert reason_of(make_user(), pol, o=tech) == (2, "subscription.beta")
    assert reason_of(make_user(9), pol, o=tech) == (0, "eligible")


def test_preferences_layer_reasons() -> None:
    now = NOW
    assert reason_of(make_user(pushes_on=False)) == (3, "preferences.off")
    assert reason_of(make_user(kinds={OpportunityKind.FUNDING_RATE})) == (3, "preferences.kind")
    assert reason_of(make_user(exchanges={"binance"})) == (3, "preferences.exchange")  # okx leg missing
    assert reason_of(make_user(exchanges={"binance", "okx"})) == (0, "eligible")
    assert reason_of(make_user(exchanges={"kraken", "okx", "binance"})) == (0, "eligible")
    assert reason_of(make_user(symbols={"ETH/USDT"})) == (3, "preferences.symbol")
    assert reason_of(make_user(symbols={"ETH/USDT", "BTC/USDT"})) == (0, "eligible")
    assert reason_of(make_user(min_net_bps=Decimal("20.5"))) == (3, "preferences.min_profit")
    assert reason_of(make_user(min_net_bps=Decimal(20))) == (0, "eligible")
    assert reason_of(make_user(muted_until=now + timedelta(minutes=1))) == (3, "preferences.muted")
    assert reason_of(make_user(muted_until=now)) == (0, "eligible")


def test_each_kind_is_judged_by_its_own_threshold() -> None:
    """Spot by net bps, funding by net APR %, technical by confidence: never one unit."""
    # a funding carry with a good APR (36.5 % a year) whose 168 h return is 5 bps
    funding = opp(OpportunityKind.FUNDING_RATE, net_bps=5.0, net_apr=0.365)
    spot_picky = make_user(min_net_bps=Decimal(20))
    assert reason_of(spot_picky, o=funding) == (0, "eligible")
    assert reason_of(make_user(min_net_apr_pct=Decimal(30)), o=funding) == (0, "eligible")
    assert reason_of(make_user(min_net_apr_pct=Decimal(40)), o=funding) == (3, "preferences.min_profit")
    # a spot edge of 20 bps: a funding APR threshold does not filter it
    spot = opp(net_bps=20.0)
    assert reason_of(make_user(min_net_apr_pct=Decimal(500)), o=spot) == (0, "eligible")
    assert reason_of(make_user(min_net_bps=Decimal(21)), o=spot) == (3, "preferences.min_profit")
    # technical: by confidence, not by an edge
    tech = opp(OpportunityKind.TECHNICAL, buy=None, sell="okx", net_bps=0.0, confidence=0.8)
    assert reason_of(spot_picky, o=tech) == (0, "eligible")
    assert reason_of(make_user(min_confidence=Decimal("0.8")), o=tech) == (0, "eligible")
    assert reason_of(make_user(min_confidence=Decimal("0.85")), o=tech) == (3, "preferences.min_profit")


def test_funding_apr_from_an_event() -> None:
    base = {
        "opportunity_id": "f",
        "kind": "funding_rate",
        "symbol": "BTC/USDT:USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "net_bps": 5.0,
        "detected_at": NOW.isoformat(),
    }
    assert OpportunityView.from_event({**base, "details": {"net_apr": 0.3}}).net_apr == 0.3
    # an event without the APR (an earlier release): over the horizon it names, else 168 h
    assert OpportunityView.from_event({**base, "details": {"horizon_hours": 24}}).net_apr == pytest.approx(
        5.0 / 10_000 * 8760 / 24
    )
    assert OpportunityView.from_event(base).net_apr == pytest.approx(5.0 / 10_000 * 8760 / 168)
    spot = OpportunityView.from_event({**base, "kind": "spot_spread"})
    assert np.isnan(spot.net_apr) and spot.threshold_value == 5.0


def test_single_exchange_kinds_need_only_their_leg() -> None:
    tech = opp(OpportunityKind.TECHNICAL, buy=None, sell="bybit")
    assert reason_of(make_user(exchanges={"bybit"}), o=tech) == (0, "eligible")
    assert reason_of(make_user(exchanges={"binance"}), o=tech) == (3, "preferences.exchange")


def test_an_unknown_exchange_or_symbol_matches_only_users_who_take_all() -> None:
    o = opp(buy="newex", symbol="NEW/USDT")
    assert reason_of(make_user(), o=o) == (0, "eligible")
    assert reason_of(make_user(exchanges={"binance"}), o=o) == (3, "preferences.exchange")
    assert reason_of(make_user(symbols={"BTC/USDT"}), o=o) == (3, "preferences.symbol")


def test_symbols_beyond_the_bitmask_are_exact() -> None:
    pol = policy()
    for i in range(80):
        pol.vocab.code("symbols", f"X{i:02d}/USDT")
    picky = make_user(symbols={"X75/USDT", "BTC/USDT"})
    assert reason_of(picky, pol, o=opp(symbol="X75/USDT")) == (0, "eligible")
    assert reason_of(picky, pol, o=opp(symbol="X76/USDT")) == (3, "preferences.symbol")
    assert reason_of(picky, pol, o=opp(symbol="BTC/USDT")) == (0, "eligible")


def test_rate_limits_per_tier() -> None:
    free = make_user(tier=Tier.FREE)
    assert reason_of(free, day_used=4, hour_used=1) == (0, "eligible")
    assert reason_of(free, day_used=5) == (4, "rate.daily")
    assert reason_of(free, hour_used=2) == (4, "rate.hourly")
    basic = make_user(tier=Tier.BASIC)
    assert reason_of(basic, day_used=19, hour_used=4) == (0, "eligible")
    assert reason_of(basic, day_used=20) == (4, "rate.daily")
    assert reason_of(make_user(tier=Tier.ENTERPRISE), day_used=499, hour_used=60) == (4, "rate.hourly")
    admins = policy(superadmin_ids="1")
    assert reason_of(make_user(1), admins, day_used=10**6, hour_used=10**6) == (0, "eligible")


def test_counters_of_another_day_or_hour_count_as_zero() -> None:
    pol = policy()
    r = row(make_user(tier=Tier.FREE), pol, day_used=50, hour_used=50)
    r["day_bucket"] -= 1
    r["hour_bucket"] -= 1
    assert decide([r], pol)["reason"].to_list() == ["eligible"]
    r["hour_bucket"] += 1
    assert decide([r], pol)["reason"].to_list() == ["rate.hourly"]


def test_quota_overrides_from_settings() -> None:
    pol = policy(distribution={"tiers": {"free": {"daily_quota": 10, "hourly_quota": None}}})
    assert reason_of(make_user(tier=Tier.FREE), pol, day_used=9, hour_used=50) == (0, "eligible")
    assert reason_of(make_user(tier=Tier.FREE), pol, day_used=10) == (4, "rate.daily")


def test_cooldown_by_ids_or_by_row_mask() -> None:
    pol = policy()
    rows = [row(make_user(1), pol), row(make_user(2), pol), row(make_user(3), pol)]
    by_ids = decide(rows, pol, cooled=[2, 99])
    assert by_ids["reason"].to_list() == ["eligible", "rate.cooldown", "eligible"]
    mask = pl.Series([False, True, False])
    assert decide(rows, pol, cooled=mask).equals(by_ids)
    assert decide(rows, pol, cooled=np.array([2])).equals(by_ids)
    assert cooled_mask(directory_frame(rows), [2]).to_list() == [False, True, False]
    with pytest.raises(ValueError, match="one entry per directory row"):
        evaluate(directory_frame(rows), opp(), NOW, pol, pl.Series([True]))


def _key(exchange: str) -> StoredApiKey:
    return StoredApiKey(exchange=exchange, key_masked="…abcd", secret_ciphertext="x", added_at=NOW)


def test_technical_layer() -> None:
    user = make_user(only_my_exchanges=True)
    assert reason_of(user) == (5, "technical.api_keys")
    user.api_keys = {"binance": _key("binance")}
    assert reason_of(user) == (5, "technical.api_keys")
    user.api_keys = {"binance": _key("binance"), "okx": _key("okx")}
    assert reason_of(user) == (0, "eligible")
    assert reason_of(user, o=opp(ai=True)) == (5, "technical.ai_key")
    user.api_keys["openai"] = _key("openai")
    assert reason_of(user, o=opp(ai=True)) == (0, "eligible")
    # an AI key is not an exchange key
    ai_only = make_user(only_my_exchanges=True)
    ai_only.api_keys = {"openai": _key("openai")}
    assert reason_of(ai_only) == (5, "technical.api_keys")


def test_context_layer() -> None:
    pol = policy(distribution={"region_blocks": "kp,ir"})
    user = make_user()
    user.restricted = True
    assert reason_of(user, pol) == (6, "context.restricted")
    user.restricted = False
    user.region = "KP"
    assert reason_of(user, pol) == (6, "context.region")
    user.region = "de"
    assert reason_of(user, pol) == (0, "eligible")
    assert reason_of(user, pol, blocked=True) == (6, "context.blocked")


def test_groups_get_twice_the_free_limits() -> None:
    pol = policy()
    assert pol.group_quotas() == (10, 4)
    d, h = day_bucket(NOW), hour_bucket(NOW)

    def group(day_used: int, hour_used: int, **kw: Any) -> dict[str, Any]:
        return group_row(-100, pol, day_bucket=d, day_used=day_used, hour_bucket=h, hour_used=hour_used, **kw)

    res = decide([group(9, 3), group(10, 0), group(0, 4)], pol)
    assert res["reason"].to_list() == ["eligible", "context.group_limit", "context.group_limit"]
    assert res["audience"].to_list() == ["group"] * 3
    # a free user with the group's usage is stopped by their own tier, in layer 4
    assert reason_of(make_user(tier=Tier.FREE), day_used=9) == (4, "rate.daily")
    # groups are Free for kinds and delay
    res = decide([group(0, 0)], pol, opp(OpportunityKind.FUNDING_RATE))
    assert res["reason"].to_list() == ["subscription.kind"]
    assert decide([group(0, 0)], pol)["due_at"].to_list() == [NOW + timedelta(seconds=300)]
    # a group the bot left, pushes off, min profit
    assert decide([group(0, 0, active=False)], pol)["reason"].to_list() == ["context.blocked"]
    assert decide([group(0, 0, pushes_on=False)], pol)["reason"].to_list() == ["preferences.off"]
    assert decide([group(0, 0, min_net_bps=50)], pol)["reason"].to_list() == ["preferences.min_profit"]
    # a group's threshold is a spot one: it does not filter a (Premium-only) funding carry by bps
    every_kind = policy(distribution={"tiers": {"free": {"kinds": [k.value for k in OpportunityKind]}}})
    carry = opp(OpportunityKind.FUNDING_RATE, net_bps=5.0, net_apr=0.2)
    picky = group_row(-5, every_kind, min_net_bps=50)
    assert decide([picky], every_kind, carry)["reason"].to_list() == ["eligible"]
    tripled = policy(distribution={"group_multiplier": 3})
    assert tripled.group_quotas() == (15, 6)


def test_superadmin_ids_get_the_superadmin_tier() -> None:
    pol = policy(superadmin_ids="7")
    res = decide([row(make_user(7, tier=Tier.FREE), pol, day_used=100)], pol, opp(OpportunityKind.TECHNICAL))
    assert res["tier"].to_list() == ["superadmin"]
    assert res["reason"].to_list() == ["eligible"]


# ---------------------------------------------------------------------------- order of the layers


def test_the_first_failing_layer_decides() -> None:
    everything_wrong = make_user(tier=Tier.FREE, pushes_on=False, only_my_exchanges=True)
    everything_wrong.restricted = True
    o = opp(OpportunityKind.FUNDING_RATE)
    assert reason_of(everything_wrong, session=None, o=o) == (1, "session.none")
    assert reason_of(everything_wrong, o=o) == (2, "subscription.kind")
    assert reason_of(everything_wrong, day_used=5) == (3, "preferences.off")
    everything_wrong.preferences.pushes_on = True
    assert reason_of(everything_wrong, day_used=5) == (4, "rate.daily")
    assert reason_of(everything_wrong, cooled=[1]) == (4, "rate.cooldown")
    assert reason_of(everything_wrong) == (5, "technical.api_keys")
    everything_wrong.preferences.only_my_exchanges = False
    assert reason_of(everything_wrong, blocked=True) == (6, "context.restricted")


def test_reasons_know_their_layer() -> None:
    assert Reason.ELIGIBLE.layer is Layer.ELIGIBLE
    assert Reason.RATE_COOLDOWN.layer is Layer.RATE_LIMITS
    assert Reason.CONTEXT_BLOCKED.layer is Layer.CONTEXT
    assert [r.layer for r in Reason] == sorted(r.layer for r in Reason)


# ---------------------------------------------------------------------------- active hours


def test_hold_waits_for_the_window_and_silent_goes_now_quietly() -> None:
    # 14:00 in Berlin; window 18-22
    held = make_user(1, timezone="Europe/Berlin", active_hours=(18, 22), outside_hours="hold")
    quiet = make_user(2, timezone="Europe/Berlin", active_hours=(18, 22), outside_hours="silent")
    inside = make_user(3, timezone="Europe/Berlin", active_hours=(9, 18), outside_hours="silent")
    pol = policy()
    res = decide([row(held, pol), row(quiet, pol), row(inside, pol)], pol)
    assert res["layer"].to_list() == [0, 0, 0]
    assert res["silent"].to_list() == [False, True, False]
    opening = datetime(2026, 6, 10, 18, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
    assert res["due_at"].to_list() == [opening, NOW, NOW]


def test_hold_is_refused_when_the_window_is_further_than_max_hold() -> None:
    pol = policy()
    pol.max_hold_s = 3 * 3600
    far = make_user(timezone="Europe/Berlin", active_hours=(18, 22))
    assert reason_of(far, pol) == (3, "preferences.hours")
    near = make_user(timezone="Europe/Berlin", active_hours=(16, 22))
    assert reason_of(near, pol) == (0, "eligible")
    muted_and_far = make_user(timezone="Europe/Berlin", active_hours=(18, 22), muted_until=NOW + timedelta(1))
    assert reason_of(muted_and_far, pol) == (3, "preferences.muted")


def test_the_tier_delay_and_the_window_combine() -> None:
    pol = policy()
    free = make_user(tier=Tier.FREE, timezone="UTC", active_hours=(12, 13))
    res = decide([row(free, pol)], pol, now=NOW.replace(minute=58))
    assert res["due_at"].to_list() == [NOW.replace(minute=58) + timedelta(seconds=300)]
    held = make_user(tier=Tier.FREE, timezone="UTC", active_hours=(13, 14))
    res = decide([row(held, pol)], pol, now=NOW.replace(minute=58))
    assert res["due_at"].to_list() == [NOW.replace(hour=13, minute=3)]  # 5 min delay wins


@pytest.mark.parametrize(
    ("local_hour", "inside"),
    [(21, False), (22, True), (23, True), (0, True), (5, True), (6, False), (12, False)],
)
def test_an_overnight_window(local_hour: int, inside: bool) -> None:
    tz = ZoneInfo("Asia/Tokyo")
    now = datetime(2026, 1, 15, local_hour, 30, tzinfo=tz).astimezone(UTC)
    user = make_user(timezone="Asia/Tokyo", active_hours=(22, 6))
    pol = policy()
    res = decide([row(user, pol, now=now)], pol, now=now)
    assert res["layer"].to_list() == [0]
    expected = now if inside else next_active_start(user.preferences, now)
    assert res["due_at"].to_list() == [expected.replace(microsecond=0)]
    if not inside:
        assert expected.astimezone(tz).hour == 22


@pytest.mark.parametrize(
    ("zone", "now", "window"),
    [
        # Berlin springs forward at 01:00 UTC on 2026-03-29: 02:00 local does not exist
        ("Europe/Berlin", datetime(2026, 3, 29, 0, 30, tzinfo=UTC), (2, 4)),
        ("Europe/Berlin", datetime(2026, 3, 29, 0, 30, tzinfo=UTC), (2, 3)),
        ("Europe/Berlin", datetime(2026, 3, 28, 23, 10, tzinfo=UTC), (3, 9)),
        # and falls back at 01:00 UTC on 2026-10-25: 02:00-02:59 happens twice
        ("Europe/Berlin", datetime(2026, 10, 24, 23, 30, tzinfo=UTC), (2, 3)),
        ("Europe/Berlin", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), (3, 5)),
        ("America/New_York", datetime(2026, 3, 8, 6, 15, tzinfo=UTC), (2, 4)),
        ("America/New_York", datetime(2026, 11, 1, 5, 59, tzinfo=UTC), (1, 2)),
        ("Asia/Kathmandu", datetime(2026, 5, 1, 0, 5, tzinfo=UTC), (6, 7)),
        ("America/St_Johns", datetime(2026, 3, 8, 5, 0, tzinfo=UTC), (2, 23)),
    ],
)
def test_openings_across_dst_match_next_active_start(
    zone: str, now: datetime, window: tuple[int, int]
) -> None:
    user = make_user(timezone=zone, active_hours=window)
    pol = policy()
    res = decide([row(user, pol, now=now)], pol, now=now)
    assert res["due_at"].to_list() == [next_active_start(user.preferences, now)]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(
        ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "America/St_Johns", "UTC"]
    ),
    start=st.integers(0, 23),
    span=st.integers(1, 23),
    minutes=st.integers(0, 366 * 24 * 60),
)
def test_next_opening_is_next_active_start(zone: str, start: int, span: int, minutes: int) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes, seconds=17)
    prefs = Preferences(timezone=zone, active_hours=(start, (start + span) % 24))
    expected = next_active_start(prefs, now)
    if expected != now:
        assert next_opening(ZoneInfo(zone), start, (start + span) % 24, now) == expected


# ---------------------------------------------------------------------------- explain, views


def test_explain_names_the_deciding_layer() -> None:
    pol = policy()
    directory = directory_frame(
        [
            row(make_user(1), pol),
            row(make_user(2, pushes_on=False), pol),
            row(make_user(3), pol, session=None),
        ]
    )
    assert explain(directory, 1, opp(), NOW, pol) == (Layer.ELIGIBLE, "eligible")
    assert explain(directory, 2, opp(), NOW, pol) == (Layer.PREFERENCES, "preferences.off")
    assert explain(directory, 3, opp(), NOW, pol) == (Layer.SESSION, "session.none")
    assert explain(directory, 1, opp(), NOW, pol, [1]) == (Layer.RATE_LIMITS, "rate.cooldown")
    with pytest.raises(KeyError):
        explain(directory, 4, opp(), NOW, pol)


def test_opportunity_view_from_an_event() -> None:
    event = {
        "opportunity_id": "abc",
        "kind": "funding_rate",
        "symbol": "BTC/USDT:USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "net_bps": 12.5,
        "confidence": 0.8,
        "priority": "high",
        "detected_at": "2026-06-10T12:00:00+00:00",
        "details": {"ai_enhanced": True},
    }
    view = OpportunityView.from_event(event)
    assert view.kind is OpportunityKind.FUNDING_RATE
    assert view.dedup_key == "funding_rate:BTC/USDT:USDT:binance:okx"
    assert view.detected_at == NOW and view.ai_enhanced and view.beta_flag is None
    assert view.priority is Priority.HIGH and view.exchanges == ("binance", "okx")
    tech = OpportunityView.from_event(
        {**event, "kind": "technical", "buy_exchange": None, "details": '{"beta_flag": "ta"}'}
    )
    assert tech.exchanges == ("okx",) and tech.beta_flag == "ta" and not tech.ai_enhanced
    assert tech.dedup_key == "technical:BTC/USDT:USDT::okx"
    with pytest.raises(ValueError, match="timezone-aware"):
        OpportunityView.from_event({**event, "detected_at": "2026-06-10T12:00:00"})


def test_an_empty_directory() -> None:
    pol = policy()
    res = evaluate(directory_frame([]), opp(), NOW, pol)
    assert res.height == 0 and res.schema == RESULT_SCHEMA


# ---------------------------------------------------------------------------- columnar == loop

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Sydney", "America/St_Johns"]
EXCHANGES = ["binance", "bybit", "okx", "kraken"]


@st.composite
def directories(
    draw: st.DrawFn,
) -> tuple[pl.DataFrame, EligibilityPolicy, OpportunityView, datetime, list[int]]:
    pol = policy(
        market={"exchanges": EXCHANGES, "symbols": ["BTC/USDT", "ETH/USDT"]},
        distribution={"region_blocks": ["KP"]},
    )
    for z in ZONES:
        pol.vocab.tz_code(z)
    for i in range(70):
        pol.vocab.code("symbols", f"S{i:02d}/USDT")
    for r in ("", "DE", "KP"):
        pol.vocab.region_code(r)
    pol.vocab.beta_mask(["ai", "ta"])
    if draw(st.booleans()):
        pol.max_hold_s = draw(st.sampled_from([0.0, 3600.0, 6 * 3600.0]))
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 365 * 24 * 60)))
    now_ms = to_ms(now)
    n_sym = len(pol.vocab.symbols)
    n = draw(st.integers(1, 25))
    rows: list[dict[str, Any]] = []
    for i in range(n):
        group = draw(st.integers(0, 9)) == 0
        start, end = draw(st.integers(0, 23)), draw(st.integers(0, 23))
        windowed = draw(st.booleans()) and start != end
        syms = draw(st.lists(st.integers(0, n_sym - 1), max_size=3, unique=True))
        tz = draw(st.integers(0, len(ZONES) - 1))
        blocked_syms = draw(st.lists(st.sampled_from([0, 5 + 2, 68 + 2, 1]), max_size=2, unique=True))
        rows.append(
            {
                "user_id": -(i + 1) if group else i + 1,
                "chat_id": -(i + 1) if group else i + 1,
                "audience": "group" if group else "user",
                "tier": draw(st.sampled_from([t.value for t in Tier])),
                "session_expires_ms": draw(
                    st.one_of(st.none(), st.integers(now_ms - 10_000, now_ms + 10_000), st.just(NO_EXPIRY_MS))
                ),
                "blocked": draw(st.booleans()),
                "pushes_on": draw(st.integers(0, 5)) > 0,
                "kinds": draw(st.integers(0, 7)),
                "exchanges": draw(st.sampled_from([0, 0, 1, 3, 5, 15, 1 << 63])),
                "symbols_n": len(syms),
                "symbols_mask": sum(1 << s for s in syms if s < 64),
                "symbols_extra": sorted(s for s in syms if s >= 64),
                "blocked_exchanges": draw(st.sampled_from([0, 0, 0, 1, 2, 4, 1 << 63])),
                "blocked_symbols_mask": sum(1 << s for s in blocked_syms if s < 64),
                "blocked_symbols_extra": sorted(s for s in blocked_syms if s >= 64),
                "min_size_usd": draw(st.sampled_from([0.0, 0.0, 1_000.0, 50_000.0])),
                "min_net_bps": draw(st.sampled_from([0.0, 5.0, 20.0, 30.0])),
                "min_net_apr_pct": draw(st.sampled_from([0.0, 10.0, 25.0, 50.0])),
                "min_confidence": draw(st.sampled_from([0.0, 0.5, 0.8, 0.95])),
                "muted_until_ms": draw(st.one_of(st.none(), st.integers(now_ms - 10_000, now_ms + 10_000))),
                "tz": tz,
                "window": start * 24 + end if windowed else -1,
                "outside_silent": draw(st.booleans()),
                "only_my_exchanges": draw(st.integers(0, 3)) == 0,
                "key_exchanges": draw(st.sampled_from([0, 1, 5, 7, 15])),
                "has_ai_key": draw(st.booleans()),
                "beta": draw(st.integers(0, 3)),
                "restricted": draw(st.integers(0, 9)) == 0,
                "region": draw(st.integers(0, 2)),
                "lang": 0,
                "day_bucket": local_day(now, ZONES[tz]) - draw(st.integers(-1, 1)),  # its local day
                "day_used": draw(st.integers(0, 25)),
                "hour_bucket": hour_bucket(now) - draw(st.integers(0, 1)),
                "hour_used": draw(st.integers(0, 6)),
            }
        )
    kind = draw(st.sampled_from(list(OpportunityKind)))
    legs = draw(st.sampled_from([("binance", "okx"), ("bybit", None), (None, "kraken"), ("nowhere", "okx")]))
    o = OpportunityView(
        opportunity_id="x",
        kind=kind,
        symbol=draw(st.sampled_from(["BTC/USDT", "S05/USDT", "S68/USDT", "UNKNOWN/USDT"])),
        buy_exchange=legs[0],
        sell_exchange=legs[1],
        net_bps=draw(st.sampled_from([0.0, 10.0, 25.0])),
        net_apr=draw(st.sampled_from([float("nan"), 0.0, 0.1, 0.3])),
        priority=Priority.MEDIUM,
        confidence=draw(st.sampled_from([0.5, 0.8, 0.9])),
        dedup_key="k",
        detected_at=now,
        ai_enhanced=draw(st.booleans()),
        beta_flag=draw(st.sampled_from([None, None, "ai", "unknown-flag"])),
        executable_usd=draw(st.sampled_from([float("nan"), 800.0, 10_000.0])),
    )
    cooled = draw(st.lists(st.integers(-30, 30), max_size=5))
    return directory_frame(rows), pol, o, now, cooled


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=directories())
def test_the_columnar_filter_is_the_loop(
    case: tuple[pl.DataFrame, EligibilityPolicy, OpportunityView, datetime, list[int]],
) -> None:
    directory, pol, o, now, cooled = case
    assert directory.schema == DIRECTORY_SCHEMA
    columnar = evaluate(directory, o, now, pol, cooled)
    looped = evaluate_loop(directory.to_dicts(), o, now, pol, cooled)
    assert columnar.equals(looped), (columnar, looped)
    # every row gets an answer, eligible rows are due no earlier than now
    assert columnar.height == directory.height
    due = columnar.filter(pl.col("layer") == 0)["due_at"].to_list()
    assert all(d >= now.replace(microsecond=0) for d in due)


def test_the_daily_quota_resets_at_the_users_local_midnight() -> None:
    """23:30 UTC is already tomorrow in Berlin: yesterday's count (Berlin's day) no longer
    counts there, while a UTC user at the same instant is still on their full day."""
    pol = policy()
    late = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)
    free_quota = pol.tiers[Tier.FREE].daily_quota
    assert free_quota is not None
    for tz, expected in (("UTC", (4, "rate.daily")), ("Europe/Berlin", (0, "eligible"))):
        user = make_user(tier=Tier.FREE, timezone=tz)
        day = local_day(datetime(2026, 12, 3, 12, tzinfo=UTC), tz)  # the day its count was drawn on
        assert reason_of(user, now=late, day=day, day_used=free_quota) == expected, tz
    assert local_day(late, "Europe/Berlin") == local_day(late, "UTC") + 1


# ---------------------------------------------------------------------------- masks kept current


def _cooled_rows(directory: pl.DataFrame, cooled: list[int]) -> np.ndarray:
    return np.flatnonzero(cooled_mask(directory, cooled).to_numpy())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=directories(), other=directories(), data=st.data())
def test_masks_kept_current_through_changes_are_a_fresh_evaluation(
    case: tuple[pl.DataFrame, EligibilityPolicy, OpportunityView, datetime, list[int]],
    other: tuple[pl.DataFrame, EligibilityPolicy, OpportunityView, datetime, list[int]],
    data: st.DataObject,
) -> None:
    """Build the masks, use them (their per-key arrays exist) or not (every array is built
    after the changes), then update rows in place, append rows and remove rows: every answer
    is the one of a fresh evaluation."""
    directory, pol, o, now, cooled = case
    fresh_rows, _, o2, _, _ = other
    masks = DirectoryMasks.build(directory, pol)
    masks.evaluate(o, now, _cooled_rows(directory, cooled))
    masks.evaluate(o2, now)
    unused = DirectoryMasks.build(directory, pol)
    rows = directory.to_dicts()
    news = fresh_rows.to_dicts()
    # rows changed in place (other preferences, counters, sessions; same ids)
    changed = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=len(news), unique=True))
    for i, new in zip(changed, news, strict=False):
        rows[i] = {**new, "user_id": rows[i]["user_id"], "chat_id": rows[i]["chat_id"]}
    # rows appended (new ids)
    appended = news[len(changed) :]
    for j, new in enumerate(appended):
        rows.append({**new, "user_id": 1000 + j, "chat_id": 1000 + j})
    updated = directory_frame(rows)
    touched = np.array(changed + list(range(directory.height, updated.height)), dtype=np.intp)
    masks.update(updated, touched)
    unused.update(updated, touched)
    # rows removed
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=updated.height, max_size=updated.height)))
    kept = updated.filter(pl.Series(keep))
    masks.keep(kept, keep)
    unused.keep(kept, keep)
    for view, m in ((o, masks), (o2, masks), (o2, unused), (o, unused)):
        decided = m.evaluate(view, now, _cooled_rows(kept, cooled))
        expected = evaluate(kept, view, now, pol, cooled)
        assert decided.result().equals(expected), (decided.result(), expected)
        assert decided.eligible_result().equals(expected.filter(pl.col("layer") == 0))
        counts = {Reason(r): n for r, n in expected.group_by("reason").len().iter_rows()}
        assert decided.reason_counts() == counts
        skipped = decided.result(decided.rows_from_layer(Layer.SUBSCRIPTION))
        assert skipped.equals(expected.filter(pl.col("layer") >= int(Layer.SUBSCRIPTION)))
        recorded = decided.result(decided.rows_recorded())
        out_of_scope = [r.value for r in OUT_OF_SCOPE]
        assert recorded.equals(
            expected.filter(
                (pl.col("layer") >= int(Layer.SUBSCRIPTION))
                & ~pl.col("reason").cast(pl.String).is_in(out_of_scope)
            )
        )


def test_a_user_in_a_time_zone_new_to_the_masks_is_judged_on_their_own_day() -> None:
    """The quota codes kept for "today" hold a day per time zone known then; a change that
    brings a zone nobody had (a new user on Kiritimati) failed the directory refresh with an
    IndexError at every retry (seen in the demo). The codes are now built anew instead."""
    pol = policy()
    free_quota = pol.tiers[Tier.FREE].daily_quota
    assert free_quota is not None
    utc = make_user(1, tier=Tier.FREE, timezone="UTC")
    directory = directory_frame([row(utc, pol)])
    masks = DirectoryMasks.build(directory, pol)
    assert masks.evaluate(opp(), NOW).eligible.tolist() == [0]  # the quota codes exist now
    far = make_user(2, tier=Tier.FREE, timezone="Pacific/Kiritimati")  # already tomorrow there
    full = row(far, pol, day_used=free_quota)  # its own day's quota used up
    updated = directory_frame([row(utc, pol), full])
    masks.update(updated, np.array([1], dtype=np.intp))
    decided = masks.evaluate(opp(), NOW)
    assert decided.result().equals(evaluate(updated, opp(), NOW, pol))
    assert decided.eligible.tolist() == [0]  # the UTC user; the other one's day is full


def test_the_masks_keep_a_bounded_number_of_symbols() -> None:
    pol = policy()
    for i in range(SYMBOL_KEYS + 8):
        pol.vocab.code("symbols", f"S{i:02d}/USDT")
    user = make_user(symbols=["S07/USDT"])
    directory = directory_frame([row(user, pol)])
    masks = DirectoryMasks.build(directory, pol)
    for i in range(SYMBOL_KEYS + 8):
        res = masks.evaluate(opp(symbol=f"S{i:02d}/USDT"), NOW).result()
        assert res.equals(evaluate(directory, opp(symbol=f"S{i:02d}/USDT"), NOW, pol))
    assert sum(1 for key in masks._keys if key[0] == "symbol") == SYMBOL_KEYS
    assert masks.evaluate(opp(symbol="S07/USDT"), NOW).eligible.tolist() == [0]
