"""The bot end to end in-process: real Redis, the real Telegram sandbox, a real aiogram ``Bot``.

Updates are real Update JSON (``shared/fixtures/telegram/updates`` as the shapes, or the
sandbox's own user messages) fed through ``Dispatcher.feed_update``; what the bot did is
read back from the sandbox (``/sandbox/chats/{id}/messages``, ``/sandbox/requests``) and
from Redis. Every test has its own key prefix; the sandbox's flood clock runs fast so
its flood limits never get in the way (the throttle has its own frozen clock).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from cryptography.fernet import Fernet

from bot.app import allowed_updates, build_dispatcher
from bot.callbacks import Forget, OppBacktest, OppDetail, OppPage, SetPref
from bot.deps import BotDeps, NullEventSink, build_deps
from core.accounts import OnboardingStep, Tier
from core.candidates import Candidate
from core.lifecycle import EventType, LifecycleEvent
from core.models import OpportunityKind, Priority
from core.sessions import EndReason
from core.settings import LakeSettings, MarketSettings, Settings, TelegramSettings
from notify import texts
from notify.client import build_bot
from pipeline.deliveries import deliveries_table, engagement_table
from pipeline.lake import Lake
from pipeline.sink import ParquetSink
from serve.handlers import local_explainer
from serve.runtime import EmbeddedRedis
from serve.standins.exchanges import Exchanges, start_exchanges
from serve.standins.sandbox import DEFAULT_USERNAME, SandboxHandle, start_sandbox
from state.audit import AUDIT

UPDATES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "telegram" / "updates"
ADMIN = 900_001
ALICE = 100_001
BOB = 100_002


def fixture(name: str) -> dict[str, Any]:
    return json.loads((UPDATES / name).read_text())


class Clock:
    def __init__(self) -> None:
        # near the wall clock: Redis expires quota keys on its own clock
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Harness:
    sb: SandboxHandle
    bot: Bot
    dp: Dispatcher
    deps: BotDeps
    events: NullEventSink
    clock: Clock
    http: httpx.AsyncClient
    ids: itertools.count[int]
    throttle_time: list[float]

    # -- updates
    async def feed(self, update: dict[str, Any]) -> None:
        update = dict(update)
        update["update_id"] = next(self.ids)
        await self.dp.feed_update(self.bot, Update.model_validate(update, context={"bot": self.bot}))

    def user_message(self, user_id: int, text: str, chat_id: int | None = None) -> dict[str, Any]:
        """A message as the sandbox records it (so the bot can delete/answer it)."""
        sandbox = self.sb.sandbox
        user = sandbox.user(user_id)
        chat = sandbox.chat(chat_id if chat_id is not None else user_id)
        return {"message": sandbox.user_message(sandbox.bot(), user, chat, text)}

    async def send(self, user_id: int, text: str, chat_id: int | None = None) -> None:
        await self.feed(self.user_message(user_id, text, chat_id))

    async def press(self, user_id: int, message: dict[str, Any], data: str) -> str:
        """A callback query on ``message`` (the bot's message JSON), shaped like the fixture."""
        update = fixture("nutgram_callback_query_inline_keyboard.json")
        query = update["callback_query"]
        query["id"] = str(uuid.uuid4().int % 10**18)
        query["from"] = self.sb.sandbox.user(user_id).to_api()
        query["message"] = message["message"] if "chat" not in message else message  # a row or a message
        query["data"] = data
        # known to the sandbox, so it checks that the bot answers it (exactly once)
        self.sb.sandbox.bot().callbacks[query["id"]] = {
            "id": query["id"],
            "user_id": user_id,
            "chat_id": query["message"]["chat"]["id"],
            "message_id": query["message"]["message_id"],
            "data": data,
            "answered": False,
            "answer": None,
        }
        await self.feed(update)
        return str(query["id"])

    # -- what the sandbox saw
    async def messages(self, chat_id: int) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.sb.base_url}/sandbox/chats/{chat_id}/messages")
        return list(r.json()["messages"])

    async def texts(self, chat_id: int) -> list[str]:
        return [m["text"] for m in await self.messages(chat_id)]

    async def last(self, chat_id: int) -> dict[str, Any]:
        return (await self.messages(chat_id))[-1]

    async def requests(self, method: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.sb.base_url}/sandbox/requests", params={"method": method})
        return list(r.json()["requests"])

    async def callback_answers(self) -> list[dict[str, Any]]:
        return [r["params"] for r in await self.requests("answerCallbackQuery")]

    async def all_callbacks_answered_once(self) -> bool:
        r = await self.http.get(f"{self.sb.base_url}/sandbox/callbacks")
        calls = await self.requests("answerCallbackQuery")
        return all(c["answered"] for c in r.json()["callbacks"]) and all(c["status"] == 200 for c in calls)

    async def start(self, user_id: int) -> None:
        await self.send(user_id, "/start")
        await self.deps.users.update_fields(user_id, onboarding_step=OnboardingStep.DONE)


def buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b["callback_data"] for row in rows for b in row]


def button(message: dict[str, Any], prefix: str) -> str:
    found = [d for d in buttons(message) if d.startswith(prefix)]
    assert found, f"no button {prefix!r} in {buttons(message)}"
    return found[0]


@pytest.fixture
async def h(tmp_path: Path, redis_server: EmbeddedRedis) -> AsyncIterator[Harness]:
    ticks = itertools.count()
    sb = await start_sandbox(port=0, clock=lambda: next(ticks) * 100.0)  # flood buckets always full
    clock = Clock()
    settings = Settings(
        data_dir=tmp_path / "var",
        secret_key=Fernet.generate_key().decode(),
        superadmin_ids=[ADMIN],
        telegram=TelegramSettings(token=sb.token, api_base=sb.base_url),
        market=MarketSettings(exchanges=["binance", "bybit", "okx"]),
    )
    prefix = f"b{uuid.uuid4().hex[:10]}"
    events = NullEventSink()
    deps = await build_deps(
        settings,
        redis_server.url,
        events=events,
        prefix=prefix,
        opportunities_prefix=f"{prefix}:opps",
        clock=clock,
    )
    deps.explainer = local_explainer(deps)  # what serve/ wires where no distributor runs
    throttle_time = [0.0, 1.0]  # [now, step per update]: 1 s a step keeps ordinary tests unthrottled

    def throttle_clock() -> float:
        throttle_time[0] += throttle_time[1]
        return throttle_time[0]

    bot = build_bot(settings)
    dp = build_dispatcher(deps, handle_errors=False, throttle_clock=throttle_clock)
    http = httpx.AsyncClient(timeout=10)
    harness = Harness(sb, bot, dp, deps, events, clock, http, itertools.count(1), throttle_time)
    try:
        yield harness
        # every button press of every test was answered, exactly once
        assert await harness.all_callbacks_answered_once()
    finally:
        await http.aclose()
        await bot.session.close()
        await deps.aclose()
        await sb.stop()


@pytest.fixture
async def exchanges(h: Harness, shared_fixtures: Path) -> AsyncIterator[Exchanges]:
    """The exchange emulators, with the bot's ccxt pointed at them (``/apikeys add`` checks keys)."""
    async with start_exchanges(shared_fixtures / "exchanges", seed=5, symbols=["BTC/USDT"]) as ex:
        market = h.deps.settings.market.model_copy(update={"endpoints": ex.endpoints})
        h.deps.settings = h.deps.settings.model_copy(update={"market": market})
        yield ex


# -- session-first ---------------------------------------------------------------------------------


async def test_gate_without_session_offers_start_and_help_works(h: Harness) -> None:
    await h.send(ALICE, "/status")
    msg = await h.last(ALICE)
    assert "active session" in msg["text"]
    assert buttons(msg) == ["ss"]
    await h.send(ALICE, "/help")
    help_text = (await h.last(ALICE))["text"]
    assert "/opportunities" in help_text and "/apikeys" not in help_text and "/admin" not in help_text
    assert "send /start" in help_text
    # a button without a session: answered, and the start prompt
    await h.press(ALICE, msg, SetPref(uid=ALICE, field="push", value="0").pack())
    answers = await h.callback_answers()
    assert answers and "Start a session" in answers[-1]["text"]
    assert buttons(await h.last(ALICE)) == ["ss"]
    # pressing "Start a session" runs /start
    await h.press(ALICE, msg, "ss")
    assert await h.deps.sessions.get_active(ALICE, h.clock()) is not None
    audit = h.events.rows("audit")
    assert {"action": "/status", "ok": False, "detail": "no_session"}.items() <= audit[0].items()
    assert h.events.tables[0][1].schema.equals(AUDIT) or any(
        t.schema.equals(AUDIT) for _, t in h.events.tables
    )
    assert set(allowed_updates(h.dp)) >= {"message", "callback_query", "my_chat_member"}


async def test_start_fixture_payload_and_full_onboarding(h: Harness) -> None:
    update = fixture("nutgram_private_start_no_entities_SYNTHETIC.json")
    update["message"]["text"] = "/start camp-42"
    await h.feed(update)
    uid = update["message"]["from"]["id"]
    session = await h.deps.sessions.get_active(uid, h.clock())
    assert session is not None and session.seq == 1
    user = await h.deps.users.get(uid)
    assert user is not None and user.referral == "camp-42" and user.onboarding_step is OnboardingStep.KINDS
    assert [r["event"] for r in h.events.rows("session_events")] == ["started"]
    sent = await h.messages(uid)
    assert "Mario" in sent[0]["text"] and "1/7" in sent[1]["text"]
    screen = sent[1]["message"]

    async def press(data: str) -> dict[str, Any]:
        nonlocal screen
        await h.press(uid, screen, data)
        screen = (await h.last(uid))["message"]
        return screen

    # kinds: the free tier has spot spreads only; the others are locked
    await press(SetPref(uid=uid, field="kind", value="technical", onb=1).pack())
    assert "higher tier" in (await h.callback_answers())[-1]["text"]
    await press(SetPref(uid=uid, field="kind", value="spot_spread", onb=1).pack())
    assert "▫️ Spot spreads" in json.dumps(screen["reply_markup"], ensure_ascii=False)
    await press(SetPref(uid=uid, field="kind", value="spot_spread", onb=1).pack())
    await press(button(screen, "ob:"))
    assert "2/7" in screen["text"]
    await press(SetPref(uid=uid, field="exch", value="binance", onb=1).pack())
    await press(SetPref(uid=uid, field="exch", value="okx", onb=1).pack())
    await press(SetPref(uid=uid, field="exch", value="kraken", onb=1).pack())  # not offered
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_AVAILABLE
    await press(button(screen, "ob:"))
    await press(SetPref(uid=uid, field="minp", value="10", onb=1).pack())
    await press(button(screen, "ob:"))
    await press(SetPref(uid=uid, field="tz", value=str(texts.TIMEZONES.index("Europe/Berlin")), onb=1).pack())
    await press(button(screen, "ob:"))
    await press(SetPref(uid=uid, field="hours", value="8-22", onb=1).pack())
    await press(button(screen, "ob:"))
    assert "Tiers" in screen["text"] and "Premium" in screen["text"]
    await press(button(screen, "ob:"))
    assert "API keys" in screen["text"]
    await press(button(screen, "ob:"))
    assert "All set" in screen["text"]
    user = await h.deps.users.get(uid)
    assert user is not None and user.onboarding_step is OnboardingStep.DONE
    prefs = user.preferences
    assert prefs.kinds == set(OpportunityKind)  # wishes; the tier filters
    assert prefs.exchanges == {"binance", "okx"} and int(prefs.min_net_bps) == 10
    assert prefs.timezone == "Europe/Berlin" and prefs.active_hours == (8, 22)
    funnel = [r["action"] for r in h.events.rows("audit") if r["action"].startswith("onboard:")]
    assert funnel == [f"onboard:{s}" for s in ("exch", "minp", "tz", "hours", "tiers", "keys", "done")]
    assert await h.all_callbacks_answered_once()


async def test_concurrent_starts_make_one_session(h: Harness) -> None:
    await asyncio.gather(*(h.send(ALICE, "/start") for _ in range(8)))
    assert [r["event"] for r in h.events.rows("session_events")] == ["started"]
    assert await h.deps.client.hget(h.deps.sessions.seq_key, str(ALICE)) == b"1"  # type: ignore[union-attr]


async def test_expiry_extension_and_welcome_back(h: Harness) -> None:
    await h.start(ALICE)
    first = await h.deps.sessions.get(ALICE)
    assert first is not None
    h.clock.advance(timedelta(days=5))
    await h.send(ALICE, "/status")
    assert "Status" in (await h.last(ALICE))["text"]
    extended = await h.deps.sessions.get(ALICE)
    assert extended is not None and extended.expires_at == h.clock() + timedelta(days=7)
    h.clock.advance(timedelta(days=8))
    await h.send(ALICE, "/opportunities")
    msg = await h.last(ALICE)
    assert "expired" in msg["text"] and buttons(msg) == ["ss"]
    await h.press(ALICE, msg["message"], "ss")
    assert "Welcome back" in (await h.texts(ALICE))[-1]
    again = await h.deps.sessions.get_active(ALICE, h.clock())
    assert again is not None and again.seq == 2 and again.id != first.id
    assert [r["event"] for r in h.events.rows("session_events")] == ["started", "expired", "resumed"]


# -- commands --------------------------------------------------------------------------------------


async def test_status_mute_subscription_settings_stop(h: Harness) -> None:
    await h.start(ALICE)
    await h.send(ALICE, "/status")
    status = (await h.last(ALICE))["text"]
    assert "Free" in status and "5 today" in status and "not muted" in status
    await h.send(ALICE, "/mute 2")
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.preferences.muted_until == h.clock() + timedelta(hours=2)
    await h.send(ALICE, "/status")
    assert "muted until" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/mute nope")
    assert "Usage" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/mute 0")
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.preferences.muted_until is None
    await h.send(ALICE, "/subscription")
    sub = (await h.last(ALICE))["text"]
    assert "Your tier: Free" in sub and "Enterprise" in sub and "midnight in your time zone" in sub

    await h.send(ALICE, "/settings")
    msg = (await h.last(ALICE))["message"]
    assert "Settings" in msg["text"]
    await h.press(ALICE, msg, SetPref(uid=ALICE, field="push", value="0").pack())
    await h.press(ALICE, msg, SetPref(uid=ALICE, field="outside", value="silent").pack())
    await h.press(ALICE, msg, SetPref(uid=ALICE, field="mine", value="1").pack())
    await h.press(ALICE, msg, SetPref(uid=ALICE, field="menu", value="kinds").pack())
    kinds = (await h.last(ALICE))["message"]
    assert "Kinds" in kinds["text"] and any(d.endswith(":spot_spread:0") for d in buttons(kinds))
    await h.press(ALICE, kinds, SetPref(uid=ALICE, field="kind", value="spot_spread").pack())
    await h.press(ALICE, kinds, SetPref(uid=ALICE, field="kind", value="bogus").pack())
    await h.press(ALICE, kinds, SetPref(uid=ALICE, field="menu", value="main").pack())
    user = await h.deps.users.get(ALICE)
    assert user is not None
    p = user.preferences
    assert not p.pushes_on and p.outside_hours == "silent" and p.only_my_exchanges
    assert OpportunityKind.SPOT_SPREAD not in p.kinds
    assert "Alerts: <b>off</b>" in (await h.last(ALICE))["html"]

    await h.send(ALICE, "/stop")
    assert "Session ended" in (await h.last(ALICE))["text"]
    assert await h.deps.sessions.get_active(ALICE, h.clock()) is None
    assert h.events.rows("session_events")[-1]["event"] == "ended"
    await h.send(ALICE, "/settings")
    assert buttons(await h.last(ALICE)) == ["ss"]


def _event(
    n: int, kind: OpportunityKind, net: float, at: datetime, buy: str = "binance", sell: str = "okx"
) -> Any:
    cand = Candidate(
        kind=kind,
        symbol=f"C{n}/USDT",
        buy_exchange=buy,
        sell_exchange=sell if kind is not OpportunityKind.TECHNICAL else None,
        gross_bps=net + 10,
        net_bps=net,
        gross_apr=0.2 if kind is OpportunityKind.FUNDING_RATE else None,
        notional_usd=10_000.0,
        executable_usd=8_000.0,
        confidence=0.9,
        priority=Priority.HIGH,
        pushable=True,
        flags=(),
        detected_at=at,
    )
    return LifecycleEvent(EventType.OPENED, f"opp-{kind.value}-{n:02d}", cand, at, at - timedelta(minutes=3))


async def test_opportunities_pages_details_and_quota(h: Harness) -> None:
    now = h.clock()
    events = [_event(i, OpportunityKind.SPOT_SPREAD, 50.0 - i, now) for i in range(12)]
    events.append(_event(50, OpportunityKind.TECHNICAL, 0.0, now))
    events.append(_event(60, OpportunityKind.FUNDING_RATE, 99.0, now))
    events.append(_event(70, OpportunityKind.SPOT_SPREAD, 80.0, now, buy="kraken"))  # not her exchanges
    await h.deps.opportunities.apply(events)
    await h.start(ALICE)
    await h.deps.users.update_preferences(ALICE, exchanges={"binance", "okx"})

    await h.send(ALICE, "/opportunities")
    page = (await h.last(ALICE))["message"]
    assert "(12)" in page["text"] and "page 1/3" in page["text"]
    assert "C0/USDT" in page["text"] and "C60" not in page["text"] and "C50" not in page["text"]
    assert "C70" not in page["text"]
    await h.press(ALICE, page, button(page, "op:"))
    page2 = (await h.last(ALICE))["message"]
    assert "page 2/3" in page2["text"] and "C5/USDT" in page2["text"]
    # free tier: 2 views an hour → the details view is refused with the reset time
    await h.press(ALICE, page2, button(page2, "od:"))
    refused = (await h.last(ALICE))["text"]
    assert "this hour's 2" in refused and "resets at" in refused
    # a higher tier sees funding, and details
    await h.deps.users.set_tier(ALICE, Tier.PREMIUM)
    await h.send(ALICE, "/opportunities")
    page = (await h.last(ALICE))["message"]
    assert "(14)" in page["text"]  # funding and technical too
    # kind after kind, each ranked by its own edge: a funding net_bps (a return over its
    # horizon) is not ranked against instant spot spreads, so spot C0 leads
    assert "C0/USDT" in page["text"] and "C60/USDT" not in page["text"]
    await h.press(ALICE, page, OppDetail(uid=ALICE, id="opp-funding_rate-60").pack())
    card = (await h.last(ALICE))["text"]
    assert "Funding rates" in card and "long binance / short okx" in card and "+99.0 bps" in card
    assert "Open for 3m" in card and "Confidence: 90%" in card
    await h.press(ALICE, page, OppDetail(uid=ALICE, id="opp-gone").pack())
    assert (await h.callback_answers())[-1]["text"] == texts.OPPORTUNITY_CLOSED
    used = await h.deps.quotas.used(ALICE, h.clock())
    assert used == (4, 4)


def _funding_snapshots(
    exchange: str, symbol: str, rate: float, settlements: list[datetime], interval_h: int
) -> list[dict[str, Any]]:
    """One snapshot half an hour before each settlement, announcing its final rate."""
    return [
        {
            "ts": at - timedelta(minutes=30),
            "recv_ts": at - timedelta(minutes=30),
            "exchange": exchange,
            "symbol": symbol,
            "funding_rate": rate,
            "interval_hours": float(interval_h),
            "rate_per_hour": rate / interval_h,
            "funding_ts": at,
            "next_funding_ts": at,
        }
        for at in settlements
    ]


async def test_opportunity_backtest_button_answers_from_the_lake(h: Harness, tmp_path: Path) -> None:
    """The details view's "Backtest" button: a funding carry's net after fees over the last
    7 days from the lake's funding history, a spot spread's episodes above the user's spot
    minimum; an unreadable lake is a short message."""
    from pipeline.schemas import FUNDING_RATES, QUOTES

    now = h.clock()
    start = now - timedelta(days=7)
    lake_settings = LakeSettings(url=str(tmp_path / "lake"))
    sink = ParquetSink(Lake.from_settings(lake_settings), lake_settings)
    carry = _event(60, OpportunityKind.FUNDING_RATE, 99.0, now)  # long binance, short okx, $10,000 a leg
    symbol = carry.candidate.symbol
    # inside [now - 7 d, now): binance 21 settlements (8 h apart), okx 42 (4 h apart)
    binance = [start + timedelta(hours=1 + 8 * k) for k in range(21)]
    okx = [start + timedelta(hours=2 + 4 * k) for k in range(42)]
    rows = _funding_snapshots("binance", symbol, 0.0001, binance, 8)
    rows += _funding_snapshots("okx", symbol, 0.0003, okx, 4)
    # outside the window (before it, in the day it reads for announcements), and another
    # exchange: never in the figure
    rows += _funding_snapshots("okx", symbol, 0.05, [start - timedelta(hours=2)], 4)
    rows += _funding_snapshots("bybit", symbol, 0.05, okx, 4)
    sink.add("funding_rates", pa.Table.from_pylist(rows, schema=FUNDING_RATES))
    # a spot spread C2/USDT binance -> okx: one quote a second on each leg for 100 s, an hour
    # ago; okx's bid is wide for 10 s and then 5 s
    spot = _event(2, OpportunityKind.SPOT_SPREAD, 50.0, now)
    t0 = now - timedelta(hours=1)
    quotes = []
    for i in range(100):
        at = t0 + timedelta(seconds=i)
        wide = 10 <= i < 20 or 50 <= i < 55
        for ex, bid, ask in (("binance", 99.9, 100.0), ("okx", 100.5 if wide else 100.0, 100.6)):
            quotes.append({"ts": at, "recv_ts": at, "exchange": ex, "symbol": spot.candidate.symbol,
                           "market_type": "spot", "bid": bid, "ask": ask})  # fmt: skip
    old = now - timedelta(days=9)  # before the window: its partition is never read
    quotes.append({"ts": old, "recv_ts": old, "exchange": "okx", "symbol": spot.candidate.symbol,
                   "market_type": "spot", "bid": 200.0, "ask": 200.1})  # fmt: skip
    sink.add("quotes", pa.Table.from_pylist(quotes, schema=QUOTES))
    sink.flush()
    h.deps.settings.lake.url = lake_settings.url
    trace = tmp_path / "reads.trace"
    h.deps.settings.lake.trace_path = str(trace)
    h.deps.settings.fees = {"binance": {"swap_taker": 0.0005}, "okx": {"swap_taker": 0.0004}}
    technical = _event(50, OpportunityKind.TECHNICAL, 0.0, now)
    await h.deps.opportunities.apply([carry, spot, technical])
    await h.start(ALICE)
    await h.deps.users.set_tier(ALICE, Tier.PREMIUM)
    await h.deps.users.update_preferences(ALICE, min_net_bps=Decimal(5))

    await h.send(ALICE, "/opportunities")
    page = (await h.last(ALICE))["message"]
    await h.press(ALICE, page, OppDetail(uid=ALICE, id=carry.opportunity_id).pack())
    card = (await h.last(ALICE))["message"]
    data = button(card, "bt:")
    assert OppBacktest.unpack(data) == OppBacktest(uid=ALICE, id=carry.opportunity_id, page=0)
    assert len(data.encode()) <= 64
    used = await h.deps.quotas.used(ALICE, h.clock())
    await h.press(ALICE, card, data)
    answer = (await h.last(ALICE))["text"]
    # by hand: funding 10,000 * (42 * 0.0003 - 21 * 0.0001) = 105.00 received;
    # fees 10,000 * 2 * (0.0005 + 0.0004) = 18.00 (open and close both legs); net 87.00
    assert "Backtest · C60/USDT" in answer and "last 7 d" in answer
    assert "Settlements: 21 binance · 42 okx" in answer
    assert "Funding earned: +$105.00" in answer and "-$18.00" in answer
    assert "Net after fees: +$87.00" in answer
    assert await h.deps.quotas.used(ALICE, h.clock()) == used  # no quota for a backtest
    assert h.events.rows("audit")[-1]["action"] == "cb:bt"
    assert h.events.rows("audit")[-1]["detail"] == f"id={carry.opportunity_id}"

    await h.press(ALICE, page, OppDetail(uid=ALICE, id=spot.opportunity_id).pack())
    await h.press(ALICE, card, OppBacktest(uid=ALICE, id=spot.opportunity_id).pack())
    answer = (await h.last(ALICE))["text"]
    net = (100.5 - 100.0) / 100.25 * 1e4 - 2 * 0.001 * 1e4  # default spot taker fees: 20 bps
    assert "Backtest · C2/USDT" in answer and "above +5.0 bps" in answer
    assert "Open 2 times, 15s in all (15.2% of the quoted time)" in answer  # 15 s of 99 s
    assert "Median episode: 7s · longest: 10s" in answer
    assert f"Median net edge when open: {net:+.1f} bps" in answer
    # only the window's hour partitions of quotes were read (the one 9 days ago was not)
    read = [
        line.split("\t")[2] for line in trace.read_text().splitlines() if line.startswith("read\tquotes\t")
    ]
    hours = []
    for path in read:
        year, month, day, hour = (int(v) for v in re.findall(r"(?:year|month|day|hour)=(\d+)", path))
        hours.append(datetime(year, month, day, hour, tzinfo=UTC))
    assert hours and all(start - timedelta(hours=1) < at <= now for at in hours)
    # above the user's (higher) spot minimum it never opened
    await h.deps.users.update_preferences(ALICE, min_net_bps=Decimal(40))
    await h.press(ALICE, card, OppBacktest(uid=ALICE, id=spot.opportunity_id).pack())
    answer = (await h.last(ALICE))["text"]
    assert "above +40.0 bps" in answer and "Never open above it in the window" in answer

    # a technical signal has no backtest; a forged press is refused
    await h.press(ALICE, page, OppDetail(uid=ALICE, id=technical.opportunity_id).pack())
    assert not [d for d in buttons(await h.last(ALICE)) if d.startswith("bt:")]
    await h.press(ALICE, card, OppBacktest(uid=ALICE, id=technical.opportunity_id).pack())
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_AVAILABLE
    await h.start(BOB)
    await h.press(BOB, card, OppBacktest(uid=ALICE, id=carry.opportunity_id).pack())
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_YOURS

    # an unreadable lake: a short message, no crash
    h.deps.settings.lake.url = "ftp://not-a-lake"
    await h.press(ALICE, card, OppBacktest(uid=ALICE, id=carry.opportunity_id).pack())
    assert (await h.last(ALICE))["text"] == texts.BACKTEST_FAILED
    assert h.events.rows("audit")[-1]["ok"] is False


async def test_the_symbol_picker_offers_the_configured_symbols_and_the_filter_applies(h: Harness) -> None:
    h.deps.settings.market.symbols = ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"]
    now = h.clock()
    await h.deps.opportunities.apply([_event(1, OpportunityKind.SPOT_SPREAD, 30.0, now)])  # C1/USDT
    await h.start(ALICE)
    await h.send(ALICE, "/settings")
    main = (await h.last(ALICE))["message"]
    await h.press(ALICE, main, SetPref(uid=ALICE, field="menu", value="sym").pack())
    picker = (await h.last(ALICE))["message"]
    assert "Symbols" in picker["text"]
    labels = [b["text"] for row in picker["reply_markup"]["inline_keyboard"] for b in row]
    assert {"▫️ BTC/USDT", "▫️ ETH/USDT", "▫️ BTC/USDT:USDT", "✅ all"} <= set(labels), labels
    await h.press(ALICE, picker, SetPref(uid=ALICE, field="sym", value="BTC/USDT!USDT").pack())
    alice = await h.deps.users.get(ALICE)
    assert alice is not None and alice.preferences.symbols == {"BTC/USDT:USDT"}
    picker = (await h.last(ALICE))["message"]
    labels = [b["text"] for row in picker["reply_markup"]["inline_keyboard"] for b in row]
    assert "✅ BTC/USDT:USDT" in labels and "▫️ all" in labels
    # the filter decides: an opportunity of another symbol is not for her
    await h.send(ADMIN, "/start")
    await h.send(ADMIN, f"/admin why {ALICE} opp-spot_spread-01")
    assert "preferences.symbol" in (await h.last(ADMIN))["text"]
    # a forged symbol is refused; "all" clears
    await h.press(ALICE, picker, SetPref(uid=ALICE, field="sym", value="DOGE/USDT").pack())
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_AVAILABLE
    await h.press(ALICE, picker, SetPref(uid=ALICE, field="sym", value="*").pack())
    alice = await h.deps.users.get(ALICE)
    assert alice is not None and alice.preferences.symbols == set()
    # with top:N the picker offers what is open now (the list is found at run time)
    h.deps.settings.market.symbols = ["top:10"]
    await h.press(ALICE, main, SetPref(uid=ALICE, field="menu", value="sym").pack())
    picker = (await h.last(ALICE))["message"]
    labels = [b["text"] for row in picker["reply_markup"]["inline_keyboard"] for b in row]
    assert "▫️ C1/USDT" in labels and "▫️ BTC/USDT" not in labels, labels


async def test_a_blacklist_and_a_minimum_size_decide_through_the_eligibility_layer(h: Harness) -> None:
    now = h.clock()
    via_bybit = _event(1, OpportunityKind.SPOT_SPREAD, 30.0, now, buy="bybit", sell="okx")  # 8,000 USD
    two = _event(2, OpportunityKind.SPOT_SPREAD, 30.0, now)
    doge = dataclasses.replace(two, candidate=dataclasses.replace(two.candidate, symbol="DOGE/USDT"))
    await h.deps.opportunities.apply([via_bybit, doge])
    await h.start(ADMIN)
    await h.start(ALICE)

    async def why(oid: str) -> str:
        await h.send(ADMIN, f"/admin why {ALICE} {oid}")
        return str((await h.last(ADMIN))["text"])

    assert "eligible" in await why(via_bybit.opportunity_id)
    await h.send(ALICE, "/settings block Bybit")
    await h.send(ALICE, "/settings block doge/usdt")
    assert "bybit, DOGE/USDT" in (await h.last(ALICE))["text"]
    assert "preferences.blocked" in await why(via_bybit.opportunity_id)
    assert "preferences.blocked" in await why(doge.opportunity_id)
    await h.send(ALICE, "/settings block nonsense")
    assert "Block an exchange" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/settings unblock bybit")
    assert "eligible" in await why(via_bybit.opportunity_id)
    # an executable size of 8,000 USD is under a 20,000 minimum, over a 5,000 one
    await h.send(ALICE, "/settings minsize 20,000")
    assert "$20,000" in (await h.last(ALICE))["text"]
    assert "preferences.min_size" in await why(via_bybit.opportunity_id)
    await h.send(ALICE, "/settings minsize $5000")
    assert "eligible" in await why(via_bybit.opportunity_id)
    await h.send(ALICE, "/settings minsize -3")
    assert "minsize 5000" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/settings")
    screen = (await h.last(ALICE))["text"]
    assert "Blocked: DOGE/USDT" in screen and "size ≥ $5,000" in screen
    alice = await h.deps.users.get(ALICE)
    assert alice is not None and alice.preferences.blocked_symbols == {"DOGE/USDT"}


async def test_min_profit_is_asked_and_stored_per_kind(h: Harness) -> None:
    """Onboarding and /settings ask a minimum for each kind the tier has, each in its unit."""
    await h.send(BOB, "/start")
    await h.deps.users.set_tier(BOB, Tier.PREMIUM)
    screen = (await h.last(BOB))["message"]
    for _ in range(2):  # kinds → exchanges → min profit
        await h.press(BOB, screen, button(screen, "ob:"))
        screen = (await h.last(BOB))["message"]
    assert "3/7" in screen["text"] and "per kind" in screen["text"]
    assert "in bps" in screen["text"] and "% APR" in screen["text"] and "confidence" in screen["text"]
    fields = {d.split(":")[2] for d in buttons(screen) if d.startswith("sp:")}
    assert fields == {"minp", "mapr", "mconf"}
    await h.press(BOB, screen, SetPref(uid=BOB, field="mapr", value="20", onb=1).pack())
    screen = (await h.last(BOB))["message"]
    assert "3/7" in screen["text"] and "funding net ≥ 20% APR" in screen["text"]
    labels = [b["text"] for row in screen["reply_markup"]["inline_keyboard"] for b in row]
    assert "• funding 20% APR" in labels and "• spread 0 bps" in labels

    # a Free user is asked only about the kind the tier has
    await h.start(ALICE)
    await h.send(ALICE, "/settings")
    main = (await h.last(ALICE))["message"]
    await h.press(ALICE, main, SetPref(uid=ALICE, field="menu", value="minp").pack())
    free = (await h.last(ALICE))["message"]
    assert {d.split(":")[2] for d in buttons(free) if d.startswith("sp:")} == {"minp", "menu"}

    await h.send(BOB, "/settings")
    msg = (await h.last(BOB))["message"]
    await h.press(BOB, msg, SetPref(uid=BOB, field="menu", value="minp").pack())
    menu = (await h.last(BOB))["message"]
    assert "Minimum profit, per kind" in menu["text"]
    await h.press(BOB, menu, SetPref(uid=BOB, field="minp", value="10").pack())
    await h.press(BOB, menu, SetPref(uid=BOB, field="mconf", value="0.8").pack())
    await h.press(BOB, menu, SetPref(uid=BOB, field="mapr", value="7").pack())  # not offered
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_AVAILABLE
    await h.press(BOB, menu, SetPref(uid=BOB, field="mconf", value="2").pack())
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_AVAILABLE
    user = await h.deps.users.get(BOB)
    assert user is not None
    p = user.preferences
    assert (p.min_net_bps, p.min_net_apr_pct, p.min_confidence) == (Decimal(10), Decimal(20), Decimal("0.8"))
    await h.send(BOB, "/settings")
    shown = (await h.last(BOB))["text"]
    assert "spread net ≥ 10 bps · funding net ≥ 20% APR · signal confidence ≥ 0.80" in shown


async def test_an_old_min_net_bps_record_is_the_spot_minimum(h: Harness) -> None:
    """A preferences record of the previous release (one ``min_net_bps``) reads through the
    store and the bot as the spot minimum; a funding carry with a good APR is not hidden by it."""
    now = h.clock()
    await h.start(ALICE)
    await h.deps.users.set_tier(ALICE, Tier.PREMIUM)
    key = h.deps.users._key(ALICE)
    await h.deps.client.hdel(key, "pref.min_net_apr_pct", "pref.min_confidence")  # type: ignore[union-attr]
    await h.deps.client.hset(key, "pref.min_net_bps", '"12"')  # type: ignore[union-attr]
    low_spot = _event(1, OpportunityKind.SPOT_SPREAD, 10.0, now)
    spot = _event(2, OpportunityKind.SPOT_SPREAD, 15.0, now)
    carry = _event(3, OpportunityKind.FUNDING_RATE, 5.0, now)  # 5 bps over 168 h
    carry = LifecycleEvent(
        carry.event,
        carry.opportunity_id,
        dataclasses.replace(carry.candidate, details={"net_apr": 0.30, "horizon_hours": 168.0}),
        carry.at,
        carry.opened_at,
    )
    await h.deps.opportunities.apply([low_spot, spot, carry])
    await h.send(ALICE, "/opportunities")
    page = (await h.last(ALICE))["text"]
    assert "C2/USDT" in page and "C3/USDT" in page and "C1/USDT" not in page
    assert "+30.0% APR" in page  # funding listed by its APR, not its 168 h total
    await h.send(ALICE, "/settings")
    assert "spread net ≥ 12 bps · funding any net APR" in (await h.last(ALICE))["text"]


async def test_any_iana_time_zone_can_be_typed_with_suggestions(h: Harness) -> None:
    await h.start(ALICE)
    await h.send(ALICE, "/settings tz Pariss")
    reply = (await h.last(ALICE))["text"]
    assert "Pariss" in reply and "Europe/Paris" in reply  # did you mean
    alice = await h.deps.users.get(ALICE)
    assert alice is not None and alice.preferences.timezone == "UTC"
    await h.send(ALICE, "/settings tz buenos aires")  # two zones end with that city: suggested
    assert "America/Buenos_Aires" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/settings timezone asia/kathmandu")  # not among the buttons
    assert "Asia/Kathmandu" in (await h.last(ALICE))["text"]
    alice = await h.deps.users.get(ALICE)
    assert alice is not None and alice.preferences.timezone == "Asia/Kathmandu"
    assert h.events.rows("audit")[-1]["detail"] == "tz=Asia/Kathmandu"
    await h.send(ALICE, "/settings tz")
    assert "/settings tz Area/City" in (await h.last(ALICE))["text"]
    # the settings screen and its time zone menu say so
    await h.send(ALICE, "/settings")
    assert "Asia/Kathmandu" in (await h.last(ALICE))["text"]


async def test_forged_presses_change_nothing(h: Harness) -> None:
    await h.start(ALICE)
    await h.start(BOB)
    await h.send(ALICE, "/settings")
    alice_msg = (await h.last(ALICE))["message"]
    # Bob replays Alice's button (her id in the data): refused, nobody changes
    await h.press(BOB, alice_msg, SetPref(uid=ALICE, field="push", value="0").pack())
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_YOURS
    alice = await h.deps.users.get(ALICE)
    bob = await h.deps.users.get(BOB)
    assert alice is not None and alice.preferences.pushes_on
    assert bob is not None and bob.preferences.pushes_on
    # a free user forging a details press of a technical signal: not available
    now = h.clock()
    await h.deps.opportunities.apply([_event(1, OpportunityKind.TECHNICAL, 0.0, now)])
    await h.press(BOB, alice_msg, OppDetail(uid=BOB, id="opp-technical-01").pack())
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_AVAILABLE
    await h.press(BOB, alice_msg, OppPage(uid=ALICE, page=1).pack())
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_YOURS
    # garbage data → answered as a stale button
    await h.press(BOB, alice_msg, "sp:x:y")
    assert (await h.callback_answers())[-1]["text"] == texts.UNKNOWN_BUTTON
    assert await h.deps.quotas.used(BOB, now) == (0, 0)


async def test_apikeys_add_deletes_message_and_keeps_only_the_masked_key(
    h: Harness, exchanges: Exchanges
) -> None:
    await h.start(ALICE)
    await h.send(ALICE, "/apikeys")
    assert "Basic" in (await h.last(ALICE))["text"]
    await h.deps.users.set_tier(ALICE, Tier.BASIC)
    key, secret = "AKIAREADONLY0123456789", "s3cr3t-VALUE-never-shown"
    update = h.user_message(ALICE, f"/apikeys add Binance {key} {secret}")
    await h.feed(update)
    deleted = await h.requests("deleteMessage")
    assert [int(r["params"]["message_id"]) for r in deleted] == [update["message"]["message_id"]]
    reply = (await h.last(ALICE))["text"]
    assert "AKIA…6789" in reply and secret not in reply and key not in reply
    assert "Checked with binance: this key is read-only" in reply  # asked of the exchange, with ccxt
    raw = await h.deps.client.hgetall(f"{h.deps.users.p}user:{ALICE}")  # type: ignore[union-attr]
    blob = b" ".join(list(raw.keys()) + list(raw.values()))
    assert secret.encode() not in blob and key.encode() not in blob
    user = await h.deps.users.get(ALICE)
    assert user is not None
    stored = user.api_keys["binance"]
    assert stored.secret_ciphertext is None and stored.key_masked == "AKIA…6789"  # nothing uses the secret
    assert "secret, so it was not stored" in reply
    assert all(secret not in r["detail"] for r in h.events.rows("audit"))
    await h.send(ALICE, "/apikeys add kraken abcdefghijkl mnopqrstuvwx")
    assert "isn't available" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/apikeys")
    listing = (await h.last(ALICE))["message"]
    assert "AKIA…6789" in listing["text"]
    await h.press(ALICE, listing, button(listing, "kr:"))
    user = await h.deps.users.get(ALICE)
    assert user is not None and not user.api_keys
    # in a group: the message is deleted all the same, and refused
    group = -1_000_000_000_777
    h.sb.sandbox.add_group("G", chat_id=group, member_ids=[ALICE])
    g_update = h.user_message(ALICE, f"/apikeys add binance {key} {secret}", chat_id=group)
    await h.feed(g_update)
    assert (
        int((await h.requests("deleteMessage"))[-1]["params"]["message_id"])
        == g_update["message"]["message_id"]
    )
    assert texts.PRIVATE_ONLY.split()[0] in (await h.last(group))["text"]


async def test_an_apikeys_add_is_deleted_even_when_a_gate_refuses_it(h: Harness) -> None:
    key, secret = "AKIAREADONLY0123456789", "s3cr3t-VALUE-never-shown"

    async def deleted_ids() -> list[int]:
        return [int(r["params"]["message_id"]) for r in await h.requests("deleteMessage")]

    # no session yet: the session gate refuses, the key leaves the chat first
    first = h.user_message(BOB, f"/apikeys add binance {key} {secret}")
    await h.feed(first)
    assert await deleted_ids() == [first["message"]["message_id"]]
    assert "session" in (await h.last(BOB))["text"].lower()
    # throttled: a user over the bucket gets silence, and the key is deleted all the same
    await h.start(BOB)
    h.throttle_time[1] = 0.0  # a frozen clock: the bucket does not refill
    for i in range(12):
        await h.send(BOB, f"/status {i}")
    flooded = h.user_message(BOB, f"/apikeys add okx {key} {secret} pass")
    await h.feed(flooded)
    assert (await deleted_ids())[-1] == flooded["message"]["message_id"]
    user = await h.deps.users.get(BOB)
    assert user is not None and not user.api_keys  # refused: nothing stored
    # another bot's command is not ours to delete; plain text mentioning it is not a command
    h.throttle_time[1] = 1.0
    await h.feed(h.user_message(BOB, f"/apikeys@other_bot add okx {key} {secret}"))
    await h.feed(h.user_message(BOB, "how do I use /apikeys add?"))
    assert len(await deleted_ids()) == 2


async def test_apikeys_add_refuses_keys_that_can_trade_or_withdraw_and_keys_it_cannot_check(
    h: Harness, exchanges: Exchanges
) -> None:
    """Each key is asked of the emulated exchange through real ccxt (signed requests): only a
    read-only one is stored; every message holding a key leaves the chat either way."""
    await h.start(ALICE)
    await h.deps.users.set_tier(ALICE, Tier.BASIC)

    async def add(text: str) -> str:
        update = h.user_message(ALICE, text)
        await h.feed(update)
        deleted = [int(r["params"]["message_id"]) for r in await h.requests("deleteMessage")]
        assert deleted[-1] == update["message"]["message_id"]  # deleted before anything else
        return str((await h.last(ALICE))["text"])

    async def stored() -> dict[str, Any]:
        user = await h.deps.users.get(ALICE)
        assert user is not None
        return dict(user.api_keys)

    # a bybit key that can trade: refused, naming what to turn off
    reply = await add("/apikeys add bybit trade-K3Y-0123456789 s3cr3t-bybit")
    assert "Not added" in reply and "can do more than read" in reply
    assert "Spot: SpotTrade" in reply and "ContractTrade: Order" in reply
    assert "trade-K3Y" not in reply and "s3cr3t" not in reply
    assert await stored() == {}
    # an okx key that can withdraw (signed with the passphrase): refused, withdrawals named
    reply = await add("/apikeys add okx withdraw-K3Y-0123456789 s3cr3t-okx passphrase-1")
    assert "Not added" in reply and "• Withdraw" in reply and "• Trade" in reply
    # a binance key that can move funds between wallets: not read-only either
    reply = await add("/apikeys add binance transfer-K3Y-0123456789 s3cr3t-binance")
    assert "Permits Internal Transfer" in reply and await stored() == {}
    # a key the exchange knows, signed with the wrong secret: refused by the exchange
    exchanges.add_key("okx", "READONLY-OKX-0123456789", "right-secret", passphrase="pp")
    reply = await add("/apikeys add okx READONLY-OKX-0123456789 wrong-secret pp")
    assert "okx refused this key" in reply and await stored() == {}
    # the same key, rightly signed: read-only, stored (masked, no secret)
    reply = await add("/apikeys add okx READONLY-OKX-0123456789 right-secret pp")
    assert "Checked with okx: this key is read-only" in reply
    keys = await stored()
    assert list(keys) == ["okx"] and keys["okx"].key_masked == "READ…6789"
    assert keys["okx"].secret_ciphertext is None
    # no secret: it is needed for the check
    reply = await add("/apikeys add bybit READONLY-BYBIT-0123456789")
    assert "&lt;secret&gt;" not in reply and "<secret>" in reply
    # the exchange does not answer: not verified, so not added (and the reply says so)
    exchanges.fault("binance", "maintenance", duration_s=30)
    reply = await add("/apikeys add binance READONLY-BIN-0123456789 s3cr3t-binance")
    assert "could not verify" in reply and "binance did not answer" in reply
    assert list(await stored()) == ["okx"]
    audit = [r for r in h.events.rows("audit") if r["action"] == "/apikeys"]
    assert [r["ok"] for r in audit] == [False, False, False, False, True, False, False]
    assert all("K3Y" not in r["detail"] and "s3cr3t" not in r["detail"] for r in audit)


async def test_forget_leaves_no_key_of_that_user_in_redis(h: Harness, exchanges: Exchanges) -> None:
    from state.keys import COOLDOWN_PREFIX, PENDING_PREFIX

    client, p = h.deps.users.client, f"{h.deps.users.prefix}:"
    await h.start(ALICE)
    await h.start(BOB)
    await h.deps.users.set_tier(ALICE, Tier.BASIC)
    await h.send(ALICE, "/apikeys add binance AKIAREADONLY0123456789 s3cr3t-VALUE-never-shown")
    await h.send(ALICE, "/settings tz Europe/Paris")
    now = h.clock()
    await h.deps.opportunities.apply([_event(1, OpportunityKind.SPOT_SPREAD, 30.0, now)])
    for uid in (ALICE, BOB):  # quotas, a cooldown, an exactly-once flag, eligibility marks
        await h.send(uid, "/opportunities")
        user = await h.deps.users.get(uid)
        assert user is not None
        await h.deps.quotas.try_consume(uid, h.deps.policy_for(user), now)
        await h.deps.quotas.try_cooldown(uid, "spot:BTC/USDT:binance:okx", 600)
        await h.deps.quotas.update_dedup(uid, "opp-1")
        await client.hset(f"{p}{COOLDOWN_PREFIX}spot:BTC/USDT:binance:okx", str(uid), 1)
        await client.hset(f"{p}{PENDING_PREFIX}spot:BTC/USDT:binance:okx", str(uid), 1)

    async def keys_of(uid: int) -> list[str]:
        names = [k.decode() async for k in client.scan_iter(match=f"{p}*")]
        mine = [k for k in names if str(uid) in k.split(":")]
        marks = (f"{p}{COOLDOWN_PREFIX}", f"{p}{PENDING_PREFIX}")
        for k in names:
            if k.startswith(marks) and await client.hexists(k, str(uid)):
                mine.append(f"{k} [field]")
        if await client.sismember(f"{p}users", uid):
            mine.append("users [member]")
        if await client.zscore(f"{p}sessions:by_expiry", uid) is not None:
            mine.append("sessions:by_expiry [member]")
        return mine

    assert len(await keys_of(ALICE)) >= 8
    await h.send(ALICE, "/forget")
    ask = (await h.last(ALICE))["message"]
    assert "Delete your data?" in ask["text"]
    await h.press(ALICE, ask, Forget(uid=ALICE, confirm=False).pack())
    assert "Nothing was deleted" in (await h.last(ALICE))["text"] and len(await keys_of(ALICE)) >= 8
    await h.press(BOB, ask, Forget(uid=ALICE, confirm=True).pack())  # someone else's button
    assert (await h.callback_answers())[-1]["text"] == texts.NOT_YOURS and len(await keys_of(ALICE)) >= 8

    await h.send(ALICE, "/forget")
    ask = (await h.last(ALICE))["message"]
    await h.press(ALICE, ask, Forget(uid=ALICE, confirm=True).pack())
    assert "I hold nothing about you" in (await h.last(ALICE))["text"]
    assert await keys_of(ALICE) == []
    assert len(await keys_of(BOB)) >= 6  # everyone else's data stays
    assert h.events.rows("audit")[-1]["action"] == "forget"
    lake_rows = [str(r) for name in ("audit", "session_events") for r in h.events.rows(name)]
    assert lake_rows and not [r for r in lake_rows if "AKIA" in r or "s3cr3t" in r or "Alice" in r]
    assert h.events.rows("session_events")[-1]["reason"] == "forgotten"
    # no session any more; /start begins as a new user
    await h.send(ALICE, "/status")
    assert "need an active session" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/start")
    alice = await h.deps.users.get(ALICE)
    assert alice is not None and alice.tier is Tier.FREE and not alice.api_keys
    assert alice.preferences.timezone == "UTC"


async def test_admin_refused_stats_tier_broadcast_split(h: Harness, tmp_path: Path) -> None:
    await h.start(ALICE)
    await h.send(ALICE, "/admin")
    assert (await h.last(ALICE))["text"] == texts.ADMIN_ONLY
    assert h.events.rows("audit")[-1]["detail"] == "not_superadmin"
    await h.start(ADMIN)
    await h.start(BOB)
    h.deps.settings.lake.url = "ftp://not-a-lake"  # unreadable: the deliveries figures say n/a
    await h.send(ADMIN, "/admin")
    stats = (await h.last(ADMIN))["text"]
    assert "Users: 3" in stats and "Active sessions: 3" in stats and "Deliveries today: n/a" in stats
    # today's deliveries from the lake (pipeline.analytics)
    lake_settings = LakeSettings(url=str(tmp_path / "lake"))
    sink = ParquetSink(Lake.from_settings(lake_settings), lake_settings)
    now = h.clock()
    sink.add(
        "deliveries",
        deliveries_table(
            [
                {"queued_at": now, "opportunity_id": "o1", "chat_id": ALICE, "audience": "user", **row}
                for row in (
                    {"status": "sent", "kind": "spot_spread", "latency_ms": 120.0},
                    {"status": "sent", "kind": "spot_spread", "latency_ms": 80.0},
                    {"status": "skipped", "layer": 2, "reason": "subscription.kind"},
                    {"status": "retry", "reason": "429"},
                )
            ]
        ),
    )
    sink.add("engagement", engagement_table([{"ts": now, "user_id": ALICE, "action": "push_button"}]))
    sink.flush()
    h.deps.settings.lake.url = lake_settings.url
    await h.send(ADMIN, "/admin")
    stats = (await h.last(ADMIN))["text"]
    assert "Deliveries today: 3 (sent 2 · skipped 1)" in stats and "429s today: 1" in stats
    assert "Engagement today: 50.0%" in stats and "Delivery p99 today: 120 ms" in stats
    await h.send(ADMIN, f"/admin tier {BOB} premium")
    bob = await h.deps.users.get(BOB)
    assert bob is not None and bob.tier is Tier.PREMIUM
    assert "Premium" in (await h.last(BOB))["text"]
    await h.send(ADMIN, "/admin tier 42 premium")
    assert "No user 42" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin tier {BOB} platinum")
    assert "Not a tier you can set" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin tier {BOB} superadmin")  # only ARBFLOW_SUPERADMIN_IDS makes one
    assert "SuperAdmins come from ARBFLOW_SUPERADMIN_IDS" in (await h.last(ADMIN))["text"]
    bob = await h.deps.users.get(BOB)
    assert bob is not None and bob.tier is Tier.PREMIUM
    long_text = "\n".join(f"line {i} <b>&amp; “not html” {'x' * 40}" for i in range(120))
    await h.send(ADMIN, f"/admin broadcast {long_text}")
    assert "sent to 3 chats (0 failed)" in (await h.last(ADMIN))["text"]
    parts = [t for t in await h.texts(BOB) if "line" in t]
    assert len(parts) >= 2 and all(len(p) <= 4096 for p in parts)
    assert "<b>&amp;" in "".join(parts)  # shown literally: escaped
    # /admin outside a private chat
    group = -1_000_000_000_888
    await h.send(ADMIN, "/admin", chat_id=group)
    assert "private chat" in (await h.last(group))["text"]


async def test_admin_why_names_the_deciding_layer(h: Harness) -> None:
    now = h.clock()
    funding = _event(1, OpportunityKind.FUNDING_RATE, 30.0, now)
    await h.deps.opportunities.apply([funding])
    await h.start(ADMIN)
    await h.start(ALICE)  # Free: spot spreads only
    await h.send(ADMIN, f"/admin why {ALICE} {funding.opportunity_id}")
    text = (await h.last(ADMIN))["text"]
    assert "2 · subscription" in text and "subscription.kind" in text
    await h.deps.users.set_tier(ALICE, Tier.PREMIUM)
    await h.send(ADMIN, f"/admin why {ALICE} {funding.opportunity_id}")
    assert "eligible" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin why {BOB} {funding.opportunity_id}")  # never started
    assert "1 · session" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin why {ALICE} no-such-opportunity")
    assert "No open opportunity" in (await h.last(ADMIN))["text"]
    assert h.events.rows("audit")[-1]["detail"] == "no_opportunity"
    await h.send(ADMIN, "/admin why alice")
    assert "/admin why" in (await h.last(ADMIN))["text"]


async def test_regions_from_the_client_the_user_and_admins_drive_region_blocks(h: Harness) -> None:
    now = h.clock()
    funding = _event(1, OpportunityKind.FUNDING_RATE, 30.0, now)
    await h.deps.opportunities.apply([funding])
    h.sb.sandbox.add_user(ALICE, "Alice", language_code="pt-br")  # the client names a country
    h.sb.sandbox.add_user(BOB, "Bob", language_code="en")  # a bare language names none
    await h.start(ADMIN)
    await h.start(ALICE)
    await h.start(BOB)
    alice, bob = await h.deps.users.get(ALICE), await h.deps.users.get(BOB)
    assert alice is not None and alice.region == "BR" and not alice.region_by_admin
    assert bob is not None and bob.region is None
    await h.send(BOB, "/settings region")
    assert "not set" in (await h.last(BOB))["text"]
    await h.send(BOB, "/settings region EU")
    assert "not a country code" in (await h.last(BOB))["text"]
    await h.send(BOB, "/settings region ir")
    assert "IR" in (await h.last(BOB))["text"]
    await h.deps.users.set_tier(BOB, Tier.PREMIUM)
    h.deps.settings.distribution.region_blocks = ["IR"]
    await h.send(ADMIN, f"/admin why {BOB} {funding.opportunity_id}")
    assert "context.region" in (await h.last(ADMIN))["text"]
    await h.send(BOB, "/settings region none")
    await h.send(ADMIN, f"/admin why {BOB} {funding.opportunity_id}")
    assert "eligible" in (await h.last(ADMIN))["text"]
    # an admin sets it: the rule applies and the user cannot change it
    await h.send(ADMIN, f"/admin region {BOB} IR")
    assert "set by an admin" in (await h.last(ADMIN))["text"]
    await h.send(BOB, "/settings region DE")
    assert "set by an admin" in (await h.last(BOB))["text"]
    assert h.events.rows("audit")[-1]["detail"] == "region_by_admin"
    await h.send(ADMIN, f"/admin why {BOB} {funding.opportunity_id}")
    assert "context.region" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin region {BOB} none")
    bob = await h.deps.users.get(BOB)
    assert bob is not None and bob.region is None and not bob.region_by_admin
    await h.send(ADMIN, "/admin region 42 DE")
    assert "No user 42" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin region {BOB} Germany")
    assert "/admin region" in (await h.last(ADMIN))["text"]


async def test_admin_sets_beta_flags_and_beta_opportunities_follow_them(h: Harness) -> None:
    now = h.clock()
    plain = _event(3, OpportunityKind.SPOT_SPREAD, 30.0, now)
    beta = dataclasses.replace(
        plain, candidate=dataclasses.replace(plain.candidate, details={"beta_flag": "ta"})
    )
    await h.deps.opportunities.apply([beta])
    await h.start(ADMIN)
    await h.start(ALICE)
    await h.send(ADMIN, f"/admin why {ALICE} {beta.opportunity_id}")
    assert "subscription.beta" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin beta {ALICE} ta")
    assert "beta flags ta" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin why {ALICE} {beta.opportunity_id}")
    assert "eligible" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, f"/admin beta {ALICE} ta off")
    alice = await h.deps.users.get(ALICE)
    assert alice is not None and alice.beta_flags == set()
    await h.send(ADMIN, f"/admin beta {ALICE} 'bad flag'")
    assert "/admin beta" in (await h.last(ADMIN))["text"]
    await h.send(ADMIN, "/admin beta 42 ta")
    assert "No user 42" in (await h.last(ADMIN))["text"]


async def test_admin_replay_without_a_distributor_says_so(h: Harness) -> None:
    from state.keys import DEAD_LETTERS_KEY

    client = h.deps.users.client
    await client.delete(DEAD_LETTERS_KEY)
    await client.lpush(DEAD_LETTERS_KEY, "{}")
    await h.start(ADMIN)
    await h.send(ADMIN, "/admin replay 5")
    assert "No distributor is running: 1 dead letters" in (await h.last(ADMIN))["text"]
    replayed: list[int] = []

    async def replayer(limit: int) -> int:
        replayed.append(limit)
        await client.rpop(DEAD_LETTERS_KEY)
        return 1

    h.deps.replayer = replayer
    await h.send(ADMIN, "/admin replay")
    assert "Replayed 1 dead letters" in (await h.last(ADMIN))["text"] and replayed == [1000]
    assert h.events.rows("audit")[-1]["detail"] == "replay 1 left=0"


async def test_throttle_one_slow_down_and_others_unaffected(h: Harness) -> None:
    h.throttle_time[1] = 0.0  # a frozen clock: 30 updates at once
    for _ in range(30):
        await h.send(ALICE, "/help")
    sent = await h.texts(ALICE)
    assert sent.count(texts.SLOW_DOWN) == 1
    assert sum("Your tier" in t for t in sent) == 10
    await h.send(BOB, "/help")
    assert "Your tier" in (await h.last(BOB))["text"]
    h.throttle_time[0] += 3.0  # calm again
    await h.send(ALICE, "/help")
    assert "Your tier" in (await h.last(ALICE))["text"]


async def test_blocked_bot_ends_session(h: Harness) -> None:
    await h.start(ALICE)
    update = fixture("teloxide_my_chat_member_private_bot_blocked_kicked_anonymized.json")
    member = update["my_chat_member"]
    member["chat"]["id"] = member["from"]["id"] = ALICE
    await h.feed(update)
    session = await h.deps.sessions.get(ALICE)
    assert session is not None and session.end_reason is EndReason.BLOCKED
    assert h.events.rows("session_events")[-1]["event"] == "blocked"
    assert h.events.rows("audit")[-1]["action"] == "member:blocked"


async def test_group_registration_and_admin_only_settings(h: Harness) -> None:
    group = -1_001_293_752_024
    h.sb.sandbox.add_group("CryptoInside Chat", chat_id=group, admin_ids=[ALICE], member_ids=[BOB])
    update = fixture("nutgram_my_chat_member_SYNTHETIC.json")
    member = update["my_chat_member"]
    member["chat"] = {"id": group, "title": "CryptoInside <Chat>", "type": "supergroup"}
    member["from"] = {"id": ALICE, "is_bot": False, "first_name": "Alice"}
    bot_user = {"id": h.bot.id, "is_bot": True, "first_name": "bot", "username": DEFAULT_USERNAME}
    member["old_chat_member"] = {"status": "left", "user": bot_user}
    member["new_chat_member"] = {"status": "member", "user": bot_user}
    await h.feed(update)
    stored = await h.deps.groups.get(group)
    assert stored is not None and stored.active and stored.added_by == ALICE
    assert "CryptoInside <Chat>" in (await h.last(group))["text"]  # escaped, shown literally
    await h.start(ALICE)
    await h.start(BOB)
    # the recorded supergroup command shape, addressed to us
    cmd = fixture("teloxide_supergroup_command_report_bot_command_reply.json")
    cmd["message"]["text"] = f"/settings@{DEFAULT_USERNAME}"
    cmd["message"]["entities"][0]["length"] = len(cmd["message"]["text"])
    cmd["message"]["from"] = {"id": BOB, "is_bot": False, "first_name": "Bob"}
    await h.feed(cmd)
    assert (await h.last(group))["text"] == texts.GROUP_ADMINS_ONLY
    await h.send(ALICE, "/settings", chat_id=group)
    panel = (await h.last(group))["message"]
    assert "Group settings" in panel["text"]
    await h.press(BOB, panel, button(panel, "gs:push"))
    assert (await h.callback_answers())[-1]["text"] == texts.GROUP_ADMINS_ONLY
    await h.press(ALICE, panel, button(panel, "gs:push"))
    await h.press(ALICE, panel, "gs:minp:20")
    stored = await h.deps.groups.get(group)
    assert stored is not None and not stored.pushes_on and stored.min_net_bps == 20
    assert len(await h.requests("getChatMember")) == 5  # every settings command and press
    # removed from the group
    member["old_chat_member"], member["new_chat_member"] = (
        member["new_chat_member"],
        {"status": "left", "user": bot_user},
    )
    await h.feed(update)
    stored = await h.deps.groups.get(group)
    assert stored is not None and not stored.active


async def test_unknown_commands_and_other_bots(h: Harness) -> None:
    other = fixture("nutgram_private_command_with_botusername_at_foo_bot.json")
    uid = other["message"]["from"]["id"]
    await h.feed(other)  # /test@foo_bot: not ours, not even a session prompt
    assert await h.messages(uid) == []
    await h.start(ALICE)
    await h.send(ALICE, "/frobnicate now")
    assert "I don't know /frobnicate" in (await h.last(ALICE))["text"]
    await h.send(ALICE, f"/help@{DEFAULT_USERNAME}")
    assert "Your tier" in (await h.last(ALICE))["text"]
    await h.send(ALICE, "/help@some_other_bot")
    await h.send(ALICE, "hello there")
    assert (await h.last(ALICE))["text"] == texts.NOT_A_COMMAND
    # a group command nobody addressed to us (another bot's /report) is ignored
    report = fixture("teloxide_supergroup_command_report_bot_command_reply.json")
    report["message"]["from"]["id"] = ALICE
    await h.feed(report)
    assert await h.messages(report["message"]["chat"]["id"]) == []


async def test_user_names_are_escaped(h: Harness) -> None:
    update = fixture("nutgram_private_start_no_entities_SYNTHETIC.json")
    update["message"]["from"]["first_name"] = "<b>Eve</b> & co"
    update["message"]["from"]["id"] = update["message"]["chat"]["id"] = 777
    await h.feed(copy.deepcopy(update))
    first = (await h.messages(777))[0]
    assert "<b>Eve</b> & co" in first["text"]  # literal, not bold
