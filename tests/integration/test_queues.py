"""A queue shard on a real Redis, sending through the real Telegram sandbox.

The shard (``actors.queues.QueueShard``) runs in-process here, with the real
``TelegramNotifier`` (aiogram) and the real ``RateLimiter``; what it sent is read
back from the sandbox, what it persisted from Redis, what it recorded from the
``deliveries`` rows it emitted.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pyarrow as pa
import pytest
import redis.asyncio as aioredis

import actors.queues.sending
import actors.queues.shard
from actors.edits import SentPush
from actors.queues import QueueShard, batch_for
from actors.queues.sending import LATE_SEND_RETRIES
from actors.ratelimit import RateLimiter
from core.flood import FloodLimits
from core.settings import Settings, TelegramSettings
from notify.client import build_bot
from notify.notifier import TelegramNotifier
from serve.runtime import EmbeddedRedis
from serve.standins.sandbox import SandboxHandle, start_sandbox
from state.keys import DEAD_LETTERS_KEY


def event(
    opp: str | None = None, *, priority: str = "high", net_bps: float = 42.0, symbol: str = "BTC/USDT"
) -> dict[str, Any]:
    return {
        "event": "opened",
        "opportunity_id": opp or uuid.uuid4().hex,
        "kind": "spot_spread",
        "symbol": symbol,
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "gross_bps": net_bps + 20,
        "net_bps": net_bps,
        "gross_apr": None,
        "notional_usd": 10_000.0,
        "confidence": 0.9,
        "priority": priority,
        "pushable": True,
        "detected_at": datetime.now(UTC).isoformat(),
    }


def row(
    chat: int,
    *,
    tier: str = "premium",
    due_ms: int | None = None,
    audience: str = "user",
    silent: bool = False,
) -> dict[str, Any]:
    return {
        "chat": chat,
        "chat_ref": None,
        "user_id": chat if audience == "user" else None,
        "audience": audience,
        "tier": tier,
        "due_ms": int(time.time() * 1000) if due_ms is None else due_ms,
        "silent": silent,
    }


class AsyncLimiter:
    """The plain rate limiter behind the interface the shard awaits (the actor's, in-process)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.pauses: list[float] = []
        self.calls: list[int] = []
        """The size of each reservation asked for."""

    async def reserve(self, requests: list[tuple[int | str, bool]]) -> list[float]:
        self.calls.append(len(requests))
        return self.limiter.reserve(requests)

    async def pause(self, retry_after_s: float, chat_id: int | str | None = None) -> None:
        self.pauses.append(retry_after_s)
        self.limiter.pause(retry_after_s, chat_id)


@dataclass
class Rig:
    sb: SandboxHandle
    settings: Settings
    client: aioredis.Redis
    http: aiohttp.ClientSession
    rows: list[pa.Table] = field(default_factory=list)
    blocked: list[tuple[int | str, int | None]] = field(default_factory=list)
    open_ids: set[str] | None = None
    shards: list[QueueShard] = field(default_factory=list)
    outcomes: list[tuple[int, str]] = field(default_factory=list)

    def shard(
        self,
        index: int = 0,
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
        **dist: Any,
    ) -> QueueShard:
        settings = self.settings.model_copy(
            update={"distribution": self.settings.distribution.model_copy(update=dist)}
        )

        async def emit(dataset: str, table: pa.Table) -> None:
            assert dataset == "deliveries"
            self.rows.append(table)

        async def on_blocked(chat: int | str, user_id: int | None) -> None:
            self.blocked.append((chat, user_id))

        async def is_open(ids: Any) -> set[str]:
            return set(ids) if self.open_ids is None else set(ids) & self.open_ids

        async def on_outcomes(pairs: list[tuple[int, str]]) -> None:
            self.outcomes.extend(pairs)

        shard = QueueShard(
            settings,
            index,
            client=self.client,
            notifier=TelegramNotifier(build_bot(settings)),
            limiter=AsyncLimiter(limiter or RateLimiter.from_settings(settings)),
            emit=emit,
            on_blocked=on_blocked,
            is_open=is_open,
            on_outcomes=on_outcomes,
            clock=clock,
        )
        self.shards.append(shard)
        return shard

    def statuses(self, chat: int | None = None) -> list[str]:
        out = []
        for table in self.rows:
            for r in table.to_pylist():
                if chat is None or r["chat_id"] == chat:
                    out.append(r["status"])
        return out

    def deliveries(self) -> list[dict[str, Any]]:
        return [r for t in self.rows for r in t.to_pylist()]

    async def messages(self, chat: int) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.sb.base_url}/sandbox/chats/{chat}/messages")
        body = await r.json()
        return list(body["messages"] if isinstance(body, dict) else body)


@pytest.fixture
async def rig(tmp_path: Path, redis_server: EmbeddedRedis) -> AsyncIterator[Rig]:
    sb = await start_sandbox(port=0)
    settings = Settings(
        data_dir=tmp_path / "var",
        redis={"url": redis_server.url},
        telegram=TelegramSettings(token=sb.token, api_base=sb.base_url),
        distribution={"retry_base_s": 0.05, "digest_window_s": 0.0},
    )
    client = aioredis.Redis.from_url(redis_server.url, db=14)
    await client.flushdb()
    async with aiohttp.ClientSession() as http:
        r = Rig(sb, settings, client, http)
        try:
            yield r
        finally:
            for shard in r.shards:
                await shard.stop()
                await shard.notifier.bot.session.close()  # type: ignore[attr-defined]
            await client.flushdb()
            await client.aclose()
            await sb.stop()


async def until(cond: Callable[[], Any], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_queued_items_are_sent_once_and_their_batch_is_cleaned_up(rig: Rig) -> None:
    shard = rig.shard()
    await shard.start()
    ev = event()
    assert await shard.enqueue(ev, batch_for([row(101), row(102), row(103)])) == 3
    assert await shard.enqueue(ev, batch_for([row(101)])) == 0  # (chat, opportunity) dedup
    await until(lambda: shard.stats_.sent == 3)
    for chat in (101, 102, 103):
        msgs = await rig.messages(chat)
        assert len(msgs) == 1
        assert "BTC/USDT" in msgs[0]["text"]
    await shard.flush()
    assert await rig.client.hlen(shard.batches_key) == 0
    sent = [r for r in rig.deliveries() if r["status"] == "sent"]
    assert sorted(r["chat_id"] for r in sent) == [101, 102, 103]
    assert all(r["message_id"] and r["latency_ms"] is not None for r in sent)
    assert sorted(rig.statuses()).count("queued") == 3
    assert shard.stats_.duplicates == 1


async def test_a_late_send_waits_for_the_departure_window_and_keeps_its_slot(rig: Rig) -> None:
    """A send that leaves late must not crowd the sends of later slots into one second: while
    the shard's departures in the last second are as many as its slots in it, the send waits
    for the window to move on (its slot still counts, so no new slot is asked for). A send
    whose slot left the window meanwhile takes a new one. The limiter is told how long ago
    the chat's last send ended."""
    asked: list[list[Any]] = []

    class Recording(RateLimiter):
        def reserve(self, requests: Any) -> list[float]:
            asked.append(list(requests))
            return super().reserve(requests)

    shard = rig.shard(limiter=Recording(FloodLimits()))
    await shard.start()
    await shard.enqueue(event(), batch_for([row(121)]))
    await until(lambda: shard.stats_.sent == 1)
    assert asked == [[(121, False, None)]] and shard.stats_.late_slots == 0
    # two sends already left in this second against one slot in it: the next waits until
    # the older departure leaves the window (about 0.6 s from now), then goes on its own slot
    now = time.time()
    shard.departures.departures.extend([now - 0.4, now - 0.1])
    await shard.enqueue(event(symbol="ETH/USDT"), batch_for([row(122)]))
    await until(lambda: shard.stats_.sent == 2, within=5)
    assert len(asked) == 2 and shard.stats_.late_slots == 0
    assert len(await rig.messages(122)) == 1
    assert shard.departures.departures[-1] - now >= 0.55  # it waited for the window
    await shard.enqueue(event(symbol="SOL/USDT"), batch_for([row(121)]))  # 121's next push
    await until(lambda: shard.stats_.sent == 3, within=5)
    ago = asked[-1][0][2]
    assert asked[-1][0][0] == 121 and ago is not None and 0 <= ago < 5.0  # from its last send's end
    # the window stays full until the slot has left it: a new slot is taken, at most
    # LATE_SEND_RETRIES times, and then the send goes anyway (the queue always drains)
    shard.departures.window_s = 0.2
    shard.departures.departures.extend([time.time() + 3.0] * 5)
    await shard.enqueue(event(symbol="XRP/USDT"), batch_for([row(123)]))
    await until(lambda: shard.stats_.sent == 4, within=5)
    assert shard.stats_.late_slots == LATE_SEND_RETRIES
    assert [a[0][0] for a in asked[-LATE_SEND_RETRIES:]] == [123] * LATE_SEND_RETRIES
    assert len(await rig.messages(123)) == 1


async def test_several_due_items_go_out_as_one_digest_best_first(rig: Rig) -> None:
    shard = rig.shard()
    low, high, mid = (
        event(priority="low", symbol="ETH/USDT"),
        event(priority="high"),
        event(priority="medium", symbol="SOL/USDT"),
    )
    for ev in (low, high, mid):
        await shard.enqueue(ev, batch_for([row(201)]))
    await shard.start()
    await until(lambda: shard.stats_.sent == 3)
    msgs = await rig.messages(201)
    assert len(msgs) == 1 and shard.stats_.digests == 1
    text = msgs[0]["text"]
    assert text.index("BTC/USDT") < text.index("SOL/USDT") < text.index("ETH/USDT")
    await shard.flush()
    assert {r["digest_size"] for r in rig.deliveries() if r["status"] == "sent"} == {3}


async def test_a_sent_push_and_a_digest_line_are_edited_when_the_opportunity_closes(rig: Rig) -> None:
    limiter = RateLimiter.from_settings(rig.settings)
    shard = rig.shard(limiter=limiter)
    opened = datetime.now(UTC) - timedelta(seconds=42)
    single = {**event(), "opened_at": opened.isoformat()}
    await shard.enqueue(single, batch_for([row(251)]))
    first, second = event(priority="high", symbol="ETH/USDT"), event(priority="low", symbol="SOL/USDT")
    for ev in (first, second):
        await shard.enqueue(ev, batch_for([row(252)]))
    await shard.start()
    await until(lambda: shard.stats_.sent == 3)
    (before,) = await rig.messages(251)
    assert "Closed after" not in before["text"]
    reserved = limiter.stats()["reserved"]
    calls = len(shard.limiter.calls)

    shard.mark_closed([single["opportunity_id"], second["opportunity_id"]])
    await until(lambda: shard.stats_.edits == 2)
    edits = shard.limiter.calls[calls:]  # reserved in chunks of ~30 ms of the rate (1 at 30/s)
    assert sum(edits) == 2 and max(edits) <= shard._edit_chunk, edits
    (after,) = await rig.messages(251)
    assert after["message_id"] == before["message_id"]
    assert after["text"].startswith(before["text"])  # as it was, with its close below
    assert re.search(r"✅ Closed after 4\ds$", after["text"]), after["text"]  # opened 42 s before
    (digest,) = await rig.messages(252)
    eth, sol = (next(line for line in digest["text"].splitlines() if s in line) for s in ("ETH/", "SOL/"))
    assert "Closed after" in sol and "Closed after" not in eth, digest["text"]
    assert limiter.stats()["reserved"] == reserved + 2  # the edits went through the global limiter
    # a close the shard has no sent message for edits nothing; a second close of one edits nothing
    shard.mark_closed([first["opportunity_id"] + "-unknown", single["opportunity_id"]])
    await asyncio.sleep(0.2)
    assert shard.stats_.edits == 2 and shard.stats_.edits_failed == 0


async def test_two_legs_of_one_symbol_are_one_push_ranked_by_net_drawing_one_quota(rig: Rig) -> None:
    """DOGE/USDT binance→okx and bybit→okx due together for one chat: one message listing both
    legs best net first, one quota unit, both cooldowns started at once, a row per leg with
    the same message id; a close edits that message (the leg's line, then "every route")."""
    limiter = RateLimiter.from_settings(rig.settings)
    shard = rig.shard(limiter=limiter)
    worse = {**event(symbol="DOGE/USDT", net_bps=21.0, priority="medium"), "buy_exchange": "binance"}
    better = {**event(symbol="DOGE/USDT", net_bps=35.0, priority="medium"), "buy_exchange": "bybit"}
    other = event(symbol="BTC/USDT", priority="low")  # another chat's push: not grouped with DOGE
    for ev in (worse, better):
        await shard.enqueue(ev, batch_for([row(901, tier="free")]))
    await shard.enqueue(other, batch_for([row(902, tier="free")]))
    await shard.start()
    await until(lambda: shard.stats_.sent == 3)
    (msg,) = await rig.messages(901)
    lines = msg["text"].splitlines()
    assert lines[:5] == [
        "⚡ DOGE/USDT — Spot spreads",
        "Sell on okx, buy on one of 2 venues",
        "",
        "1. buy bybit → sell okx · +35.0 bps",
        "2. buy binance → sell okx · +21.0 bps",
    ], msg["text"]
    assert shard.stats_.grouped == 1 and shard.stats_.digests == 0 and shard.stats_.messages == 2
    now = datetime.now(UTC)
    assert await shard.quotas.used(901, now) == (1, 1)  # one push, one unit (Free: 2 an hour)
    assert await shard.quotas.used(902, now) == (1, 1)
    keys = {shard.dedup_keys[ev["opportunity_id"]] for ev in (worse, better)}
    assert len(keys) == 2 and {k for (t, k) in shard.cooled if t == 901} == keys
    await shard.flush()
    sent = [r for r in rig.deliveries() if r["status"] == "sent" and r["chat_id"] == 901]
    assert sorted(r["opportunity_id"] for r in sent) == sorted(ev["opportunity_id"] for ev in (worse, better))
    assert {r["message_id"] for r in sent} == {msg["message_id"]} and {r["digest_size"] for r in sent} == {2}
    # the worse leg closes: its line says so; then the better one: every route has closed
    shard.mark_closed([worse["opportunity_id"]])
    await until(lambda: shard.stats_.edits == 1)
    (edited,) = await rig.messages(901)
    line2 = next(line for line in edited["text"].splitlines() if line.startswith("2. "))
    assert "Closed after" in line2 and "Every route has closed" not in edited["text"]
    shard.mark_closed([better["opportunity_id"]])
    await until(lambda: shard.stats_.edits == 2)
    (edited,) = await rig.messages(901)
    assert "✅ Every route has closed." in edited["text"] and edited["message_id"] == msg["message_id"]


async def test_a_leg_arriving_just_after_its_group_was_pushed_joins_that_message(rig: Rig) -> None:
    """Legs detected a fraction of a second apart (the second queued after the first went
    out): within GROUPING_WINDOW_S the second joins the first push — its message is edited
    to list both, best net first — drawing no second quota unit; after the window (here:
    off) it is a push of its own."""
    limiter = RateLimiter.from_settings(rig.settings)
    shard = rig.shard(limiter=limiter, grouping_window_s=5.0)
    await shard.start()
    first = {**event(symbol="DOGE/USDT", net_bps=21.0, priority="medium"), "buy_exchange": "binance"}
    await shard.enqueue(first, batch_for([row(905, tier="free")]))
    await until(lambda: shard.stats_.sent == 1)
    (sent,) = await rig.messages(905)
    assert "1. " not in sent["text"]  # a single push so far
    reserved = limiter.stats()["reserved"]
    second = {**event(symbol="DOGE/USDT", net_bps=35.0, priority="medium"), "buy_exchange": "bybit"}
    await shard.enqueue(second, batch_for([row(905, tier="free")]))
    await until(lambda: shard.stats_.joined == 1)
    (joined,) = await rig.messages(905)
    assert joined["message_id"] == sent["message_id"]
    lines = joined["text"].splitlines()
    assert lines[3:5] == ["1. buy bybit → sell okx · +35.0 bps", "2. buy binance → sell okx · +21.0 bps"]
    assert await shard.quotas.used(905, datetime.now(UTC)) == (1, 1)  # one push, one unit
    assert limiter.stats()["reserved"] == reserved + 1  # the edit went through the limiter
    await shard.flush()
    rows = [r for r in rig.deliveries() if r["status"] == "sent" and r["chat_id"] == 905]
    assert [(r["reason"], r["message_id"], r["digest_size"]) for r in rows] == [
        (None, sent["message_id"], 1),
        ("joined", sent["message_id"], 2),
    ]
    # a close edits the joined message: the leg's line says so
    shard.mark_closed([second["opportunity_id"]])
    await until(lambda: shard.stats_.edits == 1)
    (edited,) = await rig.messages(905)
    assert "Closed after" in edited["text"].splitlines()[3]
    # without the window a late leg is its own push
    other = rig.shard(1, grouping_window_s=0.0)
    await other.start()
    for buy, net in (("binance", 21.0), ("bybit", 35.0)):
        leg = {**event(symbol="XRP/USDT", net_bps=net), "buy_exchange": buy}
        await other.enqueue(leg, batch_for([row(906, tier="free")]))
        await until(lambda net=net: other.stats_.sent == (1 if net == 21.0 else 2))
    assert len(await rig.messages(906)) == 2 and other.stats_.joined == 0


async def test_legs_fanned_out_a_moment_apart_wait_for_each_other_and_go_as_one_message(rig: Rig) -> None:
    """The distributor fans the routes of one detection out one after the other (tens of ms
    apart): a new leg waits ``group_hold_s`` in its chat's queue, so the second leg is in the
    first send — one sendMessage, no edit. Without the hold the second leg joins by an edit."""
    calls: dict[str, int] = {}
    for hold, chat in ((0.3, 907), (0.0, 908)):
        shard = rig.shard(len(rig.shards), group_hold_s=hold, grouping_window_s=5.0)
        await shard.start()
        for buy, net in (("binance", 21.0), ("bybit", 35.0)):
            leg = {**event(symbol="ADA/USDT", net_bps=net, priority="medium"), "buy_exchange": buy}
            await shard.enqueue(leg, batch_for([row(chat, tier="free")]))
            if hold:
                await asyncio.sleep(0.1)  # the next route, fanned out a moment later
            else:  # sent at once: the next leg can only join it
                await until(lambda shard=shard: shard.stats_.sent == 1)
        await until(lambda shard=shard: shard.stats_.sent == 2)
        (msg,) = await rig.messages(chat)
        assert "1. buy bybit → sell okx · +35.0 bps" in msg["text"].splitlines(), msg["text"]
        calls[f"{hold}"] = shard.stats_.messages + shard.stats_.joined
        first = shard.stats()["first_send_ms"]  # each leg's first send: where its time went
        if hold:
            assert shard.stats_.grouped == 1 and shard.stats_.joined == 0
            assert first["in_queue"]["max"] >= 290, first  # the first leg waited out the hold
        else:
            assert shard.stats_.joined == 1
            assert first["in_queue"]["p50"] < 250, first
        assert first["to_queue"]["max"] >= 0
    assert calls == {"0.3": 1, "0.0": 2}  # Bot API calls: one send / a send and an edit


async def test_close_edits_take_the_room_pushes_leave(rig: Rig) -> None:
    """A close's edits are queued and reserved in chunks when a pump turn has room after the
    pushes: the new pushes due at the same moment reach Telegram before the edits."""
    settings = rig.settings.model_copy(
        update={"telegram": rig.settings.telegram.model_copy(update={"global_rate": 20.0})}
    )
    limiter = RateLimiter.from_settings(settings)
    shard = rig.shard(limiter=limiter, group_hold_s=0.0)
    await shard.start()
    old = event(symbol="LTC/USDT")
    await shard.enqueue(old, batch_for([row(c) for c in range(960, 966)]))
    await until(lambda: shard.stats_.sent == 6)
    await asyncio.sleep(1.2)  # the per-chat spacing since those sends has passed
    since = time.time()
    await shard.enqueue(event(symbol="XLM/USDT"), batch_for([row(c) for c in range(970, 982)]))
    shard.mark_closed([old["opportunity_id"]])
    await until(lambda: shard.stats_.edits == 6 and shard.stats_.sent == 18, within=15)
    r = await rig.http.get(f"{rig.sb.base_url}/sandbox/requests")
    body = await r.json()
    rows = body["requests"] if isinstance(body, dict) else body
    order = [row["method"] for row in rows if float(row["time"]) >= since]
    order = [m for m in order if m in ("sendMessage", "editMessageText")]
    assert order == ["sendMessage"] * 12 + ["editMessageText"] * 6, order
    assert shard.stats()["edits_queued"] == 0 and shard.stats_.edits_dropped == 0


async def test_a_full_edit_queue_drops_its_oldest_edits_and_one_push_is_queued_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.queues.sending, "EDIT_BACKLOG_MAX", 3)
    shard = rig.shard()  # not started: nothing takes the queued edits
    pushes = [SentPush(c, c, 0, (), "UTC", False, {}) for c in range(5)]
    shard._schedule_edits(pushes[:2])
    shard._schedule_edits(pushes[1:])  # the second one twice: one edit shows every close
    assert list(shard._edit_queue) == pushes[2:] and shard.stats()["edits_dropped"] == 2
    assert shard.stats()["edits_queued"] == 3
    shard._edit_queue.clear()  # these stand-in pushes show nothing to edit at the rig's stop


async def test_a_refused_quota_skips_every_leg_of_the_group(rig: Rig) -> None:
    shard = rig.shard()
    await shard.start()
    for i in range(2):  # Free: 2 an hour, used up by two other pushes
        await shard.enqueue(event(symbol=f"S{i}/USDT"), batch_for([row(903, tier="free")]))
        await until(lambda i=i: shard.stats_.sent == i + 1)
    legs = [
        {**event(symbol="DOGE/USDT", net_bps=net), "buy_exchange": buy}
        for buy, net in (("binance", 21.0), ("bybit", 35.0))
    ]
    for ev in legs:
        await shard.enqueue(ev, batch_for([row(903, tier="free")]), force=True)
    await until(lambda: sum(shard.stats_.skipped.values()) == 2)
    assert shard.stats_.sent == 2 and dict(shard.stats_.skipped) == {"rate.hourly": 2}
    assert len(await rig.messages(903)) == 2


async def test_a_tier_delay_is_honoured(rig: Rig) -> None:
    shard = rig.shard()
    await shard.start()
    t0 = time.time()
    await shard.enqueue(event(), batch_for([row(301, tier="basic", due_ms=int((t0 + 0.6) * 1000))]))
    await asyncio.sleep(0.3)
    assert await rig.messages(301) == []
    await until(lambda: shard.stats_.sent == 1)
    assert time.time() - t0 >= 0.6


async def test_a_closed_opportunity_expires_instead_of_being_sent(rig: Rig) -> None:
    shard = rig.shard()
    ev = event()
    await shard.enqueue(ev, batch_for([row(401, due_ms=int((time.time() + 0.3) * 1000))]))
    await shard.start()
    shard.mark_closed([ev["opportunity_id"]])
    await until(lambda: shard.stats_.expired == 1)
    await asyncio.sleep(0.1)
    assert await rig.messages(401) == []
    await shard.flush()
    expired = [r for r in rig.deliveries() if r["status"] == "expired"]
    assert expired and expired[0]["reason"] == "closed"


async def test_a_blocked_chat_ends_its_session_and_drops_its_queue(rig: Rig) -> None:
    r = await rig.http.post(f"{rig.sb.base_url}/sandbox/users", json={"id": 501, "first_name": "B"})
    assert r.status == 200
    r = await rig.http.post(f"{rig.sb.base_url}/sandbox/users/501/block")
    assert r.status == 200, await r.text()
    shard = rig.shard()
    await shard.enqueue(event(), batch_for([row(501)]))
    await shard.enqueue(event(), batch_for([row(501, due_ms=int((time.time() + 30) * 1000))]))
    await shard.start()
    await until(lambda: shard.stats_.blocked == 1)
    await shard.flush()
    assert rig.blocked == [(501, 501)]
    assert sorted(rig.statuses(501)) == ["blocked", "queued", "queued", "skipped"]
    assert shard.pending() == 0


async def test_5xx_is_retried_with_backoff_then_sent_exactly_once(rig: Rig) -> None:
    await rig.http.post(f"{rig.sb.base_url}/sandbox/faults", json={"chat_id": 601, "count": 2})
    shard = rig.shard()
    await shard.start()
    await shard.enqueue(event(), batch_for([row(601)]))
    await until(lambda: shard.stats_.sent == 1)
    assert len(await rig.messages(601)) == 1
    assert shard.stats_.retries == 2
    await shard.flush()
    assert rig.statuses(601) == ["queued", "retry", "retry", "sent"]


async def test_after_max_retries_a_notification_is_dead_lettered(rig: Rig) -> None:
    await rig.http.post(f"{rig.sb.base_url}/sandbox/faults", json={"chat_id": 701, "count": 50})
    shard = rig.shard(max_retries=2)
    await shard.start()
    ev = event()
    await shard.enqueue(ev, batch_for([row(701)]))
    await until(lambda: shard.stats_.dead_letters == 1)
    await shard.flush()
    assert await rig.client.llen(DEAD_LETTERS_KEY) == 1
    failed = [r for r in rig.deliveries() if r["status"] == "failed"]
    assert failed and failed[0]["reason"].startswith("dead_letter")
    # an admin replays it once the outage is over
    await rig.http.post(f"{rig.sb.base_url}/sandbox/faults", json={"chat_id": 701, "count": 0})
    await shard.enqueue(ev, batch_for([row(701)]), force=True)
    await until(lambda: shard.stats_.sent == 1)
    assert len(await rig.messages(701)) == 1


async def test_quotas_are_drawn_at_send_time(rig: Rig) -> None:
    shard = rig.shard()
    await shard.start()
    for i in range(3):  # Free: 2 an hour (three different opportunities: no cooldown between them)
        await shard.enqueue(event(symbol=f"S{i}/USDT"), batch_for([row(801, tier="free")]))
        await until(lambda i=i: shard.stats_.sent + sum(shard.stats_.skipped.values()) == i + 1)
    assert shard.stats_.sent == 2
    assert dict(shard.stats_.skipped) == {"rate.hourly": 1}
    await shard.flush()
    skipped = [r for r in rig.deliveries() if r["status"] == "skipped"]
    assert skipped[0]["layer"] == 4


async def test_a_shard_never_sends_a_dedup_key_inside_the_cooldown_it_started(rig: Rig) -> None:
    """Even before Redis and the distributor know of a cooldown (a re-offer racing the flush),
    a second item of the same (target, dedup key) ends expired, reason cooldown, unsent."""
    shard = rig.shard()
    await shard.start()
    await shard.enqueue(event(), batch_for([row(802)]))
    await until(lambda: shard.stats_.sent == 1)
    await shard.enqueue(event(), batch_for([row(802)]))  # another id, the same key
    await until(lambda: shard.stats_.expired == 1)
    assert shard.stats_.sent == 1 and len(await rig.messages(802)) == 1
    await shard.flush()
    expired = [r for r in rig.deliveries() if r["status"] == "expired"]
    assert [(r["chat_id"], r["reason"]) for r in expired] == [(802, "cooldown")]


async def test_a_restarted_shard_loses_nothing_queued_and_resends_nothing_in_flight(rig: Rig) -> None:
    first = rig.shard()  # never started: as if it died right after acknowledging
    ev = event()
    await first.enqueue(ev, batch_for([row(c) for c in (901, 902, 903, 904)]))
    batch_id = next(iter(first.remaining))
    await rig.client.sadd(first.inflight_key(batch_id), "904")  # its send had begun
    rig.shards.remove(first)
    await first.notifier.bot.session.close()  # type: ignore[attr-defined]

    second = rig.shard()
    assert await second.start() == 3
    await until(lambda: second.stats_.sent == 3)
    for chat in (901, 902, 903):
        assert len(await rig.messages(chat)) == 1
    assert await rig.messages(904) == []
    assert second.stats_.ambiguous == 1
    await second.flush()
    assert await rig.client.hlen(second.batches_key) == 0
    assert "unknown_after_restart" in {r["reason"] for r in rig.deliveries()}


async def test_zones_travel_with_batches_and_a_batch_of_the_previous_shape_reads_as_utc(rig: Rig) -> None:
    """A batch persisted by the release before zones travelled (no ``tz`` column) is
    recovered and sent with UTC times; one with zones is sent in each chat's zone."""
    first = rig.shard()  # never started: as if it died right after acknowledging
    old_shape = batch_for([row(911)]).drop_columns(["tz"])
    assert "tz" not in old_shape.schema.names
    await first.enqueue(event("01aaaaaa-0000-7000-8000-000000000911"), old_shape)
    zoned = batch_for([{**row(912, tier="free"), "tz": "Asia/Kathmandu"}, {**row(913), "tz": None}])
    await first.enqueue(event("01aaaaaa-0000-7000-8000-000000000912", symbol="ETH/USDT"), zoned)
    rig.shards.remove(first)
    await first.notifier.bot.session.close()  # type: ignore[attr-defined]

    second = rig.shard()
    assert await second.start() == 3
    await until(lambda: second.stats_.sent == 3)
    texts = {chat: (await rig.messages(chat))[0]["text"] for chat in (911, 912, 913)}
    assert " UTC · " in texts[911] and " UTC · " in texts[913], texts
    assert " +0545 · " in texts[912], texts
    # the Free user's daily quota is drawn on their local day (it resets at their midnight)
    day = datetime.now(ZoneInfo("Asia/Kathmandu")).strftime("%Y%m%d")
    assert await rig.client.get(f"quota:d:912:{day}") == b"1"


async def test_a_429_pauses_the_limiter_and_the_message_still_goes_once(rig: Rig) -> None:
    # A limiter that believes in a far higher rate than the sandbox allows: 429s follow.
    shard = rig.shard(limiter=RateLimiter(FloodLimits(global_rate=1000.0)))
    await shard.start()
    chats = list(range(1001, 1061))
    await shard.enqueue(event(), batch_for([row(c) for c in chats]))
    await until(lambda: shard.stats_.sent == len(chats), within=20)
    assert shard.stats_.throttled > 0
    assert shard.limiter.pauses  # type: ignore[attr-defined]
    for chat in chats[:5] + chats[-5:]:
        assert len(await rig.messages(chat)) == 1


async def test_channels_by_name_and_groups_under_group_limits(rig: Rig) -> None:
    rig.sb.sandbox.add_group(
        "Arb signals", chat_id=-1009001, type="channel", username="arbsignals", bot_admin=True
    )
    shard = rig.shard()
    await shard.start()
    channel = {**row(0, audience="channel", tier="channel"), "chat": None, "chat_ref": "@arbsignals"}
    await shard.enqueue(event(), batch_for([channel]))
    await until(lambda: shard.stats_.sent == 1)
    # a group draws on twice the Free quotas: 4 an hour
    group = -4242
    for i in range(5):  # five different opportunities (one key would be held by its cooldown)
        await shard.enqueue(
            event(symbol=f"S{i}/USDT"), batch_for([row(group, audience="group", tier="group")])
        )
        await until(lambda i=i: shard.stats_.sent + sum(shard.stats_.skipped.values()) == i + 2, within=15)
    assert shard.stats_.sent == 5 and dict(shard.stats_.skipped) == {"rate.hourly": 1}
    await shard.flush()
    sent = [r for r in rig.deliveries() if r["status"] == "sent"]
    assert {r["audience"] for r in sent} == {"channel", "group"}
    assert [r["chat_ref"] for r in sent if r["audience"] == "channel"] == ["@arbsignals"]


async def test_a_permanent_error_fails_without_retries(rig: Rig) -> None:
    shard = rig.shard()
    await shard.start()
    gone = {**row(0, audience="channel", tier="channel"), "chat": None, "chat_ref": "@nosuchchannel"}
    await shard.enqueue(event(), batch_for([gone]))
    await until(lambda: shard.stats_.failed == 1)
    assert shard.stats_.retries == 0 and shard.stats_.dead_letters == 0
    await shard.flush()
    failed = [r for r in rig.deliveries() if r["status"] == "failed"]
    assert "chat not found" in failed[0]["reason"]


KEY = "spot_spread:BTC/USDT:binance:okx"


async def _quota_used(rig: Rig, uid: int) -> int:
    keys = [k async for k in rig.client.scan_iter(match=f"quota:h:{uid}:*")]
    values = [await rig.client.get(k) for k in keys]
    return sum(int(v or 0) for v in values)


async def test_a_sent_push_starts_its_cooldown_and_an_expired_one_charges_nothing(rig: Rig) -> None:
    shard = rig.shard()
    await shard.start()
    later = int((time.time() + 30) * 1000)
    # the distributor marked both pending when it queued them
    await rig.client.hset(f"elig:pending:{KEY}", mapping={"901": later, "902": later})
    sent, closed = event(), event()
    await shard.enqueue(sent, batch_for([row(901)]))
    await shard.enqueue(closed, batch_for([row(902, tier="free", due_ms=later)]))
    await until(lambda: shard.stats_.sent == 1)
    shard.mark_closed([closed["opportunity_id"]])
    await shard.flush()
    # sent: the cooldown runs (about the tier's 4 h), the mark is gone, one unit of quota drawn
    until_ms = int(await rig.client.hget(f"elig:cooldown:{KEY}", "901") or 0)
    assert abs(until_ms - (time.time() + 4 * 3600) * 1000) < 60_000
    assert await _quota_used(rig, 901) == 1
    # expired: no cooldown, no quota, the mark is gone too
    assert await rig.client.hget(f"elig:cooldown:{KEY}", "902") is None
    assert await _quota_used(rig, 902) == 0
    assert not await rig.client.exists(f"elig:pending:{KEY}")
    assert sorted(rig.outcomes) == [(901, KEY), (902, KEY)]  # told to the distributor


async def test_a_retried_push_draws_its_quota_once_and_a_dead_letter_gives_it_back(rig: Rig) -> None:
    await rig.http.post(f"{rig.sb.base_url}/sandbox/faults", json={"chat_id": 911, "count": 2})
    await rig.http.post(f"{rig.sb.base_url}/sandbox/faults", json={"chat_id": 912, "count": 50})
    shard = rig.shard(max_retries=2)
    await shard.start()
    await shard.enqueue(event(), batch_for([row(911), row(912)]))
    await until(lambda: shard.stats_.sent == 1 and shard.stats_.dead_letters == 1)
    await shard.flush()
    assert await _quota_used(rig, 911) == 1  # three attempts, one unit
    assert await _quota_used(rig, 912) == 0  # never delivered: given back
    assert await rig.client.hget(f"elig:cooldown:{KEY}", "912") is None
    await rig.http.post(f"{rig.sb.base_url}/sandbox/faults", json={"chat_id": 912, "count": 0})


async def test_the_closed_set_holds_only_ids_the_shard_queued_and_stays_bounded(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors.queues.shard, "CLOSED_MAX", 3)
    shard = rig.shard()
    await shard.start()
    later = int((time.time() + 60) * 1000)
    mine = [event() for _ in range(5)]
    for ev in mine:
        await shard.enqueue(ev, batch_for([row(921, due_ms=later)]))
    # closes of ids queued elsewhere (or never) leave no trace here
    assert shard.mark_closed([uuid.uuid4().hex for _ in range(100)]) == 0
    assert shard.closed == {}
    assert shard.mark_closed([ev["opportunity_id"] for ev in mine]) == 5
    assert len(shard.closed) <= 3
    # once their batches are done, the ids are forgotten
    await shard.flush()
    assert shard.closed == {}
    assert shard.stats()["expire_foreign"] == 100


async def test_languages_travel_with_batches_and_a_batch_of_the_previous_shape_reads_as_english(
    rig: Rig,
) -> None:
    """A push is written in the chat's language (``lang`` of its batch); a batch persisted
    by the release before languages travelled (no ``lang`` column) and a language the bot
    does not speak are sent in English."""
    first = rig.shard()  # never started: as if it died right after acknowledging
    old_shape = batch_for([{**row(921), "tz": "UTC"}]).drop_columns(["lang"])
    await first.enqueue(event("01aaaaaa-0000-7000-8000-000000000921"), old_shape)
    spoken = batch_for([{**row(922), "lang": "ru"}, {**row(923), "lang": "de"}])
    await first.enqueue(event("01aaaaaa-0000-7000-8000-000000000922", symbol="ETH/USDT"), spoken)
    rig.shards.remove(first)
    await first.notifier.bot.session.close()  # type: ignore[attr-defined]

    second = rig.shard()
    assert await second.start() == 3
    await until(lambda: second.stats_.sent == 3)
    sent = {chat: (await rig.messages(chat))[0] for chat in (921, 922, 923)}
    assert "Spot spreads" in sent[921]["text"] and "Spot spreads" in sent[923]["text"]
    ru = sent[922]["text"].splitlines()
    assert ru[0] == "🔥 ETH/USDT — Спотовые спреды" and ru[1] == "покупка binance → продажа okx", ru
    assert ru[2] == "Чистыми: +42.0 б.п. (грязными +62.0 б.п.) · мгновенно", ru  # noqa: RUF001
    buttons = [b["text"] for r in sent[922]["message"]["reply_markup"]["inline_keyboard"] for b in r]
    assert buttons == ["🔎 Подробнее", "🔕 Пауза 1 ч", "📋 Ещё"]
