"""The bot's replies paced by the global rate limiter, against the real sandbox."""

from __future__ import annotations

import time

from actors.ratelimit import RateLimiter
from bot.app import build_bot
from bot.pacing import PacedSends, is_group_chat
from core.flood import FloodLimits
from core.settings import Settings, TelegramSettings
from serve.sandbox import start_sandbox


async def test_replies_wait_for_their_slot_and_never_earn_a_429() -> None:
    sb = await start_sandbox(port=0)
    bot = build_bot(Settings(telegram=TelegramSettings(token=sb.token, api_base=sb.base_url)))
    limiter = RateLimiter(FloodLimits.telegram())

    async def reserve(requests: list[tuple[int | str, bool]]) -> list[float]:
        return limiter.reserve(requests)

    pacing = PacedSends(reserve)
    bot.session.middleware(pacing)
    try:
        t0 = time.monotonic()
        for i in range(5):  # the sandbox allows 3 at once, then 1/s: unpaced, the 4th is a 429
            await bot.send_message(4242, f"reply {i}")
        took = time.monotonic() - t0
        assert sb.sandbox.too_many == 0
        assert pacing.waited >= 3
        assert took >= 2.0
    finally:
        await bot.session.close()
        await sb.stop()


async def test_without_a_limiter_a_reply_still_goes() -> None:
    sb = await start_sandbox(port=0)
    bot = build_bot(Settings(telegram=TelegramSettings(token=sb.token, api_base=sb.base_url)))

    async def broken(requests: list[tuple[int | str, bool]]) -> list[float]:
        raise ConnectionError("limiter restarting")

    pacing = PacedSends(broken)
    bot.session.middleware(pacing)
    try:
        message = await bot.send_message(4343, "hello")
        assert message.text == "hello"
        assert pacing.unpaced == 1
    finally:
        await bot.session.close()
        await sb.stop()


def test_group_chats_are_paced_as_groups() -> None:
    assert is_group_chat(-100123) and is_group_chat("@channel")
    assert not is_group_chat(42)
