"""Opportunity lifecycle: dedup, material updates, close with lifetime, cooldown re-open, restore."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.candidates import Candidate, candidates_from_frame
from core.lifecycle import (
    ClosedOpportunity,
    EventType,
    LifecycleEvent,
    OpenOpportunity,
    OpportunityTracker,
    is_material,
    new_opportunity_id,
)
from core.models import OpportunityKind, Priority

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cand(
    symbol: str = "BTC/USDT",
    buy: str | None = "binance",
    sell: str | None = "okx",
    net: float = 12.0,
    size: float = 1_000.0,
    kind: OpportunityKind = OpportunityKind.SPOT_SPREAD,
    pushable: bool = True,
    flags: tuple[str, ...] = (),
    now: datetime = T0,
) -> Candidate:
    return Candidate(
        kind=kind,
        symbol=symbol,
        buy_exchange=buy,
        sell_exchange=sell,
        gross_bps=net + 20.0,
        net_bps=net,
        gross_apr=0.3 if kind is OpportunityKind.FUNDING_RATE else None,
        notional_usd=1_000.0,
        executable_usd=size,
        confidence=0.8,
        priority=Priority.MEDIUM,
        pushable=pushable,
        flags=flags,
        detected_at=now,
    )


def counter_ids() -> Any:
    numbers = itertools.count(1)
    return lambda now: f"id-{next(numbers)}"


def kinds_of(events: list[LifecycleEvent]) -> list[str]:
    return [e.event.value for e in events]


@pytest.fixture
def tracker() -> OpportunityTracker:
    return OpportunityTracker(cooldown_s=60.0, id_factory=counter_ids())


def test_full_lifecycle(tracker: OpportunityTracker) -> None:
    (opened,) = tracker.observe([cand(net=12.0)], at(0))
    assert opened.event is EventType.OPENED and opened.opportunity_id == "id-1"
    assert opened.opened_at == at(0) and opened.lifetime_s is None and not opened.reopened

    assert tracker.observe([cand(net=14.9)], at(1)) == []  # 2.9 bps: not material
    assert tracker.observe([cand(net=16.0, size=1_150.0)], at(2)) == []  # 4 bps, 15 %: not material

    (upd,) = tracker.observe([cand(net=17.0)], at(3))  # 5 bps vs the last emitted (12)
    assert upd.event is EventType.UPDATED and upd.opportunity_id == "id-1"
    assert upd.candidate.net_bps == 17.0

    (upd2,) = tracker.observe([cand(net=17.0, size=800.0)], at(4))  # -20 % of size
    assert upd2.event is EventType.UPDATED and upd2.candidate.executable_usd == 800.0

    (closed,) = tracker.observe([], at(10))
    assert closed.event is EventType.CLOSED and closed.opportunity_id == "id-1"
    assert closed.lifetime_s == pytest.approx(10.0)
    assert closed.candidate.net_bps == 17.0  # the last state seen
    assert len(tracker) == 0


def test_pushable_flip_is_material(tracker: OpportunityTracker) -> None:
    tracker.observe([cand(pushable=False, flags=("insufficient_depth",))], at(0))
    (upd,) = tracker.observe([cand(pushable=True)], at(1))
    assert upd.event is EventType.UPDATED and upd.candidate.pushable


def test_not_live_any_more_closes(tracker: OpportunityTracker) -> None:
    tracker.observe([cand(net=8.0)], at(0))
    assert kinds_of(tracker.observe([cand(net=-1.0)], at(1))) == ["closed"]
    tracker.observe([cand(net=8.0)], at(2))
    assert kinds_of(tracker.observe([cand(net=3.0, flags=("below_threshold",))], at(3))) == ["closed"]


def test_never_opens_a_dead_candidate(tracker: OpportunityTracker) -> None:
    assert tracker.observe([cand(net=0.0), cand(symbol="ETH/USDT", net=-4.0)], at(0)) == []


def test_reopen_within_cooldown_keeps_the_id(tracker: OpportunityTracker) -> None:
    tracker.observe([cand()], at(0))
    tracker.observe([], at(5))
    (again,) = tracker.observe([cand(net=13.0)], at(30))
    assert again.event is EventType.OPENED and again.opportunity_id == "id-1" and again.reopened
    assert again.opened_at == at(0)
    (closed,) = tracker.observe([], at(40))
    assert closed.opportunity_id == "id-1" and closed.lifetime_s == pytest.approx(40.0)


def test_reopen_after_cooldown_is_new(tracker: OpportunityTracker) -> None:
    tracker.observe([cand()], at(0))
    tracker.observe([], at(5))
    (fresh,) = tracker.observe([cand()], at(5 + 61))
    assert fresh.event is EventType.OPENED and fresh.opportunity_id == "id-2" and not fresh.reopened
    assert fresh.opened_at == at(66)


def test_close_after_grace() -> None:
    tracker = OpportunityTracker(close_after_s=3.0, id_factory=counter_ids())
    tracker.observe([cand()], at(0))
    assert tracker.observe([], at(1)) == []
    assert tracker.observe([], at(2)) == []
    assert tracker.observe([cand()], at(2.5)) == []  # back within the grace: still the same, open
    assert tracker.observe([], at(4)) == []
    (closed,) = tracker.observe([], at(5.5))
    # its life ended at 4 (first tick without it); the wait before closing is not counted
    assert closed.event is EventType.CLOSED and closed.lifetime_s == pytest.approx(4.0)
    assert closed.at == at(5.5)


def test_several_keys_at_once(tracker: OpportunityTracker) -> None:
    a = cand(symbol="BTC/USDT")
    b = cand(symbol="BTC/USDT", buy="okx", sell="binance")  # the other direction is another key
    c = cand(symbol="ETH/USDT:USDT", kind=OpportunityKind.FUNDING_RATE)
    d = cand(symbol="SOL/USDT", buy=None, sell="okx", kind=OpportunityKind.TECHNICAL, net=0.0)
    events = tracker.observe([a, b, c, d], at(0))
    assert kinds_of(events) == ["opened"] * 4
    assert len({e.opportunity_id for e in events}) == 4
    assert d.key == ("technical", "SOL/USDT", "", "okx")

    events = tracker.observe([replace(a, net_bps=30.0), c, d], at(1))
    assert sorted((e.event.value, e.candidate.symbol, e.candidate.buy_exchange) for e in events) == [
        ("closed", "BTC/USDT", "okx"),
        ("updated", "BTC/USDT", "binance"),
    ]
    assert len(tracker) == 3


def test_duplicate_key_in_one_tick_keeps_best(tracker: OpportunityTracker) -> None:
    (ev,) = tracker.observe([cand(net=6.0), cand(net=9.0)], at(0))
    assert ev.candidate.net_bps == 9.0


def test_kinds_scope_does_not_close_other_kinds(tracker: OpportunityTracker) -> None:
    spot = cand()
    funding = cand(symbol="BTC/USDT:USDT", kind=OpportunityKind.FUNDING_RATE)
    tracker.observe([spot, funding], at(0))
    assert tracker.observe([funding], at(1), kinds=[OpportunityKind.FUNDING_RATE]) == []
    (closed,) = tracker.observe([funding], at(2), kinds=["spot_spread", "funding_rate"])
    assert closed.candidate.kind is OpportunityKind.SPOT_SPREAD


def test_restore_after_restart_continues_without_duplicate_open() -> None:
    first = OpportunityTracker(id_factory=counter_ids())
    first.observe([cand(net=12.0), cand(symbol="ETH/USDT", net=7.0)], at(0))
    first.observe([cand(net=20.0), cand(symbol="ETH/USDT", net=7.0)], at(1))
    first.observe([cand(symbol="XRP/USDT")], at(2))  # opens XRP, closes BTC and ETH
    first.observe([cand(symbol="XRP/USDT"), cand(symbol="ETH/USDT", net=7.0)], at(3))  # ETH re-opens
    snap = [OpenOpportunity.from_dict(o.to_dict()) for o in first.snapshot()]  # through JSON, as Redis
    closed = [ClosedOpportunity.from_dict(c.to_dict()) for c in first.recently_closed()]
    assert {o.candidate.symbol for o in snap} == {"XRP/USDT", "ETH/USDT"}
    assert [c.candidate.symbol for c in closed] == ["BTC/USDT"]

    second = OpportunityTracker(id_factory=lambda now: "must-not-be-used")
    second.restore(snap, closed)
    assert second.observe([cand(symbol="XRP/USDT"), cand(symbol="ETH/USDT", net=8.0)], at(4)) == []
    (upd,) = second.observe([cand(symbol="XRP/USDT", net=30.0), cand(symbol="ETH/USDT", net=8.0)], at(5))
    assert upd.event is EventType.UPDATED and upd.opportunity_id == "id-3"
    events = second.observe([cand(net=20.0), cand(symbol="XRP/USDT", net=30.0)], at(6))
    by_symbol = {e.candidate.symbol: e for e in events}
    assert by_symbol["BTC/USDT"].event is EventType.OPENED
    assert by_symbol["BTC/USDT"].opportunity_id == "id-1" and by_symbol["BTC/USDT"].reopened
    assert by_symbol["ETH/USDT"].event is EventType.CLOSED
    assert by_symbol["ETH/USDT"].opportunity_id == "id-2"
    assert by_symbol["ETH/USDT"].lifetime_s == pytest.approx(6.0)


def test_is_material_thresholds() -> None:
    base = cand(net=10.0, size=1_000.0)
    assert not is_material(base, cand(net=14.99, size=1_199.0))
    assert is_material(base, cand(net=5.0))
    assert is_material(base, cand(size=1_200.0))
    assert is_material(base, cand(size=800.0))
    assert is_material(cand(size=0.0), cand(size=1.0))


def test_ids_are_uuid7_and_time_ordered() -> None:
    a, b = new_opportunity_id(at(0)), new_opportunity_id(at(1))
    assert a[14] == "7" and a < b and len({new_opportunity_id(at(0)) for _ in range(100)}) == 100


def test_naive_now_is_refused(tracker: OpportunityTracker) -> None:
    with pytest.raises(ValueError):
        tracker.observe([], datetime(2026, 1, 1))


# --------------------------------------------------------------------------- property


KEYS = [("BTC/USDT", "binance", "okx"), ("BTC/USDT", "okx", "binance"), ("ETH/USDT", "bybit", "okx")]
tick = st.tuples(
    st.floats(min_value=0.0, max_value=40.0),  # seconds since the previous tick
    st.lists(
        st.tuples(st.sampled_from(range(len(KEYS))), st.floats(-10, 40), st.floats(0, 5_000)),
        max_size=4,
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    ticks=st.lists(tick, max_size=30), close_after=st.sampled_from([0.0, 5.0]), restart_at=st.integers(0, 30)
)
def test_event_order_per_id(ticks: list[Any], close_after: float, restart_at: int) -> None:
    tracker = OpportunityTracker(cooldown_s=30.0, close_after_s=close_after)
    now = T0
    history: dict[str, list[str]] = {}
    open_keys: dict[tuple[str, ...], str] = {}
    for index, (gap, entries) in enumerate(ticks):
        if index == restart_at:  # an actor restart mid-stream
            restored = OpportunityTracker(cooldown_s=30.0, close_after_s=close_after)
            restored.restore(tracker.snapshot(), tracker.recently_closed())
            tracker = restored
        now += timedelta(seconds=gap)
        batch = [cand(symbol=s, buy=b, sell=x, net=n, size=z, now=now) for (s, b, x), n, z in
                 ((KEYS[k], n, z) for k, n, z in entries)]  # fmt: skip
        for ev in tracker.observe(batch, now):
            history.setdefault(ev.opportunity_id, []).append(ev.event.value)
            if ev.event is EventType.OPENED:
                assert ev.key not in open_keys  # at most one open id per key
                open_keys[ev.key] = ev.opportunity_id
            else:
                assert open_keys[ev.key] == ev.opportunity_id
                if ev.event is EventType.CLOSED:
                    del open_keys[ev.key]
                    assert ev.lifetime_s is not None and ev.lifetime_s >= 0
        assert {o.key: o.opportunity_id for o in tracker.snapshot()} == open_keys
    for events in history.values():
        assert events[0] == "opened"
        state = None
        for event in events:
            if event == "opened":
                assert state in (None, "closed")  # never two opened without a close between
            else:
                assert state in ("opened", "updated")
            state = event


# --------------------------------------------------------------------------- frames


def spread_frame() -> pl.DataFrame:
    ts = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    return pl.DataFrame(
        {
            "kind": ["spot_spread"] * 3,
            "symbol": ["BTC/USDT", "BTC/USDT", "ETH/USDT"],
            "buy_exchange": ["binance", "binance", "okx"],
            "sell_exchange": ["okx", "okx", "bybit"],
            "notional_usd": [1_000.0, 10_000.0, 1_000.0],
            "gross_bps": [30.0, 40.0, 25.0],
            "net_bps": [10.0, 20.0, 5.0],
            "buy_vwap": [100.0, 100.1, 10.0],
            "executable_usd": [1_000.0, 6_000.0, 1_000.0],
            "flags": ["", "insufficient_depth", "default_fee"],
            "pushable": [True, False, True],
            "confidence": [0.8, 0.5, 0.7],
            "priority": ["medium", "low", "medium"],
            "buy_ts": [ts, ts, ts],
            "sell_ts": [ts, ts + timedelta(milliseconds=500), ts],
        },
        schema_overrides={"buy_ts": pl.Datetime("ms", "UTC"), "sell_ts": pl.Datetime("ms", "UTC")},
    )


def test_candidates_from_spread_frame_keeps_best_executable() -> None:
    got = {c.symbol: c for c in candidates_from_frame(spread_frame(), detected_at=at(1))}
    btc = got["BTC/USDT"]
    assert btc.notional_usd == 1_000.0 and btc.net_bps == 10.0  # 10k is better but not executable
    assert btc.pushable and btc.flags == () and btc.detected_at == at(1)
    assert btc.details["buy_vwap"] == 100.0
    (alt,) = btc.details["alternatives"]
    assert alt["notional_usd"] == 10_000.0 and alt["net_bps"] == 20.0 and alt["flags"] == "insufficient_depth"
    eth = got["ETH/USDT"]
    assert eth.flags == ("default_fee",) and "alternatives" not in eth.details
    assert eth.key == ("spot_spread", "ETH/USDT", "okx", "bybit") and eth.gross_apr is None


def test_candidates_from_frame_detected_at_from_legs() -> None:
    got = {c.symbol: c for c in candidates_from_frame(spread_frame())}
    assert got["BTC/USDT"].detected_at == T0 and got["ETH/USDT"].detected_at == T0


def test_candidates_from_funding_frame() -> None:
    nxt = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "kind": ["funding_rate"],
            "symbol": ["BTC/USDT:USDT"],
            "buy_exchange": ["bybit"],
            "sell_exchange": ["binance"],
            "notional_usd": [10_000.0],
            "gross_apr": [0.25],
            "gross_bps": [40.0],
            "net_bps": [20.0],
            "entry_basis": [None],
            "long_next_funding": [nxt],
            "flags": ["basis_unknown"],
            "pushable": [True],
            "confidence": [0.9],
            "priority": ["high"],
        },
        schema_overrides={"entry_basis": pl.Float64},
    )
    (c,) = candidates_from_frame(frame, detected_at=T0)
    assert c.gross_apr == 0.25 and c.executable_usd == 10_000.0 and c.priority is Priority.HIGH
    assert c.details == {"long_next_funding": nxt.isoformat()}


def test_candidates_from_technical_frame() -> None:
    frame = pl.DataFrame(
        {
            "kind": ["technical", "technical"],
            "symbol": ["SOL/USDT", "DOGE/USDT"],
            "exchange": ["okx", "binance"],
            "direction": ["short", "long"],
            "signal": ["rsi_overbought", "macd_cross"],
            "confidence": [0.75, 0.6],
            "ts": [T0, T0],
        }
    )
    got = {c.symbol: c for c in candidates_from_frame(frame)}
    assert got["SOL/USDT"].key == ("technical", "SOL/USDT", "", "okx")
    assert got["DOGE/USDT"].key == ("technical", "DOGE/USDT", "binance", "")
    assert got["SOL/USDT"].details["signal"] == "rsi_overbought" and got["SOL/USDT"].live


def test_candidates_from_empty_frame() -> None:
    assert candidates_from_frame(pl.DataFrame()) == []


def test_an_unpushable_collision_updates_only_when_its_flags_change() -> None:
    """A ticker collision's huge spread moves by more than 5 bps every tick: no update spam."""
    tracker = OpportunityTracker()
    collision = cand(net=107_500.0, pushable=False, flags=("implausible_spread",))
    assert [e.event for e in tracker.observe([collision], at(0))] == [EventType.OPENED]
    for i in range(1, 20):
        moved = replace(collision, net_bps=107_500.0 + 40.0 * (-1) ** i)
        assert tracker.observe([moved], at(i)) == []
    both = replace(collision, flags=("implausible_spread", "not_transferable"))
    assert [e.event for e in tracker.observe([both], at(30))] == [EventType.UPDATED]
    # An ordinary spread still updates on 5 bps.
    spread = cand(symbol="ETH/USDT", net=30.0)
    tracker.observe([both, spread], at(31))
    events = tracker.observe([both, replace(spread, net_bps=35.0)], at(32))
    assert [(e.event, e.candidate.symbol) for e in events] == [(EventType.UPDATED, "ETH/USDT")]


# --------------------------------------------------------------------------- liveness


def test_a_final_tick_closes_everything_whatever_the_hysteresis() -> None:
    tracker = OpportunityTracker(close_after_s=30.0, id_factory=counter_ids())
    tracker.observe([cand(), cand(symbol="SOL/USDT", buy=None, kind=OpportunityKind.TECHNICAL)], at(0))
    assert tracker.observe([], at(1)) == []
    closed = tracker.observe([], at(2), close_after_s=0.0)
    assert kinds_of(closed) == ["closed", "closed"] and len(tracker) == 0


def test_live_ids_are_the_ones_seen_in_the_tick() -> None:
    tracker = OpportunityTracker(close_after_s=5.0, id_factory=counter_ids())
    tracker.observe([cand(), cand(symbol="ETH/USDT")], at(0))
    tracker.observe([cand()], at(1))
    assert tracker.live_ids(at(1)) == ["id-1"]  # ETH is held (hysteresis) but not live


def test_restore_counts_the_hysteresis_from_the_last_seen_time() -> None:
    """A restored entry closes close_after_s after it was last seen live, not after its
    last material update; a last-seen on another clock (ahead of the tick) never keeps it open."""
    opp = OpenOpportunity("id-9", cand(), at(0), at(0), seen_at=at(100))
    tracker = OpportunityTracker(close_after_s=3.0, id_factory=counter_ids())
    tracker.restore([opp])
    assert tracker.observe([], at(101)) == []
    assert kinds_of(tracker.observe([], at(103))) == ["closed"]
    ahead = OpportunityTracker(close_after_s=3.0, id_factory=counter_ids())
    ahead.restore([replace(opp, seen_at=at(10_000))], now=at(50))
    assert kinds_of(ahead.observe([], at(53))) == ["closed"]


def test_open_records_of_older_releases_read() -> None:
    """A record without seen_at (older release) reads; its last-seen is its updated_at."""
    body = OpenOpportunity("id-1", cand(), at(0), at(5)).to_dict()
    assert "seen_at" not in body
    opp = OpenOpportunity.from_dict(body)
    assert opp.seen_at is None and opp.last_seen == at(5)
    seen = OpenOpportunity.from_dict({**body, "seen_at": at(9).isoformat()})
    assert seen.last_seen == at(9)
