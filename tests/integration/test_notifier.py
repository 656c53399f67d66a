"""The notifier against the real Telegram sandbox, and the push buttons through the dispatcher.

The sandbox runs Telegram's flood limits on its real clock where the test is about them
(429) and on a fast clock elsewhere; what the bot sent is read back from the sandbox.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Update
from cryptography.fernet import Fernet

from bot.app import build_dispatcher
from bot.deps import BotDeps, NullEventSink, build_deps
from core.accounts import OnboardingStep, Tier
from core.candidates import Candidate
from core.lifecycle import EventType, LifecycleEvent
from core.models import OpportunityKind, Priority
from core.notifications import Digest, Notification, SendOutcome
from core.settings import MarketSettings, Settings, TelegramSettings
from notify import texts
from notify.client import build_bot
from notify.keyboards import PushAction
from notify.notifier import TelegramNotifier
from pipeline.deliveries import ENGAGEMENT, ENGAGEMENT_DATASET
from serve.runtime import EmbeddedRedis
from serve.standins.sandbox import SandboxHandle, start_sandbox

ALICE = 100_101
BOB = 100_102


def candidate(n: int, at: datetime, kind: OpportunityKind = OpportunityKind.SPOT_SPREAD) -> Candidate:
    return Candidate(
        kind=kind,
        symbol=f"P{n}/USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        gross_bps=30.0 + n,
        net_bps=20.0 + n,
        gross_apr=0.2 if kind is OpportunityKind.FUNDING_RATE else None,
        notional_usd=10_000.0,
        executable_usd=8_000.0,
        confidence=0.9,
        priority=Priority.HIGH,
        pushable=True,
        flags=(),
        detected_at=at,
    )


def notification(n: int, at: datetime, kind: OpportunityKind = OpportunityKind.SPOT_SPREAD) -> Notification:
    event = LifecycleEvent(EventType.OPENED, f"{uuid.uuid4()}", candidate(n, at, kind), at, at)
    return Notification.from_event({"opportunity_id": event.opportunity_id, **event.candidate.to_dict()})


async def bot_messages(http: httpx.AsyncClient, sb: SandboxHandle, chat_id: int) -> list[dict[str, Any]]:
    r = await http.get(f"{sb.base_url}/sandbox/chats/{chat_id}/messages")
    return list(r.json()["messages"])


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def make_bot(sb: SandboxHandle) -> Bot:
    return build_bot(Settings(telegram=TelegramSettings(token=sb.token, api_base=sb.base_url)))


# -- sending -----------------------------------------------------------------------------------------


async def test_sent_with_message_id_keyboard_and_silence(http: httpx.AsyncClient) -> None:
    ticks = itertools.count()
    async with await start_sandbox(port=0, clock=lambda: next(ticks) * 100.0) as sb:
        bot = make_bot(sb)
        try:
            notifier = TelegramNotifier(bot)
            now = datetime.now(UTC)
            single = notification(1, now)
            result = await notifier.send(ALICE, single, silent=True)
            assert result.outcome is SendOutcome.SENT and result.status_code == 200
            digest = Digest.of([notification(2, now), notification(3, now + timedelta(seconds=1))])
            loud = await notifier.send(ALICE, digest, silent=False)
            assert loud.ok and loud.message_id == (result.message_id or 0) + 1
        finally:
            await bot.session.close()
        first, second = await bot_messages(http, sb, ALICE)
        assert first["message_id"] == result.message_id and first["disable_notification"] is True
        assert first["text"].startswith("🔥 P1/USDT — Spot spreads") and "<b>P1/USDT</b>" in first["html"]
        assert [b["callback_data"] for b in first["reply_markup"]["inline_keyboard"][0]] == [
            PushAction(action="details", id=single.opportunity_id).pack()
        ]
        assert second["disable_notification"] is False
        assert second["text"].splitlines()[2].startswith("1. 🔥 P3/USDT")  # newest first


async def test_blasting_one_chat_gets_retry_after_and_a_blocked_chat_403(http: httpx.AsyncClient) -> None:
    async with await start_sandbox(port=0) as sb:  # the real clock: Telegram's limits apply
        bot = make_bot(sb)
        try:
            notifier = TelegramNotifier(bot)
            note = notification(1, datetime.now(UTC))
            results = [await notifier.send(ALICE, note, silent=False) for _ in range(5)]
            outcomes = [r.outcome for r in results]
            assert outcomes[:3] == [SendOutcome.SENT] * 3  # the chat's burst
            limited = [r for r in results if r.outcome is SendOutcome.RETRY_AFTER]
            # until the first of the three leaves the chat's 3 s window
            assert limited and all(r.status_code == 429 and r.retry_after_s in (2.0, 3.0) for r in limited)
            assert "retry after" in limited[0].error.lower()

            r = await http.post(f"{sb.base_url}/sandbox/users/{BOB}/block", json={})
            assert r.json()["blocked"] is True
            blocked = await notifier.send(BOB, note, silent=False)
            assert blocked.outcome is SendOutcome.BLOCKED and blocked.status_code == 403
            assert blocked.error == "Forbidden: bot was blocked by the user"
        finally:
            await bot.session.close()
        stats = (await http.get(f"{sb.base_url}/sandbox/stats")).json()
        assert stats["too_many_requests"] == len(limited)


async def test_network_errors_and_timeouts_are_transient_and_bad_requests_permanent() -> None:
    # nothing listens on a port we just released: connection refused
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    dead = Bot("1:x", session=AiohttpSession(api=TelegramAPIServer.from_base(f"http://127.0.0.1:{port}")))
    note = notification(1, datetime.now(UTC))
    try:
        refused = await TelegramNotifier(dead).send(ALICE, note, silent=False)
        assert refused.outcome is SendOutcome.TRANSIENT and refused.status_code is None
    finally:
        await dead.session.close()

    release = asyncio.Event()

    async def silent_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # never answers
        writer.close()
        await writer.wait_closed()

    hang = await asyncio.start_server(silent_server, "127.0.0.1", 0)
    hang_port = hang.sockets[0].getsockname()[1]
    slow = Bot(
        "1:x", session=AiohttpSession(api=TelegramAPIServer.from_base(f"http://127.0.0.1:{hang_port}"))
    )
    try:
        timed_out = await TelegramNotifier(slow).send(ALICE, note, silent=False, timeout_s=0.3)
        assert timed_out.outcome is SendOutcome.TRANSIENT and timed_out.error == "timeout"
    finally:
        await slow.session.close()
        release.set()
        hang.close()
        await hang.wait_closed()

    async with await start_sandbox(port=0, auto_create_chats=False) as sb:
        bot = make_bot(sb)
        try:
            unknown = await TelegramNotifier(bot).send(-42, note, silent=False)
            assert unknown.outcome is SendOutcome.PERMANENT and unknown.status_code == 400
            assert unknown.error == "Bad Request: chat not found"
        finally:
            await bot.session.close()


# -- the push buttons through the dispatcher ------------------------------------------------------------


@dataclass
class World:
    sb: SandboxHandle
    bot: Bot
    deps: BotDeps
    events: NullEventSink
    http: httpx.AsyncClient
    dp: Any
    ids: itertools.count[int]

    async def feed(self, update: dict[str, Any]) -> None:
        update = {**update, "update_id": next(self.ids)}
        await self.dp.feed_update(self.bot, Update.model_validate(update, context={"bot": self.bot}))

    async def start(self, user_id: int) -> None:
        sandbox = self.sb.sandbox
        user = sandbox.user(user_id)
        msg = sandbox.user_message(sandbox.bot(), user, sandbox.chat(user_id), "/start")
        await self.feed({"message": msg})
        await self.deps.users.update_fields(user_id, onboarding_step=OnboardingStep.DONE)

    async def press(self, user_id: int, message: dict[str, Any], data: str) -> dict[str, Any]:
        """A callback query as Telegram sends it; returns the bot's answer (exactly one)."""
        query_id = str(uuid.uuid4().int % 10**18)
        self.sb.sandbox.bot().callbacks[query_id] = {
            "id": query_id,
            "user_id": user_id,
            "chat_id": message["chat"]["id"],
            "message_id": message["message_id"],
            "data": data,
            "answered": False,
            "answer": None,
        }
        query = {
            "id": query_id,
            "from": self.sb.sandbox.user(user_id).to_api(),
            "message": message,
            "chat_instance": "4242",
            "data": data,
        }
        await self.feed({"callback_query": query})
        answered = self.sb.sandbox.bot().callbacks[query_id]
        assert answered["answered"], "every press is answered"
        return dict(answered["answer"] or {})


@pytest.fixture
async def world(tmp_path: Path, redis_server: EmbeddedRedis, http: httpx.AsyncClient) -> AsyncIterator[World]:
    ticks = itertools.count()
    sb = await start_sandbox(port=0, clock=lambda: next(ticks) * 100.0)
    settings = Settings(
        data_dir=tmp_path / "var",
        secret_key=Fernet.generate_key().decode(),
        telegram=TelegramSettings(token=sb.token, api_base=sb.base_url),
        market=MarketSettings(exchanges=["binance", "bybit", "okx"]),
    )
    prefix = f"n{uuid.uuid4().hex[:10]}"
    events = NullEventSink()
    deps = await build_deps(
        settings, redis_server.url, events=events, prefix=prefix, opportunities_prefix=f"{prefix}:opps"
    )
    bot = build_bot(settings)
    dp = build_dispatcher(deps, handle_errors=False, throttle_clock=itertools.count().__next__)
    try:
        yield World(sb, bot, deps, events, http, dp, itertools.count(1))
    finally:
        await bot.session.close()
        await deps.aclose()
        await sb.stop()


async def pushed(w: World, chat_id: int, item: Notification | Digest) -> dict[str, Any]:
    result = await TelegramNotifier(w.bot).send(chat_id, item, silent=False)
    assert result.ok
    messages = await bot_messages(w.http, w.sb, chat_id)
    found = [m["message"] for m in messages if m["message_id"] == result.message_id]
    return found[0]


async def test_push_buttons_emit_engagement_and_audit(world: World) -> None:
    w = world
    now = datetime.now(UTC)
    opened = [
        LifecycleEvent(EventType.OPENED, f"{uuid.uuid4()}", candidate(i, now), now, now) for i in range(2)
    ]
    await w.deps.opportunities.apply(opened)
    note = Notification.from_event(
        {"opportunity_id": opened[0].opportunity_id, **opened[0].candidate.to_dict()}
    )
    await w.start(ALICE)
    msg = await pushed(w, ALICE, note)

    # details: the card as a new message, the push untouched
    before = len(await bot_messages(w.http, w.sb, ALICE))
    await w.press(ALICE, msg, PushAction(action="details", id=note.opportunity_id).pack())
    after = await bot_messages(w.http, w.sb, ALICE)
    assert (
        len(after) == before + 1 and "Net: +20.0 bps" in after[-1]["text"] and "P0/USDT" in after[-1]["text"]
    )
    assert not after[before - 1]["edited"]

    # mute for an hour: the presser's preferences
    answer = await w.press(ALICE, msg, PushAction(action="mute1h", id=note.opportunity_id).pack())
    assert "Muted until" in answer["text"]
    user = await w.deps.users.get(ALICE)
    assert user is not None and user.preferences.muted_until is not None
    assert timedelta(minutes=59) < user.preferences.muted_until - now < timedelta(minutes=61)

    # more: the /opportunities list
    await w.press(ALICE, msg, PushAction(action="more", id=note.opportunity_id).pack())
    assert "Open opportunities" in (await bot_messages(w.http, w.sb, ALICE))[-1]["text"]

    # a closed opportunity's details
    await w.deps.opportunities.apply(
        [LifecycleEvent(EventType.CLOSED, note.opportunity_id, opened[0].candidate, now, now, lifetime_s=5.0)]
    )
    closed = await w.press(ALICE, msg, PushAction(action="details", id=note.opportunity_id).pack())
    assert closed["text"] == texts.OPPORTUNITY_CLOSED

    rows = w.events.rows(ENGAGEMENT_DATASET)
    assert [(r["action"], r["detail"]) for r in rows] == [
        ("push_button", "details"),
        ("push_button", "mute1h"),
        ("push_button", "more"),
        ("push_button", "details:closed"),
    ]
    assert {r["user_id"] for r in rows} == {ALICE} and {r["chat_id"] for r in rows} == {ALICE}
    assert {r["opportunity_id"] for r in rows} == {note.opportunity_id}
    assert rows[0]["kind"] == "spot_spread"
    assert all(t.schema.equals(ENGAGEMENT) for name, t in w.events.tables if name == ENGAGEMENT_DATASET)
    audit = [r for r in w.events.rows("audit") if r["action"] == "cb:pu"]
    assert [(r["ok"], r["detail"].split()[0]) for r in audit] == [
        (True, "details"),
        (True, "mute1h"),
        (True, "more"),
        (False, "details:closed"),
    ]


async def test_push_buttons_need_a_session_and_respect_the_tier(world: World) -> None:
    w = world
    now = datetime.now(UTC)
    ev = LifecycleEvent(
        EventType.OPENED, f"{uuid.uuid4()}", candidate(7, now, OpportunityKind.FUNDING_RATE), now, now
    )
    await w.deps.opportunities.apply([ev])
    note = Notification.from_event({"opportunity_id": ev.opportunity_id, **ev.candidate.to_dict()})
    msg = await pushed(w, BOB, note)
    # no session: the gate answers and offers /start; nothing is engaged
    answer = await w.press(BOB, msg, PushAction(action="mute1h", id=note.opportunity_id).pack())
    assert "Start a session" in answer["text"]
    assert w.events.rows(ENGAGEMENT_DATASET) == []
    user = await w.deps.users.get(BOB)
    assert user is not None and user.preferences.muted_until is None
    # with a session, a Free user cannot open a funding opportunity's details
    await w.start(BOB)
    assert user.tier is Tier.FREE
    refused = await w.press(BOB, msg, PushAction(action="details", id=note.opportunity_id).pack())
    assert refused["text"] == texts.NOT_AVAILABLE
    assert [r["detail"] for r in w.events.rows(ENGAGEMENT_DATASET)] == ["details:not_available"]
    # a forged action
    forged = await w.press(BOB, msg, PushAction(action="nuke", id=note.opportunity_id).pack())
    assert forged["text"] == texts.UNKNOWN_BUTTON
    assert len(w.events.rows(ENGAGEMENT_DATASET)) == 1
