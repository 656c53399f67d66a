"""``/apikeys``: read-only exchange API keys (Basic and above, private chats only).

``/apikeys add <exchange> <key> <secret> [passphrase]``: the message holding the key is
deleted before anything reads it (:class:`bot.middlewares.SecretScrub`: wherever it was
sent, whatever the tier, even when the throttle or the session gate refuses it). The key
is then checked with the exchange (:func:`pipeline.sources.permissions.check_key`, through
``deps.check_key``): a key that can trade, withdraw or move funds is refused, naming the
permissions to turn off; a key the exchange refuses, or that cannot be checked (the
exchange does not answer, or has no permission endpoint), is refused and the reply says
why. Only a verified read-only key is stored, as the exchange and the masked key: what the
"only my exchanges" filter uses; nothing uses the secret, so it is dropped (the reply says
so). Only the masked key is ever shown.
``/apikeys`` lists them masked with a remove button each; ``/apikeys remove <exchange>``.
Audit rows name the exchange, never the key.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import KeyRemove
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, answer, refuse_foreign, send, show
from core.accounts import Command as Cmd
from core.accounts import Tier, TierPolicy, User
from notify import texts

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
        if len(args) not in (4, 5) or not all(_plausible(a) for a in args[2:]):  # the secret checks the key
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.apikeys_add_usage() + texts.apikey_not_deleted(deleted))
            return
        exchange = args[1].lower()
        if exchange not in deps.exchanges:
            audit.ok, audit.detail = False, "unknown_exchange"
            await send(bot, message.chat.id, texts.unknown_exchange(exchange, deps.exchanges))
            return
        await _add_checked(bot, message.chat.id, deps, user, audit, exchange, args[2:], deleted)
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


async def _add_checked(
    bot: Bot,
    chat_id: int,
    deps: BotDeps,
    user: User,
    audit: AuditNote,
    exchange: str,
    credentials: list[str],
    deleted: bool,
) -> None:
    """Ask the exchange what the key may do; store it only when it is read-only."""
    from pipeline.sources.permissions import CheckStatus

    api_key, secret = credentials[0], credentials[1]
    password = credentials[2] if len(credentials) > 2 else None
    check = await deps.check_key(exchange, api_key, secret, password)
    note = texts.apikey_not_deleted(deleted)
    if check.status is CheckStatus.VERIFIED and check.permissions is not None:
        if not check.permissions.read_only:
            audit.ok, audit.detail = False, f"not_read_only {exchange}"[:40]
            text = texts.apikey_refused_permissions(exchange, check.permissions.to_turn_off)
            await send(bot, chat_id, text + note)
            return
        stored = deps.vault.record(exchange, api_key, deps.now())  # the secret is not kept
        await deps.users.add_api_key(user.id, stored)
        audit.detail = f"add {exchange}"
        reply = (
            texts.apikey_read_only(exchange) + "\n" + texts.apikey_added(exchange, stored.key_masked, deleted)
        )
        await send(bot, chat_id, reply)
        return
    audit.ok, audit.detail = False, f"{check.status.value} {exchange}"[:40]
    if check.status is CheckStatus.REJECTED:
        text = texts.apikey_rejected(exchange)
    elif check.status is CheckStatus.UNSUPPORTED:
        text = texts.apikey_unsupported(exchange)
    else:
        text = texts.apikey_unverified(exchange)
    await send(bot, chat_id, text + note)


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
