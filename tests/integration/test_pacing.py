"""The bot's replies paced by the global rate limiter, against the real sandbox.

Without the limiter (killed, unreachable) replies are paced by local buckets with the
same limits: never unpaced, never before their slot.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import ray

from actors.ratelimit import RATE_LIMITER_NAME, RateLimiter
from bot.pacing import HEADROOM, PacedSends, is_group_chat
from core.flood import FloodLimits
from core.settings import Settings, TelegramSettings
from notify.client import build_bot
from serve.handlers import paced_sends
from serve.standins.sandbox import start_sandbox


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


async def test_without_a_limiter_a_reply_still_goes_paced_locally() -> None:
    sb = await start_sandbox(port=0)
    bot = build_bot(Settings(telegram=TelegramSettings(token=sb.token, api_base=sb.base_url)))

    async def broken(requests: list[tuple[int | str, bool]]) -> list[float]:
        raise ConnectionError("limiter restarting")

    pacing = PacedSends(broken)
    bot.session.middleware(pacing)
    try:
        t0 = time.monotonic()
        message = await bot.send_message(4343, "hello")
        assert message.text == "hello"
        assert pacing.local_paced == 1 and pacing.limiter_errors == 1
        assert time.monotonic() - t0 >= 1 / HEADROOM - 0.05  # the local bucket starts drained
    finally:
        await bot.session.close()
        await sb.stop()


async def test_with_the_limiter_killed_replies_keep_the_per_chat_limit(
    ray_session: None, base_settings: Settings
) -> None:
    sb = await start_sandbox(port=0)
    ns = f"pacing-{uuid.uuid4().hex[:8]}"
    settings = base_settings.model_copy(
        update={
            "ray": base_settings.ray.model_copy(update={"namespace": ns}),
            "telegram": TelegramSettings(token=sb.token, api_base=sb.base_url),
        }
    )
    bot = build_bot(settings)
    pacing = paced_sends(settings)  # what the bot shards install: the real `ratelimit:global`
    bot.session.middleware(pacing)
    try:
        await pacing.reserve.actor.ready.remote()  # the actor's process is up (seconds, on a busy box)
        await bot.send_message(4444, "through the limiter")
        assert pacing.limited == 1
        limiter = ray.get_actor(RATE_LIMITER_NAME, namespace=ns)
        ray.kill(limiter, no_restart=True)
        for _ in range(200):  # the kill takes effect a moment later: a call meanwhile is answered
            try:
                await limiter.ready.remote()
            except ray.exceptions.RayActorError:
                break
            await asyncio.sleep(0.05)
        sent = []
        for i in range(4):  # unpaced, the sandbox (3 at once, then 1/s) would answer the 4th with 429
            await bot.send_message(4444, f"reply {i}")
            sent.append(time.monotonic())
        assert sb.sandbox.too_many == 0
        assert pacing.local_paced == 4 and pacing.limiter_errors >= 1
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert all(g >= 1 / HEADROOM - 0.05 for g in gaps), gaps  # spaced by the chat's rate
    finally:
        await bot.session.close()
        await sb.stop()


async def test_a_long_wait_is_waited_in_full() -> None:
    """A slot more than 10 s away (a 429's pause) is kept: the reply never goes before it."""
    sb = await start_sandbox(port=0)
    bot = build_bot(Settings(telegram=TelegramSettings(token=sb.token, api_base=sb.base_url)))
    limiter = RateLimiter(FloodLimits.telegram())
    limiter.pause(10.5, 4545)

    async def reserve(requests: list[tuple[int | str, bool]]) -> list[float]:
        return limiter.reserve(requests)

    bot.session.middleware(PacedSends(reserve))
    try:
        t0 = time.monotonic()
        await bot.send_message(4545, "after the pause")
        assert time.monotonic() - t0 >= 10.5
    finally:
        await bot.session.close()
        await sb.stop()


def test_group_chats_are_paced_as_groups() -> None:
    assert is_group_chat(-100123) and is_group_chat("@channel")
    assert not is_group_chat(42)
