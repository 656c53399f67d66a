"""RedisOpportunityStore against a real redis-server: apply, read, restore a tracker, cooldown."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.candidates import Candidate
from core.errors import StoreUnavailable
from core.lifecycle import EventType, OpenOpportunity, OpportunityTracker
from core.models import OpportunityKind, Priority
from pipeline.open_set import RedisOpportunityStore
from pipeline.opportunities import closing_events
from serve.runtime import EmbeddedRedis, free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cand(
    symbol: str = "BTC/USDT",
    buy: str | None = "binance",
    sell: str | None = "okx",
    net: float = 12.0,
    kind: OpportunityKind = OpportunityKind.SPOT_SPREAD,
) -> Candidate:
    return Candidate(
        kind=kind,
        symbol=symbol,
        buy_exchange=buy,
        sell_exchange=sell,
        gross_bps=net + 20.0,
        net_bps=net,
        gross_apr=0.2 if kind is OpportunityKind.FUNDING_RATE else None,
        notional_usd=1_000.0,
        executable_usd=1_000.0,
        confidence=0.8,
        priority=Priority.MEDIUM,
        pushable=True,
        flags=(),
        detected_at=T0,
        details={"buy_vwap": 100.0},
    )


def ids() -> object:
    numbers = itertools.count(1)
    return lambda now: f"id-{next(numbers)}"


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_server.url)
    yield redis
    await redis.aclose()


@pytest.fixture
def store(client: aioredis.Redis) -> RedisOpportunityStore:
    return RedisOpportunityStore(client, prefix=f"test:{uuid.uuid4().hex}", cooldown_s=60.0)


async def test_apply_and_read(store: RedisOpportunityStore) -> None:
    tracker = OpportunityTracker(id_factory=ids())  # type: ignore[arg-type]
    events = tracker.observe(
        [
            cand(net=12.0),
            cand(symbol="ETH/USDT", net=30.0),
            cand(
                symbol="BTC/USDT:USDT", buy="okx", sell="binance", net=50.0, kind=OpportunityKind.FUNDING_RATE
            ),
        ],
        at(0),
    )
    await store.apply(events)
    assert await store.count() == 3
    listed = await store.open_opportunities()
    # ranked per kind, kind after kind: a funding net_bps (over its horizon) is not
    # compared with a spot one (instant)
    assert [(o["kind"], o["net_bps"]) for o in listed] == [
        ("spot_spread", 30.0),
        ("spot_spread", 12.0),
        ("funding_rate", 50.0),
    ]
    assert listed[2]["gross_apr"] == 0.2
    grouped = await store.open_by_kind()
    assert [o["net_bps"] for o in grouped["spot_spread"]] == [30.0, 12.0]
    assert [o["net_bps"] for o in grouped["funding_rate"]] == [50.0]
    assert grouped["technical"] == []
    spots = await store.open_opportunities(kind="spot_spread", limit=1)
    assert [o["symbol"] for o in spots] == ["ETH/USDT"]
    assert await store.open_opportunities(limit=0) == []

    one = await store.get("id-1")
    assert one is not None and one["symbol"] == "BTC/USDT" and one["opened_at"] == T0.isoformat()
    assert one["details"] == {"buy_vwap": 100.0}
    assert await store.get("nope") is None

    # an update moves it in the ranking; a close removes it everywhere
    events = tracker.observe(
        [cand(net=80.0), cand(symbol="BTC/USDT:USDT", buy="okx", sell="binance", net=50.0,
                              kind=OpportunityKind.FUNDING_RATE)],
        at(2),
    )  # fmt: skip
    assert sorted(e.event.value for e in events) == ["closed", "updated"]
    await store.apply(events)
    listed = await store.open_opportunities()
    assert [(o["opportunity_id"], o["net_bps"]) for o in listed] == [("id-1", 80.0), ("id-3", 50.0)]
    assert not await client_has(store, "open:by_net")  # the mixed index is no longer written
    assert await store.get("id-2") is None
    assert await store.open_opportunities(kind=OpportunityKind.SPOT_SPREAD) == [listed[0]]


async def client_has(store: RedisOpportunityStore, suffix: str) -> bool:
    return bool(await store.client.exists(f"{store.prefix}:{suffix}"))


async def test_for_pair_restores_a_tracker(store: RedisOpportunityStore) -> None:
    tracker = OpportunityTracker(id_factory=ids())  # type: ignore[arg-type]
    await store.apply(
        tracker.observe(
            [
                cand(),
                cand(buy="okx", sell="binance", net=8.0),
                cand(symbol="SOL/USDT", buy="bybit", sell="okx"),
            ],
            at(0),
        )
    )
    await store.apply(tracker.observe([cand(net=20.0), cand(buy="okx", sell="binance", net=8.0),
                                       cand(symbol="SOL/USDT", buy="bybit", sell="okx")], at(1)))  # fmt: skip

    pair = await store.for_pair("okx", "binance")  # unordered: both directions
    assert sorted(o.opportunity_id for o in pair) == ["id-1", "id-2"]
    assert {o.opportunity_id: o.candidate.net_bps for o in pair}["id-1"] == 20.0
    assert [o.opportunity_id for o in await store.for_pair("bybit", "okx")] == ["id-3"]
    assert await store.for_pair("kraken", "okx") == []

    restarted = OpportunityTracker(id_factory=lambda now: "fresh")
    restarted.restore(pair)
    assert restarted.observe([cand(net=21.0), cand(buy="okx", sell="binance", net=8.0)], at(3)) == []


async def test_recent_closed_keeps_the_id_across_a_restart(store: RedisOpportunityStore) -> None:
    tracker = OpportunityTracker(cooldown_s=60.0, id_factory=ids())  # type: ignore[arg-type]
    key = cand().key
    await store.apply(tracker.observe([cand()], at(0)))
    assert await store.recent_closed(key) is None
    (closed,) = tracker.observe([], at(5))
    await store.apply([closed])

    rec = await store.recent_closed(key)
    assert rec is not None and rec.opportunity_id == "id-1" and rec.closed_at == at(5)
    assert await store.for_pair("binance", "okx") == []
    recent = await store.recent_closed_for_pair("okx", "binance", now=at(30))
    assert [r.opportunity_id for r in recent] == ["id-1"]
    assert await store.recent_closed_for_pair("okx", "binance", now=at(70)) == []

    restarted = OpportunityTracker(cooldown_s=60.0, id_factory=lambda now: "fresh")
    restarted.restore(await store.for_pair("binance", "okx"), recent)
    (again,) = restarted.observe([cand()], at(30))
    assert again.event is EventType.OPENED and again.opportunity_id == "id-1" and again.reopened
    await store.apply([again])
    assert await store.recent_closed(key) is None
    got = await store.get("id-1")
    assert got is not None and got["reopened"] is True and got["opened_at"] == T0.isoformat()


async def test_closed_record_expires_with_the_cooldown(client: aioredis.Redis) -> None:
    store = RedisOpportunityStore(client, prefix=f"test:{uuid.uuid4().hex}", cooldown_s=0.2)
    tracker = OpportunityTracker(cooldown_s=0.2)
    await store.apply(tracker.observe([cand()], at(0)))
    await store.apply(tracker.observe([], at(0.1)))
    assert await store.recent_closed(cand().key) is not None
    await asyncio.sleep(0.4)
    assert await store.recent_closed(cand().key) is None


async def test_apply_nothing_is_a_no_op(store: RedisOpportunityStore) -> None:
    await store.apply([])
    assert await store.count() == 0


async def test_redis_down_is_store_unavailable() -> None:
    dead = aioredis.Redis(
        host="127.0.0.1", port=free_port("127.0.0.1"), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    store = RedisOpportunityStore(dead)
    try:
        with pytest.raises(StoreUnavailable):
            await store.open_opportunities()
        with pytest.raises(StoreUnavailable):
            await store.apply(OpportunityTracker().observe([cand()], at(0)))
        with pytest.raises(StoreUnavailable):
            await store.get("x")
    finally:
        await dead.aclose()


# -- liveness: last-seen times, stale entries, records of the previous release -------------------


async def write_like_previous_release(store: RedisOpportunityStore, opp: OpenOpportunity) -> None:
    """What the release before last-seen times wrote for an open opportunity."""
    body = opp.to_dict()
    assert "seen_at" not in body
    pair = "|".join(sorted((opp.candidate.buy_exchange or "", opp.candidate.sell_exchange or "")))
    p = store.prefix
    await store.client.hset(f"{p}:open", opp.opportunity_id, json.dumps(body))
    await store.client.zadd(f"{p}:open:by_net", {opp.opportunity_id: opp.candidate.net_bps})
    await store.client.zadd(
        f"{p}:open:by_net:{opp.candidate.kind.value}", {opp.opportunity_id: opp.candidate.net_bps}
    )
    await store.client.sadd(f"{p}:open:pair:{pair}", opp.opportunity_id)


async def test_readers_drop_entries_not_seen_live_within_their_bound(client: aioredis.Redis) -> None:
    now = [1_000_000.0]
    store = RedisOpportunityStore(
        client,
        prefix=f"test:{uuid.uuid4().hex}",
        stale_after_s={"spot_spread": 3.0, "funding_rate": 61.0, "technical": 121.0},
        clock=lambda: now[0],
    )
    tracker = OpportunityTracker(id_factory=ids())  # type: ignore[arg-type]
    funding = cand(symbol="BTC/USDT:USDT", kind=OpportunityKind.FUNDING_RATE)
    await store.apply(tracker.observe([cand(), funding], at(0)))  # seen at 1_000_000 s
    listed = await store.open_opportunities()
    assert [o["opportunity_id"] for o in listed] == ["id-1", "id-2"]
    assert listed[0]["seen_at"] == datetime.fromtimestamp(1_000_000, UTC).isoformat()

    now[0] += 3.5  # past the spot bound, within the funding one
    assert [o["opportunity_id"] for o in await store.open_opportunities()] == ["id-2"]
    assert await store.get("id-1") is None and await store.get("id-2") is not None
    assert await store.count() == 2  # still in the set: readers skip it, the reconcile closes it

    await store.touch(["id-1"])  # its coordinator saw it live again
    assert [o["opportunity_id"] for o in await store.open_opportunities()] == ["id-1", "id-2"]
    stale = [o.opportunity_id for o in await store.all_open() if store.is_stale(o, now[0] + 10)]
    assert stale == ["id-1"]


async def test_records_of_the_previous_release_still_read(client: aioredis.Redis) -> None:
    """No seen_at, no last-seen score: the record reads, restores a tracker, and its
    updated_at stands for its last-seen time."""
    wall = datetime.now(UTC)
    store = RedisOpportunityStore(client, prefix=f"test:{uuid.uuid4().hex}")
    recent = OpenOpportunity("old-1", cand(), wall - timedelta(seconds=30), wall - timedelta(seconds=1))
    gone = OpenOpportunity(
        "old-2", cand(symbol="ETH/USDT"), wall - timedelta(hours=2), wall - timedelta(hours=1)
    )
    for opp in (recent, gone):
        await write_like_previous_release(store, opp)

    listed = await store.open_opportunities()
    assert [o["opportunity_id"] for o in listed] == ["old-1"]  # old-2 was last updated an hour ago
    assert listed[0]["symbol"] == "BTC/USDT" and "seen_at" not in listed[0]
    assert await store.get("old-1") is not None and await store.get("old-2") is None

    restored = {o.opportunity_id: o for o in await store.for_pair("binance", "okx")}
    assert set(restored) == {"old-1", "old-2"} and restored["old-1"].seen_at is None
    assert restored["old-1"].last_seen == recent.updated_at
    assert [o.opportunity_id for o in await store.all_open() if store.is_stale(o)] == ["old-2"]

    # closing it the new way removes it from the old mixed index too
    (closed,) = closing_events([restored["old-2"]], reason="stale")
    assert closed.at == gone.updated_at and closed.candidate.details["closed_by"] == "stale"
    await store.apply([closed])
    assert await store.count() == 1
    assert await store.client.zscore(f"{store.prefix}:open:by_net", "old-2") is None
