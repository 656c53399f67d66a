"""Which lifecycle events a pair coordinator hands the distributor (``for_distributor``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from actors.opportunities import for_distributor
from core.candidates import Candidate
from core.lifecycle import OpportunityTracker
from core.models import OpportunityKind, Priority

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def cand(net_bps: float, *, pushable: bool, confidence: float = 0.8) -> Candidate:
    return Candidate(
        kind=OpportunityKind.SPOT_SPREAD,
        symbol="BTC/USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        gross_bps=net_bps + 20,
        net_bps=net_bps,
        gross_apr=None,
        notional_usd=10_000.0,
        executable_usd=10_000.0,
        confidence=confidence,
        priority=Priority.MEDIUM,
        pushable=pushable,
        flags=(),
        detected_at=T0,
    )


def test_only_openings_closes_and_pushable_flips_reach_the_distributor() -> None:
    tracker = OpportunityTracker(material_bps=5.0, cooldown_s=60.0)
    memory: dict[str, bool] = {}
    ticks = [
        [cand(3.0, pushable=False, confidence=0.5)],  # opened, below the push bar
        [cand(12.0, pushable=False, confidence=0.6)],  # updated (material), still not pushable
        [cand(30.0, pushable=True)],  # updated: false -> true
        [cand(40.0, pushable=True)],  # updated (material), still pushable
        [cand(20.0, pushable=False, confidence=0.6)],  # updated: true -> false
        [],  # closed
    ]
    sent: list[tuple[str, bool]] = []
    kinds = {OpportunityKind.SPOT_SPREAD.value}
    for i, candidates in enumerate(ticks):
        events = tracker.observe(candidates, T0 + timedelta(seconds=i), kinds=kinds)
        assert events, i
        sent += [(p["event"], p["pushable"]) for p in for_distributor(events, memory)]
    assert sent == [("opened", False), ("updated", True), ("updated", False), ("closed", False)]
    assert memory == {}  # an id leaves with its close


def test_an_update_of_an_id_held_since_before_a_restart_is_handed_on() -> None:
    tracker = OpportunityTracker(material_bps=5.0)
    tracker.observe([cand(10.0, pushable=True)], T0)
    # a restarted coordinator: the tracker restored from Redis, the memory empty
    events = tracker.observe([cand(30.0, pushable=True)], T0 + timedelta(seconds=1))
    assert [p["event"] for p in for_distributor(events, {})] == ["updated"]
