"""``/status``: session expiry, tier, quota left today, mutes."""

from __future__ import annotations

from aiogram import Bot
from aiogram.filters import Command
from aiogram.types import Message

from bot.deps import BotDeps
from bot.routers.common import RouterSpec, send
from core.accounts import TierPolicy, User
from core.sessions import Session
from notify import texts

router = RouterSpec("status")


@router.message(Command("status"))
async def cmd_status(
    message: Message, bot: Bot, deps: BotDeps, user: User, session: Session, policy: TierPolicy
) -> None:
    now = deps.now()
    remaining = await deps.quotas.remaining(user.id, policy, now, tz=user.preferences.timezone)
    await send(bot, message.chat.id, texts.status_text(user, session, policy, remaining, now))
