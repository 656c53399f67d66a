"""The user directory on a real redis-server: load, refresh after changes, cooldowns that survive."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis.asyncio as aioredis

from actors.directory import UserDirectory
from core.accounts import DEFAULT_TIERS, Tier, User
from core.eligibility import Layer, OpportunityView
from core.models import OpportunityKind, Priority
from core.sessions import EndReason
from core.settings import Settings
from serve.runtime import EmbeddedRedis
from state.groups import RedisGroupStore
from state.quotas import RedisQuotaStore
from state.redis import redis_client
from state.sessions import RedisSessionStore
from state.users import RedisUserStore


def _now() -> datetime:
    # Redis expires keys on its own clock: work at the real time, away from an hour's end
    now = datetime.now(UTC).replace(microsecond=0)
    return now if now.minute < 55 else now + timedelta(minutes=6)


def _opp(now: datetime, kind: OpportunityKind = OpportunityKind.SPOT_SPREAD) -> OpportunityView:
    return OpportunityView(
        opportunity_id="o-1",
        kind=kind,
        symbol="BTC/USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        net_bps=15.0,
        priority=Priority.HIGH,
        confidence=0.9,
        dedup_key=OpportunityView.make_dedup_key(kind.value, "BTC/USDT", "binance", "okx"),
        detected_at=now,
    )


@pytest.fixture
async def isolated_client(isolated_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = redis_client(isolated_redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    c = redis_client(redis_server.url)
    yield c
    await c.aclose()


def _reasons(frame: object) -> dict[int, str]:
    import polars as pl

    assert isinstance(frame, pl.DataFrame)
    return dict(zip(frame["user_id"].to_list(), frame["reason"].cast(pl.String).to_list(), strict=True))


async def test_load_then_refresh_follows_preferences_sessions_and_users(
    isolated_client: aioredis.Redis,
) -> None:
    client, now = isolated_client, _now()
    users = RedisUserStore(client)
    sessions = RedisSessionStore(client)
    quotas = RedisQuotaStore(client)
    groups = RedisGroupStore(client)
    await users.create(User.new(1, now, tier=Tier.PREMIUM))
    await users.create(User.new(2, now, tier=Tier.FREE))
    await users.create(User.new(3, now, tier=Tier.BASIC, timezone="Asia/Tokyo", language_code="ru-RU"))
    await sessions.start(1, 1, now)
    await sessions.start(3, 3, now)
    for _ in range(2):
        assert (await quotas.try_consume(3, DEFAULT_TIERS[Tier.BASIC], now, tz="Asia/Tokyo")).ok
    await groups.register(-100, "traders", "supergroup", 1, now, lang="ru")

    directory = UserDirectory(Settings(), client)
    assert await directory.load(now) == 4
    frame = directory.frame
    carol = frame.filter(frame["user_id"] == 3).row(0, named=True)
    assert carol["day_used"] == 2 and carol["hour_used"] == 2 and carol["tier"] == "basic"
    assert directory.policy.vocab.timezones[carol["tz"]] == "Asia/Tokyo"
    # the language of the pushes: the Telegram app's (no setting), and the group's
    languages = directory.policy.vocab.languages
    assert (
        languages[carol["lang"]] == "ru" and languages[frame.filter(frame["user_id"] == 1)["lang"][0]] == "en"
    )
    assert languages[frame.filter(frame["user_id"] == -100)["lang"][0]] == "ru"
    assert carol["session_expires_ms"] == int((now + timedelta(days=7)).timestamp() * 1000)
    res = await directory.evaluate(_opp(now), now)
    assert _reasons(res) == {1: "eligible", 2: "session.none", 3: "eligible", -100: "eligible"}
    group = res.filter(res["user_id"] == -100).row(0, named=True)
    assert group["audience"] == "group" and group["due_at"] == now + timedelta(seconds=300)

    # preference change, session start and end, a new user, a deletion, a group leaving
    await users.update_preferences(1, pushes_on=False)
    await sessions.start(2, 2, now + timedelta(seconds=1))
    await sessions.end(3, EndReason.STOP, now + timedelta(seconds=2))
    await users.create(User.new(4, now, tier=Tier.ENTERPRISE))
    await sessions.start(4, 4, now + timedelta(seconds=3))
    await users.set_tier(2, Tier.BASIC)
    assert await directory.refresh(now) > 0
    res = await directory.evaluate(_opp(now, OpportunityKind.FUNDING_RATE), now)
    assert _reasons(res) == {
        1: "preferences.off",
        2: "eligible",
        3: "session.none",
        4: "eligible",
        -100: "subscription.kind",
    }
    assert await directory.why(1, _opp(now), now) == (Layer.PREFERENCES, "preferences.off")

    await users.delete(4)
    await groups.deactivate(-100)
    await directory.refresh(now)
    await directory.load_groups(now)
    assert directory.row_of(4) is None and len(directory) == 4
    assert await directory.why(-100, _opp(now), now) == (Layer.CONTEXT, "context.blocked")
    assert await directory.refresh(now) == 0  # nothing new

    # local counters after sends: a Basic user's hourly quota is 5
    directory.note_sent([2, 2, 2, 2], now)  # one bump per call and id
    directory.note_sent(np.array([2]), now)
    assert await directory.why(2, _opp(now), now) == (Layer.ELIGIBLE, "eligible")
    for _ in range(3):
        directory.note_sent([2], now)
    assert await directory.why(2, _opp(now), now) == (Layer.RATE_LIMITS, "rate.hourly")
    assert await directory.why(2, _opp(now), now + timedelta(hours=1)) == (Layer.ELIGIBLE, "eligible")

    # what the notifier learns applies at once
    directory.note_blocked([1])
    directory.note_session_ended([2])
    assert await directory.why(2, _opp(now), now) == (Layer.SESSION, "session.none")
    await users.update_preferences(1, pushes_on=True)
    await directory.refresh(now)
    assert await directory.why(1, _opp(now), now) == (Layer.CONTEXT, "context.blocked")
    await sessions.start(1, 1, now + timedelta(minutes=1))  # only an unblocked user can talk to the bot
    await directory.refresh(now)
    assert await directory.why(1, _opp(now), now) == (Layer.ELIGIBLE, "eligible")


async def test_refresh_sees_changes_made_during_a_load_and_many_at_once(client: aioredis.Redis) -> None:
    prefix, now = f"t{uuid.uuid4().hex[:10]}", _now()
    users = RedisUserStore(client, prefix=prefix)
    sessions = RedisSessionStore(client, prefix=prefix)
    for uid in range(1, 1201):
        await users.create(User.new(uid, now))
    directory = UserDirectory(Settings(), client, prefix=prefix, session_scan=500)
    assert await directory.load(now) == 1200
    for uid in range(1, 1201, 2):
        await users.update_preferences(uid, min_net_bps="30")
    for uid in range(1, 601):
        await sessions.start(uid, uid, now)
    await directory.refresh(now)
    res = await directory.evaluate(_opp(now), now)
    reasons = _reasons(res)
    assert reasons[1] == "preferences.min_profit" and reasons[2] == "eligible"
    assert reasons[601] == "session.none" and reasons[602] == "session.none"
    assert sum(1 for r in reasons.values() if r == "eligible") == 300
    # stops are found by the rotating re-check (500 per refresh here)
    for uid in range(2, 601, 2):
        await sessions.end(uid, EndReason.STOP, now)
    for _ in range(2):
        await directory.refresh(now)
    reasons = _reasons(await directory.evaluate(_opp(now), now))
    assert sum(1 for r in reasons.values() if r == "eligible") == 0


async def test_cooldowns_survive_a_new_directory(client: aioredis.Redis) -> None:
    prefix, now = f"t{uuid.uuid4().hex[:10]}", _now()
    users = RedisUserStore(client, prefix=prefix)
    sessions = RedisSessionStore(client, prefix=prefix)
    for uid in (1, 2, 3):
        await users.create(User.new(uid, now, tier=Tier.PREMIUM))
        await sessions.start(uid, uid, now)
    opp = _opp(now)
    first = UserDirectory(Settings(), client, prefix=prefix)
    await first.load(now)
    await first.start_cooldown(opp.dedup_key, [1, 2], now, 3600)
    await first.start_cooldown(opp.dedup_key, np.array([2]), now, 7200)  # extends user 2
    await first.start_cooldown("other:key", [3], now, 60)
    assert sorted((await first.cooled(opp.dedup_key, now)).tolist()) == [1, 2]
    assert _reasons(await first.evaluate(opp, now)) == {1: "rate.cooldown", 2: "rate.cooldown", 3: "eligible"}

    key = f"{prefix}:elig:cooldown:{opp.dedup_key}"
    stored = await client.hgetall(key)
    assert {int(k): int(v) for k, v in stored.items()} == {
        1: int((now + timedelta(hours=1)).timestamp() * 1000),
        2: int((now + timedelta(hours=2)).timestamp() * 1000),
    }
    # the key lives until the latest cooldown ends (``now`` may be a few minutes ahead)
    until_ms = (now + timedelta(hours=2)).timestamp() * 1000
    assert abs(await client.pttl(key) - (until_ms - time.time() * 1000)) < 5_000

    second = UserDirectory(Settings(), client, prefix=prefix)
    await second.load(now)
    assert sorted((await second.cooled(opp.dedup_key, now)).tolist()) == [1, 2]
    assert (await second.cooled("other:key", now)).tolist() == [3]
    later = now + timedelta(minutes=90)
    assert (await second.cooled(opp.dedup_key, later)).tolist() == [2]
    assert await second.why(1, opp, later) == (Layer.ELIGIBLE, "eligible")
    assert await second.why(2, opp, later) == (Layer.RATE_LIMITS, "rate.cooldown")
    assert (await second.cooled("never", now)).size == 0


async def test_thresholds_per_kind_through_the_store_and_an_old_record(client: aioredis.Redis) -> None:
    """A preferences record of the previous release (only ``min_net_bps``) read into the
    directory: the spot minimum; a funding carry is judged by its APR, not by bps."""
    prefix, now = f"t{uuid.uuid4().hex[:10]}", _now()
    users = RedisUserStore(client, prefix=prefix)
    sessions = RedisSessionStore(client, prefix=prefix)
    for uid in (1, 2):
        await users.create(User.new(uid, now, tier=Tier.PREMIUM))
        await sessions.start(uid, uid, now)
    key = users._key(1)
    await client.hdel(key, "pref.min_net_apr_pct", "pref.min_confidence")
    await client.hset(key, "pref.min_net_bps", '"30"')
    await users.update_preferences(2, min_net_apr_pct="40")
    directory = UserDirectory(Settings(), client, prefix=prefix)
    assert await directory.load(now) == 2
    spot = _opp(now)  # 15 bps, instant
    carry = dataclasses.replace(_opp(now, OpportunityKind.FUNDING_RATE), net_apr=0.3)  # 15 bps over 168 h
    assert _reasons(await directory.evaluate(spot, now)) == {1: "preferences.min_profit", 2: "eligible"}
    assert _reasons(await directory.evaluate(carry, now)) == {1: "eligible", 2: "preferences.min_profit"}


async def test_a_session_written_out_of_order_is_found_by_the_skew_sweep(
    isolated_client: aioredis.Redis,
) -> None:
    """Refreshes read the expiries above the watermark; every 10th also those of sessions
    written in the last minute: a start written late by a host whose clock is 30 s behind
    shows by the 10th refresh."""
    from actors.directory.frame import SKEW_EVERY

    client, now = isolated_client, _now()
    users, sessions = RedisUserStore(client), RedisSessionStore(client)
    for uid in (1, 2):
        await users.create(User.new(uid, now, tier=Tier.PREMIUM))
    await sessions.start(1, 1, now)
    directory = UserDirectory(Settings(), client)
    await directory.load(now)
    await sessions.start(2, 2, now - timedelta(seconds=30))  # a clock 30 s behind
    seen_at = None
    for k in range(1, SKEW_EVERY + 1):
        await directory.refresh(now)
        row = directory.frame.filter(directory.frame["user_id"] == 2)
        if row["session_expires_ms"][0] is not None:
            seen_at = k
            break
    assert seen_at == SKEW_EVERY  # not at every refresh (a busy directory re-read a minute each time)
    await sessions.start(1, 1, now + timedelta(seconds=5))  # an extension: seen at the next one
    await directory.refresh(now)
    one = directory.frame.filter(directory.frame["user_id"] == 1)
    assert one["session_expires_ms"][0] == int((now + timedelta(seconds=5, days=7)).timestamp() * 1000)


async def test_a_quiet_directory_reads_no_session_twice_and_rechecks_a_minute_round(
    isolated_client: aioredis.Redis,
) -> None:
    """Sessions written more than a minute ago are not read again by the skew sweep (at 100k
    users the sweep re-read every session each 10 s); the re-check goes round the sessions in
    about a minute, and a stop among them is found by then."""
    from actors.directory.frame import RECHECK_MIN, RECHECK_ROUND_S, SKEW_EVERY

    client, now = isolated_client, _now()
    users, sessions = RedisUserStore(client), RedisSessionStore(client)
    n = RECHECK_MIN * 3
    for uid in range(1, n + 1):
        await users.create(User.new(uid, now, tier=Tier.PREMIUM))
        await sessions.start(uid, uid, now)
    directory = UserDirectory(Settings(), client)
    await directory.load(now)
    later = now + timedelta(minutes=2)
    await sessions.end(n, EndReason.STOP, now)
    for _ in range(SKEW_EVERY):
        await directory.refresh(later)
    assert directory.session_reads["fresh"] == 0
    assert directory.session_reads["rechecked"] == SKEW_EVERY * RECHECK_MIN  # 3,000 in 3 refreshes
    assert directory._scan_size(RECHECK_ROUND_S * 5_000) == 5_000
    assert directory._scan_size(10**7) == directory.session_scan
    assert await directory.why(n, _opp(later), later) == (Layer.SESSION, "session.none")
    # a start written now by a clock 30 s behind is still found by the sweep
    await users.create(User.new(n + 1, now, tier=Tier.PREMIUM))
    await sessions.start(n + 1, n + 1, later - timedelta(seconds=30))
    await directory.refresh(later)  # the user's row (from the change stream), no session yet
    for _ in range(SKEW_EVERY):
        await directory.refresh(later)
    assert await directory.why(n + 1, _opp(later), later) == (Layer.ELIGIBLE, "eligible")
