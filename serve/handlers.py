"""The update handlers a bot shard can run (:mod:`serve.dispatch` builds one per shard).

- :func:`aiogram_handler_factory`: the real bot (aiogram ``Dispatcher`` over the Redis
  stores, replies paced by the shared rate limiter, ``/admin why`` and ``/forget``
  reaching the running distributor);
- :func:`noop_handler_factory`: accepts and drops (benchmarks);
- :class:`RedisRecorder`: records what it was given in a Redis list (tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from core.bots import BOT_FIELD
from core.settings import Settings
from serve.dispatch import UpdateHandler
from serve.webhook import update_chat_id

if TYPE_CHECKING:
    from bot.deps import BotDeps, Explainer
    from state.bots import RedisBotBindings

log = logging.getLogger(__name__)


async def aiogram_handler_factory(settings: Settings, shard: int) -> UpdateHandler:
    """The real bot: ``build_dispatcher(await build_deps(...))`` and ``build_bot(settings)``."""
    from aiogram.types import Update

    from actors.sink import SINK_NAME, get_sink
    from bot.app import build_dispatcher  # type: ignore[import-not-found, unused-ignore]
    from bot.deps import RaySinkEvents, build_deps  # type: ignore[import-not-found, unused-ignore]
    from notify.client import build_bot
    from state.bots import RedisBotBindings

    try:
        sink = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
    except ValueError:  # `arbflow serve` alone: the bot still writes its events to the lake
        sink = get_sink(settings, lifetime="detached")
    deps = await build_deps(settings, settings.redis.url, events=RaySinkEvents(sink))
    dp = build_dispatcher(deps)
    # One aiogram Bot per bot of the pool (docs/bot-pool.md): an update is handled with the
    # bot it came to, so the replies go through that bot. Replies share the push side's rate
    # limiter (each bot its own budget), so a reply and a push never collide.
    ids: list[int | None] = list(settings.telegram.bot_ids) or [None]
    tokens: list[str | None] = list(settings.telegram.pool) or [None]
    bots = {}
    for bot_id, token in zip(ids, tokens, strict=True):
        one = build_bot(settings, token=token)
        one.session.middleware(paced_sends(settings, bot=bot_id if len(ids) > 1 else None))
        bots[bot_id] = one
    bot = bots[ids[0]]
    binder = BotBinder(RedisBotBindings(deps.users.client)) if len(ids) > 1 else None

    from actors.opportunities import DISTRIBUTOR_NAME

    local = local_explainer(deps)

    async def explain(user_id: int, opportunity: Any) -> tuple[int, str]:
        """``/admin why`` from the running distributor's directory, else a local one."""
        try:
            distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
        except ValueError:
            return await local(user_id, opportunity)
        layer, reason = await distributor.why.remote(user_id, dict(opportunity))
        return int(layer), str(reason)

    deps.explainer = explain

    async def replay(limit: int) -> int:
        distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
        return int(await distributor.replay_dead_letters.remote(limit))

    deps.replayer = replay

    async def forget(user_id: int) -> int:
        """``/forget``: the running distributor drops the user's row and queued pushes."""
        try:
            distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
        except ValueError:  # no push side runs: nothing is queued
            return 0
        return int(await distributor.forget.remote(user_id))

    deps.forgetter = forget

    async def test_webhook(endpoint_id: str) -> dict[str, Any]:
        """``/webhooks test``: one sample POST from this process, under the address rules."""
        from actors.outbound import probe_endpoint

        assert deps.webhooks is not None
        return await probe_endpoint(settings, deps.webhooks, endpoint_id)

    deps.webhook_tester = test_webhook

    async def handle(update: dict[str, Any]) -> None:
        came_to = update.pop(BOT_FIELD, None)
        own = bots.get(came_to, bot)
        if binder is not None and came_to in bots:
            await binder.note(update, came_to)
        await dp.feed_update(own, Update.model_validate(update, context={"bot": own}))

    async def aclose() -> None:
        for one in bots.values():
            await one.session.close()

    handle.aclose = aclose  # type: ignore[attr-defined]
    return handle


_LEAVING = frozenset({"kicked", "left"})


class BotBinder:
    """Binds a chat to the bot of the pool an update of it came to (docs/bot-pool.md): the bot
    the chat last talked to (a first ``/start``, and any later message, button or membership
    change through another bot of the pool) is the one its pushes go through. An update that
    says the chat left that bot (blocked it, removed it from a group) binds nothing. Written
    to Redis only when it changes (a shard remembers what it wrote)."""

    KEPT = 100_000

    def __init__(self, bindings: RedisBotBindings) -> None:
        self.bindings = bindings
        self.known: dict[int, int] = {}
        self.binds = 0

    async def note(self, update: Mapping[str, Any], bot: int) -> None:
        chat = update_chat_id(update)
        message = update.get("message")
        start = isinstance(message, dict) and str(message.get("text") or "").startswith("/start")
        if chat is None or "poll" in update or (self.known.get(chat) == bot and not start):
            return  # a /start is written again: a /forget meanwhile erased the binding
        member = update.get("my_chat_member")
        if isinstance(member, dict) and (member.get("new_chat_member") or {}).get("status") in _LEAVING:
            return
        try:
            if await self.bindings.bind(chat, bot):
                self.binds += 1
        except Exception as exc:  # the reply matters more: bound at the chat's next update
            log.warning("binding chat %s to bot %s failed: %s", chat, bot, exc)
            return
        if len(self.known) >= self.KEPT:
            self.known.clear()
        self.known[chat] = bot


def local_explainer(deps: BotDeps) -> Explainer:
    """``/admin why`` from a directory of the bot's Redis loaded for the question (where no
    distributor runs; fine for small deployments): a :class:`bot.deps.Explainer`."""

    async def explain(user_id: int, opportunity: Mapping[str, Any], /) -> tuple[int, str]:
        from actors.directory import UserDirectory
        from core.eligibility import OpportunityView

        directory = UserDirectory(deps.settings, deps.users.client, prefix=deps.users.prefix)
        now = deps.now()
        await directory.load(now)
        try:
            layer, reason = await directory.why(user_id, OpportunityView.from_event(opportunity), now)
        except KeyError:
            return 1, "session.none"
        return int(layer), str(reason)

    return explain


class LimiterReserve:
    """``reserve`` for :class:`bot.pacing.PacedSends`: the ``ratelimit:global`` actor.

    Created on first use (``get_if_exists``); after a failed call the handle is dropped and
    the actor looked up again by name on the next call (a killed limiter that someone
    started again is found; a missing one raises, and the pacer paces locally)."""

    def __init__(self, settings: Settings, bot: int | None = None) -> None:
        from actors.ratelimit import get_rate_limiter

        self.settings = settings
        self.bot = bot
        """The bot of the pool whose budget the replies take (None: the primary)."""
        self.actor: Any = get_rate_limiter(settings)

    async def __call__(self, requests: list[tuple[int | str, bool]]) -> list[float]:
        from actors.ratelimit import RATE_LIMITER_NAME

        actor = self.actor
        if actor is None:
            actor = self.actor = ray.get_actor(RATE_LIMITER_NAME, namespace=self.settings.ray.namespace)
        try:
            if self.bot is None:
                return list(await actor.reserve.remote(requests))
            return list(await actor.reserve.remote(requests, self.bot))
        except Exception:
            self.actor = None
            raise


def paced_sends(settings: Settings, bot: int | None = None, **options: Any) -> Any:
    """The bot's ``sendMessage`` pacing: the shared limiter (``bot``: that bot's budget of the
    pool), else local buckets with its limits."""
    from actors.ratelimit import configured_rate
    from bot.pacing import PacedSends
    from core.flood import FloodLimits

    limits = FloodLimits.telegram(global_rate=configured_rate(settings))
    return PacedSends(LimiterReserve(settings, bot), limits=limits, **options)


def noop_handler_factory(settings: Settings, shard: int) -> UpdateHandler:
    """Accepts every update and does nothing (benchmarks)."""

    async def handle(update: dict[str, Any]) -> None:
        return None

    return handle


@dataclass(frozen=True)
class RedisRecorder:
    """Test handler: RPUSH ``{"update_id", "chat", "shard"}`` to the Redis list ``key``.

    ``jitter_s`` sleeps up to that long before recording (varying by update), so a
    shard that did not keep one chat's order would show it.
    """

    key: str
    jitter_s: float = 0.0
    fail_every: int = 0
    """Raise on every ``fail_every``-th update (by ``update_id``) after recording it."""
    hold_key: str = ""
    """While this Redis key exists, updates wait before they are recorded (a busy bot)."""

    async def __call__(self, settings: Settings, shard: int) -> UpdateHandler:
        from state.redis import redis_client

        client = redis_client(settings.redis.url)
        key, jitter, fail_every, hold = self.key, self.jitter_s, self.fail_every, self.hold_key

        async def handle(update: dict[str, Any]) -> None:
            uid = int(update["update_id"])
            while hold and await client.exists(hold):  # noqa: ASYNC110 - a Redis key, polled
                await asyncio.sleep(0.02)
            if jitter:
                await asyncio.sleep(jitter * ((uid * 7919) % 10) / 10)
            row = {"update_id": uid, "chat": update_chat_id(update), "shard": shard}
            await client.rpush(key, json.dumps(row))
            if fail_every and uid % fail_every == 0:
                raise RuntimeError(f"injected failure on update {uid}")

        handle.aclose = client.aclose  # type: ignore[attr-defined]
        return handle
