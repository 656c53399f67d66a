"""``core.missed``: what counts as missed, when the digest goes, which upgrade would have shown it."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from core.accounts import DEFAULT_TIERS, Preferences, Tier, tier_policies
from core.missed import (
    MissedDigest,
    MissedItem,
    UpgradeOffer,
    cadence_of,
    next_digest_at,
    upgrade_offers,
    was_missed,
)

T0 = 1_700_000_000_000


def item(lifetime_s: float, net: float = 10.0, oid: str = "o1", kind: str = "spot_spread") -> MissedItem:
    return MissedItem(oid, kind, "DOGE/USDT", "binance", "okx", net, T0, T0 + int(lifetime_s * 1000))


def test_only_a_close_inside_the_tier_delay_and_before_the_due_time_is_missed() -> None:
    assert was_missed(delay_s=300, queued_ms=T0, due_ms=T0 + 300_000, closed_ms=T0 + 10_000)
    assert not was_missed(delay_s=0, queued_ms=T0, due_ms=T0, closed_ms=T0 - 1)  # no delay: never
    assert not was_missed(delay_s=300, queued_ms=T0, due_ms=T0 + 300_000, closed_ms=T0 + 300_000)
    # held by active hours past the tier delay: an upgrade would have held it too
    assert not was_missed(delay_s=300, queued_ms=T0, due_ms=T0 + 3_600_000, closed_ms=T0 + 400_000)


def test_cadence_per_tier() -> None:
    assert cadence_of(DEFAULT_TIERS[Tier.FREE]) == "daily"
    assert cadence_of(DEFAULT_TIERS[Tier.BASIC]) == "hourly"
    assert cadence_of(DEFAULT_TIERS[Tier.PREMIUM]) is None
    overridden = tier_policies({"premium": {"delay_s": 30}})
    assert cadence_of(overridden[Tier.PREMIUM]) == "daily"


@pytest.mark.parametrize(
    ("now", "tz", "hour", "expected"),
    [
        ("2026-03-10T07:59:00+00:00", "UTC", 9, "2026-03-10T09:00:00+00:00"),
        ("2026-03-10T09:00:00+00:00", "UTC", 9, "2026-03-11T09:00:00+00:00"),
        ("2026-03-10T07:30:00+00:00", "Europe/Berlin", 9, "2026-03-10T08:00:00+00:00"),
        ("2026-03-10T10:00:00+00:00", "Asia/Kolkata", 9, "2026-03-11T03:30:00+00:00"),
        # the night Berlin moves to summer time: 09:00 local is 07:00 UTC
        ("2026-03-29T01:00:00+00:00", "Europe/Berlin", 9, "2026-03-29T07:00:00+00:00"),
        ("2026-03-10T10:00:00+00:00", "Not/AZone", 9, "2026-03-11T09:00:00+00:00"),
    ],
)
def test_a_daily_digest_goes_at_the_users_local_hour(now: str, tz: str, hour: int, expected: str) -> None:
    at = next_digest_at(datetime.fromisoformat(now), "daily", tz=tz, hour=hour)
    assert at == datetime.fromisoformat(expected) and at.tzinfo is not None


def test_hourly_at_the_top_of_the_hour_and_the_period_override_wins() -> None:
    now = datetime(2026, 3, 10, 7, 59, 30, tzinfo=UTC)
    assert next_digest_at(now, "hourly") == datetime(2026, 3, 10, 8, tzinfo=UTC)
    assert (next_digest_at(now, "daily", period_s=15) - now).total_seconds() == 15


def test_upgrade_offers_end_at_the_first_tier_that_shows_them_all() -> None:
    free = DEFAULT_TIERS[Tier.FREE]
    long_and_short = [item(90, oid="a"), item(20, oid="b")]
    assert upgrade_offers(long_and_short, free, DEFAULT_TIERS) == (
        UpgradeOffer(Tier.BASIC, 60, 1),
        UpgradeOffer(Tier.PREMIUM, 0, 2),
    )
    assert upgrade_offers([item(20)], free, DEFAULT_TIERS) == (UpgradeOffer(Tier.PREMIUM, 0, 1),)
    assert upgrade_offers([item(20)], DEFAULT_TIERS[Tier.BASIC], DEFAULT_TIERS) == (
        UpgradeOffer(Tier.PREMIUM, 0, 1),
    )
    assert upgrade_offers([], free, DEFAULT_TIERS) == ()


def test_a_digest_lists_each_opportunity_once_best_first_and_items_round_trip() -> None:
    first = item(10, net=5.0, oid="x")
    again = MissedItem("x", "spot_spread", "DOGE/USDT", "binance", "okx", 7.0, T0, T0 + 60_000)
    other = item(30, net=math.nan, oid="y")
    best = item(30, net=20.0, oid="z")
    digest = MissedDigest.of([first, again, other, best], DEFAULT_TIERS[Tier.FREE], DEFAULT_TIERS, "daily")
    assert [i.opportunity_id for i in digest.items] == ["z", "x", "y"]
    assert digest.items[1].net_bps == 7.0
    for m in (first, best):
        assert MissedItem.from_dict(m.to_dict()) == m
    nan = MissedItem.from_dict(other.to_dict())
    assert math.isnan(nan.net_bps) and other.to_dict()["net_bps"] is None


def test_digest_hour_defaults_to_9_validates_and_off_is_none() -> None:
    assert Preferences().digest_hour == 9
    assert Preferences.model_validate({"timezone": "UTC"}).digest_hour == 9  # a record before it
    assert Preferences(digest_hour=None).digest_hour is None
    with pytest.raises(ValueError, match="0-23"):
        Preferences(digest_hour=24)
