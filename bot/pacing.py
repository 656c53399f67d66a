"""The bot's own replies take their send slot from the same global rate limiter as pushes.

Without it, a reply to a user's command and a push to that user in the same second
would exceed Telegram's 1 msg/s per chat and earn a 429. :class:`PacedSends` is an
aiogram request middleware: before each ``sendMessage`` it asks the limiter
(``actors.ratelimit``, through an injected ``reserve`` coroutine) for a slot and waits
for it. If the limiter does not answer in time the message goes anyway: a reply is
never lost to pacing (a 429 then is handled like any other).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.methods.base import Response, TelegramType

log = logging.getLogger(__name__)

Reserve = Callable[[list[tuple[int | str, bool]]], Awaitable[list[float]]]


def is_group_chat(chat_id: int | str) -> bool:
    """Groups, supergroups and channels have negative ids (or an ``@name``)."""
    return isinstance(chat_id, str) or chat_id < 0


class PacedSends(BaseRequestMiddleware):
    def __init__(self, reserve: Reserve, *, timeout_s: float = 2.0, max_wait_s: float = 10.0) -> None:
        self.reserve = reserve
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.waited = 0
        self.unpaced = 0

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if isinstance(method, SendMessage):
            chat: Any = method.chat_id
            try:
                delays = await asyncio.wait_for(self.reserve([(chat, is_group_chat(chat))]), self.timeout_s)
                delay = min(self.max_wait_s, float(delays[0]))
            except Exception as exc:  # the limiter restarting or away: send unpaced
                self.unpaced += 1
                log.warning("pacing: no slot from the rate limiter (%r); sending unpaced", exc)
                delay = 0.0
            if delay > 0:
                self.waited += 1
                await asyncio.sleep(delay)
        return await make_request(bot, method)
