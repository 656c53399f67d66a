"""Last router: unknown commands, plain text, and buttons nobody handles."""

from __future__ import annotations

from aiogram import Bot, F
from aiogram.types import CallbackQuery, Message

from bot.deps import BotDeps
from bot.middlewares import AuditNote, bot_username, parse_command
from bot.routers.common import RouterSpec, answer, send
from notify import texts

router = RouterSpec("fallback")


@router.message(F.text)
async def unknown_message(message: Message, bot: Bot, deps: BotDeps, audit: AuditNote) -> None:
    cmd = parse_command(message.text)
    if cmd is None:
        if message.chat.type == "private":
            await send(bot, message.chat.id, texts.NOT_A_COMMAND)
        return
    audit.ok, audit.detail = False, "unknown_command"
    if message.chat.type != "private" and not cmd.mention:
        return  # in a group, an unaddressed /cmd may be another bot's
    if cmd.mention and cmd.mention.lower() != (await bot_username(bot, deps)).lower():
        return
    await send(bot, message.chat.id, texts.unknown_command(cmd.name))


@router.callback_query()
async def unknown_button(callback: CallbackQuery, audit: AuditNote) -> None:
    audit.ok, audit.detail = False, "unknown_button"
    await answer(callback, texts.UNKNOWN_BUTTON)
