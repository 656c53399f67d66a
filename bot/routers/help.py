"""``/help``: the commands this user's tier can use (answers without a session too)."""

from __future__ import annotations

from aiogram import Bot
from aiogram.filters import Command
from aiogram.types import Message

from bot.routers.common import RouterSpec, send
from core.accounts import TierPolicy
from core.sessions import Session
from notify import texts

router = RouterSpec("help")


@router.message(Command("help"))
async def cmd_help(message: Message, bot: Bot, policy: TierPolicy, session: Session | None) -> None:
    await send(bot, message.chat.id, texts.help_text(policy, has_session=session is not None))
