"""The Redis adapters of accounts, sessions, quotas and webhook dedup, on a real redis-server.

Isolation without FLUSHDB: every test gets its own key prefix.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.accounts import DEFAULT_TIERS, OnboardingStep, Preferences, StoredApiKey, Tier, User
from core.errors import StoreUnavailable
from core.models import OpportunityKind as K
from core.sessions import SESSION_TTL, EndReason, SessionEventKind, end_event, start_events
from serve.runtime import EmbeddedRedis, free_port
from state.dedup import RedisUpdateDedup
from state.quotas import RedisQuotaStore
from state.redis import redis_client
from state.sessions import SESSION_EVENTS, RedisSessionStore, SessionCache, session_events_table
from state.users import RedisUserStore

# Tomorrow 09:00 UTC: Redis expires keys on its own (wall) clock, so the times of these
# tests are in the near future, and quota windows stay within one UTC day.
T0 = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    c = redis_client(redis_server.url)
    yield c
    await c.aclose()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


# -- users ------------------------------------------------------------------------------


async def test_user_create_get_put_and_count(client: aioredis.Redis, prefix: str) -> None:
    users = RedisUserStore(client, prefix=prefix)
    alice = User.new(1, T0, username="alice", referral="camp", timezone="Europe/Berlin")
    alice.preferences.min_net_bps = Decimal("12.5")
    alice.preferences.kinds = {K.SPOT_SPREAD}
    assert await users.get(1) is None
    stored, created = await users.create(alice)
    assert created and stored == alice
    again, created = await users.create(User.new(1, T0 + timedelta(days=1), username="other"))
    assert not created and again == alice  # an existing user is never overwritten by create
    assert await users.get(1) == alice
    bob = User.new(2, T0)
    await users.put(bob)
    assert await users.count() == 2
    assert await users.get_many([1, 2, 3]) == {1: alice, 2: bob}
    bob.tier = Tier.PREMIUM
    await users.put(bob)
    assert (await users.get(2)) == bob and await users.count() == 2
    assert await users.delete(2) and await users.get(2) is None and await users.count() == 1


async def test_a_record_of_the_previous_release_reads_with_its_spot_threshold(
    client: aioredis.Redis, prefix: str
) -> None:
    """The previous release stored one ``pref.min_net_bps`` for every kind: it is the spot
    minimum now, and the funding/technical minimums read as 0 (unchanged behaviour for the
    kinds it never described in their unit)."""
    users = RedisUserStore(client, prefix=prefix)
    await users.create(User.new(5, T0))
    key = users._key(5)
    await client.hdel(key, "pref.min_net_apr_pct", "pref.min_confidence")
    await client.hset(key, "pref.min_net_bps", '"12.5"')
    assert not {b"pref.min_net_apr_pct", b"pref.min_confidence"} & set(await client.hkeys(key))
    prefs = (await users.get(5)).preferences  # type: ignore[union-attr]
    assert prefs.threshold(K.SPOT_SPREAD) == Decimal("12.5")
    assert prefs.threshold(K.FUNDING_RATE) == 0 and prefs.threshold(K.TECHNICAL) == 0
    # a write through the store keeps the old field and adds the new ones
    assert await users.update_preferences(5, min_net_apr_pct="20")
    prefs = (await users.get(5)).preferences  # type: ignore[union-attr]
    assert (prefs.min_net_bps, prefs.min_net_apr_pct) == (Decimal("12.5"), Decimal(20))


async def test_concurrent_creates_make_one_user(client: aioredis.Redis, prefix: str) -> None:
    users = RedisUserStore(client, prefix=prefix)
    results = await asyncio.gather(*(users.create(User.new(7, T0, first_name=f"n{i}")) for i in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({u.first_name for u, _ in results}) == 1


async def test_preference_updates_are_validated_and_atomic(client: aioredis.Redis, prefix: str) -> None:
    users = RedisUserStore(client, prefix=prefix)
    await users.create(User.new(1, T0))
    assert await users.update_preferences(1, timezone="Asia/Tokyo", active_hours=(22, 6), min_net_bps="5")
    prefs = (await users.get(1)).preferences  # type: ignore[union-attr]
    assert (prefs.timezone, prefs.active_hours, prefs.min_net_bps) == ("Asia/Tokyo", (22, 6), Decimal(5))
    assert prefs.kinds == set(K)  # untouched fields kept
    with pytest.raises(ValueError):
        await users.update_preferences(1, timezone="Nowhere/Land")
    with pytest.raises(ValueError):
        await users.update_preferences(1, colour="red")
    assert not await users.update_preferences(99, pushes_on=False)  # unknown user: not created
    assert await users.get(99) is None

    # 30 concurrent read-modify-writes, each adding its own symbol: none is lost
    def add(sym: str) -> object:
        def fn(p: Preferences) -> Preferences:
            p.symbols = {*p.symbols, sym}
            return p

        return fn

    await asyncio.gather(*(users.modify_preferences(1, add(f"S{i}/USDT")) for i in range(30)))  # type: ignore[arg-type]
    prefs = (await users.get(1)).preferences  # type: ignore[union-attr]
    assert prefs.symbols == {f"S{i}/USDT" for i in range(30)}
    assert prefs.timezone == "Asia/Tokyo"
    assert await users.modify_preferences(99, lambda p: p) is None


async def test_tier_keys_fields_touch_and_change_stream(client: aioredis.Redis, prefix: str) -> None:
    users = RedisUserStore(client, prefix=prefix)
    await users.create(User.new(1, T0))
    key = StoredApiKey(exchange="okx", key_masked="abcd…wxyz", secret_ciphertext="gAAAA-c", added_at=T0)
    assert await users.set_tier(1, Tier.BASIC)
    assert await users.add_api_key(1, key)
    assert await users.update_fields(1, onboarding_step=OnboardingStep.EXCHANGES, beta_flags={"ai"})
    assert await users.touch(1, T0 + timedelta(hours=3))
    with pytest.raises(ValueError):
        await users.update_fields(1, tier="gold")
    user = await users.get(1)
    assert user is not None
    assert user.tier is Tier.BASIC and user.api_keys == {"okx": key}
    assert user.onboarding_step is OnboardingStep.EXCHANGES and user.beta_flags == {"ai"}
    assert user.last_seen_at == T0 + timedelta(hours=3)
    assert await users.remove_api_key(1, "okx") and not await users.remove_api_key(1, "okx")
    assert (await users.get(1)).api_keys == {}  # type: ignore[union-attr]
    await users.update_preferences(1, pushes_on=False)

    last, changes = await users.read_changes()
    assert [(c.user_id, c.field) for c in changes] == [
        (1, "*"),
        (1, "tier"),
        (1, "api_keys"),
        (1, "beta_flags,onboarding_step"),
        (1, "api_keys"),
        (1, "api_keys"),
        (1, "preferences"),
    ]  # touch emits nothing; a no-op removal still says api_keys
    assert (await users.read_changes(last))[1] == []


async def test_iter_users(client: aioredis.Redis, prefix: str) -> None:
    users = RedisUserStore(client, prefix=prefix)
    for uid in range(1, 1201):
        await users.create(User.new(uid, T0))
    seen = [u.id async for u in users.iter_users(batch=250)]
    assert sorted(seen) == list(range(1, 1201))
    assert await users.count() == 1200


# -- sessions ---------------------------------------------------------------------------


async def test_concurrent_starts_give_one_session(client: aioredis.Redis, prefix: str) -> None:
    sessions = RedisSessionStore(client, prefix=prefix)
    results = await asyncio.gather(*(sessions.start(42, 42, T0) for _ in range(20)))
    assert len({s.id for s, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await sessions.count_active(T0) == 1


async def test_start_returning_user_gets_new_session(client: aioredis.Redis, prefix: str) -> None:
    sessions = RedisSessionStore(client, prefix=prefix)
    first = await sessions.start_session(1, 1, T0)
    assert first.created and first.previous is None and first.session.seq == 1
    assert [e.event for e in start_events(*first)] == [SessionEventKind.STARTED]
    # /start again while active: same session, extended
    again = await sessions.start_session(1, 1, T0 + timedelta(days=1))
    assert not again.created and again.session.id == first.session.id
    assert again.session.expires_at == T0 + timedelta(days=1) + SESSION_TTL
    assert start_events(*again) == []
    # expired (not swept yet): a new session; the old one's expiry is reported once
    later = T0 + timedelta(days=20)
    third = await sessions.start_session(1, 1, later)
    assert third.created and third.session.id != first.session.id and third.session.seq == 2
    assert third.previous is not None and third.previous.id == first.session.id
    evs = start_events(*third)
    assert [e.event for e in evs] == [SessionEventKind.EXPIRED, SessionEventKind.RESUMED]
    assert await sessions.sweep(later) == []  # its replacement removed it from the index
    # ended by /stop: a new one
    ended = await sessions.end(1, EndReason.STOP, later + timedelta(hours=1))
    assert ended is not None and ended.end_reason is EndReason.STOP
    fourth = await sessions.start_session(1, 1, later + timedelta(hours=2))
    assert fourth.created and fourth.session.seq == 3
    assert [e.event for e in start_events(*fourth)] == [SessionEventKind.RESUMED]


async def test_extend_and_redis_key_expiry(client: aioredis.Redis, prefix: str) -> None:
    sessions = RedisSessionStore(client, prefix=prefix)
    now = datetime.now(UTC)
    s, _ = await sessions.start(5, 5, now)
    later = now + timedelta(days=3)
    extended = await sessions.extend(5, later)
    assert extended is not None and extended.id == s.id
    assert extended.expires_at == later.replace(microsecond=later.microsecond // 1000 * 1000) + SESSION_TTL
    assert (await sessions.get_active(5, later)) == extended
    # Redis expires the key two days after the session ends
    pexp = await client.pexpiretime(f"{prefix}:session:user:5")
    assert abs(pexp / 1000 - (extended.expires_at + timedelta(days=2)).timestamp()) < 1
    score = await client.zscore(f"{prefix}:sessions:by_expiry", "5")
    assert score == int(extended.expires_at.timestamp() * 1000)
    # an expired session cannot be extended; nothing is extended for an unknown user
    assert await sessions.extend(5, extended.expires_at + timedelta(seconds=1)) is None
    assert await sessions.get_active(5, extended.expires_at) is None
    assert await sessions.extend(6, later) is None


async def test_end_and_sweep(client: aioredis.Redis, prefix: str) -> None:
    sessions = RedisSessionStore(client, prefix=prefix)
    for uid in range(1, 11):
        await sessions.start(uid, uid, T0 + timedelta(hours=uid))
    assert await sessions.count_active(T0 + timedelta(hours=11)) == 10
    stopped = await sessions.end(3, EndReason.STOP, T0 + timedelta(days=1))
    assert stopped is not None and end_event(stopped).event is SessionEventKind.ENDED
    assert await sessions.end(3, EndReason.STOP, T0 + timedelta(days=1)) is None  # ends once
    assert await sessions.end(99, EndReason.STOP, T0) is None
    blocked = await sessions.end(4, EndReason.BLOCKED, T0 + timedelta(days=2))
    assert blocked is not None and end_event(blocked).event is SessionEventKind.BLOCKED
    assert await sessions.count_active(T0 + timedelta(days=2)) == 8
    assert sorted(await sessions.active_user_ids(T0 + timedelta(days=2))) == [1, 2, 5, 6, 7, 8, 9, 10]

    # user 10 stays active by interacting; 1, 2, 5-9 expire at T0 + 7 days + their hour
    await sessions.extend(10, T0 + timedelta(days=6))
    at = T0 + SESSION_TTL + timedelta(hours=7, minutes=30)  # 1, 2, 5, 6, 7 expired by now
    swept = await sessions.sweep(at, batch=2)
    assert sorted(s.user_id for s in swept) == [1, 2, 5, 6, 7]
    assert all(s.end_reason is EndReason.EXPIRED and s.ended_at == s.expires_at for s in swept)
    assert await sessions.sweep(at) == []  # each expiry is reported once
    assert await sessions.count_active(at) == 3
    late = T0 + timedelta(days=30)
    assert sorted(s.user_id for s in await sessions.sweep(late)) == [8, 9, 10]
    assert await sessions.count_active(late) == 0
    # a /stop after expiry (not yet swept) records the expiry, not a stop
    await sessions.start(50, 50, T0)
    gone = await sessions.end(50, EndReason.STOP, T0 + timedelta(days=8))
    assert gone is not None and gone.end_reason is EndReason.EXPIRED and gone.ended_at == T0 + SESSION_TTL

    table = session_events_table([end_event(s) for s in swept])
    assert table.schema == SESSION_EVENTS and table.num_rows == 5
    assert set(table.column("event").to_pylist()) == {"expired"}
    assert table.column("ts").type == pa.timestamp("ms", tz="UTC")


async def test_session_cache_hits_misses_extension_and_invalidation(
    client: aioredis.Redis, prefix: str
) -> None:
    store = RedisSessionStore(client, prefix=prefix)
    mono = [0.0]
    cache = SessionCache(store, ttl_s=1.0, extend_every_s=60.0, clock=lambda: mono[0])
    assert await cache.validate(1, T0) is None and cache.misses == 1
    assert len(cache) == 0  # negative answers are not cached
    started = await cache.start(1, 1, T0)
    assert await cache.validate(1, T0 + timedelta(seconds=1)) == started.session and cache.hits == 1
    mono[0] = 0.5
    assert await cache.validate(1, T0 + timedelta(seconds=2)) is not None and cache.hits == 2
    mono[0] = 1.5  # stale entry: back to Redis, not yet due for an extension
    s = await cache.validate(1, T0 + timedelta(seconds=30))
    assert s is not None and s.expires_at == T0 + SESSION_TTL and cache.misses == 2
    # due: extended in Redis (coalesced to once per minute)
    mono[0] = 1.6
    s = await cache.validate(1, T0 + timedelta(seconds=61))
    assert s is not None and s.expires_at == T0 + timedelta(seconds=61) + SESSION_TTL
    assert (await store.get(1)).expires_at == s.expires_at  # type: ignore[union-attr]
    assert await cache.validate(1, T0 + timedelta(seconds=62)) == s  # hit, no write
    # ended elsewhere: seen within ttl_s; ended here: at once
    await store.end(1, EndReason.STOP, T0 + timedelta(seconds=63))
    assert await cache.validate(1, T0 + timedelta(seconds=63)) is not None  # stale for <= ttl_s
    mono[0] = 3.0
    assert await cache.validate(1, T0 + timedelta(seconds=64)) is None
    await cache.start(1, 1, T0 + timedelta(seconds=65))
    assert await cache.validate(1, T0 + timedelta(seconds=65)) is not None
    assert await cache.end(1, EndReason.STOP, T0 + timedelta(seconds=66)) is not None
    assert await cache.validate(1, T0 + timedelta(seconds=66)) is None
    # a cached session is not served past its expiry
    await cache.start(2, 2, T0)
    assert await cache.validate(2, T0 + SESSION_TTL) is None


async def test_session_cache_is_bounded(client: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(client, prefix=prefix)
    cache = SessionCache(store, max_entries=10)
    for uid in range(30):
        await cache.start(uid, uid, T0)
    assert len(cache) == 10


# -- quotas ------------------------------------------------------------------------------


async def test_concurrent_consumes_stop_exactly_at_the_daily_limit(
    client: aioredis.Redis, prefix: str
) -> None:
    quotas = RedisQuotaStore(client, prefix=prefix)
    policy = DEFAULT_TIERS[Tier.FREE].model_copy(update={"daily_quota": 5, "hourly_quota": 100})
    results = await asyncio.gather(*(quotas.try_consume(1, policy, T0) for _ in range(20)))
    assert sum(r.ok for r in results) == 5
    assert await quotas.remaining(1, policy, T0) == (0, 95)
    assert await quotas.used(1, T0) == (5, 5)
    # a new UTC day starts afresh
    assert (await quotas.try_consume(1, policy, T0 + timedelta(days=1))).ok


async def test_hourly_limit_and_both_or_neither(client: aioredis.Redis, prefix: str) -> None:
    quotas = RedisQuotaStore(client, prefix=prefix)
    free = DEFAULT_TIERS[Tier.FREE]  # 5/day, 2/h
    r = [await quotas.try_consume(1, free, T0 + timedelta(minutes=i)) for i in range(3)]
    assert [x.ok for x in r] == [True, True, False]
    assert (r[0].remaining_day, r[0].remaining_hour) == (4, 1)
    assert (r[2].remaining_day, r[2].remaining_hour) == (3, 0)
    assert await quotas.used(1, T0) == (2, 2)  # the refused one took nothing from the day
    nxt = [await quotas.try_consume(1, free, T0 + timedelta(hours=1, minutes=i)) for i in range(3)]
    assert [x.ok for x in nxt] == [True, True, False]
    last = [await quotas.try_consume(1, free, T0 + timedelta(hours=2, minutes=i)) for i in range(2)]
    assert [x.ok for x in last] == [True, False]  # the day's 5th, then the daily limit
    assert last[1].remaining_day == 0 and last[1].remaining_hour == 1
    assert await quotas.used(1, T0 + timedelta(hours=2)) == (5, 1)
    # a refund gives back to the window it was taken from
    await quotas.refund(1, T0 + timedelta(hours=2))
    assert await quotas.used(1, T0 + timedelta(hours=2)) == (4, 0)
    await quotas.refund(1, T0 + timedelta(hours=2), n=5)
    assert await quotas.used(1, T0 + timedelta(hours=2)) == (0, 0)  # never below zero
    # the counters expire after their window
    ttl = await client.ttl(f"{prefix}:quota:h:1:{T0:%Y%m%d}09")
    assert ttl == -2 or ttl > 0


async def test_unlimited_and_many(client: aioredis.Redis, prefix: str) -> None:
    quotas = RedisQuotaStore(client, prefix=prefix)
    admin = DEFAULT_TIERS[Tier.SUPERADMIN]
    results = await asyncio.gather(*(quotas.try_consume(1, admin, T0) for _ in range(50)))
    assert all(r.ok and r.remaining_day is None and r.remaining_hour is None for r in results)
    assert await quotas.used(1, T0) == (50, 50)
    basic = DEFAULT_TIERS[Tier.BASIC]  # 20/day, 5/h
    many = await quotas.try_consume_many([(2, basic)] * 7 + [(3, basic)], T0)
    assert [r.ok for r in many] == [True] * 5 + [False, False, True]
    assert many[4].remaining_hour == 0 and many[7].remaining_day == 19


async def test_cooldown_and_push_dedup(client: aioredis.Redis, prefix: str) -> None:
    quotas = RedisQuotaStore(client, prefix=prefix)
    assert await quotas.try_cooldown(1, "spot|BTC/USDT|binance|okx", 0.3)
    assert not await quotas.try_cooldown(1, "spot|BTC/USDT|binance|okx", 0.3)
    assert await quotas.try_cooldown(2, "spot|BTC/USDT|binance|okx", 0.3)  # per user
    assert 0 < await quotas.cooldown_left(1, "spot|BTC/USDT|binance|okx") <= 0.3
    await asyncio.sleep(0.35)
    assert await quotas.cooldown_left(1, "spot|BTC/USDT|binance|okx") == 0
    assert await quotas.try_cooldown(1, "spot|BTC/USDT|binance|okx", 0.3)

    claims = await asyncio.gather(*(quotas.update_dedup(1, "opp-1") for _ in range(20)))
    assert sum(claims) == 1
    assert await quotas.update_dedup(2, "opp-1") and await quotas.update_dedup(1, "opp-2")


async def test_update_id_dedup(client: aioredis.Redis, prefix: str) -> None:
    dedup = RedisUpdateDedup(client, prefix=prefix)
    seen = await asyncio.gather(*(dedup.seen(1001) for _ in range(10)))
    assert sorted(seen) == [False] + [True] * 9
    assert not await dedup.seen(1002)
    ttl = await client.ttl(f"{prefix}:tg:update:1001")
    assert 86_000 < ttl <= 86_400
    await dedup.forget(1001)
    assert not await dedup.seen(1001)


async def test_errors_become_store_unavailable() -> None:
    dead = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable):
            await RedisSessionStore(dead).start(1, 1, T0)
        with pytest.raises(StoreUnavailable):
            await RedisUserStore(dead).get(1)
        with pytest.raises(StoreUnavailable):
            await RedisQuotaStore(dead).try_consume(1, DEFAULT_TIERS[Tier.FREE], T0)
        with pytest.raises(StoreUnavailable):
            await RedisUpdateDedup(dead).seen(1)
    finally:
        await dead.aclose()


async def test_a_record_without_region_by_admin_reads_as_set_by_nobody(
    client: aioredis.Redis, prefix: str
) -> None:
    """Records written before ``region_by_admin`` existed (and before ``region`` was set by
    anything) read as a region the user may change."""
    users = RedisUserStore(client, prefix=prefix)
    await users.create(User.new(9, T0, region="DE"))
    key = users._key(9)
    assert await client.hdel(key, "region_by_admin") == 1  # the field this release writes
    user = await users.get(9)
    assert user is not None and user.region == "DE" and user.region_by_admin is False
    assert await users.update_fields(9, region="AT", region_by_admin=True)
    user = await users.get(9)
    assert user is not None and (user.region, user.region_by_admin) == ("AT", True)


async def test_a_record_without_the_blacklist_and_minimum_size_reads_with_none_of_them(
    client: aioredis.Redis, prefix: str
) -> None:
    """Preferences written before blacklists and a minimum size existed: nothing blocked,
    any size; a later write keeps the old fields and adds the new ones."""
    users = RedisUserStore(client, prefix=prefix)
    await users.create(User.new(11, T0))
    key = users._key(11)
    fields = ("pref.blocked_exchanges", "pref.blocked_symbols", "pref.min_size_usd")
    assert await client.hdel(key, *fields) == 3  # the fields this release writes
    prefs = (await users.get(11)).preferences  # type: ignore[union-attr]
    assert (prefs.blocked_exchanges, prefs.blocked_symbols, prefs.min_size_usd) == (set(), set(), 0)
    assert await users.update_preferences(11, blocked_exchanges={"Bybit"}, min_size_usd="2500")
    prefs = (await users.get(11)).preferences  # type: ignore[union-attr]
    assert (prefs.blocked_exchanges, prefs.min_size_usd, prefs.timezone) == ({"bybit"}, Decimal(2500), "UTC")


async def test_a_users_daily_quota_resets_at_their_local_midnight(
    client: aioredis.Redis, prefix: str
) -> None:
    """Lagos is UTC+1 all year: 22:30 UTC is 23:30 there (the same day), 23:30 UTC is
    00:30 the next day there: a new daily window, while a UTC user's day goes on. The day
    is tomorrow's (the counters' keys expire at the end of their day: a past day is gone)."""
    quotas = RedisQuotaStore(client, prefix=prefix)
    free = DEFAULT_TIERS[Tier.FREE]
    assert free.daily_quota is not None
    evening = T0.replace(hour=22, minute=30)
    for uid, tz in ((21, "Africa/Lagos"), (22, "UTC")):
        for i in range(free.daily_quota):
            moment = evening - timedelta(hours=3 * i)  # several hours: no hourly limit in the way
            assert (await quotas.try_consume(uid, free, moment, tz=tz)).ok, (uid, i)
        assert not (await quotas.try_consume(uid, free, evening, tz=tz)).ok  # the day is used up
    after = evening + timedelta(hours=1)  # 23:30 UTC
    assert (await quotas.try_consume(21, free, after, tz="Africa/Lagos")).ok  # a new local day
    assert not (await quotas.try_consume(22, free, after, tz="UTC")).ok  # still the same UTC day
    left_today, _ = await quotas.remaining(21, free, after, tz="Africa/Lagos")
    assert left_today == free.daily_quota - 1
    keys = sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}:quota:d:21:*")])
    days = [f"{d:%Y%m%d}" for d in (evening, evening + timedelta(days=1))]
    assert [k.rsplit(":", 1)[1] for k in keys] == days


async def test_a_key_sealed_by_an_earlier_release_still_reads_and_a_new_one_has_no_ciphertext(
    client: aioredis.Redis, prefix: str
) -> None:
    users = RedisUserStore(client, prefix=prefix)
    await users.create(User.new(12, T0))
    old = StoredApiKey(exchange="okx", key_masked="abcd…wxyz", secret_ciphertext="gAAAA-c", added_at=T0)
    new = StoredApiKey(exchange="bybit", key_masked="efgh…1234", added_at=T0)
    assert await users.add_api_key(12, old) and await users.add_api_key(12, new)
    user = await users.get(12)
    assert user is not None and user.api_keys == {"okx": old, "bybit": new}
    raw = await client.hget(users._key(12), "key.bybit")
    assert raw is not None and b'"secret_ciphertext":null' in raw


# -- the client -------------------------------------------------------------------------


async def test_commands_beyond_the_clients_connections_wait_for_one(redis_server: EmbeddedRedis) -> None:
    # 60 commands, each holding a connection for 50 ms, through a client of 8 connections:
    # all answer (redis-py's default pool raised "Too many connections" for the ninth)
    client = redis_client(redis_server.url, max_connections=8)
    key = f"t{uuid.uuid4().hex[:10]}:empty"
    try:
        answers = await asyncio.gather(*(client.blpop([key], timeout=0.05) for _ in range(60)))
    finally:
        await client.aclose()
    assert answers == [None] * 60


async def test_writes_asked_for_together_share_one_pipeline_and_each_waits_for_it(
    redis_server: EmbeddedRedis,
) -> None:
    from state.redis import PipelineBatcher

    client = redis_client(redis_server.url)
    key = f"t{uuid.uuid4().hex[:10]}:set"
    batcher = PipelineBatcher(client, transaction=True)

    async def mark(member: int) -> int:
        await batcher.run(lambda pipe: pipe.sadd(key, str(member)))
        return int(await client.sismember(key, str(member)))  # written when the call returns

    try:
        assert await asyncio.gather(*(mark(i) for i in range(50))) == [1] * 50
        assert (batcher.calls, batcher.pipelines) == (50, 1)
        await mark(50)  # a later turn: a pipeline of its own
        assert batcher.pipelines == 2 and await client.scard(key) == 51
        # an error reaches every caller of the pipeline that failed, and only them
        failing = PipelineBatcher(redis_client("redis://127.0.0.1:1"))
        results = await asyncio.gather(
            *(failing.run(lambda pipe: pipe.sadd(key, "x")) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, (RedisError, OSError)) for r in results), results
        assert failing.pipelines == 1 and not await client.sismember(key, "x")
    finally:
        await client.delete(key)
        await client.aclose()
