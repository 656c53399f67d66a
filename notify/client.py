"""The aiogram ``Bot`` client: one factory for the bot's replies and the actors' pushes."""

from __future__ import annotations

from types import SimpleNamespace
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
from aiohttp import ClientSession, TraceConfig, TraceRequestChunkSentParams

from core.errors import ConfigError
from core.settings import Settings
from notify.wire import on_wire, wire_callback

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


async def _chunk_sent(
    _session: ClientSession, _ctx: SimpleNamespace, _params: TraceRequestChunkSentParams
) -> None:
    # aiohttp awaits this right before writing the chunk (nothing here suspends, so the write
    # follows at once); the body's task was created in the sender's context, so it sees its callback
    callback = wire_callback()
    if callback is not None:
        callback()


_WIRE_TRACE = TraceConfig()
_WIRE_TRACE.on_request_chunk_sent.append(_chunk_sent)
_WIRE_TRACE.freeze()


class WireSession(AiohttpSession):
    """aiogram's aiohttp session, telling :func:`on_wire` callers when a request is written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._traced: ClientSession | None = None

    async def create_session(self) -> ClientSession:
        session = await super().create_session()
        if session is not self._traced:  # a new aiohttp session (the first, or after a close)
            session.trace_configs.append(_WIRE_TRACE)
            self._traced = session
        return session


def build_bot(settings: Settings, *, session: AiohttpSession | None = None) -> Bot:
    """An aiogram ``Bot`` talking HTML to ``settings.telegram.api_base`` (Telegram or the sandbox)."""
    if not settings.telegram.token:
        raise ConfigError("no bot token: set ARBFLOW_TELEGRAM__TOKEN (the sandbox prints one)")
    return Bot(
        settings.telegram.token,
        session=session or WireSession(api=TelegramAPIServer.from_base(settings.telegram.api_base)),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


__all__ = ["HOT_RESPONSE_TYPES", "WireSession", "build_bot", "on_wire"]
