"""The Telegram sandbox, driven by aiogram's real Bot client and by the control API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    ChatFullInfo,
    ChatMemberAdministrator,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberOwner,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from aiohttp import ClientSession, web

from serve.standins.sandbox import DEFAULT_TOKEN, SECRET_HEADER, SandboxHandle, start_sandbox
from serve.standins.sandbox.limits import parse_html

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sandbox(clock: FakeClock) -> AsyncIterator[SandboxHandle]:
    async with await start_sandbox(clock=clock, webhook_backoff=0.05, webhook_timeout=5.0) as handle:
        yield handle


@pytest.fixture
async def bot(sandbox: SandboxHandle) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(sandbox.base_url))
    bot = Bot(sandbox.token, session=session, default=DefaultBotProperties(parse_mode="HTML"))
    yield bot
    await bot.session.close()


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def control(http: ClientSession, sandbox: SandboxHandle, path: str, body: Any = None) -> Any:
    url = f"{sandbox.base_url}/sandbox/{path}"
    if body is None:
        async with http.get(url) as resp:
            return await resp.json()
    async with http.post(url, json=body) as resp:
        data = await resp.json()
        data["_status"] = resp.status
        return data


async def raw(http: ClientSession, sandbox: SandboxHandle, method: str, **params: Any) -> tuple[int, Any]:
    async with http.post(sandbox.method_url(method), json=params) as resp:
        return resp.status, await resp.json()


def fixture_body(shared_fixtures: Path, name: str) -> Any:
    return json.loads((shared_fixtures / "telegram" / "errors" / name).read_text())


KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[
        [InlineKeyboardButton(text="Details", callback_data="opp:1:details")],
        [
            InlineKeyboardButton(text="Mute 1h", callback_data="mute:1h"),
            InlineKeyboardButton(text="Site", url="https://example.com"),
        ],
    ]
)


# --- Bot API through aiogram ----------------------------------------------------------------


async def test_get_me(bot: Bot) -> None:
    me = await bot.get_me()
    assert me.is_bot and me.username == "arbflow_sandbox_bot"
    assert me.id == int(DEFAULT_TOKEN.split(":")[0])


async def test_send_message_html_and_keyboard_parse_into_aiogram_types(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    await control(
        http, sandbox, "users", {"id": 501, "first_name": "Ann", "username": "ann", "language_code": "en"}
    )
    first = await bot.send_message(
        501,
        "<b>BTC/USDT</b> spread <i>0.42%</i> on <a href='https://x.io'>x</a> &amp; more",
        reply_markup=KEYBOARD,
    )
    assert isinstance(first, Message)
    assert first.text == "BTC/USDT spread 0.42% on x & more"
    assert [(e.type, e.offset, e.length) for e in first.entities or []] == [
        ("bold", 0, 8),
        ("italic", 16, 5),
        ("text_link", 25, 1),
    ]
    assert first.reply_markup is not None
    assert first.reply_markup.model_dump(exclude_none=True) == KEYBOARD.model_dump(exclude_none=True)
    assert first.chat.type == "private" and first.chat.username == "ann"
    assert first.from_user is not None and first.from_user.username == "arbflow_sandbox_bot"
    second = await bot.send_message(501, "plain", disable_notification=True)
    assert second.message_id == first.message_id + 1 and second.entities is None

    state = await control(http, sandbox, "chats/501/messages")
    assert [m["message_id"] for m in state["messages"]] == [first.message_id, second.message_id]
    assert state["messages"][0]["html"].startswith("<b>BTC/USDT</b>")
    assert state["messages"][1]["disable_notification"] is True
    recorded = await control(http, sandbox, "requests?method=sendMessage&chat_id=501")
    assert [r["status"] for r in recorded["requests"]] == [200, 200]
    assert (
        recorded["requests"][0]["params"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        == "opp:1:details"
    )
    later = await control(http, sandbox, f"requests?since={recorded['requests'][0]['id']}&method=sendMessage")
    assert len(later["requests"]) == 1


async def test_edit_delete_and_answer_callback(bot: Bot, sandbox: SandboxHandle, http: ClientSession) -> None:
    msg = await bot.send_message(502, "v1", reply_markup=KEYBOARD)
    edited = await bot.edit_message_text(
        "<b>v2</b>", chat_id=502, message_id=msg.message_id, reply_markup=KEYBOARD
    )
    assert isinstance(edited, Message) and edited.text == "v2" and edited.edit_date is not None
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "<b>v2</b>", chat_id=502, message_id=msg.message_id, reply_markup=KEYBOARD
        )
    plain = await bot.edit_message_reply_markup(chat_id=502, message_id=msg.message_id, reply_markup=None)
    assert isinstance(plain, Message) and plain.reply_markup is None

    await bot.edit_message_reply_markup(chat_id=502, message_id=msg.message_id, reply_markup=KEYBOARD)
    pressed = await control(
        http, sandbox, "press", {"user_id": 502, "message_id": msg.message_id, "data": "mute:1h"}
    )
    assert pressed["_status"] == 200
    assert await bot.answer_callback_query(pressed["callback_query_id"], text="Muted for 1 h")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(pressed["callback_query_id"])
    answers = await control(http, sandbox, f"callbacks?id={pressed['callback_query_id']}")
    assert answers["callbacks"][0]["answer"] == {"text": "Muted for 1 h"}

    assert await bot.delete_message(502, msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(502, msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("gone", chat_id=502, message_id=msg.message_id)
    assert (await control(http, sandbox, "chats/502/messages"))["messages"] == []


async def test_per_chat_limit_answers_429_with_retry_after(
    bot: Bot, sandbox: SandboxHandle, clock: FakeClock, http: ClientSession
) -> None:
    for _ in range(3):  # the short burst Telegram tolerates: 3 in any 3 s
        await bot.send_message(503, "hi")
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(503, "too fast")
    assert caught.value.retry_after == 3  # until the first of the three leaves the window
    clock.advance(1.0)
    status, body = await raw(http, sandbox, "sendMessage", chat_id=503, text="again")
    assert (status, body) == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 2",
            "parameters": {"retry_after": 2},
        },
    )
    await bot.send_message(504, "another chat is fine")
    clock.advance(2.0)
    await bot.send_message(503, "three seconds after the first")
    stats = await control(http, sandbox, "stats")
    assert stats["too_many_requests"] == 2 and stats["by_method"]["sendMessage"]["429"] == 2


async def test_global_limit_thirty_per_second(
    sandbox: SandboxHandle, clock: FakeClock, http: ClientSession
) -> None:
    statuses = [(await raw(http, sandbox, "sendMessage", chat_id=1000 + i, text="x"))[0] for i in range(31)]
    assert statuses.count(200) == 30 and statuses[-1] == 429
    clock.advance(0.5)  # the thirty are still within the last second: nothing fits
    assert (await raw(http, sandbox, "sendMessage", chat_id=2000, text="x"))[0] == 429
    clock.advance(0.5)  # they left the window together
    statuses = [(await raw(http, sandbox, "sendMessage", chat_id=3000 + i, text="x"))[0] for i in range(31)]
    assert statuses == [200] * 30 + [429]


async def test_paid_broadcast_and_per_token_rate(clock: FakeClock) -> None:
    tokens = {DEFAULT_TOKEN: "free_bot", "7000000002:PAID": "paid_bot"}
    async with (
        await start_sandbox(clock=clock, tokens=tokens, paid_tokens=frozenset({"7000000002:PAID"})) as sb,
        ClientSession() as http,
    ):

        async def burst(token: str) -> list[int]:
            out = []
            for i in range(40):
                async with http.post(
                    sb.method_url("sendMessage", token), json={"chat_id": 10 + i, "text": "x"}
                ) as r:
                    out.append(r.status)
            return out

        assert (await burst(DEFAULT_TOKEN)).count(429) == 10
        assert (await burst("7000000002:PAID")).count(429) == 0
        assert sb.sandbox.bots["7000000002:PAID"].flood.limits.global_rate == 1000


async def test_group_limit_twenty_per_minute(
    bot: Bot, sandbox: SandboxHandle, clock: FakeClock, http: ClientSession
) -> None:
    group = await control(
        http, sandbox, "groups", {"title": "Arb club", "type": "supergroup", "admin_ids": [7]}
    )
    chat_id = group["chat"]["id"]
    assert chat_id < -(10**12)
    sent, waits = 0, []
    for _ in range(60):  # one a second for a minute: 20 in any 60 s, then nothing
        try:
            await bot.send_message(chat_id, "signal")
            sent += 1
        except TelegramRetryAfter as exc:
            waits.append(exc.retry_after)
        clock.advance(1.0)
    assert sent == 20
    assert waits == list(range(40, 0, -1))  # until the first of the twenty is a minute old
    await bot.send_message(chat_id, "a minute after the first")


async def test_blocked_and_deactivated_answer_403_with_telegrams_bodies(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession, shared_fixtures: Path
) -> None:
    await control(http, sandbox, "users", {"id": 601, "first_name": "Bo"})
    await control(http, sandbox, "users/601/block", {})
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(601, "hello?")
    assert await raw(http, sandbox, "sendMessage", chat_id=601, text="x") == (
        403,
        fixture_body(shared_fixtures, "issue_y9san9-catbot-24_403_bot_was_blocked_by_the_user.json"),
    )
    await control(http, sandbox, "users/601/unblock", {})
    await bot.send_message(601, "welcome back")

    await control(http, sandbox, "users", {"id": 602, "first_name": "Gone", "deactivated": True})
    assert await raw(http, sandbox, "sendMessage", chat_id=602, text="x") == (
        403,
        fixture_body(shared_fixtures, "nutgram_403_user_is_deactivated.json"),
    )


async def test_too_long_bad_html_unknown_token_and_method(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession, shared_fixtures: Path
) -> None:
    assert await raw(http, sandbox, "sendMessage", chat_id=1, text="x" * 4097) == (
        400,
        fixture_body(shared_fixtures, "nutgram_400_message_is_too_long.json"),
    )
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(2, "y" * 4097)
    # the limit counts the text after entity parsing
    ok = await bot.send_message(3, "<b>" + "z" * 4096 + "</b>")
    assert len(ok.text or "") == 4096
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(4, "<b>unclosed")
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(4, "1 < 2")

    async with http.get(f"{sandbox.base_url}/bot123:WRONG/getMe") as resp:
        assert (resp.status, await resp.json()) == (
            401,
            {"ok": False, "error_code": 401, "description": "Unauthorized"},
        )
    async with http.get(sandbox.method_url("sendSticker")) as resp:
        assert (resp.status, await resp.json()) == (
            404,
            {"ok": False, "error_code": 404, "description": "Not Found"},
        )
    # GET with query parameters and case-insensitive method names work like Telegram
    async with http.get(
        sandbox.method_url("sendmessage"), params={"chat_id": "5", "text": "via GET"}
    ) as resp:
        body = await resp.json()
        assert resp.status == 200 and body["result"]["text"] == "via GET"


async def test_chat_member_and_chat(bot: Bot, sandbox: SandboxHandle, http: ClientSession) -> None:
    await control(
        http,
        sandbox,
        "users",
        {
            "users": [
                {"id": 11, "first_name": "Own"},
                {"id": 12, "first_name": "Adm"},
                {"id": 13, "first_name": "Mem"},
                {"id": 14, "first_name": "Out"},
            ]
        },
    )
    group = await control(
        http,
        sandbox,
        "groups",
        {"title": "G", "creator_id": 11, "admin_ids": [12], "member_ids": [13], "bot_admin": True},
    )
    gid = group["chat"]["id"]
    assert isinstance(await bot.get_chat_member(gid, 11), ChatMemberOwner)
    assert isinstance(await bot.get_chat_member(gid, 12), ChatMemberAdministrator)
    assert isinstance(await bot.get_chat_member(gid, 13), ChatMemberMember)
    assert isinstance(await bot.get_chat_member(gid, 14), ChatMemberLeft)
    assert isinstance(await bot.get_chat_member(gid, bot.id), ChatMemberAdministrator)
    chat = await bot.get_chat(gid)
    assert isinstance(chat, ChatFullInfo) and chat.title == "G" and chat.type == "supergroup"
    assert (await bot.get_chat(11)).type == "private"
    assert await bot.set_my_commands([BotCommand(command="start", description="Start")])
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    # menus are kept per scope and per language, like Telegram does
    private = BotCommandScopeAllPrivateChats()
    assert await bot.set_my_commands([BotCommand(command="help", description="this list")], scope=private)
    ru = [BotCommand(command="help", description="этот список")]
    assert await bot.set_my_commands(ru, scope=private, language_code="ru")
    assert [c.description for c in await bot.get_my_commands(scope=private)] == ["this list"]
    assert [c.description for c in await bot.get_my_commands(scope=private, language_code="ru")] == [
        "этот список"
    ]
    assert [c.command for c in await bot.get_my_commands()] == ["start"]  # the default scope: untouched
    assert await bot.get_my_commands(language_code="ru") == []
    assert await bot.send_chat_action(11, "typing")


# --- updates: webhook and getUpdates ------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, Any], str | None]], list[int]]]:
    """A tiny webhook: records (update, secret header); answers with the statuses queued in `script`."""
    got: list[tuple[dict[str, Any], str | None]] = []
    script: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        got.append((await request.json(), request.headers.get(SECRET_HEADER)))
        return web.Response(status=script.pop(0) if script else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    yield f"http://127.0.0.1:{port}/hook", got, script
    await runner.cleanup()


async def test_webhook_delivery_secret_sequence_and_retry(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession, receiver: Any
) -> None:
    url, got, script = receiver
    assert await bot.set_webhook(
        url, secret_token="s3cr3t_-X", allowed_updates=["message", "callback_query"], max_connections=5
    )
    info = await bot.get_webhook_info()
    assert (
        info.url == url
        and info.max_connections == 5
        and info.allowed_updates == ["message", "callback_query"]
    )

    await control(http, sandbox, "users", {"id": 701, "first_name": "Web", "username": "web"})
    first = await control(http, sandbox, "send", {"user_id": 701, "text": "/start", "wait": True})
    assert first["delivery"]["status"] == 200 and first["delivery"]["attempts"] == 1
    script.append(500)
    second = await control(
        http, sandbox, "send", {"user_id": 701, "text": "/help@arbflow_sandbox_bot now", "wait": True}
    )
    assert second["delivery"] == {"update_id": second["update_id"], "status": 200, "attempts": 2}
    assert second["update_id"] == first["update_id"] + 1

    assert [secret for _, secret in got] == ["s3cr3t_-X"] * 3
    updates = [Update.model_validate(u) for u, _ in got]
    assert [u.update_id for u in updates] == [first["update_id"], second["update_id"], second["update_id"]]
    start = updates[0].message
    assert start is not None and start.text == "/start" and start.chat.type == "private"
    assert [(e.type, e.offset, e.length) for e in start.entities or []] == [("bot_command", 0, 6)]
    help_msg = updates[1].message
    assert help_msg is not None and help_msg.entities is not None
    assert (help_msg.entities[0].type, help_msg.entities[0].length) == ("bot_command", 25)
    assert help_msg.message_id == start.message_id + 1

    # member updates are not in allowed_updates: filtered, not delivered
    filtered = await control(http, sandbox, "member", {"user_id": 701, "status": "kicked", "wait": True})
    assert filtered["delivery"]["filtered"] is True
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(701, "blocked now")

    # a webhook that keeps failing: retried a few times, then given up and reported
    script.extend([500] * 10)
    failed = await control(http, sandbox, "send", {"user_id": 702, "text": "hi", "wait": True})
    assert failed["delivery"]["status"] == 500 and failed["delivery"]["attempts"] == 4
    info = await bot.get_webhook_info()
    assert info.last_error_message is not None and "500" in info.last_error_message


async def test_webhook_reply_in_body_is_executed(sandbox: SandboxHandle, http: ClientSession) -> None:
    async def handle(request: web.Request) -> web.Response:
        update = await request.json()
        return web.json_response(
            {"method": "sendMessage", "chat_id": update["message"]["chat"]["id"], "text": "pong"}
        )

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        await raw(http, sandbox, "setWebhook", url=f"http://127.0.0.1:{port}/hook")
        await control(http, sandbox, "send", {"user_id": 801, "text": "ping", "wait": True})
        messages = (await control(http, sandbox, "chats/801/messages"))["messages"]
        assert [m["text"] for m in messages] == ["pong"]
    finally:
        await runner.cleanup()


async def test_get_updates_long_poll_and_offset(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=0) == []
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    assert not poll.done()
    sent = await control(http, sandbox, "send", {"user_id": 901, "text": "/opportunities"})
    updates = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 5
    assert [u.update_id for u in updates] == [sent["update_id"]]
    await control(http, sandbox, "send", {"user_id": 901, "text": "two"})
    again = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=1)
    assert [u.message.text for u in again if u.message] == ["two"]
    assert await bot.get_updates(offset=again[-1].update_id + 1, timeout=0) == []
    # getUpdates is refused while a webhook is set, like Telegram
    await bot.set_webhook("http://127.0.0.1:9/none")
    status, body = await raw(http, sandbox, "getUpdates")
    assert status == 409 and body["description"].startswith("Conflict: can't use getUpdates")


async def test_press_rejects_data_not_on_the_keyboard_unless_forced(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    msg = await bot.send_message(951, "pick", reply_markup=KEYBOARD)
    forged = await control(
        http, sandbox, "press", {"user_id": 951, "message_id": msg.message_id, "data": "admin:grant"}
    )
    assert forged["_status"] == 400 and "admin:grant" in forged["error"]
    missing = await control(http, sandbox, "press", {"user_id": 951, "message_id": 999, "data": "mute:1h"})
    assert missing["_status"] == 400
    forced = await control(
        http,
        sandbox,
        "press",
        {"user_id": 951, "message_id": msg.message_id, "data": "admin:grant", "force": True},
    )
    assert forced["_status"] == 200
    updates = await bot.get_updates(timeout=1)
    query = updates[-1].callback_query
    assert query is not None and query.data == "admin:grant" and query.from_user.id == 951
    assert isinstance(query.message, Message) and query.message.message_id == msg.message_id


async def test_member_updates_block_and_group_join(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    await control(http, sandbox, "member", {"user_id": 961, "status": "kicked"})
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(961, "x")
    group = await control(http, sandbox, "groups", {"title": "New", "type": "group"})
    await control(
        http, sandbox, "member", {"user_id": 962, "chat_id": group["chat"]["id"], "status": "administrator"}
    )
    updates = await bot.get_updates(timeout=1)
    blocked, joined = (u.my_chat_member for u in updates)
    assert blocked is not None and blocked.new_chat_member.status == "kicked"
    assert (
        joined is not None
        and joined.chat.type == "group"
        and joined.new_chat_member.status == "administrator"
    )
    assert isinstance(await bot.get_chat_member(group["chat"]["id"], bot.id), ChatMemberAdministrator)


async def test_fixture_updates_are_posted_as_is(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession, shared_fixtures: Path
) -> None:
    posted = []
    for path in sorted((shared_fixtures / "telegram" / "updates").glob("*.json")):
        update = json.loads(path.read_text())
        reply = await control(http, sandbox, "updates", update)
        assert reply["_status"] == 200 and reply["update_id"] == update["update_id"]
        posted.append(update)
    async with http.get(sandbox.method_url("getUpdates")) as resp:
        result = (await resp.json())["result"]
    assert result == posted
    for update in result:
        Update.model_validate(update)


# --- the chat page, the HTML parser, throughput ----------------------------------------------------


async def test_chat_page_is_self_contained(sandbox: SandboxHandle, http: ClientSession) -> None:
    for path in ("/", "/chat"):
        async with http.get(sandbox.base_url + path) as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
    for anchor in ('id="text"', 'id="send"', 'id="messages"'):
        assert anchor in page
    # works offline: no external scripts, styles or fonts
    assert "http://" not in page and "https://" not in page and "<script src" not in page


def test_parse_html_entities_and_errors() -> None:
    text, entities = parse_html(
        '<b>bold <i>both</i></b> 💰 <code>x</code> <pre><code class="language-py">p</code></pre>'
    )
    assert text == "bold both 💰 x p"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 9},
        {"type": "italic", "offset": 5, "length": 4},
        {"type": "code", "offset": 13, "length": 1},  # 💰 is two UTF-16 units
        {"type": "pre", "offset": 15, "length": 1, "language": "py"},
    ]
    assert parse_html("a &lt;b&gt; &amp; &#33;") == ("a <b> & !", [])
    assert parse_html('<span class="tg-spoiler">s</span><blockquote expandable>q</blockquote>')[1] == [
        {"type": "spoiler", "offset": 0, "length": 1},
        {"type": "expandable_blockquote", "offset": 1, "length": 1},
    ]
    for bad in ("<b>x</i>", "<b>x", "x</b>", "<div>x</div>", "a < b"):
        with pytest.raises(Exception, match="can't parse entities"):
            parse_html(bad)


async def test_throughput_paid_broadcast(capsys: pytest.CaptureFixture[str]) -> None:
    """Roughly: sendMessage to different chats, 50 at a time, in paid-broadcast mode."""
    async with await start_sandbox(paid_broadcast=True) as sb, ClientSession() as http:
        url = sb.method_url("sendMessage")
        total, workers = 3000, 50
        counter = iter(range(total))
        statuses: dict[int, int] = {}

        async def worker() -> None:
            for i in counter:
                async with http.post(url, json={"chat_id": 10_000 + i, "text": f"opportunity {i}"}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        rate = total / (time.perf_counter() - started)
    with capsys.disabled():
        print(f"\nsandbox throughput: {rate:,.0f} sendMessage/s (paid broadcast, {workers} concurrent)")
    assert statuses.get(200, 0) + statuses.get(429, 0) == total
    assert rate >= 500


async def test_reset_forgets_the_world_but_keeps_the_webhook(
    bot: Bot, sandbox: SandboxHandle, http: ClientSession
) -> None:
    await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="k")
    await bot.send_message(1, "x")
    assert (await control(http, sandbox, "reset", {}))["_status"] == 200
    stats = await control(http, sandbox, "stats")
    assert stats["requests"] == 0 and stats["too_many_requests"] == 0
    assert (await control(http, sandbox, "chats/1/messages"))["messages"] == []
    assert (await bot.get_webhook_info()).url == "http://127.0.0.1:9/hook"
    await control(http, sandbox, "reset", {"webhook": True})
    assert (await bot.get_webhook_info()).url == ""


async def test_a_sandbox_process_of_its_own_keeps_what_lives_out_of_full_collections() -> None:
    import gc

    from serve.standins.sandbox import keep_heap_settled

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    task = asyncio.create_task(keep_heap_settled(every_s=0.01))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if gc.get_freeze_count() > 0:
                break
        assert gc.get_freeze_count() > 0
    finally:
        task.cancel()
        gc.unfreeze()
