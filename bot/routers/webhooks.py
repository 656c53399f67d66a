"""``/webhooks``: outbound webhooks (private chats; adding needs ``outbound.min_tier``, Premium).

- ``/webhooks`` lists the user's endpoints, secrets masked.
- ``/webhooks add URL``: the URL is parsed, its host resolved and every address checked
  (``state.webhooks.resolve_checked``: no loopback, private, link-local… target unless
  ``ARBFLOW_OUTBOUND__ALLOW_PRIVATE`` covers it; https unless it does); the reply shows the
  signing secret once. At most ``outbound.max_endpoints`` endpoints.
- ``/webhooks remove ID``, ``/webhooks enable ID`` (after it was disabled for failures),
  ``/webhooks test ID`` (one sample POST, through ``deps.webhook_tester``).

Audit rows: ``add <id>``, ``remove <id>``, ``enable <id>``, ``test <id>``, or the refusal
(``tier``, ``refused:<reason>``, ``limit``…); never a secret. docs/outbound-webhooks.md.
"""

from __future__ import annotations

from aiogram import Bot
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, send
from core.accounts import Tier, User
from notify import texts
from notify.texts import webhooks as wtexts
from state.webhooks import Refused, allowed_ranges, resolve_checked

router = RouterSpec("webhooks")


def _may_add(deps: BotDeps, user: User) -> bool:
    return deps.tier_of(user).rank >= Tier(deps.settings.outbound.min_tier).rank


@router.message(Command("webhooks"))
async def cmd_webhooks(
    message: Message, command: CommandObject, bot: Bot, deps: BotDeps, user: User, audit: AuditNote
) -> None:
    chat = message.chat.id
    args = (command.args or "").split()
    sub = args[0].lower() if args else ""
    if message.chat.type != "private":  # the secret is shown once: never in a group
        audit.ok, audit.detail = False, "not_private"
        await send(bot, chat, texts.PRIVATE_ONLY)
        return
    store = deps.webhooks
    if store is None:
        audit.ok, audit.detail = False, "unavailable"
        await send(bot, chat, texts.NOT_AVAILABLE)
        return
    tz = user.preferences.timezone or "UTC"
    if sub in ("add", "test", "enable") and not _may_add(deps, user):
        audit.ok, audit.detail = False, "tier"
        await send(bot, chat, texts.tier_required("webhooks", Tier(deps.settings.outbound.min_tier)))
        return
    if sub == "add" and len(args) == 2:
        url = args[1]
        try:
            await resolve_checked(url, allowed_ranges(deps.settings.outbound.allow_private))
        except Refused as exc:
            audit.ok, audit.detail = False, f"refused:{exc.reason}"[:40]
            await send(bot, chat, wtexts.webhook_refused(url, exc.reason))
            return
        limit = deps.settings.outbound.max_endpoints
        endpoint = await store.add(user.id, url, deps.now(), limit=limit)
        if endpoint is None:
            audit.ok, audit.detail = False, "limit"
            await send(bot, chat, wtexts.webhook_limit(limit))
            return
        audit.detail = f"add {endpoint.id}"
        await send(bot, chat, wtexts.webhook_added(endpoint))
        return
    if sub in ("remove", "enable", "test") and len(args) == 2:
        endpoint_id = args[1]
        owned = {e.id: e for e in await store.of_user(user.id)}
        if endpoint_id not in owned:
            audit.ok, audit.detail = False, f"unknown {sub}"[:40]
            await send(bot, chat, wtexts.webhook_unknown(endpoint_id))
            return
        audit.detail = f"{sub} {endpoint_id}"[:40]
        if sub == "remove":
            await store.remove(user.id, endpoint_id)
            await send(bot, chat, wtexts.webhook_removed(endpoint_id))
        elif sub == "enable":
            await store.set_enabled(endpoint_id, True)
            await send(bot, chat, wtexts.webhook_enabled(endpoint_id))
        elif deps.webhook_tester is None:
            audit.ok = False
            await send(bot, chat, wtexts.webhook_test_unavailable())
        else:
            try:
                result = await deps.webhook_tester(endpoint_id)
            except Exception:  # the sender is away: say so; nothing changed
                audit.ok = False
                await send(bot, chat, wtexts.webhook_test_unavailable())
                return
            audit.ok = bool(result.get("ok"))
            await send(
                bot,
                chat,
                wtexts.webhook_tested(endpoint_id, audit.ok, result.get("status"), result.get("error")),
            )
        return
    if sub:
        audit.ok, audit.detail = False, "bad_args"
    await send(bot, chat, wtexts.webhooks_list(await store.of_user(user.id), tz))
