"""The bot's work off the request path: a fixed set of shard actors ``bot:shard:NN``.

The webhook ingress acknowledges an update once it is deduplicated and *enqueued*
on its shard (``chat_id % N``); the shard runs the aiogram ``Dispatcher`` on its
own asyncio loop thread and feeds the update with ``dp.feed_update``.

Ordering: a shard is a plain (threaded-off, ``max_concurrency=1``) Ray actor, so the
calls of one caller reach it in order; ``handle`` only hands the update to the loop
(``call_soon_threadsafe``, FIFO) and returns. On the loop, updates of one chat form
a chain (each waits for the previous one of that chat), while different chats run
concurrently. A handler that raises is logged and counted; the shard carries on.

The handler is injectable: ``handler`` is an import path ``"module:attr"`` or a
picklable callable ``factory(settings, shard_index) -> handler`` (sync or async),
where ``handler(update_dict)`` is a coroutine function. The default,
:func:`aiogram_handler_factory`, builds the bot from ``bot.app`` / ``bot.deps``;
:class:`RedisRecorder` and :func:`noop_handler_factory` serve tests and benches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from core.settings import Settings
from serve.webhook import update_chat_id

log = logging.getLogger(__name__)

DEFAULT_SHARDS = 4
SHARD_PREFIX = "bot:shard"
DEFAULT_HANDLER = "serve.dispatch:aiogram_handler_factory"

UpdateHandler = Callable[[dict[str, Any]], Awaitable[Any]]
HandlerFactory = Callable[[Settings, int], "UpdateHandler | Awaitable[UpdateHandler]"]


def shard_name(index: int, prefix: str = SHARD_PREFIX) -> str:
    return f"{prefix}:{index:02d}"


def shard_index(update: Mapping[str, Any], n: int) -> int:
    """``chat_id % n`` (the sender's id for chat-less updates; ``update_id`` as a last resort)."""
    key = update_chat_id(update)
    if key is None:
        key = int(update.get("update_id") or 0)
    return key % n


def resolve_factory(handler: str | HandlerFactory) -> HandlerFactory:
    if callable(handler):
        return handler
    module, sep, attr = handler.partition(":")
    if not sep:
        module, _, attr = handler.rpartition(".")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"handler factory {handler!r} is not callable")
    return obj


# -- handler factories -------------------------------------------------------------------


async def aiogram_handler_factory(settings: Settings, shard: int) -> UpdateHandler:
    """The real bot: ``build_dispatcher(await build_deps(...))`` and ``build_bot(settings)``."""
    from aiogram.types import Update

    from actors.sink import SINK_NAME, get_sink
    from bot.app import build_bot, build_dispatcher  # type: ignore[import-not-found, unused-ignore]
    from bot.deps import RaySinkEvents, build_deps  # type: ignore[import-not-found, unused-ignore]

    try:
        sink = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
    except ValueError:  # `arbflow serve` alone: the bot still writes its events to the lake
        sink = get_sink(settings, lifetime="detached")
    deps = await build_deps(settings, settings.redis.url, events=RaySinkEvents(sink))
    dp = build_dispatcher(deps)
    bot = build_bot(settings)

    async def handle(update: dict[str, Any]) -> None:
        await dp.feed_update(bot, Update.model_validate(update, context={"bot": bot}))

    async def aclose() -> None:
        await bot.session.close()

    handle.aclose = aclose  # type: ignore[attr-defined]
    return handle


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

    async def __call__(self, settings: Settings, shard: int) -> UpdateHandler:
        from bot.stores import redis_client

        client = redis_client(settings.redis.url)
        key, jitter, fail_every = self.key, self.jitter_s, self.fail_every

        async def handle(update: dict[str, Any]) -> None:
            uid = int(update["update_id"])
            if jitter:
                await asyncio.sleep(jitter * ((uid * 7919) % 10) / 10)
            row = {"update_id": uid, "chat": update_chat_id(update), "shard": shard}
            await client.rpush(key, json.dumps(row))
            if fail_every and uid % fail_every == 0:
                raise RuntimeError(f"injected failure on update {uid}")

        handle.aclose = client.aclose  # type: ignore[attr-defined]
        return handle


# -- the shard ---------------------------------------------------------------------------


class UpdateShard:
    """Plain class (the actor's behaviour): a loop thread running one update handler."""

    RETRY_BUILD_S = 5.0

    def __init__(
        self, settings: Settings, index: int, handler: str | HandlerFactory = DEFAULT_HANDLER
    ) -> None:
        self.settings = settings
        self.index = index
        self.handler_spec = handler
        self.handler: UpdateHandler | None = None
        self.build_error: str | None = None
        self.received = 0
        self.handled = 0
        self.errors = 0
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._tails: dict[int | None, asyncio.Task[None]] = {}
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._build_task: asyncio.Task[UpdateHandler | None] | None = None
        self._last_build = 0.0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"bot-shard-{index}", daemon=True)
        self._thread.start()
        self._call(self._ensure_handler)  # start building now (aiogram's import takes seconds)

    # loop plumbing
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._idle = asyncio.Event()
        self._idle.set()
        self.loop.run_forever()

    def _call(self, fn: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        async def wrapper() -> Any:
            return await fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop)

    async def _build(self) -> UpdateHandler | None:
        try:
            made = resolve_factory(self.handler_spec)(self.settings, self.index)
            handler = await made if inspect.isawaitable(made) else made
        except Exception as exc:
            self.build_error = f"{type(exc).__name__}: {exc}"
            log.exception("bot shard %s: building the update handler failed", self.index)
            return None
        self.handler, self.build_error = handler, None
        return handler

    async def _ensure_handler(self) -> UpdateHandler | None:
        if self.handler is not None:
            return self.handler
        if self._build_task is None or (
            self._build_task.done() and time.monotonic() - self._last_build >= self.RETRY_BUILD_S
        ):
            self._last_build = time.monotonic()
            self._build_task = self.loop.create_task(self._build())
        return await asyncio.shield(self._build_task)

    # ordering: one chain of tasks per chat
    def _enqueue(self, update: dict[str, Any]) -> None:
        key = update_chat_id(update)
        prev = self._tails.get(key)
        task = self.loop.create_task(self._process(prev, update))
        self._tails[key] = task
        self._inflight += 1
        assert self._idle is not None
        self._idle.clear()

        def done(t: asyncio.Task[None]) -> None:
            if self._tails.get(key) is t:
                del self._tails[key]
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

        task.add_done_callback(done)

    async def _process(self, prev: asyncio.Task[None] | None, update: dict[str, Any]) -> None:
        if prev is not None and not prev.done():
            await asyncio.wait([prev])
        try:
            handler = await self._ensure_handler()
            if handler is None:
                raise RuntimeError(f"no update handler: {self.build_error}")
            await handler(update)
            self.handled += 1
        except Exception:
            self.errors += 1
            log.exception("bot shard %s: update %s failed", self.index, update.get("update_id"))

    # the actor's API (called from the actor thread)
    def handle(self, update: dict[str, Any]) -> int:
        """Enqueue one update; returns the shard's count of received updates."""
        self.loop.call_soon_threadsafe(self._enqueue, update)
        with self._lock:
            self.received += 1
            return self.received

    def handle_many(self, updates: Sequence[dict[str, Any]]) -> int:
        for update in updates:
            self.loop.call_soon_threadsafe(self._enqueue, update)
        with self._lock:
            self.received += len(updates)
            return self.received

    def ready(self, timeout_s: float = 0.0) -> dict[str, Any]:
        """``{"ready": bool, "error": ...}``; waits up to ``timeout_s`` for the handler."""
        fut = self._call(self._ensure_handler)
        if timeout_s > 0:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                fut.result(timeout=timeout_s)
        return {"ready": self.handler is not None, "error": self.build_error, "shard": self.index}

    def stats(self) -> dict[str, Any]:
        return {
            "shard": self.index,
            "received": self.received,
            "handled": self.handled,
            "errors": self.errors,
            "inflight": self._inflight,
            "ready": self.handler is not None,
            "error": self.build_error,
        }

    def drain(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until every update received so far is handled (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.handled + self.errors >= self.received:
                break
            time.sleep(0.01)
        return self.stats()

    def shutdown(self, timeout_s: float = 10.0) -> dict[str, Any]:
        stats = self.drain(timeout_s)

        async def close() -> None:
            aclose = getattr(self.handler, "aclose", None)
            if aclose is not None:
                res = aclose()
                if inspect.isawaitable(res):
                    await res

        try:
            self._call(close).result(timeout=timeout_s)
        except Exception as exc:
            log.warning("bot shard %s: closing the handler failed: %s", self.index, exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        return stats


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class UpdateShardActor(UpdateShard):
    """``bot:shard:NN`` — sync actor (``max_concurrency=1``): one caller's calls run in order."""


# -- the router used by the ingress ----------------------------------------------------------


class UpdateShards:
    """The fixed set of shard actors and the routing ``chat_id % N``.

    Actors are named ``{prefix}:NN`` in ``settings.ray.namespace``, created with
    ``get_if_exists`` (every ingress replica shares them) and, by default, detached,
    so a replica that scales down does not take them along; :meth:`shutdown` ends them.
    """

    def __init__(
        self,
        settings: Settings,
        n: int = DEFAULT_SHARDS,
        *,
        handler: str | HandlerFactory = DEFAULT_HANDLER,
        prefix: str = SHARD_PREFIX,
        detached: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError("at least one shard")
        self.settings = settings
        self.n = n
        self.handler = handler
        self.prefix = prefix
        self.detached = detached
        self.names = [shard_name(i, prefix) for i in range(n)]
        self.actors: list[Any] = []

    def start(self) -> UpdateShards:
        opts: dict[str, Any] = {"namespace": self.settings.ray.namespace, "get_if_exists": True}
        if self.detached:
            opts["lifetime"] = "detached"
        self.actors = [
            UpdateShardActor.options(name=name, **opts).remote(  # type: ignore[attr-defined]
                self.settings, i, self.handler
            )
            for i, name in enumerate(self.names)
        ]
        return self

    def shard_for(self, update: Mapping[str, Any]) -> int:
        return shard_index(update, self.n)

    def submit(self, update: dict[str, Any]) -> Any:
        """The ObjectRef of the enqueue (await it: resolved once the shard holds the update)."""
        return self.actors[self.shard_for(update)].handle.remote(update)

    async def enqueue(self, update: dict[str, Any]) -> int:
        return int(await self.submit(update))

    def ready(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        return list(ray.get([a.ready.remote() for a in self.actors], timeout=timeout_s))

    def stats(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        return list(ray.get([a.stats.remote() for a in self.actors], timeout=timeout_s))

    def drain(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        return list(ray.get([a.drain.remote(timeout_s) for a in self.actors], timeout=timeout_s + 10))

    def shutdown(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Drain, close the handlers and kill the actors (no restart)."""
        stats: list[dict[str, Any]] = []
        try:
            stats = list(ray.get([a.shutdown.remote(timeout_s) for a in self.actors], timeout=timeout_s + 10))
        except Exception as exc:
            log.warning("bot shards: shutdown: %s", exc)
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        return stats

    @classmethod
    def attach(cls, settings: Settings, n: int = DEFAULT_SHARDS, prefix: str = SHARD_PREFIX) -> UpdateShards:
        """Handles to running shards by name (``ValueError`` when one is missing)."""
        shards = cls(settings, n, prefix=prefix)
        shards.actors = [ray.get_actor(name, namespace=settings.ray.namespace) for name in shards.names]
        return shards
