"""``/apikeys``: read-only exchange API keys (Basic and above, private chats only).

``/apikeys add <exchange> <key> [secret] [password]``: the message holding the key is
deleted before anything reads it (:class:`bot.middlewares.SecretScrub`: wherever it was
sent, whatever the tier, even when the throttle or the session gate refuses it). Only the
exchange and the masked key are stored: what the "only my exchanges" filter uses; nothing
uses the secret, so it is dropped (the reply says so). Only the masked key is ever shown.
``/apikeys`` lists them masked with a remove button each; ``/apikeys remove <exchange>``.
Audit rows name the exchange, never the key.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot import keyboards, texts
from bot.callbacks import KeyRemove
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, answer, refuse_foreign, send, show
from core.accounts import Command as Cmd
from core.accounts import Tier, TierPolicy, User

router = RouterSpec("apikeys")

_MAX_LEN = 512


def _plausible(value: str) -> bool:
    return 0 < len(value) <= _MAX_LEN and value.isprintable() and " " not in value


@router.message(Command("apikeys"))
async def cmd_apikeys(
    message: Message,
    command: CommandObject,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
    secret_deleted: bool = False,
) -> None:
    args = (command.args or "").split()
    sub = args[0].lower() if args else ""
    deleted = bool(secret_deleted)  # an ``add`` was deleted by SecretScrub before any gate
    if message.chat.type != "private":
        audit.ok, audit.detail = False, "not_private"
        await send(bot, message.chat.id, texts.PRIVATE_ONLY)
        return
    if not policy.allows_command(Cmd.APIKEYS):
        audit.ok, audit.detail = False, "tier"
        await send(bot, message.chat.id, texts.tier_required("apikeys", Tier.BASIC))
        return
    if sub == "add":
        if len(args) not in (3, 4, 5) or not all(_plausible(a) for a in args[2:]):  # a secret is optional
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.apikeys_usage())
            return
        exchange = args[1].lower()
        if exchange not in deps.exchanges:
            audit.ok, audit.detail = False, "unknown_exchange"
            await send(bot, message.chat.id, texts.unknown_exchange(exchange, deps.exchanges))
            return
        stored = deps.vault.record(exchange, args[2], deps.now())  # the secret is not kept
        await deps.users.add_api_key(user.id, stored)
        audit.detail = f"add {exchange}"
        await send(bot, message.chat.id, texts.apikey_added(exchange, stored.key_masked, deleted))
        return
    if sub == "remove" and len(args) == 2:
        exchange = args[1].lower()
        removed = await deps.users.remove_api_key(user.id, exchange)
        audit.ok, audit.detail = removed, f"remove {exchange}"[:40]
        await send(bot, message.chat.id, texts.apikey_removed(exchange) if removed else texts.NOT_AVAILABLE)
        return
    if sub:
        audit.ok, audit.detail = False, "bad_args"
    fresh = await deps.users.get(user.id) or user
    await send(bot, message.chat.id, texts.apikeys_list(fresh), keyboards.apikeys(fresh))


@router.callback_query(KeyRemove.filter())
async def cb_remove(
    callback: CallbackQuery,
    callback_data: KeyRemove,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    if await refuse_foreign(callback, callback_data.uid, audit):
        return
    exchange = callback_data.exchange.lower()
    removed = await deps.users.remove_api_key(user.id, exchange)
    audit.ok, audit.detail = removed, f"remove {exchange}"[:40]
    await answer(callback, texts.apikey_removed(exchange) if removed else texts.NOT_AVAILABLE)
    fresh = await deps.users.get(user.id) or user
    await show(bot, callback, texts.apikeys_list(fresh), keyboards.apikeys(fresh))
