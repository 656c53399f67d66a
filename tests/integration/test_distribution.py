"""The push side on a real Ray: distributor → queue shards → rate limiter → the sandbox.

Users live in a real Redis (created through the bot's stores), pushes go through the
Telegram sandbox over HTTP, deliveries land in a real Parquet lake. The fault tests
kill a queue shard, the rate limiter and Redis itself mid-delivery and check that
nothing queued is lost and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
import redis.asyncio as aioredis

from actors.opportunities import event_payload
from actors.queues import shard_name
from core.accounts import Tier, User
from core.candidates import Candidate
from core.lifecycle import EventType, LifecycleEvent, new_opportunity_id
from core.models import OpportunityKind, Priority
from core.settings import Settings
from pipeline.lake import Lake
from pipeline.open_set import RedisOpportunityStore
from pipeline.query import run_query
from serve.orchestrator import Distribution
from serve.runtime import EmbeddedRedis
from state.sessions import RedisSessionStore
from state.users import RedisUserStore
from tests.support.sandbox_thread import SandboxThread


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _settings(base: Settings, sandbox: SandboxThread, redis_url: str, **dist: Any) -> Settings:
    return base.model_copy(
        update={
            "redis": base.redis.model_copy(update={"url": redis_url}),
            "ray": base.ray.model_copy(update={"namespace": f"dist-{uuid.uuid4().hex[:8]}"}),
            "telegram": base.telegram.model_copy(
                update={"token": sandbox.handle.token, "api_base": sandbox.handle.base_url}
            ),
            "distribution": base.distribution.model_copy(update={"shards": 2, "retry_base_s": 0.1, **dist}),
        }
    )


async def _users(url: str, specs: list[tuple[int, Tier, bool]]) -> None:
    client = aioredis.Redis.from_url(url)
    users, sessions = RedisUserStore(client), RedisSessionStore(client)
    now = datetime.now(UTC)
    for uid, tier, session in specs:
        await users.create(User.new(uid, now, tier=tier))
        if session:
            await sessions.start(uid, uid, now)
    await client.aclose()


def opened(
    redis_url: str,
    kind: OpportunityKind = OpportunityKind.SPOT_SPREAD,
    *,
    symbol: str | None = None,
    buy: str = "binance",
    net_bps: float = 40.0,
) -> dict[str, Any]:
    """An opened opportunity as a pair coordinator emits it, stored in Redis as it stores it."""
    now = datetime.now(UTC)
    candidate = Candidate(
        kind=kind,
        symbol=symbol or ("BTC/USDT" if kind is OpportunityKind.SPOT_SPREAD else "BTC/USDT:USDT"),
        buy_exchange=buy,
        sell_exchange="okx",
        gross_bps=net_bps + 20,
        net_bps=net_bps,
        gross_apr=0.3 if kind is OpportunityKind.FUNDING_RATE else None,
        notional_usd=10_000.0,
        executable_usd=10_000.0,
        confidence=0.9,
        priority=Priority.HIGH,
        pushable=True,
        flags=(),
        detected_at=now,
    )
    event = LifecycleEvent(EventType.OPENED, new_opportunity_id(now), candidate, now, now)

    async def store() -> None:
        client = aioredis.Redis.from_url(redis_url)
        await RedisOpportunityStore(client).apply([event])
        await client.aclose()

    asyncio.run(store())
    return event_payload(event)


def wait_for(cond: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _deliveries(settings: Settings) -> list[dict[str, Any]]:
    return list(run_query(Lake.from_settings(settings.lake), "SELECT * FROM deliveries").to_pylist())


def test_an_opportunity_reaches_exactly_the_eligible_users(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url)
    specs = [
        (11, Tier.PREMIUM, True),
        (12, Tier.ENTERPRISE, True),
        (13, Tier.BASIC, True),  # spot and funding, 1 min delay
        (14, Tier.FREE, True),  # spot only: skipped at layer 2 for funding
        (15, Tier.PREMIUM, False),  # no session: layer 1, never a row
    ]
    asyncio.run(_users(private_redis.url, specs))
    dist = Distribution(settings).start()
    try:
        funding = opened(private_redis.url, OpportunityKind.FUNDING_RATE)
        out = ray.get(dist.distributor.on_events.remote([funding]))
        assert out["queued"] == 3, dist.stats()  # 11, 12 now; 13 after its tier's delay
        wait_for(lambda: sandbox.sent_to([11, 12]) == {11: 1, 12: 1})
        time.sleep(0.5)
        assert sandbox.sent_to([13, 14, 15]) == {13: 0, 14: 0, 15: 0}
        layer, reason = ray.get(dist.distributor.why.remote(14, funding))
        assert (layer, reason) == (2, "subscription.kind")
        layer, _ = ray.get(dist.distributor.why.remote(15, funding))
        assert layer == 1
        assert sandbox.too_many == 0
        # closing it expires what is still queued (13's delayed push)
        ray.get(dist.distributor.on_events.remote([{**funding, "event": "closed"}]))
    finally:
        stats = dist.stop()
    from actors.sink import get_sink

    ray.get(get_sink(settings).flush.remote())
    rows = _deliveries(settings)
    by = {(r["chat_id"], r["status"]) for r in rows if r["opportunity_id"] == funding["opportunity_id"]}
    assert {(11, "sent"), (12, "sent"), (13, "queued"), (14, "skipped")} <= by
    assert not {r for r in by if r[0] == 15}
    assert stats["shards"]


def test_two_pair_coordinators_legs_of_one_symbol_reach_a_user_as_one_message(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    """DOGE/USDT binance→okx and bybit→okx, each from its own pair coordinator (two calls),
    through the distributor and the queue shards on Ray: one message, both legs ranked by
    net, a sent row for each with its message id."""
    settings = _settings(base_settings, sandbox, private_redis.url)
    asyncio.run(_users(private_redis.url, [(21, Tier.PREMIUM, True)]))
    dist = Distribution(settings).start()
    try:
        worse = opened(private_redis.url, symbol="DOGE/USDT", buy="binance", net_bps=21.0)
        better = opened(private_redis.url, symbol="DOGE/USDT", buy="bybit", net_bps=35.0)
        for ev in (worse, better):  # one coordinator each, a moment apart
            ray.get(dist.distributor.on_events.remote([ev]))
        wait_for(lambda: any("2. buy binance → sell okx" in t for t in sandbox.texts(21)))
        time.sleep(0.5)
        (text,) = sandbox.texts(21)
        assert text.index("1. buy bybit → sell okx") < text.index("2. buy binance → sell okx"), text
    finally:
        dist.stop()
    from actors.sink import get_sink

    ray.get(get_sink(settings).flush.remote())
    sent = [r for r in _deliveries(settings) if r["chat_id"] == 21 and r["status"] == "sent"]
    assert len(sent) == 2 and len({r["message_id"] for r in sent}) == 1


def test_killing_a_shard_or_the_limiter_loses_nothing_and_sends_nothing_twice(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url)
    chats = list(range(2001, 2091))
    asyncio.run(_users(private_redis.url, [(c, Tier.PREMIUM, True) for c in chats]))
    dist = Distribution(settings).start()
    try:
        ray.get(dist.distributor.on_events.remote([opened(private_redis.url)]))  # 90 pushes at 30 msg/s: ~3 s
        time.sleep(0.8)
        shard = ray.get_actor(shard_name(0), namespace=settings.ray.namespace)
        ray.kill(shard, no_restart=False)
        time.sleep(0.3)
        ray.kill(dist.limiter, no_restart=False)
        try:
            wait_for(lambda: _pending(shard) == 0 and sum(sandbox.sent_to(chats).values()) >= 80, 40)
        except AssertionError:
            raise AssertionError((sum(sandbox.sent_to(chats).values()), dist.stats())) from None
        time.sleep(1.5)
        counts = sandbox.sent_to(chats)
        assert max(counts.values()) == 1  # never twice
        missing = [c for c, n in counts.items() if n == 0]
        stats = dist.stats()
        ambiguous = sum(s.get("ambiguous", 0) for s in stats["shards"])
        assert len(missing) <= ambiguous  # only a send cut mid-flight may be missing
        assert sandbox.too_many == 0
    finally:
        dist.stop()


def test_dead_letters_are_replayed_by_the_distributor(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url, max_retries=1, retry_base_s=0.05)
    chat = 5001
    asyncio.run(_users(private_redis.url, [(chat, Tier.PREMIUM, True)]))

    async def faults(count: int) -> None:
        sandbox.handle.sandbox.bot().faults[chat] = count

    sandbox.call(faults(50))  # Telegram answers 500 for a while
    dist = Distribution(settings).start()
    try:
        ray.get(dist.distributor.on_events.remote([opened(private_redis.url)]))
        client = redis.Redis.from_url(private_redis.url)
        wait_for(lambda: client.llen("deadletter") == 1)
        assert sandbox.sent_to([chat]) == {chat: 0}
        sandbox.call(faults(0))  # the outage is over
        assert ray.get(dist.distributor.replay_dead_letters.remote(10)) == 1
        wait_for(lambda: sandbox.sent_to([chat]) == {chat: 1})
        assert client.llen("deadletter") == 0
    finally:
        dist.stop()


def test_queued_pushes_survive_a_redis_crash_and_restart(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url)
    chats = [3001, 3002, 3003]
    asyncio.run(_users(private_redis.url, [(c, Tier.BASIC, True) for c in chats]))  # 60 s delay
    dist = Distribution(settings).start()
    try:
        out = ray.get(dist.distributor.on_events.remote([opened(private_redis.url)]))
        assert out["queued"] == 3
        time.sleep(1.5)  # appendfsync everysec: acknowledged more than a second ago is on disk
        private_redis.kill()
        private_redis.start()
        client = redis.Redis.from_url(private_redis.url)
        batches = sum(client.hlen(f"{shard_name(i)}:batches") for i in range(2))
        assert batches >= 1
        handles = [ray.get_actor(shard_name(i), namespace=settings.ray.namespace) for i in range(2)]
        pids = [ray.get(h.pid.remote()) for h in handles]
        for h in handles:
            ray.kill(h, no_restart=False)
        # each shard comes back as a new process and rebuilds its queues from Redis
        for h, pid in zip(handles, pids, strict=True):
            wait_for(lambda h=h, pid=pid: _pid(h) not in (None, pid))
        # a new worker imports the shard's stack (aiogram, polars) and reads Redis before it
        # answers: 10-15 s on a loaded 2-core machine, so wait for the answer, not a timeout
        counts: list[int | None] = [None]
        deadline = time.monotonic() + 90
        while None in counts and time.monotonic() < deadline:
            counts = [_pending(h) for h in handles]
        assert sum(c or 0 for c in counts) == 3, counts
    finally:
        dist.stop()


def _pending(handle: Any) -> int | None:
    """A shard's queued items, or None while it restarts."""
    try:
        return int(ray.get(handle.ready.remote(), timeout=5))
    except (
        ray.exceptions.RayActorError,
        ray.exceptions.ActorUnavailableError,
        ray.exceptions.GetTimeoutError,
    ):
        return None


def _pid(handle: Any) -> int | None:
    try:
        return int(ray.get(handle.pid.remote(), timeout=5))
    except (
        ray.exceptions.RayActorError,
        ray.exceptions.ActorUnavailableError,
        ray.exceptions.GetTimeoutError,
    ):
        return None
