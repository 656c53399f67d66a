"""The aiogram ``Bot`` client: one factory for the bot's replies and the actors' pushes."""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode

from core.errors import ConfigError
from core.settings import Settings


def build_bot(settings: Settings, *, session: AiohttpSession | None = None) -> Bot:
    """An aiogram ``Bot`` talking HTML to ``settings.telegram.api_base`` (Telegram or the sandbox)."""
    if not settings.telegram.token:
        raise ConfigError("no bot token: set ARBFLOW_TELEGRAM__TOKEN (the sandbox prints one)")
    return Bot(
        settings.telegram.token,
        session=session or AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram.api_base)),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


__all__ = ["build_bot"]
