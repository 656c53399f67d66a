"""The payments texts (``notify/texts/payments.py``): every string is translated in Russian
with the same placeholders, and the screens render in both languages."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.accounts import DEFAULT_TIERS, Tier
from core.payments import DEFAULT_PRICES, purchasable
from notify import texts
from notify.i18n import read_catalogue, use_locale

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def block_strings() -> list[str]:
    block = (ROOT / "notify" / "texts" / "payments.py").read_text(encoding="utf-8")
    calls = [
        node
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_"
    ]
    return [ast.literal_eval(c.args[0]) for c in calls]


def test_every_payments_string_has_a_russian_translation_with_the_same_placeholders() -> None:
    strings = block_strings()
    assert len(strings) >= 30
    catalogue = read_catalogue(ROOT / "notify" / "locales" / "ru", "ru")  # every .po of the language
    for s in strings:
        message = catalogue.get(s)
        assert message is not None and message.string, f"no Russian for {s!r}"
        assert set(re.findall(r"{\w+}", s)) == set(re.findall(r"{\w+}", str(message.string))), s


def test_the_subscription_screen_in_english_and_russian() -> None:
    offers = purchasable(DEFAULT_PRICES, Tier.BASIC, NOW + timedelta(days=3), NOW)
    args = (DEFAULT_TIERS, DEFAULT_PRICES, Tier.BASIC, NOW + timedelta(days=3), "Europe/Berlin", NOW, offers)
    en = texts.subscription_screen(*args)
    assert "Your tier: Basic" in en and "Paid until 2026-12-06 13:00 Europe/Berlin" in en
    assert "1000 ⭐ for 30 days" in en and "← you" in en and "Free" in en
    assert texts.buy_button(offers[0], Tier.BASIC) == "Extend Basic · 250 ⭐"
    assert texts.buy_button(offers[1], Tier.BASIC) == "Buy Premium · 1000 ⭐ / 30 days"
    assert len(texts.invoice_title(offers[1])) <= 32
    assert (
        len(texts.invoice_description(DEFAULT_TIERS[Tier.ENTERPRISE], DEFAULT_PRICES[Tier.ENTERPRISE])) <= 255
    )
    with use_locale("ru"):
        ru = texts.subscription_screen(*args)
        assert "Ваш тариф: Базовый" in ru and "Оплачен до" in ru and "1000 ⭐ за 30 дн." in ru
        assert texts.tier_expired(Tier.PREMIUM).startswith("Оплаченный период")
        assert "Спасибо" in texts.payment_thanks(Tier.PREMIUM, NOW, "UTC")
