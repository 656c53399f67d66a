"""``uq:NNN``, the Ray actor of a queue shard (:class:`QueueShardActor`: a :class:`QueueShard`
with its Redis, rate limiter, notifier and sink) and :func:`get_shards`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import ray

from actors.lazy import LazyImpl, sink_emitter
from actors.queues.base import LimiterRequest
from actors.queues.batches import shard_name
from actors.queues.shard import QueueShard
from core.flood import ClockOffset
from core.settings import Settings


class ActorLimiter:
    """The shard's :class:`actors.queues.base.Limiter` over the ``ratelimit:global`` actor.

    The limiter's slots are moments on its clock; they are placed on the shard's (``clock``,
    what the shard schedules by) through a :class:`ClockOffset` read from each call, so a
    reservation whose answer waited (a busy loop, a busy host) does not slide its slots
    later onto the next reservation's: the delays returned count from this call's return."""

    def __init__(
        self,
        actor: Any,
        clock: Callable[[], float] = time.time,
        bot_of: Callable[[int | str], int | None] | None = None,
    ) -> None:
        self.actor = actor
        self.clock = clock
        self.offset = ClockOffset()
        self.bot_of = bot_of
        """With a pool: each chat's bot, added to its request (the limiter keeps a budget per bot)."""

    async def reserve(self, requests: list[LimiterRequest]) -> list[float]:
        if self.bot_of is not None:
            bot_of = self.bot_of
            requests = [(r[0], r[1], r[2] if len(r) > 2 else None, bot_of(r[0])) for r in requests]  # type: ignore[misc]
        sent = self.clock()
        remote_now, delays = await self.actor.reserve_at.remote(requests)
        got = self.clock()
        start = remote_now - self.offset.note(sent, remote_now, got)  # on this clock
        return [start + d - got for d in delays]

    async def pause(self, retry_after_s: float, chat_id: int | str | None = None) -> None:
        bot = None if self.bot_of is None or chat_id is None else self.bot_of(chat_id)
        await self.actor.pause.remote(retry_after_s, chat_id, bot)


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class QueueShardActor(LazyImpl[QueueShard]):
    """``uq:NNN``: a :class:`QueueShard` with its Redis, rate limiter, notifier and sink."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index

    async def build(self) -> QueueShard:
        from actors.opportunities import DISTRIBUTOR_NAME
        from actors.queues.bots import ChatBots, PoolNotifier
        from actors.ratelimit import get_rate_limiter
        from notify.client import build_bot
        from notify.notifier import TelegramNotifier
        from pipeline.open_set import RedisOpportunityStore
        from state.bots import RedisBotBindings
        from state.redis import redis_client
        from state.sessions import RedisSessionStore

        settings = self.settings
        client = redis_client(settings.redis.url)
        limiter = get_rate_limiter(settings)
        sessions = RedisSessionStore(client)
        # "Still open?" is the open set itself: a queued push is expired by the close
        # event, which now always comes (idle ticks, retried writes, the start reconcile).
        opps = RedisOpportunityStore(client, stale_after_s={})

        async def on_blocked(chat: int | str, user_id: int | None) -> None:
            if user_id is not None:
                await sessions.end(user_id, "blocked", datetime.now(UTC))
            if isinstance(chat, int):
                with contextlib.suppress(ValueError, ray.exceptions.RayActorError):
                    distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
                    await distributor.note_blocked.remote([chat])

        async def is_open(ids: Sequence[str]) -> set[str]:
            return {i for i in ids if await opps.get(i) is not None}

        async def on_outcomes(pairs: list[tuple[int, str]]) -> None:
            with contextlib.suppress(ValueError, ray.exceptions.RayActorError):
                distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
                await distributor.note_outcomes.remote(pairs)

        # a pool of bots (docs/bot-pool.md): each chat's pushes through its bot, in its budget
        ids = settings.telegram.bot_ids
        chat_bots = ChatBots(ids, RedisBotBindings(client)) if len(ids) > 1 else ChatBots.single()
        notifier: Any = TelegramNotifier(build_bot(settings))
        if chat_bots.active:
            notifier = PoolNotifier(
                {
                    bot: TelegramNotifier(build_bot(settings, token=token))
                    for bot, token in zip(ids, settings.telegram.pool, strict=True)
                },
                chat_bots.of,
            )
        shard = QueueShard(
            settings,
            self.index,
            client=client,
            notifier=notifier,
            limiter=ActorLimiter(limiter, bot_of=chat_bots.of if chat_bots.active else None),
            chat_bots=chat_bots,
            emit=sink_emitter(settings, name=shard_name(self.index)),
            on_blocked=on_blocked,
            is_open=is_open,
            on_outcomes=on_outcomes,
        )
        from actors.outbound import OutboundHandoff, OutboundSender, notice_sender
        from state.webhooks import RedisWebhookStore

        webhooks = RedisWebhookStore(client)  # its users' outbound webhooks, sent from here
        sender = OutboundSender(settings, webhooks, emit=shard.emit, notice=notice_sender(settings, client))
        shard.outbound = OutboundHandoff(settings, webhooks, sender)
        return shard

    async def launch(self, impl: QueueShard) -> None:
        await impl.start()
        if impl.outbound is not None:  # its users' outbound webhooks
            impl.outbound.start()

    async def ready(self) -> int:
        return (await self.impl_()).pending()

    async def enqueue(self, event: dict[str, Any], batch: pa.Table, force: bool = False) -> int:
        return await (await self.impl_()).enqueue(event, batch, force=force)

    async def mark_closed(self, opportunity_ids: list[str]) -> int:
        return (await self.impl_()).mark_closed(opportunity_ids)

    async def drop_chat(self, chat: int) -> int:
        return (await self.impl_()).drop_chat(chat)

    async def expire(self, opportunity_ids: list[str], reason: str = "closed") -> int:
        return (await self.impl_()).expire(opportunity_ids, reason)

    async def flush(self) -> None:
        await (await self.impl_()).flush()

    async def stats(self) -> dict[str, Any]:
        shard = await self.impl_()
        return {**shard.stats(), **({"outbound": shard.outbound.stats()} if shard.outbound else {})}

    async def stop(self) -> dict[str, Any]:
        shard = await self.impl_()
        await shard.stop()
        if shard.outbound is not None:  # after the last sends: their pushes are handed over
            await shard.outbound.stop()
            return {**shard.stats(), "outbound": shard.outbound.stats()}
        return shard.stats()

    async def pid(self) -> int:
        import os

        return os.getpid()


def get_shards(settings: Settings) -> list[Any]:
    """The ``uq:NNN`` actors, created on first use."""
    return [
        QueueShardActor.options(  # type: ignore[attr-defined]
            name=shard_name(i), namespace=settings.ray.namespace, get_if_exists=True
        ).remote(settings, i)
        for i in range(settings.distribution.shards)
    ]
