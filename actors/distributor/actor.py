"""``dist:engine``, the Ray actor of the :class:`~actors.distributor.engine.Distributor`
(:class:`DistributorActor`), the queue-shard handles it awaits, and :func:`get_distributor`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray

from actors.directory import UserDirectory
from actors.distributor.engine import Distributor
from actors.lazy import LazyImpl, sink_emitter
from actors.opportunities import DISTRIBUTOR_NAME
from actors.personalization import run_task
from core.settings import Settings


class _ShardHandle:
    """A queue-shard actor handle as the :class:`Distributor` awaits it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def enqueue(self, event: dict[str, Any], batch: pa.Table, *, force: bool = False) -> int:
        return int(await self.handle.enqueue.remote(event, batch, force=force))

    async def expire(self, ids: list[str], reason: str = "closed") -> int:
        return int(await self.handle.expire.remote(ids, reason))

    async def drop_chat(self, chat: int) -> int:
        return int(await self.handle.drop_chat.remote(chat))


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class DistributorActor(LazyImpl[Distributor]):
    """``dist:engine``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def build(self) -> Distributor:
        from actors.queues import get_shards
        from state.redis import redis_client

        settings = self.settings
        client = redis_client(settings.redis.url)
        shards = [_ShardHandle(h) for h in get_shards(settings)]
        impl = Distributor(
            settings,
            client=client,
            directory=UserDirectory(settings, client),
            shards=shards,
            emit=sink_emitter(settings, name=DISTRIBUTOR_NAME),
            personalize=lambda: run_task(settings),
        )
        return impl

    async def launch(self, impl: Distributor) -> None:
        await impl.start()

    async def ready(self) -> dict[str, Any]:
        return (await self.impl_()).stats()

    async def on_events(self, events: list[dict[str, Any]]) -> dict[str, int]:
        return await (await self.impl_()).on_events(events)

    async def why(self, user_id: int, event: dict[str, Any]) -> tuple[int, str]:
        return await (await self.impl_()).why(user_id, event)

    async def note_blocked(self, chat_ids: list[int]) -> None:
        (await self.impl_()).note_blocked(chat_ids)

    async def forget(self, user_id: int) -> int:
        return await (await self.impl_()).forget(user_id)

    async def note_outcomes(self, pairs: list[tuple[int, str]]) -> int:
        return await (await self.impl_()).note_outcomes(pairs)

    async def recompute_model(self) -> dict[str, Any]:
        return await (await self.impl_()).recompute_model()

    async def replay_dead_letters(self, limit: int = 1000) -> int:
        return await (await self.impl_()).replay_dead_letters(limit)

    async def stats(self) -> dict[str, Any]:
        return (await self.impl_()).stats()

    async def stop(self) -> dict[str, Any]:
        impl = await self.impl_()
        await impl.stop()
        return impl.stats()


def get_distributor(settings: Settings) -> Any:
    return DistributorActor.options(  # type: ignore[attr-defined]
        name=DISTRIBUTOR_NAME, namespace=settings.ray.namespace, get_if_exists=True
    ).remote(settings)
