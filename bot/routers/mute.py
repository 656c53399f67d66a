"""``/mute [hours]``: do not disturb (1 hour by default; ``/mute 0`` unmutes)."""

from __future__ import annotations

from datetime import timedelta

from aiogram import Bot
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, send
from core.accounts import User
from notify import texts

router = RouterSpec("mute")


@router.message(Command("mute"))
async def cmd_mute(
    message: Message, command: CommandObject, bot: Bot, deps: BotDeps, user: User, audit: AuditNote
) -> None:
    arg = (command.args or "1").split()[0]
    try:
        hours = float(arg)
    except ValueError:
        hours = -1.0
    if not 0 <= hours <= texts.MUTE_MAX_HOURS:
        audit.ok, audit.detail = False, "bad_hours"
        await send(bot, message.chat.id, texts.MUTE_USAGE)
        return
    if hours == 0:
        await deps.users.update_preferences(user.id, muted_until=None)
        audit.detail = "unmuted"
        await send(bot, message.chat.id, texts.UNMUTED)
        return
    until = deps.now() + timedelta(hours=hours)
    await deps.users.update_preferences(user.id, muted_until=until)
    audit.detail = f"{hours:g}h"
    await send(bot, message.chat.id, texts.muted(until, user.preferences.timezone))
