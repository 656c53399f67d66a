"""Pushes in Russian, golden: the same real numbers as the English pushes, in the user's
language (``notify.notifier.render(..., lang="ru")``, as a queue shard renders them)."""

# ruff: noqa: RUF001 (Russian letters that look like Latin ones are meant)

from __future__ import annotations

import dataclasses
from datetime import timedelta

from core.models import OpportunityKind, Priority
from core.notifications import Digest, Notification
from notify import texts
from notify.i18n import use_locale
from notify.notifier import render
from tests.unit.notify.test_push_texts import AT, note, plain

SENT = AT + timedelta(seconds=42)

SPOT = dataclasses.replace(
    note(net=18.4, oid="spot-1"),
    transfer_network="TRC20",
    transfer_bps=1.2,
    executable_usd=7_450.0,
    buy_vwap=64_012.5,
    sell_vwap=64_140.25,
    buy_fee=0.001,
    sell_fee=0.0008,
)
FUNDING = dataclasses.replace(
    note(
        OpportunityKind.FUNDING_RATE,
        oid="fund-1",
        apr=0.1534,
        priority=Priority.MEDIUM,
        net_apr=0.073,
        horizon=168,
    ),
    long_rate=-0.0001,
    long_interval_hours=8,
    short_rate=0.00025,
    short_interval_hours=4,
    next_funding=AT + timedelta(hours=2, minutes=25),
)
SIGNAL = dataclasses.replace(
    note(OpportunityKind.TECHNICAL, oid="tech-1", sell=None, priority=Priority.LOW),
    signal="rsi_oversold",
    timeframe="1h",
    indicator=27.43,
    hit_rate=0.62,
    hit_samples=21,
)
BUTTONS = ["🔎 Подробнее", "🔕 Пауза 1 ч", "📋 Ещё"]


def ru(item: Notification | Digest, **kw: object) -> tuple[list[str], list[str]]:
    text, markup = render(item, tz="Europe/Moscow", lang="ru", **kw)  # type: ignore[arg-type]
    return plain(text).splitlines(), [b.text for row in markup.inline_keyboard for b in row]


def test_a_spot_push_in_russian() -> None:
    assert ru(SPOT, now=SENT) == (
        [
            "🔥 BTC/USDT — Спотовые спреды",
            "покупка binance → продажа okx",
            "Чистыми: +18.4 б.п. (грязными +20.0 б.п.) · мгновенно",
            "Покупка по 64,012.50 · продажа по 64,140.25 (средние цены на $10,000)",
            "Исполнимо: $7,450 по этому спреду · тейкер-комиссии 0.10% + 0.08% уже учтены",
            "Перевод: сеть TRC20, комиссия за вывод 1.2 б.п. уже учтена",
            "Уверенность 85%",
            "Обнаружено 15:34:56 MSK · 42 с назад",
        ],
        BUTTONS,
    )


def test_a_funding_push_in_russian() -> None:
    lines, buttons = ru(FUNDING, now=SENT)
    assert lines == [
        "⚡ BTC/USDT — Ставки фандинга",
        "лонг binance / шорт okx",
        "Чистыми: +7.3% годовых · +2.0 б.п./день",
        "Грязными: +15.3% годовых",
        "Итого за 168 ч: чистыми +12.3 б.п. (грязными +20.0 б.п.)",
        "Фандинг: лонг binance -0.0100% / 8 ч · шорт okx +0.0250% / 4 ч",
        "Следующий фандинг: 17:59 MSK (через 2 ч 24 мин)",
        "Объём: $10,000 · уверенность 85%",
        "Обнаружено 15:34:56 MSK · 42 с назад",
    ]
    assert buttons == BUTTONS


def test_a_signal_push_in_russian_with_plural_forms() -> None:
    lines, _ = ru(SIGNAL, now=SENT)
    assert lines == [
        "• BTC/USDT — Технические сигналы",
        "лонг на binance",
        "RSI 27.4 — перепроданность на свечах 1h",
        "Точность здесь: 62% по 21 прошлому сигналу",
        "Объём: $10,000 · уверенность 85%",
        "Обнаружено 15:34:56 MSK · 42 с назад",
    ]
    lines, _ = ru(dataclasses.replace(SIGNAL, hit_samples=12), now=SENT)
    assert "Точность здесь: 62% по 12 прошлым сигналам" in lines


def test_a_digest_in_russian_and_its_edit_on_close() -> None:
    eth = dataclasses.replace(SPOT, opportunity_id="spot-2", symbol="ETH/USDT", net_bps=9.5)
    lines, buttons = ru(Digest.of([SPOT, FUNDING, eth]), now=SENT, closed={"fund-1": 42.0})
    assert lines == [
        "📬 3 новые возможности",
        "",
        "1. 🔥 BTC/USDT спред · покупка binance → продажа okx · +18.4 б.п.",
        "2. 🔥 ETH/USDT спред · покупка binance → продажа okx · +9.5 б.п.",
        "3. ⚡ BTC/USDT фандинг · лонг binance / шорт okx · +7.3% годовых · ✅ Закрылась через 42 с",
        "",
        "Нажмите номер, чтобы увидеть подробности.",
    ]
    assert buttons == ["1", "2", "3", *BUTTONS[1:]]
    five = [dataclasses.replace(SPOT, opportunity_id=f"s{i}") for i in range(5)]
    assert ru(Digest.of(five), now=SENT)[0][0] == "📬 5 новых возможностей"


def test_english_stays_the_default_and_an_unknown_language_reads_as_english() -> None:
    text, _ = render(SPOT, tz="UTC", now=SENT, lang="de")
    assert plain(text).splitlines()[0] == "🔥 BTC/USDT — Spot spreads"
    with use_locale("ru"):
        assert texts.push_message(SPOT).startswith("🔥 <b>BTC/USDT</b> — Спотовые спреды")
    assert texts.push_message(SPOT).startswith("🔥 <b>BTC/USDT</b> — Spot spreads")  # the locale was restored
