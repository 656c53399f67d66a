"""Opportunities cannot outlive their data: through the real detector, pair coordinators,
sink, a real redis-server and a real lake (docs/opportunities.md "Hysteresis and liveness")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import ray
import redis.asyncio as aioredis

from actors.detector import get_detector
from actors.opportunities import OpportunityCoordinatorActor, coordinator_name
from actors.sink import get_sink
from core.candidates import Candidate
from core.lifecycle import OpenOpportunity
from core.models import OpportunityKind, Priority
from core.settings import Settings
from pipeline.lake import Lake
from pipeline.open_set import RedisOpportunityStore
from pipeline.opportunities import OPPORTUNITIES_DATASET
from pipeline.query import run_query
from serve.orchestrator import MarketPipeline, close_open_set
from serve.runtime import EmbeddedRedis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _settings(base: Settings, redis_url: str, **opportunities: Any) -> Settings:
    return base.model_copy(
        update={
            "redis": base.redis.model_copy(update={"url": redis_url}),
            "ray": base.ray.model_copy(update={"namespace": f"live-{uuid.uuid4().hex[:8]}"}),
            "market": base.market.model_copy(
                update={
                    "source": "sim",
                    "symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT"],
                }
            ),
            "opportunities": base.opportunities.model_copy(update={"technical": False, **opportunities}),
        }
    )


def _read(settings: Settings, fn: Callable[[RedisOpportunityStore], Any]) -> Any:
    async def go() -> Any:
        client = aioredis.Redis.from_url(settings.redis.url)
        try:
            return await fn(RedisOpportunityStore.from_settings(client, settings))
        finally:
            await client.aclose()

    return asyncio.run(go())


def listed(settings: Settings) -> list[dict[str, Any]]:
    """What ``/opportunities`` and ``GET /api/opportunities`` list (both read this)."""
    return list(_read(settings, lambda s: s.open_opportunities(None, 500)))


def in_redis(settings: Settings) -> int:
    return int(_read(settings, lambda s: s.count()))


def lake_events(settings: Settings) -> list[dict[str, Any]]:
    lake = Lake.from_settings(settings.lake)
    if not lake.list_files(OPPORTUNITIES_DATASET):
        return []
    sql = "SELECT opportunity_id, event, details FROM opportunities ORDER BY detected_at"
    return run_query(lake, sql).to_pylist()


def wait_for(cond: Callable[[], bool], within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if cond():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {within} s")


def cand(
    symbol: str = "BTC/USDT",
    net: float = 25.0,
    now: datetime | None = None,
    kind: OpportunityKind = OpportunityKind.SPOT_SPREAD,
) -> Candidate:
    return Candidate(
        kind=kind,
        symbol=symbol,
        buy_exchange="binance",
        sell_exchange="okx",
        gross_bps=net + 20.0,
        net_bps=net,
        gross_apr=0.3 if kind is OpportunityKind.FUNDING_RATE else None,
        notional_usd=1_000.0,
        executable_usd=1_000.0,
        confidence=0.9,
        priority=Priority.HIGH,
        pushable=True,
        flags=(),
        detected_at=now or datetime.now(UTC),
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def test_after_the_source_stops_nothing_is_listed_past_twice_the_freshness(
    ray_session: None, base_settings: Settings, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, private_redis.url)
    pipeline = MarketPipeline(settings, "sim").start()
    try:
        wait_for(lambda: bool(listed(settings)), within=30)
        ray.get([c.stop.remote() for c in pipeline.coordinators.values()])  # the market source stops
        stopped = time.monotonic()
        bound = 2 * settings.opportunities.freshness_s
        took = wait_for(lambda: not listed(settings), within=3 * bound)
        assert took <= bound, f"still listed {took:.1f} s after the source stopped (bound {bound} s)"
        # closed, not only hidden: the detector's idle ticks closed them (lake rows, Redis)
        wait_for(lambda: in_redis(settings) == 0, within=bound)
        assert time.monotonic() - stopped <= bound + 1.0
        assert ray.get(pipeline.detector.stats.remote())["idle_ticks"] > 0
    finally:
        pipeline.stop()
    events = lake_events(settings)
    opened = {e["opportunity_id"] for e in events if e["event"] == "opened"}
    closed = {e["opportunity_id"] for e in events if e["event"] == "closed"}
    assert opened and opened == closed


def test_a_clean_stop_closes_the_open_set(
    ray_session: None, base_settings: Settings, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, private_redis.url)
    pipeline = MarketPipeline(settings, "sim").start()
    try:
        wait_for(lambda: bool(listed(settings)), within=30)
    finally:
        pipeline.stop()
    assert in_redis(settings) == 0
    events = lake_events(settings)
    opened = {e["opportunity_id"] for e in events if e["event"] == "opened"}
    assert opened and opened == {e["opportunity_id"] for e in events if e["event"] == "closed"}


def _coordinator(settings: Settings, pair: tuple[str, str] = ("binance", "okx")) -> Any:
    return OpportunityCoordinatorActor.options(  # type: ignore[attr-defined]
        name=coordinator_name(pair), namespace=settings.ray.namespace, get_if_exists=True
    ).remote(settings, *pair)


def test_close_after_s_prevents_a_one_tick_flap(
    ray_session: None, base_settings: Settings, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, private_redis.url)
    sink = get_sink(settings)
    ray.get(sink.ready.remote())
    coord = _coordinator(settings)
    kinds = frozenset({"spot_spread", "funding_rate"})
    try:
        t0 = now_ms()
        ray.get(coord.observe.remote([cand()], t0, kinds))
        assert ray.get(coord.observe.remote([], t0 + 50, kinds)) == 0  # one tick at gross <= 0
        ray.get(coord.observe.remote([cand()], t0 + 100, kinds))
        assert ray.get(coord.stats.remote())["events"] == {"opened": 1, "updated": 0, "closed": 0}
        assert len(listed(settings)) == 1
        close_after = settings.close_after()
        assert close_after >= 1.0
        ray.get(coord.observe.remote([], t0 + 150, kinds))
        assert ray.get(coord.observe.remote([], t0 + 150 + int(close_after * 1000), kinds)) == 1
        assert ray.get(coord.stats.remote())["events"]["closed"] == 1
        assert listed(settings) == []
    finally:
        ray.kill(coord)
        ray.get(sink.shutdown.remote())
        ray.kill(sink)


def test_a_failed_close_write_is_retried_until_it_lands(
    ray_session: None, base_settings: Settings, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "flaky").start()
    port = server.port
    settings = _settings(base_settings, server.url)
    sink = get_sink(settings)
    ray.get(sink.ready.remote())
    coord = _coordinator(settings)
    kinds = frozenset({"spot_spread", "funding_rate"})
    try:
        t0 = now_ms()
        ray.get(coord.observe.remote([cand()], t0, kinds))
        assert len(listed(settings)) == 1
        server.stop()  # Redis goes away (its data is saved)
        assert ray.get(coord.observe.remote([], t0 + 5_000, kinds)) == 1  # the close is decided
        stats = ray.get(coord.stats.remote())
        assert stats["store_errors"] >= 1 and stats["unwritten"] == 1
        server = EmbeddedRedis(tmp_path / "flaky", port=port).start()  # back, with the old open set
        assert in_redis(settings) == 1
        ray.get(coord.observe.remote([], t0 + 5_500, kinds))  # the next (idle) tick retries
        assert ray.get(coord.stats.remote())["unwritten"] == 0
        assert in_redis(settings) == 0
    finally:
        ray.kill(coord)
        ray.get(sink.shutdown.remote())
        ray.kill(sink)
        server.stop()
    assert [e["event"] for e in lake_events(settings)] == ["opened", "closed"]  # the lake row once


def _plant(settings: Settings, opps: list[OpenOpportunity], *, seen_ms: int | None = None) -> None:
    """Open entries as a coordinator that then died left them."""
    from core.lifecycle import EventType, LifecycleEvent

    events = [
        LifecycleEvent(EventType.OPENED, o.opportunity_id, o.candidate, o.updated_at, o.opened_at)
        for o in opps
    ]
    _read(settings, lambda s: s.apply(events, seen_ms=seen_ms))


def test_a_restarted_detector_reloads_the_open_set_and_closes_what_is_stale(
    ray_session: None, base_settings: Settings, private_redis: EmbeddedRedis
) -> None:
    """No market data at all after the restart: the open pairs are reloaded from Redis,
    hear the idle ticks, and their coordinators (restored from Redis) close them."""
    settings = _settings(base_settings, private_redis.url)
    wall = datetime.now(UTC)
    _plant(
        settings,
        [
            OpenOpportunity("left-1", cand(now=wall), wall, wall),
            OpenOpportunity("left-2", cand(symbol="ETH/USDT", now=wall), wall, wall),
        ],
    )
    assert len(listed(settings)) == 2
    sink = get_sink(settings)
    ray.get(sink.ready.remote())
    detector = get_detector(settings)
    try:
        ray.get(detector.ready.remote())
        wait_for(lambda: in_redis(settings) == 0, within=60)  # the coordinators start on the way
        assert coordinator_name(("binance", "okx")) in ray.get(detector.coordinator_names.remote())
        ray.get(detector.drain.remote())
    finally:
        for name in ray.get(detector.host_names.remote()):
            ray.kill(ray.get_actor(name, namespace=settings.ray.namespace))
        ray.kill(detector)
        ray.get(sink.shutdown.remote())
        ray.kill(sink)
    closed = [e for e in lake_events(settings) if e["event"] == "closed"]
    assert sorted(e["opportunity_id"] for e in closed) == ["left-1", "left-2"]


def test_the_start_reconciles_what_a_crash_left(
    ray_session: None, base_settings: Settings, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, private_redis.url)
    wall = datetime.now(UTC)
    old = wall - timedelta(hours=3)
    _plant(
        settings, [OpenOpportunity("crash-1", cand(now=old), old, old)], seen_ms=int(old.timestamp() * 1000)
    )
    # seen live just now: a funding carry stays fresh for a minute (a running
    # coordinator would keep refreshing it)
    fresh = cand(symbol="ETH/USDT:USDT", now=wall, kind=OpportunityKind.FUNDING_RATE)
    _plant(settings, [OpenOpportunity("fresh-1", fresh, wall, wall)])
    sink = get_sink(settings)
    ray.get(sink.ready.remote())
    try:
        assert close_open_set(settings, sink, stopping=False) == 1
    finally:
        ray.get(sink.shutdown.remote())
        ray.kill(sink)
    assert [o["opportunity_id"] for o in listed(settings)] == ["fresh-1"]  # a live detector's to close
    assert in_redis(settings) == 1
    (row,) = lake_events(settings)
    assert row["opportunity_id"] == "crash-1" and row["event"] == "closed"
    assert '"closed_by":"stale"' in row["details"]
