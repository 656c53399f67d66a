"""Membership updates and group settings.

- ``my_chat_member`` in a private chat → ``kicked``: the user blocked the bot, their
  session ends (``blocked``). Processed without a session (the gate lets it through).
- ``my_chat_member`` in a group → the bot was added (``member``/``administrator``): the
  group is registered (``RedisGroupStore``) and greeted; removed (``left``/``kicked``):
  marked inactive.
- ``/settings`` in a group and the ``GroupSet`` buttons: only the group's admins
  (``getChatMember`` → ``creator``/``administrator``) may change the group's settings. The
  group acted on is always the chat of the message, never a value in the callback data.
"""

from __future__ import annotations

import contextlib
import logging

from aiogram import Bot, F
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.types import CallbackQuery, ChatMemberUpdated, Message

from bot import keyboards
from bot.callbacks import GroupSet
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, answer, audit, end_session, send, show
from core.sessions import EndReason
from notify import texts
from notify.i18n import current_locale

log = logging.getLogger(__name__)
router = RouterSpec("groups")

GROUP_TYPES = {"group", "supergroup"}
PRESENT = {"member", "administrator", "creator", "restricted"}
ADMINS = {"creator", "administrator"}


async def is_group_admin(bot: Bot, chat_id: int, user_id: int) -> bool:
    try:
        member = await bot.get_chat_member(chat_id, user_id)
    except TelegramAPIError:
        return False
    return member.status in ADMINS


@router.my_chat_member()
async def on_my_chat_member(event: ChatMemberUpdated, bot: Bot, deps: BotDeps) -> None:
    new, old = event.new_chat_member.status, event.old_chat_member.status
    chat = event.chat
    actor = event.from_user.id
    if chat.type == "private":
        if new == "kicked":
            ended = await end_session(deps, chat.id, EndReason.BLOCKED)
            await audit(deps, chat.id, chat.id, "member:blocked", True, "ended" if ended else "no_session")
        else:
            await audit(deps, chat.id, chat.id, f"member:{new}")
        return
    if chat.type not in GROUP_TYPES:
        return
    if new in PRESENT:
        # the group's pushes speak the language of whoever added the bot (the update's locale)
        await deps.groups.register(
            chat.id, chat.title or "", chat.type, actor, deps.now(), lang=current_locale()
        )
        await audit(deps, actor, chat.id, "group:added" if old not in PRESENT else f"group:{new}")
        if old not in PRESENT:
            with contextlib.suppress(TelegramAPIError):
                await send(bot, chat.id, texts.group_welcome(chat.title or ""))
    else:
        await deps.groups.deactivate(chat.id)
        await audit(deps, actor, chat.id, "group:removed")


@router.message(Command("settings"), F.chat.type.in_(GROUP_TYPES))
async def cmd_group_settings(message: Message, bot: Bot, deps: BotDeps, audit: AuditNote) -> None:
    assert message.from_user is not None
    if not await is_group_admin(bot, message.chat.id, message.from_user.id):
        audit.ok, audit.detail = False, "not_group_admin"
        await send(bot, message.chat.id, texts.GROUP_ADMINS_ONLY)
        return
    group = await deps.groups.get(message.chat.id)
    if group is None:  # added before we kept groups: register it now
        await deps.groups.register(
            message.chat.id, message.chat.title or "", message.chat.type, 0, deps.now()
        )
        group = await deps.groups.get(message.chat.id)
        assert group is not None
    audit.detail = "group"
    await send(
        bot,
        message.chat.id,
        texts.group_settings_text(group.title, group.pushes_on, group.min_net_bps),
        keyboards.group_settings(group.pushes_on, group.min_net_bps),
    )


@router.callback_query(GroupSet.filter())
async def cb_group_set(
    callback: CallbackQuery, callback_data: GroupSet, bot: Bot, deps: BotDeps, audit: AuditNote
) -> None:
    msg = callback.message
    if msg is None or msg.chat.type not in GROUP_TYPES:
        audit.ok, audit.detail = False, "not_group"
        await answer(callback, texts.NOT_AVAILABLE)
        return
    chat_id = msg.chat.id
    if not await is_group_admin(bot, chat_id, callback.from_user.id):
        audit.ok, audit.detail = False, "not_group_admin"
        await answer(callback, texts.GROUP_ADMINS_ONLY)
        return
    field, value = callback_data.field, callback_data.value
    if field == "push" and value in ("0", "1"):
        await deps.groups.set(chat_id, pushes_on=value == "1")
    elif field == "minp" and value.isdigit() and int(value) in texts.MIN_PROFIT_CHOICES:
        await deps.groups.set(chat_id, min_net_bps=int(value))
    else:
        audit.ok, audit.detail = False, "bad_value"
        await answer(callback, texts.NOT_AVAILABLE)
        return
    audit.detail = f"group {field}={value}"
    await answer(callback, texts.SAVED)
    group = await deps.groups.get(chat_id)
    if group is not None:
        await show(
            bot,
            callback,
            texts.group_settings_text(group.title, group.pushes_on, group.min_net_bps),
            keyboards.group_settings(group.pushes_on, group.min_net_bps),
        )
