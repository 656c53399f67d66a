"""Push rendering: HTML that the sandbox's parser accepts, escaped, one message of ≤ 4096 characters."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from core.models import OpportunityKind, Priority
from core.notifications import Digest, Notification
from notify import keyboards, texts
from notify.keyboards import PushAction
from serve.standins.sandbox.limits import MAX_TEXT_LENGTH, parse_html

AT = datetime(2025, 3, 1, 12, 34, 56, tzinfo=UTC)
UUID = "01954f3a-8c2e-7d41-9a6b-3f2e1d0c9b8a"


def note(
    kind: OpportunityKind = OpportunityKind.SPOT_SPREAD,
    *,
    oid: str = UUID,
    symbol: str = "BTC/USDT",
    buy: str | None = "binance",
    sell: str | None = "okx",
    net: float = 12.34,
    apr: float | None = None,
    priority: Priority = Priority.HIGH,
    minutes: int = 0,
    net_apr: float | None = None,
    horizon: float | None = None,
) -> Notification:
    return Notification(
        oid,
        kind,
        symbol,
        buy,
        sell,
        net,
        20.0,
        apr,
        10_000.0,
        0.85,
        priority,
        AT + timedelta(minutes=minutes),
        net_apr,
        horizon,
    )


def plain(html: str) -> str:
    text, _ = parse_html(html)  # raises for anything Telegram would refuse
    assert len(text) <= MAX_TEXT_LENGTH
    return text


def test_spot_spread_push() -> None:
    text = plain(texts.push_message(note()))
    assert text.splitlines() == [
        "🔥 BTC/USDT — Spot spreads",
        "buy binance → sell okx",
        "Net: +12.3 bps (gross +20.0 bps) · instant",
        "Size: $10,000 · confidence 85%",
        "Detected 12:34:56 UTC",
    ]


def test_funding_and_technical_pushes() -> None:
    carry = note(OpportunityKind.FUNDING_RATE, apr=0.1534, priority=Priority.LOW, net_apr=0.073, horizon=168)
    funding = plain(texts.push_message(carry)).splitlines()
    assert "• BTC/USDT — Funding rates" in funding and "long binance / short okx" in funding
    # APR and bps a day first; a total only with the horizon it is a return over
    assert "Net: +7.3% APR · +2.0 bps/day" in funding
    assert "Gross: +15.3% APR" in funding
    assert "Total over 168 h: net +12.3 bps (gross +20.0 bps)" in funding
    assert not any(line.startswith("Net: +12.3 bps") for line in funding)
    # an event without the APR but with the horizon: the APR from the total
    derived = plain(texts.push_message(note(OpportunityKind.FUNDING_RATE, net=24.0, horizon=24)))
    assert "Net: +87.6% APR · +24.0 bps/day" in derived
    # the APR without the horizon (the scalar evaluators' details): the horizon from the two
    no_horizon = note(OpportunityKind.FUNDING_RATE, net=24.0, net_apr=24.0 / 10_000 * 8760 / 72)
    assert "Total over 72 h: net +24.0 bps (gross +20.0 bps)" in plain(texts.push_message(no_horizon))
    line = texts.push_line(1, carry)
    assert line.endswith("· +7.3% APR") and "bps" not in line
    tech = plain(texts.push_message(note(OpportunityKind.TECHNICAL, buy=None, sell="bybit", net=math.nan)))
    assert "short on bybit" in tech and "Net:" not in tech


def test_user_supplied_values_are_escaped() -> None:
    html = texts.push_message(note(symbol="<b>X</b>&Y", buy="ex<i>"))
    assert "&lt;b&gt;X&lt;/b&gt;&amp;Y" in html
    text = plain(html)
    assert "<b>X</b>&Y" in text and "buy ex<i> → sell okx" in text


def test_absurdly_long_values_still_make_one_message() -> None:
    html = texts.push_message(note(symbol="S" * 5000))
    assert len(html) <= texts.TELEGRAM_LIMIT
    plain(html)


def test_digest_lists_items_in_order() -> None:
    d = Digest.of(
        [
            note(oid="a", symbol="AAA/USDT", priority=Priority.LOW),
            note(oid="b", symbol="BBB/USDT", priority=Priority.HIGH, minutes=1),
            note(OpportunityKind.TECHNICAL, oid="c", symbol="CCC/USDT", sell=None, priority=Priority.MEDIUM),
        ]
    )
    lines = plain(texts.push_digest(d)).splitlines()
    assert lines[0] == "📬 3 new opportunities"
    assert lines[2].startswith("1. 🔥 BBB/USDT spread · buy binance → sell okx · +12.3 bps")
    assert lines[3] == "2. ⚡ CCC/USDT signal · long on binance"
    assert lines[4].startswith("3. • AAA/USDT")
    # a digest of one is the single push
    assert texts.push_digest(Digest.of([note()])) == texts.push_message(note())


def test_a_huge_digest_is_trimmed_with_a_count_of_the_rest() -> None:
    d = Digest.of([note(oid=f"id-{i}", symbol=f"SYM{i}/USDT", minutes=-i) for i in range(400)])
    html = texts.push_digest(d)
    assert len(html) <= texts.TELEGRAM_LIMIT
    lines = plain(html).splitlines()
    shown = [line for line in lines if line[:1].isdigit()]
    assert 10 < len(shown) < 400
    assert f"…and {400 - len(shown)} more: /opportunities" in lines


def test_push_keyboards_and_callback_data() -> None:
    single = keyboards.push(note())
    data = [b.callback_data for row in single.inline_keyboard for b in row]
    assert data == [f"pu:details:{UUID}", f"pu:mute1h:{UUID}", f"pu:more:{UUID}"]
    assert all(d is not None and len(d.encode()) <= 64 for d in data)
    assert PushAction.unpack(str(data[0])) == PushAction(action="details", id=UUID)

    d = Digest.of([note(oid=f"{UUID[:-2]}{i:02d}", minutes=i) for i in range(7)])
    rows = keyboards.push(d).inline_keyboard
    assert [b.text for b in rows[0]] == ["1", "2", "3", "4", "5"]
    assert rows[0][0].callback_data == f"pu:details:{d.items[0].opportunity_id}"
    assert [b.text for b in rows[-1]] == [texts.PUSH_MUTE, texts.PUSH_MORE]


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo"])
def test_mute_answer_is_plain_text_in_the_users_zone(tz: str) -> None:
    answer = texts.push_muted_answer(AT + timedelta(hours=1), tz)
    assert "<" not in answer and tz in answer
    assert ("13:34" if tz == "UTC" else "22:34") in answer


def test_a_spot_push_names_its_transfer_route_and_an_unknown_status() -> None:
    event = {
        "opportunity_id": UUID,
        "kind": "spot_spread",
        "symbol": "BTC/USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "net_bps": 30.0,
        "gross_bps": 52.0,
        "notional_usd": 10_000.0,
        "confidence": 0.8,
        "priority": "high",
        "detected_at": AT.isoformat(),
        "flags": ["transfer_unknown"],
        "details": {"transfer_network": "BEP20", "transfer_bps": 0.42},
    }
    n = Notification.from_event(event)
    assert (n.transfer_network, n.transfer_bps, n.transfer_unknown) == ("BEP20", 0.42, True)
    text = plain(texts.push_message(n))
    assert "Transfer: BEP20 network, withdrawal fee 0.4 bps, in the net" in text.splitlines()
    assert texts.TRANSFER_UNKNOWN_TEXT in text
    # a lake row (flags comma-separated, details JSON) and a record of an older release
    row = {**event, "flags": "default_fee", "details": '{"transfer_network": "BTC"}'}
    assert (
        plain(texts.push_message(Notification.from_event(row))).count("Transfer: BTC network, fee not known")
        == 1
    )
    old = {k: v for k, v in event.items() if k not in ("flags", "details")}
    older = Notification.from_event(old)
    assert (older.transfer_network, older.transfer_bps, older.transfer_unknown) == (None, None, False)
    assert "Transfer" not in plain(texts.push_message(older))


# -- golden pushes from events the demo wrote (arbflow demo, live source, 2026-12-03) ------------

SPOT_EVENT = {
    "opportunity_id": "01a23c6f-c2df-742f-bec6-c079d8b823c3", "kind": "spot_spread", "symbol": "BTC/USDT",
    "buy_exchange": "binance", "sell_exchange": "okx", "gross_bps": 84.34853240286324,
    "net_bps": 58.51691826950317, "gross_apr": None, "notional_usd": 10000.0, "executable_usd": 10000.0,
    "confidence": 0.8504522759234955, "priority": "high", "flags": "",
    "detected_at": "2026-12-03T15:04:47.071000+00:00",
    "details": '{"buy_fee":0.001,"buy_vwap":89712.29,"sell_fee":0.0015,"sell_vwap":90469.0,'
    '"transfer_bps":0.6459284879999999,"transfer_network":"BEP20","executable_base":0.11146744777109135}',
}  # fmt: skip
FUNDING_EVENT = {
    "opportunity_id": "01a23c6f-a1c0-79f2-b40d-b0bb12760ecb", "kind": "funding_rate",
    "symbol": "ETH/USDT:USDT", "buy_exchange": "bybit", "sell_exchange": "binance",
    "gross_bps": 490.10640000000006, "net_bps": 467.50873937939963, "gross_apr": 2.5555548000000003,
    "notional_usd": 10000.0, "executable_usd": None, "confidence": 0.8994467783848804,
    "priority": "high", "flags": "", "detected_at": "2026-12-03T15:04:38.592000+00:00",
    "details": '{"horizon_hours":168.0,"long_interval_hours":8.0,'
    '"long_next_funding":"2026-12-03T16:00:00+00:00","long_rate_per_hour":1.158625e-05,"net_apr":2.4377241410497263,"short_interval_hours":8.0,'
    '"short_next_funding":"2026-12-03T16:00:00+00:00","short_rate_per_hour":0.00030331625}',
}  # fmt: skip
TECHNICAL_EVENT = {
    "opportunity_id": "01a23c70-0000-7000-8000-000000000001", "kind": "technical", "symbol": "SOL/USDT",
    "buy_exchange": "bybit", "sell_exchange": None, "gross_bps": 0.0, "net_bps": 0.0, "gross_apr": None,
    "notional_usd": 10000.0, "confidence": 0.62, "priority": "low", "flags": "",
    "detected_at": "2026-12-03T15:05:00+00:00",
    "details": {"signal": "rsi_oversold", "timeframe": "1m", "rsi": 24.73, "close": 151.52,
                "hit_rate": 0.5833, "hit_samples": 24},
}  # fmt: skip


def test_golden_spot_push_in_the_users_zone_with_its_age() -> None:
    n = Notification.from_event(SPOT_EVENT)
    sent = n.detected_at + timedelta(seconds=3.4)
    assert plain(texts.push_message(n, tz="Europe/Berlin", now=sent)).splitlines() == [
        "🔥 BTC/USDT — Spot spreads",
        "buy binance → sell okx",
        "Net: +58.5 bps (gross +84.3 bps) · instant",
        "Buy at 89,712.29 · sell at 90,469.00 (average prices for $10,000)",
        "Executable: $10,000 at this edge · taker fees 0.10% + 0.15%, in the net",
        "Transfer: BEP20 network, withdrawal fee 0.6 bps, in the net",
        "Confidence 85%",
        "Detected 16:04:47 CET · 3s ago",
    ]


def test_golden_funding_push_names_each_leg_and_the_next_funding() -> None:
    n = Notification.from_event(FUNDING_EVENT)
    sent = n.detected_at + timedelta(seconds=2)
    lines = plain(texts.push_message(n, tz="Asia/Kathmandu", now=sent)).splitlines()
    assert lines[:2] == ["🔥 ETH/USDT:USDT — Funding rates", "long bybit / short binance"]
    assert "Total over 168 h: net +467.5 bps (gross +490.1 bps)" in lines
    assert lines[-4:] == [
        "Funding: long bybit +0.0093% / 8 h · short binance +0.2427% / 8 h",
        "Next funding: 21:45 +0545 (in 55m)",
        "Size: $10,000 · confidence 90%",
        "Detected 20:49:38 +0545 · 2s ago",
    ]


def test_golden_technical_push_names_the_indicator_and_its_record() -> None:
    n = Notification.from_event(TECHNICAL_EVENT)
    assert plain(texts.push_message(n, tz="UTC", now=n.detected_at)).splitlines() == [
        "• SOL/USDT — Technical signals",
        "long on bybit",
        "RSI 24.7 — oversold on 1m bars",
        "Right 58% of the last 24 times it fired here",
        "Size: $10,000 · confidence 62%",
        "Detected 15:05:00 UTC · just now",
    ]


def test_an_event_of_an_older_release_renders_without_the_new_lines() -> None:
    """Events written before the push showed prices, legs or indicators (no such details)."""
    old = {**SPOT_EVENT, "details": "{}", "executable_usd": None}
    lines = plain(texts.push_message(Notification.from_event(old))).splitlines()
    assert not any(line.startswith(("Buy at", "Executable", "Transfer")) for line in lines)
    assert "Size: $10,000 · confidence 85%" in lines and lines[-1] == "Detected 15:04:47 UTC"


# -- grouped pushes ---------------------------------------------------------------------------


def _doge_legs() -> tuple[Notification, Notification]:
    from dataclasses import replace

    base = note(symbol="DOGE/USDT", priority=Priority.MEDIUM)
    worse = replace(
        base,
        opportunity_id="01954f3a-0000-7000-8000-00000000000a",
        net_bps=21.4,
        executable_usd=8_000.0,
        buy_vwap=0.12031,
        sell_vwap=0.12071,
        buy_fee=0.001,
        sell_fee=0.001,
        detected_at=AT + timedelta(milliseconds=300),
    )
    better = replace(
        base,
        opportunity_id="01954f3a-0000-7000-8000-00000000000b",
        buy_exchange="bybit",
        net_bps=35.2,
        executable_usd=12_500.0,
        buy_vwap=0.12014,
        sell_vwap=0.12071,
        buy_fee=0.001,
        sell_fee=0.001,
        transfer_network="DOGE",
        transfer_bps=3.3,
    )
    return worse, better


def test_grouped_push_golden() -> None:
    from core.notifications import payload_of

    worse, better = _doge_legs()
    payload = payload_of([worse, better])
    assert isinstance(payload, Digest)
    text = plain(texts.grouped_push_message(payload, tz="Europe/Berlin", now=AT + timedelta(seconds=2)))
    assert text.splitlines() == [
        "⚡ DOGE/USDT — Spot spreads",
        "Sell on okx, buy on one of 2 venues",
        "",
        "1. buy bybit → sell okx · +35.2 bps · $12,500 executable",
        "2. buy binance → sell okx · +21.4 bps · $8,000 executable",
        "",
        "Best route (1):",
        "Buy at 0.12014 · sell at 0.12071 (average prices for $10,000)",
        "Executable: $12,500 at this edge · taker fees 0.10% + 0.10%, in the net",
        "Transfer: DOGE network, withdrawal fee 3.3 bps, in the net",
        "Detected 13:34:56 CET · 2s ago",
        "Tap a number for details.",
    ]
    # the buttons are numbered like the lines: best net first
    markup = keyboards.push(payload)
    first = PushAction.unpack(markup.inline_keyboard[0][0].callback_data or "")
    assert first.id == better.opportunity_id


def test_grouped_push_marks_closed_legs_and_says_when_all_closed() -> None:
    from core.notifications import payload_of

    worse, better = _doge_legs()
    payload = payload_of([worse, better])
    assert isinstance(payload, Digest)
    one = plain(texts.grouped_push_message(payload, closed={worse.opportunity_id: 42.0})).splitlines()
    assert "2. buy binance → sell okx · +21.4 bps · $8,000 executable · ✅ Closed after 42s" in one
    assert "✅ Every route has closed." not in one
    both = {worse.opportunity_id: 42.0, better.opportunity_id: 61.0}
    assert "✅ Every route has closed." in plain(texts.grouped_push_message(payload, closed=both))


def test_grouped_push_in_russian() -> None:
    from core.notifications import payload_of
    from notify.i18n import use_locale

    payload = payload_of(list(_doge_legs()))
    assert isinstance(payload, Digest)
    with use_locale("ru"):
        text = plain(texts.grouped_push_message(payload))
    assert "Продажа на okx, покупка на одной из 2 бирж" in text and "Лучший маршрут (1):" in text


def test_a_push_keyboard_is_built_once_per_opportunity_and_language() -> None:
    from notify import keyboards
    from notify.i18n import use_locale

    first = keyboards.push(note())
    assert keyboards.push(note()) is first  # another chat, the same opportunity: not rebuilt
    assert keyboards.push(note(oid="00000000-0000-4000-8000-000000000002")) is not first
    with use_locale("ru"):
        russian = keyboards.push(note())
    assert russian is not first
    assert russian.inline_keyboard[0][0].text != first.inline_keyboard[0][0].text
    assert russian.inline_keyboard[0][0].callback_data == first.inline_keyboard[0][0].callback_data
