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
