"""The lifecycle → distribution seam through the real actors (issue 10, problems 1, 2 and 4).

A pair coordinator (``OpportunityCoordinatorActor``, the lifecycle) is fed candidates
tick by tick; its events go to ``dist:engine``, the queue shards, the rate limiter and
the Telegram sandbox, all real, on a private Redis. What each user got is read back from
the sandbox, what was charged from Redis, what was recorded from the lake.
"""

from __future__ import annotations

import asyncio
import re
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

from actors.opportunities import OpportunityCoordinatorActor, coordinator_name
from actors.queues import shard_name
from actors.sink import get_sink
from core.accounts import Tier, User
from core.candidates import Candidate
from core.models import OpportunityKind, Priority
from core.settings import Settings
from pipeline.lake import Lake
from pipeline.query import run_query
from serve.orchestrator import Distribution
from serve.runtime import EmbeddedRedis
from state.sessions import RedisSessionStore
from state.users import RedisUserStore
from tests.support.sandbox_thread import SandboxThread

PAIR = ("binance", "okx")
SPOT = frozenset({OpportunityKind.SPOT_SPREAD.value})
DEDUP_KEY = "spot_spread:BTC/USDT:binance:okx"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _settings(
    base: Settings,
    sandbox: SandboxThread,
    redis_url: str,
    *,
    shards: int = 2,
    tiers: dict[str, dict[str, Any]] | None = None,
    reopen_cooldown_s: float = 60.0,
) -> Settings:
    return base.model_copy(
        update={
            "redis": base.redis.model_copy(update={"url": redis_url}),
            "ray": base.ray.model_copy(update={"namespace": f"seam-{uuid.uuid4().hex[:8]}"}),
            "telegram": base.telegram.model_copy(
                update={"token": sandbox.handle.token, "api_base": sandbox.handle.base_url}
            ),
            "distribution": base.distribution.model_copy(
                update={"shards": shards, "retry_base_s": 0.1, "digest_window_s": 0.0, "tiers": tiers or {}}
            ),
            # closes on the first empty tick (no hysteresis): the tests drive the ticks themselves
            "opportunities": base.opportunities.model_copy(
                update={"cooldown_s": reopen_cooldown_s, "close_after_s": 0.0}
            ),
        }
    )


async def _create_users(url: str, specs: list[tuple[int, Tier, dict[str, Any]]]) -> None:
    client = aioredis.Redis.from_url(url)
    users, sessions = RedisUserStore(client), RedisSessionStore(client)
    now = datetime.now(UTC)
    for uid, tier, prefs in specs:
        user = User.new(uid, now, tier=tier)
        for name, value in prefs.items():
            setattr(user if name == "language_code" else user.preferences, name, value)
        await users.create(user)
        await sessions.start(uid, uid, now)
    await client.aclose()


def users(url: str, specs: list[tuple[int, Tier, dict[str, Any]]]) -> None:
    asyncio.run(_create_users(url, specs))


def spread(*, confidence: float, pushable: bool, net_bps: float = 40.0) -> Candidate:
    return Candidate(
        kind=OpportunityKind.SPOT_SPREAD,
        symbol="BTC/USDT",
        buy_exchange=PAIR[0],
        sell_exchange=PAIR[1],
        gross_bps=net_bps + 20,
        net_bps=net_bps,
        gross_apr=None,
        notional_usd=10_000.0,
        executable_usd=10_000.0,
        confidence=confidence,
        priority=Priority.HIGH,
        pushable=pushable,
        flags=(),
        detected_at=datetime.now(UTC),
    )


class Pair:
    """The real pair coordinator actor of ``binance``/``okx``, ticked on the wall clock."""

    def __init__(self, settings: Settings) -> None:
        self.handle = OpportunityCoordinatorActor.options(  # type: ignore[attr-defined]
            name=coordinator_name(PAIR), namespace=settings.ray.namespace, get_if_exists=True
        ).remote(settings, *PAIR)

    def tick(self, *candidates: Candidate) -> int:
        n = int(ray.get(self.handle.observe.remote(list(candidates), int(time.time() * 1000), SPOT)))
        ray.get(self.handle.drain.remote())
        return n

    def stop(self) -> None:
        ray.kill(self.handle)


def wait_for(cond: Callable[[], bool], within: float = 30.0, why: Callable[[], Any] = lambda: None) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met in time: {why()}")


def _deliveries(settings: Settings) -> list[dict[str, Any]]:
    ray.get(get_sink(settings).flush.remote())
    return list(run_query(Lake.from_settings(settings.lake), "SELECT * FROM deliveries").to_pylist())


def _shard_stats(settings: Settings, shards: int) -> list[dict[str, Any]]:
    handles = [ray.get_actor(shard_name(i), namespace=settings.ray.namespace) for i in range(shards)]
    return list(ray.get([h.stats.remote() for h in handles]))


def test_a_spread_that_becomes_pushable_reaches_every_eligible_premium_user_once(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url)
    premium = [8101, 8102, 8103, 8104]
    users(
        private_redis.url,
        [
            (8101, Tier.PREMIUM, {"timezone": "Asia/Kathmandu"}),
            (8102, Tier.PREMIUM, {}),
            (8103, Tier.PREMIUM, {"language": "ru"}),  # the setting
            (8104, Tier.PREMIUM, {"language_code": "ru-RU"}),  # the Telegram app's language
            (8199, Tier.PREMIUM, {"pushes_on": False}),
        ],
    )
    dist = Distribution(settings).start()
    pair = Pair(settings)
    try:
        assert pair.tick(spread(confidence=0.55, pushable=False)) == 1  # opened, not pushable
        for _ in range(3):
            time.sleep(0.2)
            pair.tick(spread(confidence=0.6, pushable=False))
        assert sandbox.sent_to(premium) == dict.fromkeys(premium, 0)
        assert pair.tick(spread(confidence=0.75, pushable=True)) == 1  # updated: pushable now
        for _ in range(5):
            time.sleep(0.2)
            pair.tick(spread(confidence=0.8, pushable=True))
        wait_for(lambda: sandbox.sent_to(premium) == dict.fromkeys(premium, 1))
        time.sleep(1.0)
        assert sandbox.sent_to(premium) == dict.fromkeys(premium, 1)  # exactly one each
        assert sandbox.sent_to([8199]) == {8199: 0}
        assert sandbox.too_many == 0
        # the push carries the user's zone from the directory to the shard: times in it, and its age
        (nepal,), (utc,) = sandbox.texts(8101), sandbox.texts(8102)
        assert "Executable: $10,000 at this edge" in nepal
        assert re.search(r"Detected \d\d:\d\d:\d\d \+0545 · (just now|\d+s ago)", nepal), nepal
        assert re.search(r"Detected \d\d:\d\d:\d\d UTC · (just now|\d+s ago)", utc), utc
        # and the user's language: their setting, else their Telegram app's
        for russian in (8103, 8104):
            (text,) = sandbox.texts(russian)
            assert "Спотовые спреды" in text and "Исполнимо: $10,000 по этому спреду" in text, text
        # it closes: every push that showed it is edited in place, through the real actors
        pair.tick()  # an empty tick closes it (no hysteresis here)
        closed = {
            8101: "✅ Closed after",
            8102: "✅ Closed after",
            8103: "✅ Закрылась через",
            8104: "✅ Закрылась через",
        }
        wait_for(
            lambda: all(closed[u] in sandbox.texts(u)[-1] for u in premium),
            why=lambda: {u: sandbox.texts(u) for u in premium},
        )
        assert sandbox.sent_to(premium) == dict.fromkeys(premium, 1)  # edited, not sent again
        assert sandbox.texts(8101)[0].startswith(nepal)
    finally:
        pair.stop()
        dist.stop()


def test_an_item_that_stops_being_pushable_expires_unsent(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url, tiers={"basic": {"delay_s": 3}})
    users(private_redis.url, [(8201, Tier.PREMIUM, {}), (8202, Tier.BASIC, {}), (8203, Tier.BASIC, {})])
    dist = Distribution(settings).start()
    pair = Pair(settings)
    try:
        pair.tick(spread(confidence=0.8, pushable=True))
        wait_for(lambda: sandbox.sent_to([8201]) == {8201: 1})
        assert pair.tick(spread(confidence=0.5, pushable=False)) == 1  # updated: no longer pushable
        time.sleep(5.0)  # past the Basic delay
        pair.tick(spread(confidence=0.5, pushable=False))
        assert sandbox.sent_to([8202, 8203]) == {8202: 0, 8203: 0}
        totals = dist.stats()["totals"]
        assert totals["expired"] == 2, totals
    finally:
        pair.stop()
        dist.stop()
    rows = _deliveries(settings)
    expired = sorted((r["chat_id"], r["reason"]) for r in rows if r["status"] == "expired")
    assert expired == [(8202, "not_pushable"), (8203, "not_pushable")]
    client = redis.Redis.from_url(private_redis.url)
    assert not client.exists(f"elig:pending:{DEDUP_KEY}")  # the marks went with the items
    assert client.hkeys(f"elig:cooldown:{DEDUP_KEY}") == [b"8201"]  # only the push that was sent


def _quota_keys(client: redis.Redis, uid: int) -> list[bytes]:
    return sorted(client.scan_iter(match=f"quota:*:{uid}:*"))


def test_free_and_basic_get_what_outlives_their_delay_and_an_expired_item_charges_nothing(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(
        base_settings,
        sandbox,
        private_redis.url,
        tiers={"free": {"delay_s": 4}, "basic": {"delay_s": 2}},
        reopen_cooldown_s=0.5,  # a spread back after 0.5 s is a new opportunity of the same key
    )
    free, basic = [8301, 8302], [8311, 8312]
    users(private_redis.url, [(u, Tier.FREE, {}) for u in free] + [(u, Tier.BASIC, {}) for u in basic])
    client = redis.Redis.from_url(private_redis.url)
    dist = Distribution(settings).start()
    pair = Pair(settings)
    everyone = free + basic
    try:
        for _ in range(3):  # three short spreads of the same key in a row: each closes before any delay
            pair.tick(spread(confidence=0.8, pushable=True))
            time.sleep(1.0)
            pair.tick()  # closed: the queued items expire
            time.sleep(1.2)  # past the reopen window: the next one is a new opportunity
        wait_for(lambda: dist.stats()["totals"].get("expired", 0) == 3 * len(everyone), why=dist.stats)
        time.sleep(1.0)  # the shards' outcomes are flushed and reported
        assert sandbox.sent_to(everyone) == dict.fromkeys(everyone, 0)
        for uid in everyone:
            assert _quota_keys(client, uid) == [], uid  # no quota drawn
        assert not client.exists(f"elig:cooldown:{DEDUP_KEY}")  # no cooldown started
        assert not client.exists(f"elig:pending:{DEDUP_KEY}")

        # a fourth one lasts longer than the Free delay: everyone gets it, once
        pair.tick(spread(confidence=0.8, pushable=True))
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            pair.tick(spread(confidence=0.8, pushable=True))
        wait_for(lambda: sandbox.sent_to(everyone) == dict.fromkeys(everyone, 1), 10)
        pair.tick()
        time.sleep(1.0)
        assert sandbox.sent_to(everyone) == dict.fromkeys(everyone, 1)
        cooled = {int(k) for k in client.hkeys(f"elig:cooldown:{DEDUP_KEY}")}
        assert cooled == set(everyone)
        for uid in everyone:
            hour = [k for k in _quota_keys(client, uid) if k.startswith(b"quota:h:")]
            assert [int(client.get(k) or 0) for k in hour] == [1], uid  # one push, one unit
        stats = dist.stats()["distributor"]
        assert stats["opportunities"] == 4, stats
    finally:
        pair.stop()
        dist.stop()
    rows = _deliveries(settings)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped == [], skipped  # nobody was blamed on a cooldown of an item that expired


def test_a_flap_reoffers_only_to_the_unserved_without_new_skipped_rows_and_closes_reach_one_shard(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    shards = 4
    settings = _settings(
        base_settings, sandbox, private_redis.url, shards=shards, tiers={"basic": {"delay_s": 30}}
    )
    # every chat is ≡ 0 (mod 4): one shard holds them all
    users(
        private_redis.url,
        [
            (8400, Tier.PREMIUM, {}),
            (8404, Tier.BASIC, {}),
            (8408, Tier.PREMIUM, {"min_net_bps": "100"}),
            (8412, Tier.PREMIUM, {"exchanges": {"bybit"}}),
        ],
    )
    dist = Distribution(settings).start()
    pair = Pair(settings)
    try:
        pair.tick(spread(confidence=0.8, pushable=True))
        wait_for(lambda: sandbox.sent_to([8400]) == {8400: 1})
        for _ in range(3):  # close, reopen within the lifecycle's cooldown: the same id
            pair.tick()
            time.sleep(0.3)
            pair.tick(spread(confidence=0.8, pushable=True))
            time.sleep(0.3)
        pair.tick(spread(confidence=0.8, pushable=True))  # still open: nothing new
        time.sleep(1.0)
        stats = dist.stats()
        assert stats["distributor"]["opportunities"] == 1, stats["distributor"]
        assert stats["distributor"]["reoffers"] == 3, stats["distributor"]
        assert stats["distributor"].get("already_fanned_out", 0) == 0, stats["distributor"]
        # the Premium user got it once; the Basic one, whose delayed item expired at each
        # close, has it queued again (due 30 s after the last reopen)
        assert sandbox.sent_to([8400, 8404, 8408, 8412]) == {8400: 1, 8404: 0, 8408: 0, 8412: 0}
        per_shard = _shard_stats(settings, shards)
        # each close expired the Basic item in shard 0; the others had nothing to expire
        assert per_shard[0]["expire_calls"] == 3, per_shard[0]
        assert [s["expire_calls"] for s in per_shard[1:]] == [0] * (shards - 1)
        assert all(s["expire_foreign"] == 0 for s in per_shard)
        assert per_shard[0]["closed_ids"] <= 1
        assert per_shard[0]["pending"] == 1, per_shard[0]
        # the first close edited the Premium user's push, its slot from the limiter actor (the
        # push is no longer noted after that close: the reopened id's closes edit nothing more)
        wait_for(
            lambda: _shard_stats(settings, shards)[0]["edits"] == 1,
            why=lambda: _shard_stats(settings, shards)[0],
        )
        assert _shard_stats(settings, shards)[0]["edits_failed"] == 0
    finally:
        pair.stop()
        dist.stop()
    rows = _deliveries(settings)
    skipped = sorted((r["chat_id"], r["reason"]) for r in rows if r["status"] == "skipped")
    # a user who asked for other exchanges is out of the opportunity's scope: counted, no row
    assert skipped == [(8408, "preferences.min_profit")]
    assert stats["distributor"]["skips"]["preferences.exchange"] == 1, stats["distributor"]
    queued = sorted(r["chat_id"] for r in rows if r["status"] == "queued")
    assert queued == [8400] + [8404] * 4
    expired = [(r["chat_id"], r["reason"]) for r in rows if r["status"] == "expired"]
    # the Basic delay hid it at each close: "missed" (its digest leaves it out while it is
    # queued again, see tests/integration/test_missed_digest.py)
    assert expired == [(8404, "missed")] * 3


def test_a_spread_that_flaps_then_outlives_the_free_delay_reaches_free_once_and_premium_once(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url, tiers={"free": {"delay_s": 3}})
    premium, free = 8501, 8502
    users(private_redis.url, [(premium, Tier.PREMIUM, {}), (free, Tier.FREE, {})])
    client = redis.Redis.from_url(private_redis.url)
    dist = Distribution(settings).start()
    pair = Pair(settings)
    try:
        pair.tick(spread(confidence=0.8, pushable=True))
        wait_for(lambda: sandbox.sent_to([premium]) == {premium: 1})
        pair.tick()  # closed before the Free delay: the Free item expires unsent
        wait_for(lambda: dist.stats()["totals"].get("expired", 0) == 1, why=dist.stats)
        time.sleep(0.2)
        # reopened inside the lifecycle's cooldown (the same id), and now it lasts
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            pair.tick(spread(confidence=0.8, pushable=True))
            time.sleep(0.5)
        wait_for(lambda: sandbox.sent_to([free]) == {free: 1}, 10)
        pair.tick()
        time.sleep(1.0)
        assert sandbox.sent_to([premium, free]) == {premium: 1, free: 1}
        stats = dist.stats()["distributor"]
        assert (stats["opportunities"], stats["reoffers"]) == (1, 1), stats
        for uid in (premium, free):
            hour = [k for k in _quota_keys(client, uid) if k.startswith(b"quota:h:")]
            assert [int(client.get(k) or 0) for k in hour] == [1], uid  # one push, one unit
    finally:
        pair.stop()
        dist.stop()
    rows = _deliveries(settings)
    sent = sorted(r["chat_id"] for r in rows if r["status"] == "sent")
    assert sent == [premium, free]
    assert [r for r in rows if r["status"] == "skipped"] == []


def test_forget_drops_what_is_queued_for_the_user_through_the_real_actors(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    """``/forget`` on the bot side calls the running distributor (``dist:engine``): the user
    leaves its directory at once and every queue shard drops their queued push unsent."""
    settings = _settings(base_settings, sandbox, private_redis.url, tiers={"free": {"delay_s": 5}})
    forgotten, kept = 8401, 8402
    users(private_redis.url, [(forgotten, Tier.FREE, {}), (kept, Tier.FREE, {})])
    dist = Distribution(settings).start()
    pair = Pair(settings)
    try:
        pair.tick(spread(confidence=0.8, pushable=True))
        wait_for(lambda: dist.stats()["totals"]["pending"] == 2, why=dist.stats)
        assert ray.get(dist.distributor.forget.remote(forgotten)) == 1  # its delayed item
        deadline = time.monotonic() + 7.0
        while time.monotonic() < deadline:  # it lives past the Free delay
            time.sleep(0.5)
            pair.tick(spread(confidence=0.8, pushable=True))
        wait_for(lambda: sandbox.sent_to([kept]) == {kept: 1}, 10)
        assert sandbox.sent_to([forgotten]) == {forgotten: 0}
        rows = [r for r in _deliveries(settings) if r["chat_id"] == forgotten]
        ends = [(r["status"], r["reason"]) for r in rows if r["status"] != "queued"]
        assert ends == [("skipped", "forgotten")], rows
    finally:
        pair.stop()
        dist.stop()
