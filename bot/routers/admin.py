"""``/admin`` (SuperAdmins from ``ARBFLOW_SUPERADMIN_IDS``, private chats only).

- ``/admin``: stats (users, active sessions, groups, open opportunities; deliveries
  today are "n/a" until the delivery engine publishes a counter).
- ``/admin tier <user_id> <tier>``: set a user's stored tier (the user is told).
- ``/admin broadcast <text>``: to every active session's user, paced at ``BROADCAST_RATE``
  messages/s (under Telegram's 30/s, leaving room for pushes); a user who blocked the bot
  has their session ended (``blocked``).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError, TelegramRetryAfter
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot import texts
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, end_session, send
from core.accounts import Tier, TierPolicy
from core.sessions import EndReason

router = RouterSpec("admin")

BROADCAST_RATE = 25.0


async def broadcast(bot: Bot, deps: BotDeps, text: str, *, rate: float = BROADCAST_RATE) -> tuple[int, int]:
    """(sent, failed) over every user with an active session."""
    body = texts.broadcast_body(text)
    sent = failed = 0
    gap = 1.0 / max(rate, 0.1)
    for uid in await deps.sessions.active_user_ids(deps.now()):
        for attempt in range(2):
            try:
                await send(bot, uid, body)
                sent += 1
                break
            except TelegramRetryAfter as exc:
                if attempt:
                    failed += 1
                else:
                    await asyncio.sleep(exc.retry_after)
            except TelegramForbiddenError:
                failed += 1
                await end_session(deps, uid, EndReason.BLOCKED)
                break
            except TelegramAPIError:
                failed += 1
                break
        await asyncio.sleep(gap)
    return sent, failed


@router.message(Command("admin"))
async def cmd_admin(
    message: Message,
    command: CommandObject,
    bot: Bot,
    deps: BotDeps,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    if policy.tier is not Tier.SUPERADMIN:
        audit.ok, audit.detail = False, "not_superadmin"
        await send(bot, message.chat.id, texts.ADMIN_ONLY)
        return
    if message.chat.type != "private":
        audit.ok, audit.detail = False, "not_private"
        await send(bot, message.chat.id, texts.PRIVATE_ONLY)
        return
    raw = command.args or ""
    sub, _, rest = raw.strip().partition(" ")
    sub = sub.lower()
    if sub == "":
        now = deps.now()
        users, sessions, groups, opps = await asyncio.gather(
            deps.users.count(),
            deps.sessions.count_active(now),
            deps.groups.count(),
            deps.opportunities.count(),
        )
        audit.detail = "stats"
        await send(bot, message.chat.id, texts.admin_stats(users, sessions, groups, None, opps))
        return
    if sub == "tier":
        parts = rest.split()
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.ADMIN_USAGE)
            return
        try:
            tier = Tier(parts[1].lower())
        except ValueError:
            audit.ok, audit.detail = False, "bad_tier"
            await send(bot, message.chat.id, texts.admin_bad_tier(parts[1]))
            return
        target = int(parts[0])
        if not await deps.users.set_tier(target, tier):
            audit.ok, audit.detail = False, "no_user"
            await send(bot, message.chat.id, texts.admin_no_user(parts[0]))
            return
        audit.detail = f"tier {target} {tier.value}"
        await send(bot, message.chat.id, texts.admin_tier_set(target, tier))
        with contextlib.suppress(TelegramAPIError):
            await send(bot, target, texts.tier_changed(tier))
        return
    if sub == "why":
        parts = rest.split()
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.ADMIN_USAGE)
            return
        target, opportunity_id = int(parts[0]), parts[1]
        opportunity = await deps.opportunities.get(opportunity_id)
        if opportunity is None:
            audit.ok, audit.detail = False, "no_opportunity"
            await send(bot, message.chat.id, texts.admin_no_opportunity(opportunity_id))
            return
        layer, reason = await deps.explain(target, opportunity)
        audit.detail = f"why {target} {opportunity_id} -> {layer}:{reason}"
        await send(bot, message.chat.id, texts.admin_why(target, opportunity, layer, reason))
        return
    if sub == "broadcast" and rest.strip():
        sent, failed = await broadcast(bot, deps, rest.strip())
        audit.detail = f"broadcast sent={sent} failed={failed}"
        await send(bot, message.chat.id, texts.broadcast_done(sent, failed))
        return
    audit.ok, audit.detail = False, "bad_args"
    await send(bot, message.chat.id, texts.ADMIN_USAGE)
