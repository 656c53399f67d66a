"""The aiogram ``Bot`` client: one factory for the bot's replies and the actors' pushes."""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageReplyMarkup,
    EditMessageText,
    GetUpdates,
    SendMessage,
    TelegramMethod,
)
from aiogram.methods.base import Response

from core.errors import ConfigError
from core.settings import Settings

_HOT_METHODS: tuple[type[TelegramMethod[Any]], ...] = (
    SendMessage,
    EditMessageText,
    EditMessageReplyMarkup,
    AnswerCallbackQuery,
    GetUpdates,
)
HOT_RESPONSE_TYPES = tuple(Response[m.__returning__] for m in _HOT_METHODS)  # type: ignore[name-defined]
"""aiogram reads every answer as ``Response[<the method's type>]``, parametrized on each call, and
pydantic keeps a parametrized model only while something references it: without these
references the model of every push's answer is built again after each garbage collection
(a tenth of a queue shard's CPU at 1,000 messages/s)."""


def build_bot(settings: Settings, *, session: AiohttpSession | None = None) -> Bot:
    """An aiogram ``Bot`` talking HTML to ``settings.telegram.api_base`` (Telegram or the sandbox)."""
    if not settings.telegram.token:
        raise ConfigError("no bot token: set ARBFLOW_TELEGRAM__TOKEN (the sandbox prints one)")
    return Bot(
        settings.telegram.token,
        session=session or AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram.api_base)),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


__all__ = ["HOT_RESPONSE_TYPES", "build_bot"]
