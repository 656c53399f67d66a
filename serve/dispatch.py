"""The bot's work off the request path: a fixed set of shard actors ``bot:shard:NN``.

The webhook ingress acknowledges an update once it is deduplicated and *enqueued*
on its shard (``chat_id % N``); the shard runs the aiogram ``Dispatcher`` on its
own asyncio loop thread and feeds the update with ``dp.feed_update``.

Ordering: a shard is a plain (threaded-off, ``max_concurrency=1``) Ray actor, so the
calls of one caller reach it in order; ``accept_many`` only hands the batch to the loop
(one ``call_soon_threadsafe``, FIFO) and returns. On the loop, each chat with updates
pending has a queue and one worker task handling them in order, while different chats
run concurrently. A handler that raises is logged and counted; the shard carries on.

Bounded: a shard holds at most ``telegram.shard_backlog`` updates received and not yet
handled (they live only in its memory, acknowledged to Telegram and marked seen, so a
crash loses them). ``accept_many`` takes the prefix of a batch that fits and refuses the
rest; the ingress's forwarder answers 503 for what it could not hand on (Telegram
redelivers) and stops acknowledging early while the shard says it is full.

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
import os
import threading
import time
from collections import deque
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
    # Replies share the push side's rate limiter, so a reply and a push never collide.
    bot.session.middleware(paced_sends(settings))

    from actors.opportunities import DISTRIBUTOR_NAME

    async def explain(user_id: int, opportunity: Any) -> tuple[int, str]:
        """``/admin why`` from the running distributor's directory, else a local one."""
        try:
            distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=settings.ray.namespace)
        except ValueError:
            return await deps.explain_locally(user_id, opportunity)
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

    async def handle(update: dict[str, Any]) -> None:
        await dp.feed_update(bot, Update.model_validate(update, context={"bot": bot}))

    async def aclose() -> None:
        await bot.session.close()

    handle.aclose = aclose  # type: ignore[attr-defined]
    return handle


class LimiterReserve:
    """``reserve`` for :class:`bot.pacing.PacedSends`: the ``ratelimit:global`` actor.

    Created on first use (``get_if_exists``); after a failed call the handle is dropped and
    the actor looked up again by name on the next call (a killed limiter that someone
    started again is found; a missing one raises, and the pacer paces locally)."""

    def __init__(self, settings: Settings) -> None:
        from actors.ratelimit import get_rate_limiter

        self.settings = settings
        self.actor: Any = get_rate_limiter(settings)

    async def __call__(self, requests: list[tuple[int | str, bool]]) -> list[float]:
        from actors.ratelimit import RATE_LIMITER_NAME

        actor = self.actor
        if actor is None:
            actor = self.actor = ray.get_actor(RATE_LIMITER_NAME, namespace=self.settings.ray.namespace)
        try:
            return list(await actor.reserve.remote(requests))
        except Exception:
            self.actor = None
            raise


def paced_sends(settings: Settings, **options: Any) -> Any:
    """The bot's ``sendMessage`` pacing: the shared limiter, else local buckets with its limits."""
    from actors.ratelimit import configured_rate
    from bot.pacing import PacedSends
    from core.flood import FloodLimits

    limits = FloodLimits.telegram(global_rate=configured_rate(settings))
    return PacedSends(LimiterReserve(settings), limits=limits, **options)


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
        from bot.stores import redis_client

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


# -- the shard ---------------------------------------------------------------------------


class ShardFull(Exception):
    """A shard's backlog is at its cap: it took ``accepted`` of the updates offered."""

    def __init__(self, shard: int, accepted: int, backlog: int) -> None:
        super().__init__(f"bot shard {shard} is full ({backlog} updates pending); took {accepted}")
        self.shard = shard
        self.accepted = accepted
        self.backlog = backlog


class UpdateShard:
    """Plain class (the actor's behaviour): a loop thread running one update handler."""

    RETRY_BUILD_S = 5.0

    def __init__(
        self,
        settings: Settings,
        index: int,
        handler: str | HandlerFactory = DEFAULT_HANDLER,
        code_version: str = "",
    ) -> None:
        self.settings = settings
        self.index = index
        self.handler_spec = handler
        self.code_version = code_version
        self.handler: UpdateHandler | None = None
        self.build_error: str | None = None
        self.received = 0
        self.handled = 0
        self.errors = 0
        self.refused = 0
        self.max_backlog = max(1, int(settings.telegram.shard_backlog))
        self._backlog = 0  # accepted, not yet handled (guarded by _lock: both threads touch it)
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._chats: dict[int | None, deque[dict[str, Any]]] = {}
        self._workers: set[asyncio.Task[None]] = set()
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
        try:
            self.loop.run_forever()
        finally:  # stopped by shutdown(): end what is left and release the loop
            left = asyncio.all_tasks(self.loop)
            for task in left:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            self.loop.close()

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

    # ordering: one queue and one worker task per chat with updates pending
    def _enqueue_many(self, updates: Sequence[dict[str, Any]]) -> None:
        for update in updates:
            key = update_chat_id(update)
            queue = self._chats.get(key)
            if queue is None:
                queue = self._chats[key] = deque()
                worker = self.loop.create_task(self._work_chat(key, queue))
                self._workers.add(worker)  # the loop keeps only a weak reference
                worker.add_done_callback(self._workers.discard)
            queue.append(update)
        self._inflight += len(updates)
        assert self._idle is not None
        self._idle.clear()

    async def _work_chat(self, key: int | None, queue: deque[dict[str, Any]]) -> None:
        """Handle one chat's updates in order until its queue is empty; chats run concurrently."""
        try:
            while queue:
                await self._process(queue[0])
                queue.popleft()
                self._inflight -= 1
                with self._lock:
                    self._backlog -= 1
        finally:
            del self._chats[key]  # the queue is empty: the next update starts a new worker
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    async def _process(self, update: dict[str, Any]) -> None:
        try:
            handler = self.handler or await self._ensure_handler()
            if handler is None:
                raise RuntimeError(f"no update handler: {self.build_error}")
            await handler(update)
            self.handled += 1
        except Exception:
            self.errors += 1
            log.exception("bot shard %s: update %s failed", self.index, update.get("update_id"))

    # the actor's API (called from the actor thread)
    def accept_many(self, updates: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Take the longest prefix of ``updates`` that fits under the backlog cap, in order.

        Returns ``{"accepted": k, "backlog": n, "cap": c}``: ``updates[:k]`` are the shard's
        now, the rest were refused (the caller answers 503 for them or tries again later).
        """
        with self._lock:
            room = max(0, self.max_backlog - self._backlog)
            taken = list(updates[:room])
            self._backlog += len(taken)
            self.received += len(taken)
            self.refused += len(updates) - len(taken)
            backlog = self._backlog
        if taken:
            self.loop.call_soon_threadsafe(self._enqueue_many, taken)
        return {"accepted": len(taken), "backlog": backlog, "cap": self.max_backlog}

    def handle(self, update: dict[str, Any]) -> int:
        """Enqueue one update; returns the shard's count of received updates."""
        return self.handle_many([update])

    def handle_many(self, updates: Sequence[dict[str, Any]]) -> int:
        """Enqueue updates in order; returns the count received (:class:`ShardFull` when some did not fit)."""
        outcome = self.accept_many(updates)
        if outcome["accepted"] < len(updates):
            raise ShardFull(self.index, outcome["accepted"], outcome["backlog"])
        with self._lock:
            return self.received

    def ready(self, timeout_s: float = 0.0) -> dict[str, Any]:
        """``{"ready": bool, "error": ...}``; waits up to ``timeout_s`` for the handler."""
        fut = self._call(self._ensure_handler)
        if timeout_s > 0:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                fut.result(timeout=timeout_s)
        return {"ready": self.handler is not None, "error": self.build_error, "shard": self.index}

    def version(self) -> str:
        """The code version the shard was created with (serve.version.code_version)."""
        return self.code_version

    def stats(self) -> dict[str, Any]:
        return {
            "shard": self.index,
            "version": self.code_version,
            "received": self.received,
            "handled": self.handled,
            "errors": self.errors,
            "inflight": self._inflight,
            "backlog": self._backlog,
            "cap": self.max_backlog,
            "refused": self.refused,
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
        self._thread.join(timeout_s)
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

    Upgrades: each shard carries the code version it was created with (``version``,
    default the ``ARBFLOW_CODE_VERSION`` of a Serve config's runtime_env, else
    :func:`serve.version.code_version`). :meth:`start` asks the running shards
    for theirs; one of other code (or of a release before versions, which cannot say) is
    drained, closed and killed, and a new one takes its name, so replicas of new code
    never feed updates to shards of old code.
    """

    REPLACE_TIMEOUT_S = 30.0
    """How long :meth:`start` waits for a running shard to say its version, and then to drain."""

    def __init__(
        self,
        settings: Settings,
        n: int = DEFAULT_SHARDS,
        *,
        handler: str | HandlerFactory = DEFAULT_HANDLER,
        prefix: str = SHARD_PREFIX,
        detached: bool = True,
        version: str | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("at least one shard")
        from serve.version import ENV_VAR, code_version

        self.settings = settings
        self.n = n
        self.handler = handler
        self.prefix = prefix
        self.detached = detached
        self.version = version if version is not None else (os.environ.get(ENV_VAR) or code_version())
        self.names = [shard_name(i, prefix) for i in range(n)]
        self.actors: list[Any] = []
        self.replaced: list[str] = []
        """Names of shards of other code that :meth:`start` replaced."""

    def start(self) -> UpdateShards:
        """Replace running shards of other code (blocking), then create or look up the shards."""
        running = self._running()
        if running:
            refs, stale = self._ask_versions(running)
            answers: dict[str, Any] = {}
            for name, ref in refs.items():
                try:
                    answers[name] = ray.get(ref, timeout=self.REPLACE_TIMEOUT_S)
                except Exception as exc:
                    answers[name] = exc
            stale += self._judge(answers)
            if stale:
                drains = self._drain(running, stale)
                try:
                    ray.get(drains, timeout=self.REPLACE_TIMEOUT_S)
                except Exception as exc:
                    log.warning("bot shards: draining the old shards: %s", exc)
                self._kill(running, stale)
                deadline = time.monotonic() + self.REPLACE_TIMEOUT_S
                while time.monotonic() < deadline and set(stale) & set(self._running()):
                    time.sleep(0.1)  # the name is free once the old actor is gone
            self.replaced = stale
        return self._create()

    async def astart(self) -> UpdateShards:
        """:meth:`start` inside an async actor (a Serve replica): awaits, never a blocking ``ray.get``."""
        running = self._running()
        if running:
            refs, stale = self._ask_versions(running)

            async def answer(ref: Any) -> Any:
                try:
                    return await asyncio.wait_for(ref, self.REPLACE_TIMEOUT_S)
                except Exception as exc:
                    return exc

            results = await asyncio.gather(*(answer(ref) for ref in refs.values()))
            stale += self._judge(dict(zip(refs, results, strict=True)))
            if stale:
                drains = self._drain(running, stale)
                try:
                    await asyncio.wait_for(asyncio.gather(*drains), self.REPLACE_TIMEOUT_S)
                except Exception as exc:
                    log.warning("bot shards: draining the old shards: %s", exc)
                self._kill(running, stale)
                deadline = time.monotonic() + self.REPLACE_TIMEOUT_S
                while time.monotonic() < deadline and set(stale) & set(self._running()):  # noqa: ASYNC110 - a name in Ray, polled
                    await asyncio.sleep(0.1)
            self.replaced = stale
        return self._create()

    def _create(self) -> UpdateShards:
        opts: dict[str, Any] = {"namespace": self.settings.ray.namespace, "get_if_exists": True}
        if self.detached:
            opts["lifetime"] = "detached"
        self.actors = [
            UpdateShardActor.options(name=name, **opts).remote(  # type: ignore[attr-defined]
                self.settings, i, self.handler, self.version
            )
            for i, name in enumerate(self.names)
        ]
        return self

    def _running(self) -> dict[str, Any]:
        running: dict[str, Any] = {}
        for name in self.names:
            with contextlib.suppress(ValueError):  # no actor of that name
                running[name] = ray.get_actor(name, namespace=self.settings.ray.namespace)
        return running

    @staticmethod
    def _ask_versions(running: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Refs of the running shards' versions, and those that cannot say (a release before versions)."""
        refs: dict[str, Any] = {}
        stale: list[str] = []
        for name, actor in running.items():
            try:
                refs[name] = actor.version.remote()
            except AttributeError:
                stale.append(name)
        return refs, stale

    def _judge(self, answers: Mapping[str, Any]) -> list[str]:
        stale = []
        for name, theirs in answers.items():
            if isinstance(theirs, TimeoutError | ray.exceptions.GetTimeoutError):
                log.warning("bot shard %s did not say its version: left as it is", name)
            elif isinstance(theirs, Exception):
                continue  # died meanwhile: get_if_exists makes a new one
            elif theirs != self.version:
                stale.append(name)
        if stale:
            log.warning(
                "bot shards %s run other code: draining and replacing them (version %s)",
                ", ".join(stale),
                self.version,
            )
        return stale

    def _drain(self, running: Mapping[str, Any], stale: list[str]) -> list[Any]:
        drains = []
        for name in stale:
            with contextlib.suppress(AttributeError):  # nothing to drain it with: killed as it is
                drains.append(running[name].shutdown.remote(self.REPLACE_TIMEOUT_S / 3))
        return drains

    @staticmethod
    def _kill(running: Mapping[str, Any], stale: list[str]) -> None:
        for name in stale:
            with contextlib.suppress(Exception):
                ray.kill(running[name], no_restart=True)

    def shard_for(self, update: Mapping[str, Any]) -> int:
        return shard_index(update, self.n)

    def submit(self, update: dict[str, Any]) -> Any:
        """The ObjectRef of the enqueue (await it: resolved once the shard holds the update)."""
        return self.actors[self.shard_for(update)].handle.remote(update)

    async def enqueue(self, update: dict[str, Any]) -> int:
        return int(await self.submit(update))

    def submit_many(self, updates: Sequence[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]:
        """One ``accept_many`` call per shard: ``{shard: (ObjectRef, positions in updates)}``, in order.

        Each ref resolves to ``{"accepted": k, "backlog": n, "cap": c}``
        (see :meth:`UpdateShard.accept_many`)."""
        groups: dict[int, list[int]] = {}
        for pos, update in enumerate(updates):
            groups.setdefault(self.shard_for(update), []).append(pos)
        return {
            shard: (self.actors[shard].accept_many.remote([updates[i] for i in positions]), positions)
            for shard, positions in groups.items()
        }

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
        shards = cls(settings, n, prefix=prefix, version="")
        shards.actors = [ray.get_actor(name, namespace=settings.ray.namespace) for name in shards.names]
        return shards


# -- the per-replica forwarder: dedup + enqueue in batches, off the request path ---------------

# SET NX EX for every key in one round trip; 1 = fresh, 0 = seen before.
_DEDUP_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) and 1 or 0
end
return out
"""

ENQUEUED = "enqueued"
DUPLICATE = "duplicate"


BUSY = "busy"


class ForwardFailed(Exception):
    """A batch could not be deduplicated (``store`` = True: Redis) or enqueued (the shards;
    ``busy`` = True: the shard was at its backlog cap)."""

    def __init__(self, message: str, *, store: bool, busy: bool = False) -> None:
        super().__init__(message)
        self.store = store
        self.busy = busy


@dataclass(eq=False, slots=True)
class _Item:
    update: dict[str, Any]
    waiter: asyncio.Future[str] | None
    marked: bool = False
    """Its dedup mark is ours (set by an earlier attempt that then failed to enqueue)."""


class UpdateForwarder:
    """Dedup and enqueue of one ingress replica's updates, batched on its event loop.

    :meth:`offer` / :meth:`submit` append to one FIFO; a single flusher task takes
    everything pending (up to ``max_batch``), marks the ``update_id``s in Redis with
    one script call (``SET NX EX`` each; a repeat is dropped, also within a batch) and
    hands the fresh ones to their shards with one ``accept_many`` per shard, awaiting
    them before the next batch, so one chat's updates reach its shard in arrival order.

    - :meth:`submit` (the ack-once-enqueued path) returns a future: ``"enqueued"``,
      ``"duplicate"`` or :class:`ForwardFailed` (the dedup marks it set are removed, so
      a redelivery goes through; nothing is retried here — the sender redelivers).
    - :meth:`offer` (the fast-ack path) returns at once; a batch that fails keeps its
      offered updates at the head of the queue and is retried with backoff, only the
      parts that failed (a shard that took its part is not sent it again).
    - :attr:`healthy` is True once a batch went through and until one fails, and while no
      shard said it is full; the ingress only acks early while it is True, so an outage
      or an overloaded shard turns into 503s.
    - Back-pressure: a shard takes only what fits under its backlog cap
      (:meth:`UpdateShard.accept_many`) and says how full it is. A waiting sender whose
      update was refused gets :class:`ForwardFailed` (``busy``; 503) and its dedup mark is
      removed, so Telegram's redelivery is processed. An update already acknowledged (fast
      ack) is never dropped: it stays at the head of the queue, keeps its mark and is
      offered again with backoff until the shard takes it. A shard whose answer showed it
      full is *pressured* (:attr:`healthy` is False) until an answer shows room again;
      meanwhile every request takes the waiting path, so nothing more is acknowledged
      before a shard holds it.
    - Gathering (Nagle-like, for fast-acked updates only): a forwarder that took no batch
      in the last ``linger_s`` (50 ms) sends at once, so a quiet bot adds no delay; a
      busy one takes a batch once ``batch_target`` (128) updates are pending or
      ``linger_s`` after its last batch, whichever comes first. A batch costs one Redis
      and one Ray call per shard — about 0.65 ms of CPU in the replica, most of it the Ray
      call — so under load a batch carries tens of updates instead of the few that
      arrive during one round trip (docs/performance.md, ``bench/webhook.py``).
    """

    def __init__(
        self,
        shards: UpdateShards,
        redis: Any,
        key_of: Callable[[int], str],
        *,
        ttl_s: int,
        max_batch: int = 256,
        max_pending: int = 10_000,
        linger_s: float = 0.05,
        batch_target: int = 128,
        retry_s: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        self.shards = shards
        self.redis = redis
        self.key_of = key_of
        self.ttl_s = ttl_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.linger_s = linger_s
        self.batch_target = min(batch_target, max_batch)
        self.retry_s = retry_s
        self._ok = False  # the last batch went through (Redis and the shards answered)
        self.full: set[int] = set()
        """Shards whose last answer said they are at their backlog cap."""
        self.batches = 0
        self.enqueued = 0
        self.duplicates = 0
        self.failures = 0
        self.refused = 0
        self.last_error: str | None = None
        self._pending: deque[_Item] = deque()
        self._waiting = 0  # items in _pending whose sender waits for the outcome
        self._script = redis.register_script(_DEDUP_LUA)
        self._wake = asyncio.Event()
        self._send_now = asyncio.Event()  # stop gathering: a batch is full or a sender waits
        self._last_batch = -1e9  # loop time the last batch was taken
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # -- the request side ----------------------------------------------------------------

    def offer(self, update: dict[str, Any]) -> bool:
        """Queue ``update`` without waiting; False when the queue is full (answer 503)."""
        if len(self._pending) >= self.max_pending:
            return False
        self._push(_Item(update, None))
        return True

    def submit(self, update: dict[str, Any]) -> asyncio.Future[str]:
        """Queue ``update``; the future resolves once it is enqueued (or found a duplicate)."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if len(self._pending) >= self.max_pending:
            waiter.set_exception(ForwardFailed("forwarder queue full", store=False))
        else:
            self._waiting += 1
            self._push(_Item(update, waiter))
        return waiter

    def _push(self, item: _Item) -> None:
        self._pending.append(item)
        self._idle.clear()
        self._wake.set()
        if item.waiter is not None or len(self._pending) >= self.batch_target:
            self._send_now.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def healthy(self) -> bool:
        """True while updates may be acknowledged before a shard holds them (see the class doc)."""
        return self._ok and not self.full

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "pending": len(self._pending),
            "batches": self.batches,
            "enqueued": self.enqueued,
            "duplicates": self.duplicates,
            "failures": self.failures,
            "refused": self.refused,
            "full_shards": sorted(self.full),
            "last_error": self.last_error,
        }

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is handed on (or ``timeout_s``).

        Idle, not merely an empty queue: a batch being flushed has left the queue already."""
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- the flusher -----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_s[0]
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._gather(loop)
                self._last_batch = loop.time()
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                self._waiting -= sum(item.waiter is not None for item in batch)
                retry = await self._flush(batch)
                if retry:  # offered items only (their senders have their 200 already)
                    self._pending.extendleft(reversed(retry))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_s[1])
                else:
                    delay = self.retry_s[0]
            self._idle.set()

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let a batch of fast-acked updates gather: until ``linger_s`` after the last batch."""
        if self._waiting or len(self._pending) >= self.batch_target:
            return  # a sender waits for its answer, or the batch is big enough
        wait = self._last_batch + self.linger_s - loop.time()
        if wait <= 0:
            return  # quiet until now: send at once
        self._send_now.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._send_now.wait(), wait)

    def _fail(self, items: Sequence[_Item], exc: ForwardFailed) -> list[_Item]:
        """Fail the waiting items; return the offered ones (to retry)."""
        self._ok = False
        self.failures += 1
        self.last_error = str(exc)
        retry: list[_Item] = []
        for item in items:
            if item.waiter is None:
                retry.append(item)
            elif not item.waiter.done():
                item.waiter.set_exception(exc)
        return retry

    async def _flush(self, batch: list[_Item]) -> list[_Item]:
        todo = [item for item in batch if not item.marked]
        if todo:
            keys = [self.key_of(int(item.update["update_id"])) for item in todo]
            try:
                flags = await self._script(keys=keys, args=[self.ttl_s])
            except Exception as exc:
                log.warning("update forwarder: dedup of %d updates failed: %s", len(todo), exc)
                return self._fail(batch, ForwardFailed(f"dedup unavailable: {exc}", store=True))
            for item, flag in zip(todo, flags, strict=True):
                if int(flag):
                    item.marked = True
                else:
                    self.duplicates += 1
                    if item.waiter is not None and not item.waiter.done():
                        item.waiter.set_result(DUPLICATE)
        self.batches += 1
        fresh = [item for item in batch if item.marked]
        if not fresh:
            self._ok = True
            return []
        failed_at: list[int] = []
        refused_at: list[int] = []
        error: BaseException | None = None
        try:
            calls = self.shards.submit_many([item.update for item in fresh])
            results = await asyncio.gather(*(ref for ref, _ in calls.values()), return_exceptions=True)
        except Exception as exc:  # submitting itself failed: nothing went out
            failed_at, error = list(range(len(fresh))), exc
        else:
            for shard, (_, positions), result in zip(calls, calls.values(), results, strict=True):
                if isinstance(result, BaseException):
                    error = result
                    failed_at.extend(positions)
                    continue
                taken = self._note_answer(shard, result, len(positions))
                refused_at.extend(positions[taken:])
                for i in positions[:taken]:
                    self.enqueued += 1
                    waiter = fresh[i].waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_result(ENQUEUED)
        retry: list[_Item] = []
        if refused_at:
            retry = await self._refused([fresh[i] for i in sorted(refused_at)])
        if not failed_at:
            self._ok = True
            return retry
        failed = [fresh[i] for i in sorted(failed_at)]
        log.warning("update forwarder: enqueue of %d updates failed: %s", len(failed), error)
        await self._unmark([item for item in failed if item.waiter is not None])
        retry += self._fail(failed, ForwardFailed(f"bot unavailable: {error}", store=False))
        return retry

    def _note_answer(self, shard: int, answer: Any, sent: int) -> int:
        """How many of the ``sent`` updates shard ``shard`` took; remembers whether it is full."""
        if not isinstance(answer, Mapping):  # a count (an older shard): everything was taken
            self.full.discard(shard)
            return sent
        taken = max(0, min(sent, int(answer.get("accepted", sent))))
        backlog, cap = int(answer.get("backlog", 0)), int(answer.get("cap", 0))
        if taken < sent or (cap and backlog >= cap):
            if shard not in self.full:
                log.warning("update forwarder: bot shard %s is full (%d updates pending)", shard, backlog)
            self.full.add(shard)
        else:
            self.full.discard(shard)
        return taken

    async def _refused(self, items: list[_Item]) -> list[_Item]:
        """A full shard refused ``items``: 503 for the waiting ones (mark removed), keep the acked ones."""
        self.refused += len(items)
        waiting = [item for item in items if item.waiter is not None]
        await self._unmark(waiting)
        busy = ForwardFailed("bot busy: its shard is at its backlog cap", store=False, busy=True)
        for item in waiting:
            assert item.waiter is not None
            if not item.waiter.done():
                item.waiter.set_exception(busy)
        return [item for item in items if item.waiter is None]

    async def _unmark(self, items: Sequence[_Item]) -> None:
        """Remove the dedup marks of updates answered 503, so Telegram's redelivery gets through."""
        if not items:
            return
        for item in items:
            item.marked = False
        try:
            await self.redis.delete(*(self.key_of(int(i.update["update_id"])) for i in items))
        except Exception as exc:  # the marks expire with their TTL; a redelivery meanwhile is dropped
            log.warning("update forwarder: could not clear %d dedup marks: %s", len(items), exc)
