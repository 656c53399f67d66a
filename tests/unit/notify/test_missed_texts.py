"""Golden texts of the "missed while delayed" digest, in English and Russian."""

from __future__ import annotations

from core.accounts import DEFAULT_TIERS, Tier
from core.missed import MissedDigest, MissedItem
from notify import texts
from notify.notifier import render

T0 = 1_764_000_000_000


def digest(tier: Tier = Tier.FREE, language: str = "en") -> MissedDigest:
    items = [
        MissedItem("a", "spot_spread", "DOGE/USDT", "binance", "okx", 42.04, T0, T0 + 95_000),
        MissedItem("b", "spot_spread", "BTC/USDT", "bybit", "okx", 12.46, T0, T0 + 20_000),
        MissedItem(
            "c", "funding_rate", "ETH/USDT:USDT", "okx", "bybit", 3.0, T0, T0 + 7_200_000, net_apr=0.153
        ),
    ]
    cadence = "hourly" if tier is Tier.BASIC else "daily"
    return MissedDigest.of(items, DEFAULT_TIERS[tier], DEFAULT_TIERS, cadence, language, hour=8)


GOLDEN_FREE = """🕑 <b>Missed while delayed</b>
3 opportunities closed before your Free delay (5m) was over:

• <b>DOGE/USDT</b> binance → okx · +42.0 bps net · lasted 1m
• <b>BTC/USDT</b> bybit → okx · +12.5 bps net · lasted 20s
• <b>ETH/USDT:USDT</b> okx → bybit · +15.3% APR net · lasted 2h 0m

⭐ Basic (1m delay) would have shown 2 of them; Premium shows them all live: /subscription
<i>Daily at 08:00 Europe/Berlin. Change it: /settings digest HOUR (0-23), or /settings digest off</i>"""


def test_the_free_digest_golden_text() -> None:
    text, markup = render(digest(), tz="Europe/Berlin")
    assert text == GOLDEN_FREE
    assert markup is None


def test_the_basic_digest_is_hourly_and_offers_premium() -> None:
    text = texts.missed_digest(digest(Tier.BASIC))
    assert text.splitlines()[0] == "🕑 <b>Missed this hour</b>"
    assert "before your Basic delay (1m) was over" in text
    assert "⭐ Premium shows them all live: /subscription" in text
    assert text.endswith("<i>Every hour. Turn it off: /settings digest off</i>")


def test_the_digest_in_russian() -> None:
    text = texts.missed_digest(digest(language="ru"), tz="Europe/Moscow")
    assert text.startswith("🕑 <b>Пропущено за время задержки</b>\n3 возможности закрылись раньше")
    assert "+42.0 б.п. чистыми · длилась 1 мин" in text  # noqa: RUF001
    assert "Премиум показывает их все сразу: /subscription" in text
    assert "Каждый день в 08:00 Europe/Moscow" in text
    # and the locale does not leak: the next English render is English
    assert texts.missed_digest(digest()).startswith("🕑 <b>Missed while delayed</b>")


def test_a_long_digest_counts_the_rest_and_fits_one_message() -> None:
    many = [
        MissedItem(f"o{i}", "spot_spread", f"C{i}/USDT", "binance", "okx", float(i), T0, T0 + 1000 * i)
        for i in range(60)
    ]
    text = texts.missed_digest(MissedDigest.of(many, DEFAULT_TIERS[Tier.FREE], DEFAULT_TIERS, "daily"))
    assert "… and 40 more" in text and len(text) <= texts.TELEGRAM_LIMIT
    assert text.count("• ") == texts.MISSED_LINES
