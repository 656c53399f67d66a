"""``/subscription``: the tiers, their limits, and how to upgrade."""

from __future__ import annotations

from aiogram import Bot
from aiogram.filters import Command
from aiogram.types import Message

from bot import texts
from bot.deps import BotDeps
from bot.routers.common import RouterSpec, send
from core.accounts import TierPolicy

router = RouterSpec("subscription")


@router.message(Command("subscription"))
async def cmd_subscription(message: Message, bot: Bot, deps: BotDeps, policy: TierPolicy) -> None:
    await send(bot, message.chat.id, texts.subscription_text(deps.tiers, policy.tier))
