"""Helpers shared by the push side's async actors: a lazily built implementation, the sink.

An async actor's ``__init__`` cannot await, and building its plain implementation needs
Redis and other actors: :class:`LazyImpl` builds it on the first call (once, however
many calls arrive meanwhile) and every method awaits :meth:`LazyImpl.impl_`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import pyarrow as pa
import ray

from core.settings import Settings

T = TypeVar("T")

Emit = Callable[[str, pa.Table], Awaitable[None]]


class LazyImpl(Generic[T]):
    """Mixin for an async actor whose implementation ``build()`` makes on first use."""

    _impl: T | None = None
    _starting: asyncio.Task[T] | None = None

    async def build(self) -> T:
        raise NotImplementedError

    async def impl_(self) -> T:
        if self._impl is None:
            if self._starting is None:
                self._starting = asyncio.get_running_loop().create_task(self.build())
            self._impl = await asyncio.shield(self._starting)
        return self._impl


def sink_emitter(settings: Settings) -> Emit:
    """Rows to the lake through ``sink:lake`` (awaited; nothing when no sink runs)."""
    from actors.sink import SINK_NAME

    try:
        sink: Any = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
    except ValueError:
        sink = None

    async def emit(dataset: str, table: pa.Table) -> None:
        if sink is not None:
            with contextlib.suppress(ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                await sink.add.remote(dataset, table)

    return emit


async def stop_task(task: asyncio.Task[Any] | None, timeout_s: float = 5.0) -> bool:
    """Cancel ``task`` and wait for it to end, at most ``timeout_s``; True if it ended.

    Cancels again every 100 ms: on Python 3.11 ``asyncio.wait_for`` can swallow a
    cancellation that lands as its inner future completes, and a loop built on it would
    then run on (a ``stop()`` that awaited the task once was seen to hang for good).
    """
    if task is None or task.done():
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    return task.done()
