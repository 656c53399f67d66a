"""Tiers for sale in Telegram Stars: prices, what a user may buy, paid periods, payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.accounts import Tier, User
from core.payments import (
    DEFAULT_PRICES,
    PayloadError,
    TierPrice,
    check_purchase,
    decode_payload,
    encode_payload,
    new_expiry,
    purchasable,
    tier_prices,
)
from core.settings import DistributionSettings

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
KEY = b"k" * 32


def test_default_prices_and_overrides_from_settings_json() -> None:
    assert {t: (p.stars, p.days) for t, p in tier_prices().items()} == {
        Tier.BASIC: (250, 30),
        Tier.PREMIUM: (1000, 30),
        Tier.ENTERPRISE: (5000, 30),
    }
    dist = DistributionSettings.model_validate(
        {"prices": json.dumps({"premium": {"stars": 900}, "enterprise": None, "basic": {"days": 7}})}
    )
    prices = tier_prices(dist.prices)
    assert prices[Tier.PREMIUM] == TierPrice(tier=Tier.PREMIUM, stars=900, days=30)
    assert prices[Tier.BASIC] == TierPrice(tier=Tier.BASIC, stars=250, days=7)
    assert Tier.ENTERPRISE not in prices
    assert Tier.BASIC not in tier_prices({"basic": {"stars": 0}})
    for bad in ({"free": {"stars": 1}}, {"superadmin": {"stars": 1}}, {"gold": {"stars": 1}}):
        with pytest.raises(ValueError):
            tier_prices(bad)
    with pytest.raises(ValueError):
        tier_prices({"basic": {"stars": -5}})
    # a bad setting fails when the settings are read, naming the field
    for bad_json in ('{"free": {"stars": 10}}', '{"premium": {"stars": "many"}}', '{"gold": {}}'):
        with pytest.raises(ValueError, match="prices"):
            DistributionSettings.model_validate({"prices": bad_json})


def test_what_a_user_may_buy() -> None:
    prices = dict(DEFAULT_PRICES)
    assert [p.tier for p in purchasable(prices, Tier.FREE, None, NOW)] == [
        Tier.BASIC,
        Tier.PREMIUM,
        Tier.ENTERPRISE,
    ]
    # a paid Basic may extend Basic or go higher; an admin's permanent Basic only higher
    paid = NOW + timedelta(days=3)
    assert [p.tier for p in purchasable(prices, Tier.BASIC, paid, NOW)] == [
        Tier.BASIC,
        Tier.PREMIUM,
        Tier.ENTERPRISE,
    ]
    assert [p.tier for p in purchasable(prices, Tier.BASIC, None, NOW)] == [Tier.PREMIUM, Tier.ENTERPRISE]
    assert purchasable(prices, Tier.SUPERADMIN, None, NOW) == []


def test_paying_again_while_paid_extends_from_the_current_expiry() -> None:
    price = DEFAULT_PRICES[Tier.PREMIUM]
    assert new_expiry(None, NOW, price) == NOW + timedelta(days=30)
    running = NOW + timedelta(days=10)
    assert new_expiry(running, NOW, price) == running + timedelta(days=30)
    ended = NOW - timedelta(days=1)
    assert new_expiry(ended, NOW, price) == NOW + timedelta(days=30)


def test_payload_round_trip_and_tampering() -> None:
    price = DEFAULT_PRICES[Tier.ENTERPRISE]
    payload = encode_payload(price, -1001234567890, "a1b2c3d4e5f6", KEY)
    assert len(payload.encode()) <= 128
    decoded = decode_payload(payload, KEY)
    assert (decoded.tier, decoded.days, decoded.stars, decoded.user_id) == (
        Tier.ENTERPRISE,
        30,
        5000,
        -1001234567890,
    )
    cheaper = payload.replace(".5000.", ".5.")
    for bad in (cheaper, payload[:-1] + ("0" if payload[-1] != "0" else "1"), "hello", ""):
        with pytest.raises(PayloadError):
            decode_payload(bad, KEY)
    with pytest.raises(PayloadError):
        decode_payload(payload, b"other key")


def test_check_purchase_reasons() -> None:
    prices = dict(DEFAULT_PRICES)
    payload = decode_payload(encode_payload(prices[Tier.BASIC], 7, "n0nce", KEY), KEY)

    def check(**kw: object) -> str | None:
        args: dict[str, object] = {"payer_id": 7, "currency": "XTR", "total_amount": 250, "prices": prices}
        args.update(kw)
        return check_purchase(payload, **args)  # type: ignore[arg-type]

    assert check() is None
    assert check(payer_id=8) == "other_user"
    assert check(currency="USD") == "currency"
    assert check(total_amount=1) == "price_changed"
    assert check(prices=tier_prices({"basic": {"stars": 300}})) == "price_changed"
    assert check(prices=tier_prices({"basic": None})) == "not_for_sale"


def test_a_user_record_without_the_expiry_field_reads() -> None:
    old = {
        "id": 5,
        "tier": "premium",
        "created_at": NOW.isoformat(),
        "last_seen_at": NOW.isoformat(),
    }
    user = User.model_validate(old)
    assert user.tier is Tier.PREMIUM and user.tier_expires_at is None
    paid = user.model_copy(update={"tier_expires_at": NOW})
    again = User.model_validate_json(paid.model_dump_json())
    assert again.tier_expires_at == NOW
    with pytest.raises(ValueError):
        User.model_validate({**old, "tier_expires_at": "2026-12-03T12:00:00"})  # naive
