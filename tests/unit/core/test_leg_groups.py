"""One message per thing a user acts on: the legs of one symbol grouped (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.models import OpportunityKind, Priority
from core.notifications import Digest, Notification, is_leg_group, leg_groups, payload_of, shared_venue
from core.queueing import QueueItem, leg_units

AT = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
SPOT, FUNDING, TECH = OpportunityKind.SPOT_SPREAD, OpportunityKind.FUNDING_RATE, OpportunityKind.TECHNICAL


def leg(
    oid: str,
    buy: str | None,
    sell: str | None,
    net: float,
    *,
    symbol: str = "DOGE/USDT",
    kind: OpportunityKind = SPOT,
    ms: int = 0,
) -> Notification:
    return Notification(
        oid, kind, symbol, buy, sell, net, net + 10, None, 10_000.0, 0.8, Priority.MEDIUM,
        AT + timedelta(milliseconds=ms),
    )  # fmt: skip


def ids(groups: list[tuple[Notification, ...]]) -> list[list[str]]:
    return [[n.opportunity_id for n in g] for g in groups]


def test_legs_sharing_the_sell_venue_are_one_group_ranked_by_net() -> None:
    a = leg("a", "binance", "okx", 21.0)
    b = leg("b", "bybit", "okx", 35.0)
    assert ids(leg_groups([a, b])) == [["b", "a"]]
    assert shared_venue([a, b]) == ("sell", "okx") and is_leg_group([a, b])
    payload = payload_of([a, b])
    assert isinstance(payload, Digest) and [n.opportunity_id for n in payload.items] == ["b", "a"]


def test_legs_sharing_the_buy_venue_group_too_and_the_widest_venue_wins() -> None:
    a = leg("a", "binance", "okx", 10.0)
    b = leg("b", "binance", "bybit", 12.0)
    c = leg("c", "kucoin", "okx", 30.0)
    d = leg("d", "gate", "okx", 5.0)
    # okx is shared by three legs, binance by two: okx first; b is left alone
    assert ids(leg_groups([a, b, c, d])) == [["c", "a", "d"]]
    assert ids(leg_groups([a, b])) == [["b", "a"]] and shared_venue([a, b]) == ("buy", "binance")


def test_other_symbols_kinds_and_unrelated_venues_do_not_group() -> None:
    a = leg("a", "binance", "okx", 10.0)
    assert leg_groups([a, leg("b", "bybit", "okx", 9.0, symbol="BTC/USDT")]) == []
    assert leg_groups([a, leg("c", "bybit", "okx", 9.0, kind=FUNDING)]) == []
    assert leg_groups([a, leg("d", "bybit", "kucoin", 9.0)]) == []
    assert leg_groups([leg("t1", "okx", None, 1.0, kind=TECH), leg("t2", "okx", None, 2.0, kind=TECH)]) == []
    mixed = [a, leg("b", "bybit", "okx", 9.0), leg("x", "binance", "okx", 1.0, symbol="BTC/USDT")]
    assert not is_leg_group(mixed)
    assert isinstance(payload_of(mixed), Digest) and payload_of([a]) is a


def test_funding_legs_sharing_the_short_leg_group() -> None:
    a = leg("a", "binance", "okx", 40.0, kind=FUNDING, symbol="BTC/USDT:USDT")
    b = leg("b", "bybit", "okx", 60.0, kind=FUNDING, symbol="BTC/USDT:USDT")
    assert ids(leg_groups([a, b])) == [["b", "a"]]


def test_nan_net_ranks_last() -> None:
    a = leg("a", "binance", "okx", float("nan"))
    b = leg("b", "bybit", "okx", -3.0)
    assert ids(leg_groups([a, b])) == [["b", "a"]]


def item(oid: str, k: int) -> QueueItem:
    return QueueItem(oid, f"{oid}~1", 7, 7, "user", "pro", "medium", "spot_spread", 0.0, k, k, k)


def test_leg_units_one_unit_per_push_keeping_the_queue_order() -> None:
    notes = {
        "btc": leg("btc", "binance", "okx", 50.0, symbol="BTC/USDT"),
        "a": leg("a", "binance", "okx", 21.0),
        "b": leg("b", "bybit", "okx", 35.0),
    }
    items = [item("btc", 0), item("a", 1), item("gone", 2), item("b", 3)]
    units = leg_units(items, notes)
    assert [[i.opportunity_id for i in u] for u in units] == [["btc"], ["b", "a"], ["gone"]]


def test_two_notifications_of_the_same_route_are_not_two_legs() -> None:
    a, again = leg("a", "binance", "okx", 10.0), leg("a2", "binance", "okx", 12.0)
    assert leg_groups([a, again]) == [] and not is_leg_group([a, again])
    b = leg("b", "bybit", "okx", 9.0)
    assert ids(leg_groups([a, again, b])) == [["a2", "b"]] and not is_leg_group([a, again, b])
