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
:func:`serve.handlers.aiogram_handler_factory`, builds the bot from ``bot.app`` /
``bot.deps``; ``serve.handlers.RedisRecorder`` and ``noop_handler_factory`` serve tests and
benches. The ingress's per-replica forwarder (dedup, batches) is :mod:`serve.forwarder`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import ray

from core.settings import Settings
from serve.webhook import update_chat_id

log = logging.getLogger(__name__)

DEFAULT_SHARDS = 4
SHARD_PREFIX = "bot:shard"
DEFAULT_HANDLER = "serve.handlers:aiogram_handler_factory"

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


_MOVED = {
    ("serve.dispatch", name): "serve.handlers"
    for name in ("aiogram_handler_factory", "noop_handler_factory", "RedisRecorder")
}
"""Handler paths of earlier releases (``serve.dispatch:…``), still accepted."""


def resolve_factory(handler: str | HandlerFactory) -> HandlerFactory:
    if callable(handler):
        return handler
    module, sep, attr = handler.partition(":")
    if not sep:
        module, _, attr = handler.rpartition(".")
    module = _MOVED.get((module, attr), module)
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"handler factory {handler!r} is not callable")
    return obj


# -- the shard ---------------------------------------------------------------------------


class ShardFull(Exception):
    """A shard's backlog is at its cap: it took ``accepted`` of the updates offered."""

    def __init__(self, shard: int, accepted: int, backlog: int) -> None:
        super().__init__(f"bot shard {shard} is full ({backlog} updates pending); took {accepted}")
        self.shard = shard
        self.accepted = accepted
        self.backlog = backlog


class UpdateRouter(Protocol):
    """Where the forwarder hands updates: :class:`UpdateShards`, or the poller's
    :class:`serve.first_answers.HandoverShards`."""

    def submit_many(self, updates: Sequence[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]: ...


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

    def idle(self) -> bool:
        """Everything accepted so far is handled (nothing queued, nothing running)."""
        with self._lock:
            return self._backlog == 0

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
