"""The aiogram client factory: the answer models of the hot methods outlive garbage collection."""

from __future__ import annotations

import gc

from aiogram.methods import EditMessageText, SendMessage
from aiogram.methods.base import Response

from notify.client import HOT_RESPONSE_TYPES


def test_the_answer_model_of_a_push_is_built_once_not_after_every_collection() -> None:
    # aiogram parametrizes Response per call; pydantic caches the model only while referenced
    gc.collect()
    assert Response[SendMessage.__returning__] is HOT_RESPONSE_TYPES[0]  # type: ignore[name-defined]
    assert Response[EditMessageText.__returning__] is HOT_RESPONSE_TYPES[1]  # type: ignore[name-defined]


async def test_a_send_in_an_on_wire_block_is_told_once_when_its_bytes_go() -> None:
    import asyncio

    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    from core.settings import Settings, TelegramSettings
    from notify.client import build_bot, on_wire
    from serve.standins.sandbox import DEFAULT_TOKEN, start_sandbox

    async with await start_sandbox() as sandbox:
        settings = Settings(telegram=TelegramSettings(token=DEFAULT_TOKEN, api_base=sandbox.base_url))
        bot = build_bot(settings)
        try:
            seen: list[tuple[str, int]] = []
            got = 0
            markup = InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="Details", callback_data="pu:details:x")]]
            )

            async def send(chat: int, tag: str) -> None:
                nonlocal got
                with on_wire(lambda: seen.append((tag, got))):
                    await bot.send_message(chat, f"hello {tag}", reply_markup=markup)
                got += 1

            await send(1001, "a")
            await send(1002, "b")
            await bot.send_message(1003, "outside")  # no block: no callback
            await asyncio.sleep(0)
            # once per request, and before its answer came
            assert seen == [("a", 0), ("b", 1)]
            sent = [r for r in sandbox.sandbox.records if r["method"] == "sendMessage"]
            assert [r["params"]["reply_markup"] for r in sent[:2]] == [
                {"inline_keyboard": [[{"text": "Details", "callback_data": "pu:details:x"}]]}
            ] * 2
        finally:
            await bot.session.close()


async def test_a_request_goes_as_json_with_the_values_aiograms_form_would_send() -> None:
    # the same calls through aiogram's own session (urlencoded form) and ours (JSON body)
    # reach the sandbox with the same parameters, defaults (parse_mode) resolved alike
    from aiogram import Bot
    from aiogram.client.default import DefaultBotProperties
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions

    from notify.client import WireSession
    from serve.standins.sandbox import DEFAULT_TOKEN, start_sandbox

    markup = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Open", callback_data="o:1")]])

    async def calls(bot: Bot, chat: int) -> None:  # two chats per session: within the per-chat limit
        sent = await bot.send_message(
            chat,
            "<b>hi</b> & more",
            reply_markup=markup,
            disable_notification=False,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )
        await bot.send_message(chat + 1, "again", reply_markup=markup, disable_notification=True)
        await bot.edit_message_text(
            text="edited", chat_id=chat, message_id=sent.message_id, reply_markup=markup
        )
        await bot.set_my_commands([BotCommand(command="start", description="Start")])

    async with await start_sandbox() as sandbox:
        api = TelegramAPIServer.from_base(sandbox.base_url)
        params = []
        for chat, session in ((2001, AiohttpSession(api=api)), (2011, WireSession(api=api))):
            bot = Bot(DEFAULT_TOKEN, session=session, default=DefaultBotProperties(parse_mode="HTML"))
            before = len(sandbox.sandbox.records)
            try:
                await calls(bot, chat)
            finally:
                await bot.session.close()
            records = sandbox.sandbox.records[before:]
            assert [r["status"] for r in records] == [200] * 4
            params.append(
                [
                    (r["method"], {**r["params"], "chat_id": r["chat_id"] and r["chat_id"] - chat})
                    for r in records
                ]
            )
        form, json_body = params
        assert json_body == form
        assert json_body[0][1]["parse_mode"] == "HTML"
        assert json_body[1][1]["disable_notification"] is True


def test_the_json_body_reuses_a_prepared_keyboard_and_leaves_requests_with_files_to_the_form() -> None:
    import json

    from aiogram import Bot
    from aiogram.methods import SendDocument, SendMessage
    from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup

    from notify.client import WireSession

    session = WireSession()
    bot = Bot("42:token", session=session)
    markup = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Open", callback_data="o:1")]])
    calls = 0
    prepare = session.prepare_value

    def counting(value: object, **kwargs: object) -> object:
        nonlocal calls
        calls += value is markup
        return prepare(value, **kwargs)  # type: ignore[arg-type]

    session.prepare_value = counting  # type: ignore[method-assign]
    bodies = [session.json_body(bot, SendMessage(chat_id=i, text="x", reply_markup=markup)) for i in range(3)]
    assert calls == 1
    assert [json.loads(b or "") for b in bodies] == [
        {
            "chat_id": i,
            "text": "x",
            "reply_markup": {"inline_keyboard": [[{"text": "Open", "callback_data": "o:1"}]]},
        }
        for i in range(3)
    ]
    document = SendDocument(chat_id=1, document=BufferedInputFile(b"data", filename="a.txt"))
    assert session.json_body(bot, document) is None


async def test_a_push_is_answered_with_its_message_id_only() -> None:
    from core.settings import Settings, TelegramSettings
    from notify.client import PushMessage, SentMessage, build_bot
    from serve.standins.sandbox import DEFAULT_TOKEN, start_sandbox

    async with await start_sandbox() as sandbox:
        bot = build_bot(Settings(telegram=TelegramSettings(token=DEFAULT_TOKEN, api_base=sandbox.base_url)))
        try:
            answer = await bot(PushMessage(chat_id=3001, text="push"))
        finally:
            await bot.session.close()
        assert isinstance(answer, SentMessage)
        record = sandbox.sandbox.records[-1]
        assert (record["method"], record["status"]) == ("sendMessage", 200)
        assert answer.message_id == record["response"]["result"]["message_id"]


async def test_an_edit_of_a_push_is_answered_with_its_message_id_only() -> None:
    from core.settings import Settings, TelegramSettings
    from notify.client import EditPush, PushMessage, SentMessage, build_bot
    from serve.standins.sandbox import DEFAULT_TOKEN, start_sandbox

    async with await start_sandbox() as sandbox:
        bot = build_bot(Settings(telegram=TelegramSettings(token=DEFAULT_TOKEN, api_base=sandbox.base_url)))
        try:
            sent = await bot(PushMessage(chat_id=3002, text="push"))
            edited = await bot(EditPush(chat_id=3002, message_id=sent.message_id, text="push, closed"))
        finally:
            await bot.session.close()
        assert isinstance(edited, SentMessage) and edited.message_id == sent.message_id
        record = sandbox.sandbox.records[-1]
        assert (record["method"], record["status"]) == ("editMessageText", 200)
        assert record["params"]["text"] == "push, closed"
