"""Tiers, preferences, active hours (time zones, midnight, DST), masks, users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from core.accounts import (
    DEFAULT_TIERS,
    Command,
    OnboardingStep,
    Preferences,
    StoredApiKey,
    Tier,
    User,
    effective_tier,
    is_active_hour,
    is_muted,
    mask,
    next_active_start,
    tier_policies,
)
from core.models import OpportunityKind as K

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_tier_order_is_by_rank_not_alphabet() -> None:
    assert Tier.FREE < Tier.BASIC < Tier.PREMIUM < Tier.ENTERPRISE < Tier.SUPERADMIN
    assert max(Tier.BASIC, Tier.ENTERPRISE) is Tier.ENTERPRISE
    assert sorted([Tier.SUPERADMIN, Tier.FREE, Tier.PREMIUM]) == [Tier.FREE, Tier.PREMIUM, Tier.SUPERADMIN]
    assert Tier.BASIC >= Tier.BASIC and not Tier.BASIC > Tier.BASIC
    assert Tier("premium") == "premium"
    assert {Tier.FREE: 1}[Tier("free")] == 1


@pytest.mark.parametrize(
    ("tier", "kinds", "day", "hour", "delay"),
    [
        (Tier.FREE, {K.SPOT_SPREAD}, 5, 2, 300),
        (Tier.BASIC, {K.SPOT_SPREAD, K.FUNDING_RATE}, 20, 5, 60),
        (Tier.PREMIUM, set(K), 100, 20, 0),
        (Tier.ENTERPRISE, set(K), 500, 60, 0),
        (Tier.SUPERADMIN, set(K), None, None, 0),
    ],
)
def test_default_tiers(tier: Tier, kinds: set[K], day: int | None, hour: int | None, delay: int) -> None:
    policy = DEFAULT_TIERS[tier]
    assert policy.tier is tier
    assert set(policy.kinds) == kinds
    assert (policy.daily_quota, policy.hourly_quota, policy.delay_s) == (day, hour, delay)
    assert policy.cooldown_s == 4 * 3600
    assert policy.unlimited is (tier is Tier.SUPERADMIN)
    for kind in K:
        assert policy.allows_kind(kind) is (kind in kinds)
        assert policy.allows_kind(kind.value) is (kind in kinds)


def test_commands_by_tier() -> None:
    for tier in Tier:
        policy = DEFAULT_TIERS[tier]
        assert policy.allows_command("/start") and policy.allows_command(Command.STOP)
        assert policy.allows_command("/admin") is (tier is Tier.SUPERADMIN)
        assert policy.allows_command("apikeys") is (tier >= Tier.BASIC)
        assert not policy.allows_command("/nonsense")


def test_tier_overrides_merge_field_by_field() -> None:
    table = tier_policies({"free": {"daily_quota": 10}, "basic": {"kinds": ["spot_spread"]}})
    assert table[Tier.FREE].daily_quota == 10 and table[Tier.FREE].hourly_quota == 2
    assert table[Tier.BASIC].kinds == frozenset({K.SPOT_SPREAD})
    assert table[Tier.PREMIUM] == DEFAULT_TIERS[Tier.PREMIUM]
    with pytest.raises(ValidationError):
        tier_policies({"free": {"daily_quota": -1}})
    with pytest.raises(ValueError):
        tier_policies({"gold": {}})


def test_superadmins_come_from_settings() -> None:
    assert effective_tier(7, Tier.FREE, [7, 8]) is Tier.SUPERADMIN
    assert effective_tier(9, Tier.BASIC, [7, 8]) is Tier.BASIC
    # a SuperAdmin tier stored earlier, of someone no longer in ARBFLOW_SUPERADMIN_IDS: Free
    assert effective_tier(9, Tier.SUPERADMIN, [7, 8]) is Tier.FREE
    assert effective_tier(7, Tier.SUPERADMIN, [7, 8]) is Tier.SUPERADMIN


def test_preferences_defaults_and_validation() -> None:
    p = Preferences()
    assert p.pushes_on and p.kinds == set(K) and p.exchanges == set() and p.symbols == set()
    assert p.min_net_bps == Decimal(0) and p.timezone == "UTC" and p.active_hours is None
    with pytest.raises(ValidationError):
        Preferences(timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        Preferences(active_hours=(8, 8))
    with pytest.raises(ValidationError):
        Preferences(active_hours=(8, 24))
    with pytest.raises(ValidationError):
        Preferences(outside_hours="drop")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Preferences(muted_until=datetime(2026, 1, 1))  # naive
    with pytest.raises(ValidationError):
        p.timezone = "Nowhere/Land"  # validated on assignment too
    assert Preferences(exchanges={" Binance ", "OKX"}).exchanges == {"binance", "okx"}
    assert Preferences.model_validate({"min_net_bps": "12.5"}).min_net_bps == Decimal("12.5")


def test_a_threshold_per_kind_and_an_old_record() -> None:
    p = Preferences(min_net_bps=Decimal(15), min_net_apr_pct=Decimal(20), min_confidence=Decimal("0.8"))
    assert p.threshold(K.SPOT_SPREAD) == Decimal(15)
    assert p.threshold(K.FUNDING_RATE) == Decimal(20)
    assert p.threshold(K.TECHNICAL) == Decimal("0.8")
    with pytest.raises(ValidationError):
        Preferences(min_confidence=Decimal("1.5"))
    # a record of the previous release: one min_net_bps, which was and is the spot minimum
    old = Preferences.model_validate_json('{"pushes_on": true, "min_net_bps": "12"}')
    assert old.threshold(K.SPOT_SPREAD) == Decimal(12)
    assert old.threshold(K.FUNDING_RATE) == 0 and old.threshold(K.TECHNICAL) == 0


def test_preferences_json_round_trip_keeps_decimal_and_sets() -> None:
    p = Preferences(
        kinds={K.FUNDING_RATE},
        symbols={"ETH/USDT", "BTC/USDT"},
        min_net_bps=Decimal("7.25"),
        timezone="Asia/Kolkata",
        active_hours=(22, 6),
        outside_hours="silent",
        muted_until=NOW,
    )
    data = p.model_dump(mode="json")
    assert data["symbols"] == ["BTC/USDT", "ETH/USDT"] and data["min_net_bps"] == "7.25"
    assert Preferences.model_validate_json(p.model_dump_json()) == p


def _prefs(tz: str, hours: tuple[int, int] | None) -> Preferences:
    return Preferences(timezone=tz, active_hours=hours)


@pytest.mark.parametrize(
    ("hours", "local_hour", "expected"),
    [
        ((8, 20), 7, False),
        ((8, 20), 8, True),
        ((8, 20), 19, True),
        ((8, 20), 20, False),
        ((22, 6), 23, True),  # wraps midnight
        ((22, 6), 0, True),
        ((22, 6), 5, True),
        ((22, 6), 6, False),
        ((22, 6), 12, False),
        ((8, 0), 23, True),  # "until midnight"
        ((8, 0), 0, False),
    ],
)
def test_active_hours_utc(hours: tuple[int, int], local_hour: int, expected: bool) -> None:
    now = datetime(2026, 6, 15, local_hour, 30, tzinfo=UTC)
    assert is_active_hour(_prefs("UTC", hours), now) is expected


def test_always_active_without_hours() -> None:
    assert is_active_hour(_prefs("Asia/Tokyo", None), NOW)
    assert next_active_start(_prefs("Asia/Tokyo", None), NOW) == NOW


def test_active_hours_in_the_users_zone() -> None:
    # 12:00 UTC is 21:00 in Tokyo and 17:30 in Kolkata (half-hour offset)
    assert not is_active_hour(_prefs("Asia/Tokyo", (8, 20)), NOW)
    assert is_active_hour(_prefs("Asia/Tokyo", (20, 2)), NOW)
    assert is_active_hour(_prefs("Asia/Kolkata", (17, 18)), NOW)
    assert not is_active_hour(_prefs("Asia/Kolkata", (18, 19)), NOW)
    # 03:00 UTC is 23:00 the previous day in New York (EDT): inside a 22 -> 6 window
    assert is_active_hour(_prefs("America/New_York", (22, 6)), datetime(2026, 6, 15, 3, tzinfo=UTC))


def test_active_hours_follow_the_local_clock_across_dst() -> None:
    berlin = _prefs("Europe/Berlin", (8, 20))
    # 06:30 UTC: 07:30 CET on the Saturday, 08:30 CEST on the Sunday DST starts (2026-03-29)
    assert not is_active_hour(berlin, datetime(2026, 3, 28, 6, 30, tzinfo=UTC))
    assert is_active_hour(berlin, datetime(2026, 3, 29, 6, 30, tzinfo=UTC))
    # and back in autumn (2026-10-25): 06:30 UTC is 08:30 CEST on Saturday, 07:30 CET on Sunday
    assert is_active_hour(berlin, datetime(2026, 10, 24, 6, 30, tzinfo=UTC))
    assert not is_active_hour(berlin, datetime(2026, 10, 25, 6, 30, tzinfo=UTC))


def test_window_inside_the_spring_gap() -> None:
    # 02:00-03:00 does not exist in Berlin on 2026-03-29: no active hour that day
    gap = _prefs("Europe/Berlin", (2, 3))
    day = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    assert not any(is_active_hour(gap, day + timedelta(minutes=15 * i)) for i in range(24 * 4))
    # the next opening is the following night, 02:00 CEST = 00:00 UTC
    assert next_active_start(gap, datetime(2026, 3, 28, 23, 0, tzinfo=UTC)) == datetime(
        2026, 3, 30, 0, 0, tzinfo=UTC
    )


def test_next_active_start() -> None:
    tokyo = _prefs("Asia/Tokyo", (8, 20))
    # 21:00 in Tokyo -> tomorrow 08:00 JST = 23:00 UTC today
    assert next_active_start(tokyo, NOW) == datetime(2026, 6, 15, 23, 0, tzinfo=UTC)
    wrap = _prefs("UTC", (22, 6))
    assert next_active_start(wrap, NOW) == datetime(2026, 6, 15, 22, 0, tzinfo=UTC)
    opened = next_active_start(wrap, NOW)
    assert is_active_hour(wrap, opened) and not is_active_hour(wrap, opened - timedelta(minutes=1))


def test_mute() -> None:
    p = Preferences(muted_until=NOW + timedelta(hours=2))
    assert is_muted(p, NOW) and is_muted(p, NOW + timedelta(hours=1, minutes=59))
    assert not is_muted(p, NOW + timedelta(hours=2))
    assert not is_muted(Preferences(), NOW)


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("abcdEFGHijklMNOPwxyz", "abcd…wxyz"),
        ("abcdefghijkl", "abcd…ijkl"),
        ("abcdefgh", "…efgh"),
        ("abc", "…"),
        ("", "…"),
    ],
)
def test_mask(secret: str, shown: str) -> None:
    assert mask(secret) == shown
    if len(secret) >= 8:
        assert secret[4:-4] not in mask(secret) or len(secret[4:-4]) == 0


def test_user_round_trip_and_helpers() -> None:
    key = StoredApiKey(
        exchange="binance", key_masked="abcd…wxyz", secret_ciphertext="gAAAA-cipher", added_at=NOW
    )
    user = User.new(42, NOW, username="alice", referral="camp1", timezone="Europe/Berlin")
    user.api_keys["binance"] = key
    user.beta_flags = {"ai", "digest"}
    assert user.tier is Tier.FREE and user.onboarding_step is OnboardingStep.NEW
    assert user.preferences.timezone == "Europe/Berlin" and user.key_exchanges == {"binance"}
    again = User.model_validate_json(user.model_dump_json())
    assert again == user
    assert "gAAAA" not in repr(key)
    with pytest.raises(ValidationError):
        User(id=1, created_at=datetime(2026, 1, 1), last_seen_at=NOW)
    with pytest.raises(ValidationError):
        user.tier = "gold"  # type: ignore[assignment]
