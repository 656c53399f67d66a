"""``/forget``: a user deletes everything the bot holds about them, after a confirmation.

Redis: the user record, session, quotas, cooldowns and marks (:func:`state.erase.erase_user`);
the queue shards drop what is queued for the chat (``deps.forgetter``: the running
distributor, which also drops the user from its directory at once). The lake keeps its
rows, which carry numeric chat/user ids and never a name (``docs/bot.md``, "Privacy"); one
audit row says ``forget`` without personal data. A later ``/start`` begins as a new user.
"""

from __future__ import annotations

import logging

from aiogram import Bot, F
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import Forget
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, answer, end_session, refuse_foreign, send, show
from core.accounts import User
from core.sessions import EndReason
from notify import texts
from state.erase import erase_user

log = logging.getLogger(__name__)

router = RouterSpec("forget")


@router.message(Command("forget"), F.chat.type == "private")
async def cmd_forget(message: Message, bot: Bot, user: User) -> None:
    await send(bot, message.chat.id, texts.FORGET_ASK, keyboards.forget(user.id))


@router.callback_query(Forget.filter())
async def cb_forget(
    callback: CallbackQuery, callback_data: Forget, bot: Bot, deps: BotDeps, user: User, audit: AuditNote
) -> None:
    if await refuse_foreign(callback, callback_data.uid, audit):
        return
    if not callback_data.confirm:
        audit.detail = "cancelled"
        await answer(callback)
        await show(bot, callback, texts.FORGET_CANCELLED, None)
        return
    audit.action, audit.detail = "forget", "erased"
    await end_session(deps, user.id, EndReason.FORGOTTEN)  # its lake event: ids only
    deps.cache.invalidate(user.id)
    if deps.forgetter is not None:  # queued pushes and the directory row, at once
        try:
            await deps.forgetter(user.id)
        except Exception as exc:  # the change stream still drops the row; queued items expire
            log.warning("/forget %s: the distributor did not answer: %r", user.id, exc)
    await erase_user(deps.users.client, user.id, prefix=deps.users.prefix)
    deps.cache.invalidate(user.id)
    await answer(callback)
    await show(bot, callback, texts.FORGOTTEN, None)
