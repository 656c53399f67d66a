"""``/admin`` (SuperAdmins from ``ARBFLOW_SUPERADMIN_IDS``, private chats only).

- ``/admin``: stats (users, active sessions, groups, open opportunities from Redis;
  today's deliveries, sent/skipped, 429s, engagement rate and p99 latency from the lake
  through :mod:`pipeline.analytics`, read in a thread; "n/a" when the lake can't be read).
- ``/admin tier <user_id> <tier>``: set a user's stored tier (the user is told); it does not
  expire (a paid period running is ended).
- ``/admin broadcast <text>``: to every active session's user, paced at ``BROADCAST_RATE``
  messages/s (under Telegram's 30/s, leaving room for pushes); a user who blocked the bot
  has their session ended (``blocked``).
- ``/admin refund <telegram_payment_charge_id>``: refund a Stars payment (``refundStarPayment``);
  the user returns to Free. Unknown and already refunded charges are refused clearly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, end_session, send
from core.accounts import Tier, TierPolicy
from core.regions import parse_region
from core.sessions import EndReason
from notify import texts
from notify.i18n import pick_locale, use_locale

if TYPE_CHECKING:
    from pipeline.analytics import DeliveryFigures

log = logging.getLogger(__name__)
router = RouterSpec("admin")

BROADCAST_RATE = 25.0
STATS_TIMEOUT_S = 10.0


async def broadcast(bot: Bot, deps: BotDeps, text: str, *, rate: float = BROADCAST_RATE) -> tuple[int, int]:
    """(sent, failed) over every user with an active session, each in their language."""
    sent = failed = 0
    gap = 1.0 / max(rate, 0.1)
    for uid in await deps.sessions.active_user_ids(deps.now()):
        with use_locale(await language_of(deps, uid)):
            body = texts.broadcast_body(text)
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


async def language_of(deps: BotDeps, user_id: int) -> str:
    """The language of a message to another user than the one of the update."""
    user = await deps.users.get(user_id)
    return pick_locale(user.preferences.language, user.language_code) if user is not None else "en"


async def deliveries_today(deps: BotDeps) -> DeliveryFigures | None:
    """Today's (UTC) delivery figures from the lake, read off the event loop; None when the
    lake can't be read in ``STATS_TIMEOUT_S``."""
    from pipeline.analytics import delivery_figures, start_of_day
    from pipeline.lake import Lake

    now = deps.now()

    def read() -> DeliveryFigures:
        return delivery_figures(Lake.from_settings(deps.settings.lake), start_of_day(now), now=now)

    try:
        return await asyncio.wait_for(asyncio.to_thread(read), STATS_TIMEOUT_S)
    except Exception as exc:  # the lake is optional for /admin: say n/a
        log.warning("/admin stats: the lake could not be read: %s", exc)
        return None


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
        users, sessions, groups, opps, today = await asyncio.gather(
            deps.users.count(),
            deps.sessions.count_active(now),
            deps.groups.count(),
            deps.opportunities.count(),
            deliveries_today(deps),
        )
        audit.detail = "stats" if today is not None else "stats lake=n/a"
        await send(bot, message.chat.id, texts.admin_stats(users, sessions, groups, today, opps))
        return
    if sub == "tier":
        parts = rest.split()
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.ADMIN_USAGE)
            return
        try:
            tier = Tier(parts[1].lower())
            if tier is Tier.SUPERADMIN:  # only ARBFLOW_SUPERADMIN_IDS makes one
                raise ValueError(tier)
        except ValueError:
            audit.ok, audit.detail = False, "bad_tier"
            await send(bot, message.chat.id, texts.admin_bad_tier(parts[1]))
            return
        target = int(parts[0])
        # an admin's tier does not expire: a running paid period ends here (bot.payments)
        if not await deps.users.update_fields(target, tier=tier, tier_expires_at=None):
            audit.ok, audit.detail = False, "no_user"
            await send(bot, message.chat.id, texts.admin_no_user(parts[0]))
            return
        audit.detail = f"tier {target} {tier.value}"
        await send(bot, message.chat.id, texts.admin_tier_set(target, tier))
        with use_locale(await language_of(deps, target)), contextlib.suppress(TelegramAPIError):
            await send(bot, target, texts.tier_changed(tier))  # in the target's language
        return
    if sub == "beta":  # /admin beta <user_id> <flag> [off]: opportunities in beta need the flag
        parts = rest.split()
        flag = parts[1].lower() if len(parts) >= 2 else ""
        off = len(parts) == 3 and parts[2].lower() in ("off", "remove", "-")
        valid = len(parts) in (2, 3) and parts[0].lstrip("-").isdigit() and (len(parts) == 2 or off)
        if not valid or not (0 < len(flag) <= 32 and flag.replace("_", "").replace("-", "").isalnum()):
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.ADMIN_USAGE)
            return
        target = int(parts[0])
        found = await deps.users.get(target)
        flags = set() if found is None else set(found.beta_flags)
        flags = flags - {flag} if off else flags | {flag}
        if found is None or not await deps.users.update_fields(target, beta_flags=flags):
            audit.ok, audit.detail = False, "no_user"
            await send(bot, message.chat.id, texts.admin_no_user(parts[0]))
            return
        audit.detail = f"beta {target} {'-' if off else '+'}{flag}"
        await send(bot, message.chat.id, texts.admin_beta_set(target, sorted(flags)))
        return
    if sub == "region":  # /admin region <user_id> <XX|none>: the user cannot change it then
        parts = rest.split()
        region = parse_region(parts[1]) if len(parts) == 2 else None
        clear = len(parts) == 2 and parts[1].lower() in ("none", "unset", "-")
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit() or (region is None and not clear):
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.ADMIN_USAGE)
            return
        target = int(parts[0])
        if not await deps.users.update_fields(target, region=region, region_by_admin=not clear):
            audit.ok, audit.detail = False, "no_user"
            await send(bot, message.chat.id, texts.admin_no_user(parts[0]))
            return
        audit.detail = f"region {target} {region or 'none'}"
        await send(bot, message.chat.id, texts.admin_region_set(target, region))
        return
    if sub == "replay":
        arg = rest.strip()
        if arg and not arg.isdigit():
            audit.ok, audit.detail = False, "bad_args"
            await send(bot, message.chat.id, texts.ADMIN_USAGE)
            return
        try:
            replayed = await deps.replay_dead_letters(int(arg or 1000))
        except ValueError:  # the distributor went away meanwhile
            replayed = None
        left = await deps.dead_letters()
        audit.ok, audit.detail = replayed is not None, f"replay {replayed} left={left}"
        await send(bot, message.chat.id, texts.admin_replayed(replayed, left))
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
    if sub == "refund":
        await refund(bot, deps, message.chat.id, rest.strip(), audit)
        return
    if sub == "broadcast" and rest.strip():
        sent, failed = await broadcast(bot, deps, rest.strip())
        audit.detail = f"broadcast sent={sent} failed={failed}"
        await send(bot, message.chat.id, texts.broadcast_done(sent, failed))
        return
    audit.ok, audit.detail = False, "bad_args"
    await send(bot, message.chat.id, texts.ADMIN_USAGE)


async def refund(bot: Bot, deps: BotDeps, chat_id: int, charge_id: str, audit: AuditNote) -> None:
    """``/admin refund <telegram_payment_charge_id>``: ``refundStarPayment``, then the payment
    is marked refunded and its user returns to Free (Redis, a ``payments`` lake row, audit).
    A charge Telegram says was already refunded is marked refunded too."""
    from notify.i18n import use_locale
    from state.payments import PAYMENTS_DATASET, RedisPaymentStore, payments_table

    if not charge_id or " " in charge_id or len(charge_id) > 200:
        audit.ok, audit.detail = False, "bad_args"
        await send(bot, chat_id, texts.admin_refund_usage())
        return
    store = RedisPaymentStore(deps.users)
    payment = await store.get(charge_id)
    if payment is None:
        audit.ok, audit.detail = False, f"refund unknown {charge_id}"
        await send(bot, chat_id, texts.admin_refund_unknown(charge_id))
        return
    if payment.refunded:
        audit.ok, audit.detail = False, f"refund already {charge_id}"
        await send(bot, chat_id, texts.admin_refund_already(charge_id))
        return
    already_at_telegram = False
    try:
        await bot.refund_star_payment(payment.user_id, charge_id)
    except TelegramBadRequest as exc:
        if "CHARGE_ALREADY_REFUNDED" not in str(exc):
            audit.ok, audit.detail = False, f"refund failed {charge_id}: {exc.message}"
            await send(bot, chat_id, texts.admin_refund_failed(charge_id, exc.message))
            return
        already_at_telegram = True  # refunded elsewhere: our records catch up below
    now = deps.now()
    refunded, changed = await store.mark_refunded(charge_id, now)
    if refunded is None:  # cannot happen: payments are never deleted
        audit.ok, audit.detail = False, f"refund unknown {charge_id}"
        await send(bot, chat_id, texts.admin_refund_unknown(charge_id))
        return
    if changed:  # else the refunded_payment message Telegram posts was handled first
        await deps.emit(PAYMENTS_DATASET, payments_table([refunded.row("refunded", now)]))
        with use_locale(await language_of(deps, refunded.user_id)):
            notice = texts.payment_refunded(refunded.stars)  # in the payer's language
        with contextlib.suppress(TelegramAPIError):
            await send(bot, refunded.user_id, notice)
    audit.detail = f"refund {charge_id} user={refunded.user_id} stars={refunded.stars}" + (
        " (already at telegram)" if already_at_telegram else ""
    )
    await send(bot, chat_id, texts.admin_refund_done(charge_id, refunded.user_id, refunded.stars))
