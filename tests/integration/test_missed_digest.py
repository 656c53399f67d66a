"""The "missed while delayed" digest through a real queue shard, Redis and the Telegram sandbox.

A Free user's push waits the tier delay; what is still open at its due time is sent as a
push, what closes before is noted (``expired``/``missed``) and comes back in one digest
message at the digest time (a short ``digest_period_s`` stands in for the daily hour),
with its edge and how long it lasted. The notes live in Redis, so a restarted shard
sends the digest its predecessor owed. ``/settings digest`` goes through the bot harness.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actors.missed import DIGEST_KIND, missed_key
from actors.ratelimit import RateLimiter
from core.accounts import Tier, User
from core.settings import Settings
from serve.orchestrator import Distribution
from serve.runtime import EmbeddedRedis
from state.erase import erase_user
from state.users import RedisUserStore
from tests.integration import test_bot, test_queues
from tests.integration import test_distribution_seam as seam
from tests.integration.test_bot import ALICE, Harness
from tests.integration.test_queues import Rig, batch_for, event, row, until
from tests.support.sandbox_thread import SandboxThread

rig = test_queues.rig  # the queue shard rig (real Redis, the sandbox) and the bot harness
h = test_bot.h

LATER_MS = 300_000  # the Free tier's delay


def opened(seconds_ago: float, **kw: object) -> dict[str, object]:
    return {**event(**kw), "opened_at": (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()}


def free_row(chat: int, *, tier: str = "free", due_in_s: float = LATER_MS / 1000) -> dict[str, object]:
    return row(chat, tier=tier, due_ms=int((time.time() + due_in_s) * 1000))


async def test_a_free_item_that_closes_while_delayed_comes_back_in_the_digest(rig: Rig) -> None:
    limiter = RateLimiter.from_settings(rig.settings)
    shard = rig.shard(limiter=limiter, digest_period_s=0.5)
    await shard.start()
    doge = opened(40, symbol="DOGE/USDT", net_bps=42.0)
    btc = opened(20, symbol="BTC/USDT", net_bps=12.5)
    for ev in (doge, btc):
        await shard.enqueue(ev, batch_for([free_row(1301)]))
    reserved = limiter.stats()["reserved"]
    shard.mark_closed([doge["opportunity_id"], btc["opportunity_id"]])
    await until(lambda: shard.missed.stats.digests == 1)
    (msg,) = await rig.messages(1301)  # one message, no push
    text = msg["text"]
    assert text.startswith("🕑 Missed while delayed"), text
    assert "2 opportunities closed before your Free delay (5m) was over" in text
    doge_line = next(line for line in text.splitlines() if "DOGE/USDT" in line)
    assert "binance → okx" in doge_line and "+42.0 bps net" in doge_line
    assert re.search(r"lasted 4\ds", doge_line), doge_line
    assert text.index("DOGE/USDT") < text.index("BTC/USDT")  # best edge first
    assert "/subscription" in text and "Premium shows them all live" in text
    assert limiter.stats()["reserved"] == reserved + 1  # one slot of the global limiter
    assert await rig.client.get("quota:d:1301:" + datetime.now(UTC).strftime("%Y%m%d")) is None

    await shard.flush()
    rows = rig.deliveries()
    missed = [r for r in rows if r["status"] == "expired"]
    assert {r["reason"] for r in missed} == {"missed"}
    assert all(r["lifetime_s"] is not None and r["lifetime_s"] >= 19 for r in missed)
    (digest,) = [r for r in rows if r["kind"] == DIGEST_KIND]
    assert digest["status"] == "sent" and digest["reason"] == "digest" and digest["digest_size"] == 2
    assert digest["message_id"] == msg["message_id"] and digest["tier"] == "free"
    assert await rig.client.exists(missed_key(1301)) == 0  # sent: nothing left to send
    assert await rig.client.zcard(shard.missed.key) == 0
    assert shard.stats()["missed_digests"] == 1


async def test_an_item_still_open_at_its_due_time_is_pushed_and_no_digest_follows(rig: Rig) -> None:
    shard = rig.shard(digest_period_s=0.3)
    await shard.start()
    ev = opened(5, symbol="ETH/USDT")
    await shard.enqueue(ev, batch_for([free_row(1302, due_in_s=0.3)]))
    await until(lambda: shard.stats_.sent == 1)
    shard.mark_closed([ev["opportunity_id"]])  # closes after it was sent: an edit, not a miss
    await asyncio.sleep(0.8)
    msgs = await rig.messages(1302)
    assert len(msgs) == 1 and "ETH/USDT" in msgs[0]["text"] and "Missed" not in msgs[0]["text"]
    assert shard.missed.stats.noted == 0 and shard.missed.stats.digests == 0


async def test_only_what_the_tier_delay_hid_is_missed(rig: Rig) -> None:
    """Premium has no delay (a close expires its item as before); a Free item held past its
    tier delay by the user's active hours is not the tier's doing."""
    shard = rig.shard(digest_period_s=0.3)
    await shard.start()
    premium, held = opened(5), opened(5)
    await shard.enqueue(premium, batch_for([free_row(1303, tier="premium", due_in_s=5)]))
    item = free_row(1304, due_in_s=3600)  # due at the start of the user's active hours
    await shard.enqueue(held, batch_for([item]))
    shard.chats[1304].items[held["opportunity_id"]].queued_ms -= 400_000  # queued before the delay
    shard.mark_closed([premium["opportunity_id"], held["opportunity_id"]])
    await shard.flush()
    await asyncio.sleep(0.6)
    assert shard.missed.stats.noted == 0 and await rig.messages(1303) == [] == await rig.messages(1304)
    assert {r["reason"] for r in rig.deliveries() if r["status"] == "expired"} == {"closed"}


async def test_missed_items_survive_a_shard_restart(rig: Rig) -> None:
    first = rig.shard(digest_period_s=1.5)
    await first.start()
    ev = opened(30, symbol="SOL/USDT", net_bps=18.0)
    await first.enqueue(ev, batch_for([free_row(1305)]))
    first.mark_closed([ev["opportunity_id"]])
    await first.flush()
    assert await rig.client.llen(missed_key(1305)) == 1
    await first.stop()  # gone before the digest time
    rig.shards.remove(first)
    await first.notifier.bot.session.close()  # type: ignore[attr-defined]
    assert await rig.messages(1305) == []

    second = rig.shard(digest_period_s=1.5)
    await second.start()
    await until(lambda: second.missed.stats.digests == 1, within=8)
    (msg,) = await rig.messages(1305)
    assert "SOL/USDT" in msg["text"] and "+18.0 bps net" in msg["text"]
    assert re.search(r"lasted 3\ds", msg["text"]), msg["text"]


async def test_a_user_who_turned_the_digest_off_gets_none_and_basic_is_offered_premium(rig: Rig) -> None:
    users = RedisUserStore(rig.client)
    now = datetime.now(UTC)
    await users.create(User.new(1306, now))
    await users.update_preferences(1306, digest_hour=None)
    await users.create(User.new(1307, now, tier=Tier.BASIC))
    shard = rig.shard(digest_period_s=0.3)
    await shard.start()
    off, basic = opened(10), opened(10, symbol="XRP/USDT")
    await shard.enqueue(off, batch_for([free_row(1306)]))
    await shard.enqueue(basic, batch_for([free_row(1307, tier="basic", due_in_s=60)]))
    shard.mark_closed([off["opportunity_id"], basic["opportunity_id"]])
    await until(lambda: shard.missed.stats.digests == 1)
    await asyncio.sleep(0.5)
    assert await rig.messages(1306) == []
    assert await rig.client.exists(missed_key(1306)) == 0
    (msg,) = await rig.messages(1307)
    assert "Missed this hour" in msg["text"] and "Basic delay (1m)" in msg["text"]
    assert "Premium shows them all live" in msg["text"] and "Every hour" in msg["text"]


async def test_what_reopened_and_reached_the_user_after_all_is_left_out_of_the_digest(rig: Rig) -> None:
    shard = rig.shard(digest_period_s=1.2)
    await shard.start()
    flapped, gone = opened(10, symbol="ADA/USDT"), opened(10, symbol="LTC/USDT")
    for ev in (flapped, gone):
        await shard.enqueue(ev, batch_for([free_row(1309)]))
    shard.mark_closed([flapped["opportunity_id"], gone["opportunity_id"]])
    # the flapped one reopens (a re-offer) and, its delay over, is pushed
    await shard.enqueue({**flapped, "reoffer": True}, batch_for([free_row(1309, due_in_s=0.1)]))
    await until(lambda: shard.stats_.sent == 1)
    await until(lambda: shard.missed.stats.digests == 1)
    push, digest = await rig.messages(1309)
    assert "ADA/USDT" in push["text"] and "Missed" not in push["text"]
    assert "LTC/USDT" in digest["text"] and "ADA/USDT" not in digest["text"], digest["text"]
    assert "1 opportunity closed before" in digest["text"]


async def test_an_unreadable_user_record_gets_the_defaults_and_holds_up_nobody(rig: Rig) -> None:
    users = RedisUserStore(rig.client)
    await users.create(User.new(1310, datetime.now(UTC)))
    await rig.client.hset(users._key(1310), "pref.digest_hour", '"nine"')  # not an hour
    shard = rig.shard(digest_period_s=0.5)
    await shard.start()
    first, second = opened(10, symbol="BNB/USDT"), opened(10, symbol="TRX/USDT")
    await shard.enqueue(first, batch_for([free_row(1310)]))
    await shard.enqueue(second, batch_for([free_row(1311)]))
    shard.mark_closed([first["opportunity_id"], second["opportunity_id"]])
    await until(lambda: shard.missed.stats.digests == 2)
    assert "BNB/USDT" in (await rig.messages(1310))[0]["text"]
    assert "TRX/USDT" in (await rig.messages(1311))[0]["text"]


async def test_a_muted_user_gets_the_digest_after_the_mute(rig: Rig) -> None:
    users = RedisUserStore(rig.client)
    await users.create(User.new(1312, datetime.now(UTC)))
    await users.update_preferences(1312, muted_until=datetime.now(UTC) + timedelta(seconds=2))
    shard = rig.shard(digest_period_s=0.3)
    await shard.start()
    ev = opened(10, symbol="DOT/USDT")
    await shard.enqueue(ev, batch_for([free_row(1312)]))
    shard.mark_closed([ev["opportunity_id"]])
    await asyncio.sleep(1.2)
    assert await rig.messages(1312) == []  # muted
    await until(lambda: shard.missed.stats.digests == 1, within=5)
    (msg,) = await rig.messages(1312)
    assert "DOT/USDT" in msg["text"]


async def test_a_digest_to_a_chat_that_blocked_the_bot_ends_its_session(rig: Rig) -> None:
    r = await rig.http.post(f"{rig.sb.base_url}/sandbox/users", json={"id": 1313, "first_name": "B"})
    assert r.status == 200
    shard = rig.shard(digest_period_s=0.3)
    await shard.start()
    ev = opened(10)
    await shard.enqueue(ev, batch_for([free_row(1313)]))
    r = await rig.http.post(f"{rig.sb.base_url}/sandbox/users/1313/block")
    assert r.status == 200, await r.text()
    shard.mark_closed([ev["opportunity_id"]])
    await until(lambda: rig.blocked == [(1313, 1313)])  # the session ends, as for a push
    assert shard.missed.stats.dropped["blocked"] == 1
    assert await rig.client.exists(missed_key(1313)) == 0
    await shard.flush()
    (row_,) = [r for r in rig.deliveries() if r["kind"] == DIGEST_KIND]
    assert row_["status"] == "blocked" and row_["reason"].startswith("digest: ")


async def test_forget_drops_the_missed_items_and_no_digest_follows(rig: Rig) -> None:
    shard = rig.shard(digest_period_s=1.0)
    await shard.start()
    ev = opened(10)
    await shard.enqueue(ev, batch_for([free_row(1308)]))
    shard.mark_closed([ev["opportunity_id"]])
    await shard.flush()
    assert await rig.client.llen(missed_key(1308)) == 1
    await erase_user(rig.client, 1308)
    assert await rig.client.exists(missed_key(1308)) == 0
    await asyncio.sleep(1.5)
    assert await rig.messages(1308) == [] and shard.missed.stats.digests == 0
    assert await rig.client.zcard(shard.missed.key) == 0  # the empty list's due time is gone too


@pytest.mark.parametrize("typed", ["/settings digest 7", "/settings digest off"])
async def test_settings_digest_sets_the_hour_or_turns_it_off(h: Harness, typed: str) -> None:
    await h.start(ALICE)
    await h.send(ALICE, "/settings tz Europe/Berlin")
    await h.send(ALICE, "/settings digest")
    assert "daily at 09:00 Europe/Berlin" in (await h.last(ALICE))["text"]
    await h.send(ALICE, typed)
    answer = (await h.last(ALICE))["text"]
    alice = await h.deps.users.get(ALICE)
    assert alice is not None
    if typed.endswith("off"):
        assert alice.preferences.digest_hour is None and "is off" in answer
    else:
        assert alice.preferences.digest_hour == 7 and "daily at 07:00 Europe/Berlin" in answer
    await h.send(ALICE, "/settings digest 25")
    assert "/settings digest off" in (await h.last(ALICE))["text"]
    again = await h.deps.users.get(ALICE)
    assert again is not None and again.preferences.digest_hour == alice.preferences.digest_hour


def test_a_free_user_gets_the_digest_through_the_real_actors(
    ray_session: None,
    base_settings: Settings,
    sandbox: SandboxThread,
    tmp_path: Path,
) -> None:
    """Pair coordinator → ``dist:engine`` → ``uq:NNN`` (Ray actors) → the sandbox: a spread that
    closes inside the Free delay reaches the Free user as a digest (not a push), Premium got
    it live, and the lake holds the ``missed`` and ``digest`` rows."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        settings = seam._settings(base_settings, sandbox, server.url, tiers={"free": {"delay_s": 4}})
        dist_settings = settings.distribution.model_copy(update={"digest_period_s": 1.5})
        settings = settings.model_copy(update={"distribution": dist_settings})
        free, premium = 8601, 8602
        seam.users(server.url, [(free, Tier.FREE, {}), (premium, Tier.PREMIUM, {})])
        dist = Distribution(settings).start()
        pair = seam.Pair(settings)
        try:
            pair.tick(seam.spread(confidence=0.8, pushable=True, net_bps=33.0))
            seam.wait_for(lambda: sandbox.sent_to([premium]) == {premium: 1}, 15)
            time.sleep(1.0)
            pair.tick()  # closed, inside the Free delay
            seam.wait_for(lambda: sandbox.sent_to([free]) == {free: 1}, 20, why=dist.stats)
            (text,) = sandbox.texts(free)
            assert text.startswith("🕑 Missed while delayed") and "BTC/USDT" in text, text
            assert "+33.0 bps net" in text and re.search(r"lasted \d+s", text), text
            time.sleep(5.0)  # past the Free delay: nothing else comes
            assert sandbox.sent_to([free, premium]) == {free: 1, premium: 1}
        finally:
            pair.stop()
            dist.stop()
        rows = seam._deliveries(settings)
        mine = [(r["status"], r["reason"], r["kind"]) for r in rows if r["chat_id"] == free]
        assert ("expired", "missed", "spot_spread") in mine and ("sent", "digest", DIGEST_KIND) in mine, mine
    finally:
        server.stop()
