"""Every command and every button in both languages: a user whose Telegram app speaks Russian
gets every text in Russian, an English one in English; the language setting overrides the app.

The walk (real Redis, the Telegram sandbox, a real aiogram ``Bot``, the harness of
``test_bot.py``) sends every command with its sub-commands and good and bad arguments,
then presses every button the bot offered, screen after screen, until none is left. Every
text the sandbox received (messages, edits, button labels, callback answers) is collected.
What a user or the market supplies (numbers, symbols, exchanges, zones, names, commands,
``<code>`` examples, acronyms such as API or RSI) is stripped; what remains of the Russian
walk must be Russian (Cyrillic, no English word), and the English walk must be English.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from bot.app import build_dispatcher
from bot.callbacks import Forget
from bot.deps import NullEventSink, build_deps
from core.models import OpportunityKind, Priority
from core.notifications import Notification
from core.settings import MarketSettings, Settings, TelegramSettings
from notify.client import build_bot
from notify.i18n import LANGUAGES
from notify.notifier import TelegramNotifier
from serve.runtime import EmbeddedRedis
from serve.standins.sandbox import DEFAULT_USERNAME, start_sandbox
from tests.integration.test_bot import Clock, Harness, _event, buttons, fixture

RU, EN, RU_BY_SETTING = 910_001, 910_002, 910_003
EXCHANGES = ["binance", "bybit", "okx"]
GROUPS = {RU: -1_001_000_000_001, EN: -1_001_000_000_002}
PUSH = Notification(
    "opp-spot_spread-01",
    OpportunityKind.SPOT_SPREAD,
    "C1/USDT",
    "binance",
    "okx",
    40.0,
    50.0,
    None,
    10_000.0,
    0.9,
    Priority.HIGH,
    datetime.now(UTC),
    executable_usd=8_000.0,
    buy_vwap=1.0,
    sell_vwap=1.004,
    buy_fee=0.001,
    sell_fee=0.001,
    transfer_network="TRC20",
    transfer_bps=1.0,
)


@pytest.fixture
async def h(tmp_path: Path, redis_server: EmbeddedRedis) -> AsyncIterator[Harness]:
    ticks = itertools.count()
    sb = await start_sandbox(port=0, clock=lambda: next(ticks) * 100.0)
    clock = Clock()
    settings = Settings(
        data_dir=tmp_path / "var",
        secret_key=Fernet.generate_key().decode(),
        superadmin_ids=[RU, EN, RU_BY_SETTING],  # every command, /admin and /apikeys too
        telegram=TelegramSettings(token=sb.token, api_base=sb.base_url),
        market=MarketSettings(exchanges=EXCHANGES),
    )
    prefix = f"l{uuid.uuid4().hex[:10]}"
    events = NullEventSink()
    deps = await build_deps(
        settings,
        redis_server.url,
        events=events,
        prefix=prefix,
        opportunities_prefix=f"{prefix}:o",
        clock=clock,
    )
    throttle_time = [0.0, 1.0]

    def throttle_clock() -> float:
        throttle_time[0] += throttle_time[1]
        return throttle_time[0]

    bot = build_bot(settings)
    dp = build_dispatcher(deps, handle_errors=False, throttle_clock=throttle_clock)
    http = httpx.AsyncClient(timeout=30)
    harness = Harness(sb, bot, dp, deps, events, clock, http, itertools.count(1), throttle_time)
    try:
        yield harness
        assert await harness.all_callbacks_answered_once()
    finally:
        await http.aclose()
        await bot.session.close()
        await deps.aclose()
        await sb.stop()


COMMANDS = [
    "/help",
    "/status",  # no session: the gate's refusal and its button
    "/start",  # onboarding, every screen by its buttons
    "/status",
    "/subscription",
    "/settings",
    "/settings language",
    "/settings language xx",
    "/settings tz",
    "/settings tz Nowhere/Atlantis",
    "/settings tz Europe/Paris",
    "/settings region",
    "/settings region X1",
    "/settings region DE",
    "/settings region none",
    "/settings block bybit",
    "/settings block ???",
    "/settings unblock bybit",
    "/settings minsize abc",
    "/settings minsize 500",
    "/settings minsize 0",
    "/mute",
    "/status",
    "/mute 0",
    "/mute nope",
    "/opportunities",
    "/apikeys",
    "/apikeys add nope abcdefgh12345678 secretsecret",
    "/apikeys add binance abcdefgh12345678 secretsecret",
    "/apikeys",
    "/admin",
    "/admin tier 1 gold",
    "/admin tier 1 premium",
    "/admin why 1 nope",
    "/admin replay",
    "/admin region 1 DE",
    "/admin beta 1 early",
    "/admin broadcast 12345",
    "/admin nonsense",
    "/frobnicate",
    "no command here",
    "/forget",
    "/stop",
    "/stop",
    "/settings",  # no session again
]


def _language_of(data: str) -> str | None:
    """The language a ``SetPref`` language button sets (``sp:<uid>:lang:<code>:…``)."""
    parts = data.split(":")
    return parts[3] if len(parts) > 3 and parts[2] == "lang" else None


async def _press_everything(
    h: Harness, uid: int, pressed: set[str], keep: str, chat: int | None = None
) -> None:
    """Press every button of the chat (the user's own by default) not pressed yet, one at a
    time and reading the chat again after each (a press may edit a screen into the next
    one), until none is left. A language button other than ``keep`` or "auto", and "delete
    everything", are left for later."""
    for _ in range(500):
        todo = None
        for m in reversed(await h.messages(uid if chat is None else chat)):  # the newest screen first
            for data in buttons(m["message"]):
                lang = _language_of(data)
                if data in pressed or (lang is not None and lang not in (keep, "auto")):
                    continue
                if data != Forget(uid=uid, confirm=True).pack():
                    todo = (m["message"], data)
                    break
            if todo is not None:
                break
        if todo is None:
            return
        pressed.add(todo[1])
        await h.press(uid, *todo)
    raise AssertionError("the buttons never ran out")


async def _walk(h: Harness, uid: int, language: str, group: int) -> None:
    pressed: set[str] = set()
    for command in COMMANDS:
        await h.send(uid, command)
        await _press_everything(h, uid, pressed, language)
        if command == "/opportunities":  # a push, as a shard sends it in the user's language, and its buttons
            await TelegramNotifier(h.bot).send(uid, PUSH, silent=False, lang=language)
            await _press_everything(h, uid, pressed, language)
    # a group: the user adds the bot, then changes the group's settings as its admin
    h.sb.sandbox.add_group("42", chat_id=group, admin_ids=[uid], member_ids=[])
    update = fixture("nutgram_my_chat_member_SYNTHETIC.json")
    member = update["my_chat_member"]
    member["chat"] = {"id": group, "title": "42", "type": "supergroup"}
    member["from"] = h.sb.sandbox.user(uid).to_api()
    bot_user = {"id": h.bot.id, "is_bot": True, "first_name": "bot", "username": DEFAULT_USERNAME}
    member["old_chat_member"] = {"status": "left", "user": bot_user}
    member["new_chat_member"] = {"status": "member", "user": bot_user}
    await h.feed(update)
    stored = await h.deps.groups.get(group)
    assert stored is not None and stored.lang == language  # the group's pushes speak the adder's language
    await h.send(uid, "/start")
    await h.send(uid, "/settings", chat_id=group)
    await _press_everything(h, uid, pressed, language, chat=group)
    await h.send(uid, "/help", chat_id=group)
    # the end of a user: a new session, then every datum deleted
    await h.send(uid, "/start")
    await _press_everything(h, uid, pressed, language)
    await h.send(uid, "/forget")
    forget = [
        m for m in await h.messages(uid) if Forget(uid=uid, confirm=True).pack() in buttons(m["message"])
    ]
    await h.press(uid, forget[-1]["message"], Forget(uid=uid, confirm=True).pack())


def _markup_texts(markup: Any) -> list[str]:
    if isinstance(markup, str):
        markup = json.loads(markup)
    rows = (markup or {}).get("inline_keyboard", [])
    return [b["text"] for row in rows for b in row]


async def _seen(h: Harness, since: dict[str, int]) -> list[str]:
    """Every text the sandbox received after ``since`` (request counts per method)."""
    out: list[str] = []
    for method in ("sendMessage", "editMessageText", "answerCallbackQuery"):
        for r in (await h.requests(method))[since.get(method, 0) :]:
            params = r["params"]
            if params.get("text"):
                out.append(str(params["text"]))
            out += _markup_texts(params.get("reply_markup"))
    return out


async def _counts(h: Harness) -> dict[str, int]:
    return {m: len(await h.requests(m)) for m in ("sendMessage", "editMessageText", "answerCallbackQuery")}


_CODE = re.compile(r"<code>.*?</code>|<pre>.*?</pre>", re.S)
_TAGS = re.compile(r"<[^<>]+>|&\w+;|&#\d+;")
_VARIABLE = re.compile(
    r"/\w+(?:@\w+)?"  # commands
    r"|\b[A-Z][a-z]+/[A-Za-z_/+-]+"  # time zones (Europe/Paris)
    r"|\b[A-Z0-9]+/[A-Z0-9]+(?::[A-Z0-9]+)?"  # symbols (BTC/USDT)
    r"|\S*\d\S*"  # anything with a digit: numbers, times, masked keys, ids
    r"|\b[A-Z]{2,5}s?\b"  # acronyms: API, RSI, MACD, IANA, USD, UTC, ISO, CET
)
_CYRILLIC = re.compile("[\u0400-\u04ff]")
ALLOWED = {"arbflow", "Telegram", "English", "Bollinger"}
"""Names that stay in Latin letters in Russian (the product, the app, a language's own name
on its button, a person)."""


def _words(text: str, extra: set[str]) -> list[str]:
    text = _TAGS.sub(" ", _CODE.sub(" ", text))
    text = _VARIABLE.sub(" ", text)
    words = re.findall(r"[A-Za-z]{2,}", text)
    return [w for w in words if w not in ALLOWED and w.lower() not in extra]


async def test_every_command_and_button_speaks_the_users_language(h: Harness) -> None:
    now = h.clock()
    await h.deps.opportunities.apply(
        [
            _event(1, OpportunityKind.SPOT_SPREAD, 40.0, now),
            _event(2, OpportunityKind.SPOT_SPREAD, 30.0, now),
            _event(3, OpportunityKind.FUNDING_RATE, 60.0, now),
            _event(4, OpportunityKind.TECHNICAL, 0.0, now),
        ]
    )
    names = {"ru": "Ivan", "en": "John"}
    h.sb.sandbox.add_user(RU, names["ru"], language_code="ru")
    h.sb.sandbox.add_user(EN, names["en"], language_code="en-GB")
    extra = {e.lower() for e in EXCHANGES} | {n.lower() for n in names.values()}
    extra |= {"nope", "gold", "early", "nonsense", "frobnicate", "xx", "auto"}  # typed by the user

    seen: dict[str, list[str]] = {}
    for uid, language in ((RU, "ru"), (EN, "en")):
        before = await _counts(h)
        await _walk(h, uid, language, GROUPS[uid])
        h.clock.advance(timedelta(seconds=1))
        seen[language] = await _seen(h, before)
    assert len(seen["ru"]) > 150 and abs(len(seen["ru"]) - len(seen["en"])) < 10

    # the walk reached the push and its buttons, the group and its settings, onboarding, admin
    said = "\n".join(seen["ru"])
    for reached in (
        "Исполнимо: $8,000 по этому спреду",  # the push
        "🔕 Пауза до",  # its mute button's answer
        "Я публикую уведомления об арбитраже",  # noqa: RUF001 (the group's welcome)
        "<b>Настройки группы · 42</b>",
        "<b>7/7 · API-ключи бирж (необязательно)</b>",
        "<b>Админ · статистика</b>",
        "Удалить всё",
        "🎉 Всё готово.",
    ):
        assert reached in said, reached
    english_words = {w.lower() for text in seen["en"] for w in _words(text, extra)}
    assert len(english_words) > 250  # the English walk said a lot
    untranslated = [(text, words) for text in seen["ru"] if (words := _words(text, extra))]
    assert untranslated == [], "\n".join(repr(u) for u in untranslated)
    # what is left once names and figures are stripped is Russian: most texts carry Cyrillic (the
    # rest are buttons named by a value: an exchange, a symbol, a zone, a number)
    assert sum(bool(_CYRILLIC.search(t)) for t in seen["ru"]) > 0.6 * len(seen["ru"])
    # the English walk is English: the only Cyrillic is the language's own name on its button
    assert [t for t in seen["en"] if _CYRILLIC.search(t) and t.strip("• ") != LANGUAGES["ru"]] == []


async def test_the_language_setting_overrides_the_app_and_old_records_read(h: Harness) -> None:
    h.sb.sandbox.add_user(RU_BY_SETTING, "Olga", language_code="en")
    await h.send(RU_BY_SETTING, "/start")
    assert any("Hi Olga" in t for t in await h.texts(RU_BY_SETTING))
    user = await h.deps.users.get(RU_BY_SETTING)
    assert user is not None and user.preferences.language is None and user.language_code == "en"

    await h.send(RU_BY_SETTING, "/settings language ru")
    assert "Язык: <b>Русский</b>" in (await h.last(RU_BY_SETTING))["html"]
    await h.send(RU_BY_SETTING, "/status")
    assert "Статус" in (await h.last(RU_BY_SETTING))["text"]  # the setting beats the app
    # the throttle's and the gate's refusals speak it too
    h.throttle_time[1] = 0.0  # a frozen clock: a flood
    for _ in range(12):
        await h.send(RU_BY_SETTING, "/help")
    assert (await h.last(RU_BY_SETTING))["text"] == "🐢 Чуть помедленнее — я отвечу через мгновение."
    h.throttle_time[1] = 1.0
    h.throttle_time[0] += 3.0  # calm again
    await h.send(RU_BY_SETTING, "/stop")
    await h.send(RU_BY_SETTING, "/status")
    assert "активная сессия" in (await h.last(RU_BY_SETTING))["text"]

    # back to the app's language by the button
    await h.send(RU_BY_SETTING, "/start")
    await h.send(RU_BY_SETTING, "/settings language")
    menu = (await h.last(RU_BY_SETTING))["message"]
    auto = [d for d in buttons(menu) if _language_of(d) == "auto"]
    await h.press(RU_BY_SETTING, menu, auto[0])
    user = await h.deps.users.get(RU_BY_SETTING)
    assert user is not None and user.preferences.language is None
    assert "Language" in (await h.last(RU_BY_SETTING))["text"]  # the menu again, in English now

    # an explicit English choice is kept as a choice (not read as an old default)
    await h.send(RU_BY_SETTING, "/settings language en")
    user = await h.deps.users.get(RU_BY_SETTING)
    assert user is not None and user.preferences.language == "en"

    # a record written by an earlier release: "en" for everyone under pref.language, never a choice
    key = h.deps.users._key(RU)  # type: ignore[attr-defined]
    h.sb.sandbox.add_user(RU, "Ivan", language_code="ru")
    await h.send(RU, "/start")
    await h.deps.client.hdel(key, "pref.lang", "language_code")  # type: ignore[union-attr]
    await h.deps.client.hset(key, "pref.language", '"en"')  # type: ignore[union-attr]
    old = await h.deps.users.get(RU)
    assert old is not None and old.preferences.language is None and old.language_code is None
    await h.send(RU, "/status")
    assert "Статус" in (await h.last(RU))["text"]  # the app's language, not the old "en"
    user = await h.deps.users.get(RU)
    assert user is not None and user.language_code == "ru"  # noted for the pushes


async def test_what_an_admin_sends_to_a_user_is_in_the_users_language(h: Harness) -> None:
    h.sb.sandbox.add_user(EN, "John", language_code="en")
    h.sb.sandbox.add_user(RU, "Ivan", language_code="ru")
    await h.send(EN, "/start")
    await h.send(RU, "/start")
    await h.send(EN, "/admin tier 910001 premium")
    assert "is now" in (await h.last(EN))["text"]  # the admin's answer, in the admin's language
    assert (await h.last(RU))["html"] == "Ваш тариф теперь <b>Премиум</b>. /help покажет, что стало доступно."
    await h.send(EN, "/admin broadcast 12345")
    assert (await h.last(RU))["text"] == "📣 Объявление\n12345"
    assert (await h.last(EN))["text"].startswith("Broadcast sent to 2 chats")
