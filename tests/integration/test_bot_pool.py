"""A pool of bots on the real push side: Redis bindings, Ray actors, the sandbox hosting two bots.

Users are bound to the bot they talk to (``state.bots``; the bot shards write it, here the
test does as ``/start`` would); the queue shards (``uq:NNN`` actors) send each user's pushes
through that bot, and the rate limiter (``ratelimit:global``) keeps one budget per bot, so
two bots deliver at twice one bot's rate, each within its own limit (the sandbox refuses
with 429 whatever goes over a bot's 10 msg/s here). Deliveries land in the lake with their
``bot_id``. A chat with no binding (a record written before the pool) is the primary bot's.
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
import redis.asyncio as aioredis

from actors.opportunities import event_payload
from actors.queues.bots import ChatBots
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
from serve.standins.sandbox import sandbox_tokens
from state.bots import RedisBotBindings
from state.erase import erase_user
from state.sessions import RedisSessionStore
from state.users import RedisUserStore
from tests.support.sandbox_thread import SandboxThread

A, B = sandbox_tokens(2)
BOT_A, BOT_B = int(A.split(":")[0]), int(B.split(":")[0])
RATE = 10.0
"""Each bot's global rate here (the sandbox enforces it per bot; the limiter runs under it)."""


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def two_bots() -> Iterator[SandboxThread]:
    sb = SandboxThread(tokens=[A, B], global_rate=RATE)
    yield sb
    sb.stop()


def _opened(redis_url: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    candidate = Candidate(
        kind=OpportunityKind.SPOT_SPREAD,
        symbol="BTC/USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        gross_bps=60.0,
        net_bps=40.0,
        gross_apr=None,
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


def _wait(cond: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _records(sb: SandboxThread) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        return [dict(r) for r in sb.handle.sandbox.records if r["method"].lower() == "sendmessage"]

    return list(sb.call(read()))


async def _users(url: str, ids: list[int], bound: dict[int, int]) -> None:
    """Premium users with a session (as the bot's stores write them); ``bound``: chat → bot."""
    client = aioredis.Redis.from_url(url)
    users, sessions, bots = RedisUserStore(client), RedisSessionStore(client), RedisBotBindings(client)
    now = datetime.now(UTC)
    for uid in ids:
        await users.create(User.new(uid, now, tier=Tier.PREMIUM))
        await sessions.start(uid, uid, now)
    for chat, bot in bound.items():
        await bots.bind(chat, bot)
    await client.aclose()


def test_two_bots_each_receive_their_users_pushes_at_their_own_rate(
    ray_session: None, base_settings: Settings, two_bots: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    sb = two_bots
    settings = base_settings.model_copy(
        update={
            "redis": base_settings.redis.model_copy(update={"url": private_redis.url}),
            "ray": base_settings.ray.model_copy(update={"namespace": f"pool-{uuid.uuid4().hex[:8]}"}),
            "telegram": base_settings.telegram.model_copy(
                update={"token": A, "tokens": [A, B], "api_base": sb.handle.base_url, "global_rate": RATE}
            ),
            "distribution": base_settings.distribution.model_copy(update={"shards": 2}),
        }
    )
    assert settings.telegram.bot_ids == [BOT_A, BOT_B]
    on_a_bound = list(range(101, 111))  # bound to the primary by a /start through it
    on_a_old = list(range(111, 121))  # no binding: records of a release before the pool
    on_b = list(range(201, 221))  # started bot B
    bound = {c: BOT_A for c in on_a_bound} | {c: BOT_B for c in on_b}
    asyncio.run(_users(private_redis.url, on_a_bound + on_a_old + on_b, bound))
    expected = {c: "arbflow_sandbox_bot" for c in on_a_bound + on_a_old} | {
        c: "arbflow_sandbox_2_bot" for c in on_b
    }
    dist = Distribution(settings).start()
    try:
        event = _opened(private_redis.url)
        out = ray.get(dist.distributor.on_events.remote([event]))
        assert out["queued"] == 40, dist.stats()
        _wait(lambda: sum(r["status"] == 200 for r in _records(sb)) >= 40, within=30)
        time.sleep(0.5)
        limiter = ray.get(dist.limiter.stats.remote())
    finally:
        dist.stop()
    records = _records(sb)
    assert [r for r in records if r["status"] != 200] == []  # no 429 from either bot
    sent = {int(r["chat_id"]): r["bot"] for r in records}
    assert sent == expected  # every user's push through the bot they are bound to, once each
    times = {
        name: sorted(r["time"] for r in records if r["bot"] == name)
        for name in ("arbflow_sandbox_bot", "arbflow_sandbox_2_bot")
    }
    for name, ts in times.items():
        assert len(ts) == 20, name
        span = ts[-1] - ts[0]
        # at its own rate: never faster than 10/s (19 intervals), and near it (≥ 75 %)
        assert 19 / RATE * 0.97 <= span <= 19 / (RATE * 0.75), (name, span)
        assert max(sum(1 for t in ts if s <= t < s + 1.0) for s in ts) <= RATE, name
    # the two bots at once: 40 pushes in about the time one bot takes for 20 (one bot: ~3.9 s)
    everything = sorted(t for ts in times.values() for t in ts)
    assert everything[-1] - everything[0] < 19 / (RATE * 0.75) + 0.5 < 39 / RATE
    assert abs(times["arbflow_sandbox_bot"][0] - times["arbflow_sandbox_2_bot"][0]) < 1.0
    assert limiter["pool_rate"] == 2 * RATE and set(limiter["bots"]) == {str(BOT_A), str(BOT_B)}
    # the deliveries rows say which bot sent each push
    from actors.sink import get_sink

    ray.get(get_sink(settings).flush.remote())
    rows = run_query(Lake.from_settings(settings.lake), "SELECT chat_id, bot_id, status FROM deliveries")
    by_chat = {r["chat_id"]: r["bot_id"] for r in rows.to_pylist() if r["status"] == "sent"}
    assert by_chat == {c: (BOT_B if c in on_b else BOT_A) for c in expected}


def test_a_chat_without_a_binding_is_the_primarys_and_forget_drops_the_binding(
    private_redis: EmbeddedRedis,
) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(private_redis.url)
        users, bots = RedisUserStore(client), RedisBotBindings(client)
        now = datetime.now(UTC)
        # a user record exactly as a release before the pool wrote it: no binding anywhere
        await users.create(User.new(7, now, tier=Tier.PREMIUM))
        assert await bots.bot_of(7) is None
        chats = ChatBots([BOT_A, BOT_B], bots)
        await chats.load([7, 8, "@channel"])
        assert chats.of(7) == BOT_A and chats.of("@channel") == BOT_A  # the primary
        assert chats.row_bot(7) == BOT_A and chats.row_bot("@channel") is None  # read / not known
        assert chats.row_bot(9) is None
        assert await bots.bind(7, BOT_B) is True and await bots.bind(7, BOT_B) is False
        await chats.load([7])  # read lately: kept until it is read again
        assert chats.of(7) == BOT_A
        fresh = ChatBots([BOT_A, BOT_B], bots)
        await fresh.load([7])
        assert fresh.of(7) == BOT_B
        # bound to a bot no longer in the pool (its token removed): the primary
        await bots.bind(8, 999)
        smaller = ChatBots([BOT_A, BOT_B], bots)
        await smaller.load([8])
        assert smaller.of(8) == BOT_A
        # one bot: nothing read, nothing said (rows keep bot_id null)
        single = ChatBots([BOT_A], bots)
        await single.load([7])
        assert single.of(7) is None and single.reads == 0
        assert await bots.counts() == {BOT_B: 1, 999: 1}
        # /forget erases the binding with the rest of the user
        await erase_user(client, 7)
        assert await bots.bot_of(7) is None
        await client.aclose()

    asyncio.run(run())


def test_one_poller_per_bot_each_update_marked_with_its_bot(private_redis: EmbeddedRedis) -> None:
    """``getUpdates`` for a pool (``arbflow run`` without a public URL): a poller per bot, each
    asking its own bot; the same ``update_id`` of two bots is two updates, each marked."""
    from core.bots import BOT_FIELD
    from serve.polling import UpdatePoller

    class Shards:
        def __init__(self) -> None:
            self.got: list[dict[str, Any]] = []

        def submit_many(self, updates: list[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]:
            done = asyncio.get_running_loop().create_future()
            self.got.extend(updates)
            done.set_result(len(self.got))
            return {0: (done, list(range(len(updates))))}

    sb = SandboxThread(tokens=[A, B])
    try:

        async def say() -> None:
            world = sb.handle.sandbox
            for token, text in ((A, "to the primary"), (B, "to the second bot")):
                bot = world.bot(token)
                user = world.add_user(31 if token == A else 32, "U")
                world.emit(bot, {"message": world.user_message(bot, user, world.chat(user.id), text)})

        sb.call(say())
        settings = Settings(
            redis={"url": private_redis.url}, telegram={"tokens": [A, B], "api_base": sb.handle.base_url}
        )
        shards = Shards()
        pollers = [
            UpdatePoller(settings, shards, poll_timeout_s=1, token=token).start()  # type: ignore[arg-type]
            for token in settings.telegram.pool
        ]
        try:
            # the first poll follows the command menus (aiogram's import: seconds on a busy host)
            _wait(lambda: len(shards.got) >= 2, within=90)
        finally:
            for poller in pollers:
                poller.stop(5.0)
        by_text = {u["message"]["text"]: u[BOT_FIELD] for u in shards.got}
        assert by_text == {"to the primary": BOT_A, "to the second bot": BOT_B}
        assert shards.got[0]["update_id"] == shards.got[1]["update_id"]  # each bot numbers its own
    finally:
        sb.stop()


def test_notices_to_a_user_go_through_the_bot_they_talk_to(
    private_redis: EmbeddedRedis, two_bots: SandboxThread
) -> None:
    """The monitor's notices (an alert to a SuperAdmin, the end of a paid period): a bot may
    only write to chats that started it, so each goes through the chat's bot of the pool."""
    from actors.monitor.adapters import PoolAlertSender
    from actors.monitor.ports import SendVerdict

    sb = two_bots
    settings = Settings(
        redis={"url": private_redis.url}, telegram={"tokens": [A, B], "api_base": sb.handle.base_url}
    )

    async def run() -> None:
        client = aioredis.Redis.from_url(private_redis.url)
        await RedisBotBindings(client).bind(51, BOT_B)
        sender = PoolAlertSender(settings, client)
        try:
            assert await sender.send(51, "to a user of bot B") is SendVerdict.SENT
            assert await sender.send(52, "to a user bound to no bot") is SendVerdict.SENT
        finally:
            await sender.close()

    asyncio.run(run())
    by_chat = {int(r["chat_id"]): r["bot"] for r in _records(sb)}
    assert by_chat == {51: "arbflow_sandbox_2_bot", 52: "arbflow_sandbox_bot"}
