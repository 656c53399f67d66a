"""Market-data coordinators: one per exchange (``md:<exchange>``), an actor each or, on a
small host, several in one ``md:host:NN`` actor (``market.coordinator_hosts``).

Each runs its source (``live`` ccxt, ``sim``; a ``replay`` file gets one
coordinator, ``md:replay``, because the file is one time-ordered stream), keeps the
latest quote per symbol in Redis (TTL 60 s), and hands every normalised batch to
the lake sink and to any downstream subscriber (the opportunity engine).
State that matters lives in Redis and the lake; a restarted coordinator simply
starts its source again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import deque
from typing import Any

import pyarrow as pa
import ray

from actors.detector import DETECTOR_NAME
from actors.sink import SINK_NAME
from core.errors import ConfigError, StoreUnavailable
from core.ports import MarketSource
from core.settings import MarketSourceName, Settings
from pipeline.quotes import RedisQuoteStore
from pipeline.schemas import MarketBatch
from pipeline.sources.factory import build_source

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16
"""Batches handed to the sink and not yet acknowledged; beyond this the pump waits."""


def coordinator_name(key: str) -> str:
    return f"md:{key}"


def source_problem(stats: dict[str, Any] | None) -> str | None:
    """Why a coordinator's source is not delivering (None: it is, or is starting normally).

    Read by ``/readyz`` (check ``market``) and the alert monitor (``source_down``).
    """
    if stats is None:
        return "the coordinator does not answer"
    metrics = stats.get("source_metrics") or {}
    if metrics.get("state") == "down":
        return f"cannot start: {metrics.get('start_error') or 'unknown error'}"
    if stats.get("failed") and not (stats.get("source") == "replay" and stats.get("done")):
        return f"failed: {stats['failed']}"
    return None


class UnstartableSource:
    """Stands for a source whose settings are wrong (a mistyped exchange id): reported, not run.

    The coordinator stays up and says why (``stats``, ``/readyz``, the ``source_down``
    alert) instead of failing its constructor; settings do not fix themselves, so it is
    not retried (an exchange that is down at start is: ``CcxtMarketSource`` retries).
    """

    name = "unstartable"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.since = time.monotonic()
        self.stats: dict[str, int] = {"start_failures": 1}

    async def batches(self) -> Any:
        raise self.error
        yield  # pragma: no cover - an async generator that raises at once

    async def close(self) -> None:
        return None

    def metrics(self) -> dict[str, Any]:
        return {
            "state": "down",
            "start_error": f"{type(self.error).__name__}: {self.error}",
            "down_s": time.monotonic() - self.since,
        }


class MarketDataCoordinator:
    """Plain class: pumps one source into Redis, the sink and subscribers."""

    def __init__(
        self,
        settings: Settings,
        key: str,
        source_name: MarketSourceName,
        *,
        sink: Any = None,
        source: MarketSource | None = None,
        realtime: bool = True,
    ) -> None:
        self.settings = settings
        self.key = key
        self.source_name = source_name
        if source is None:
            try:
                source = build_source(settings, key, source_name, realtime=realtime)
            except ConfigError as exc:
                log.error("coordinator %s: the source cannot start: %s", key, exc)
                source = UnstartableSource(exc)
        self.source = source
        self.sink = sink
        self.subscribers: list[Any] = []
        self._fees_sent: dict[str, float] = {}
        self._transfer_sent: dict[str, Any] | None = None
        self.store = RedisQuoteStore.from_url(settings.redis.url, settings.redis.quote_ttl_s)
        self._pending_quotes: list[pa.Table] = []
        self._last_redis_flush = 0.0
        # (call, its future): a call is acknowledged when its future is done, which is
        # checked without ``ray.get`` (a blocking get in this async actor warns and stalls)
        self._in_flight: deque[tuple[Any, concurrent.futures.Future[Any]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.started_wall = time.time()
        self.batches = 0
        self.rows: dict[str, int] = {}
        self.arrow_bytes = 0
        self.clock_ms = 0
        self.last_batch_wall = 0.0
        self.errors: dict[str, int] = {}
        self.redis_keys_written = 0
        self.done = False
        self.failed: str | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Start the pump once; a finished source (the end of a replay) is not restarted."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop the source and hand on what it produced; never hangs past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5.0)
        try:
            await asyncio.wait_for(self.source.close(), 5.0)
        except (TimeoutError, Exception) as exc:
            log.warning("coordinator %s: closing the source: %r", self.key, exc)
        await self._drain(deadline)
        return self.stats()

    async def wait_done(self, timeout_s: float | None = None) -> dict[str, Any]:
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        return self.stats()

    def subscribe(self, handle: Any) -> None:
        self.subscribers.append(handle)

    # -- the pump --------------------------------------------------------------
    async def _pump(self) -> None:
        try:
            async for batch in self.source.batches():
                await self.on_batch(batch)
            await self._drain()
            self.done = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a source that dies is reported, not hidden
            log.exception("coordinator %s: source failed", self.key)
            self.failed = f"{type(exc).__name__}: {exc}"
            self._count_error(type(exc).__name__)
            await self._drain()
            self.done = True

    async def on_batch(self, batch: MarketBatch) -> None:
        # Everything up to the hand-off is synchronous: a stop() that cancels the pump
        # at any await below finds every counted row already in ``_in_flight``.
        self.batches += 1
        self.clock_ms = max(self.clock_ms, batch.clock_ms)
        self.last_batch_wall = time.time()
        tables = {name: t for name, t in batch.tables.items() if t.num_rows}
        for name, table in tables.items():
            self.rows[name] = self.rows.get(name, 0) + table.num_rows
            self.arrow_bytes += table.nbytes
        quotes = tables.get("quotes")
        if quotes is not None:
            self._pending_quotes.append(quotes)
        self._prune_done()
        if self.sink is not None and tables:
            self._track(self.sink.add_many.remote(tables))
        if self.subscribers and tables:
            for sub in self.subscribers:
                self._track(sub.on_batch.remote(batch, self.last_batch_wall))
        fees = getattr(self.source, "fees", None)
        if self.source_name == "live" and isinstance(fees, dict) and fees != self._fees_sent:
            # Taker fees learned from the exchange's ccxt markets (ARBFLOW_FEES still wins).
            self._fees_sent = dict(fees)
            for sub in self.subscribers:
                sub.set_market_fees.remote(self.key, self._fees_sent)
        # the live source's transfer status, once it asked (empty: every asset unknown)
        transfer = getattr(self.source, "transfer", None)
        checked = getattr(self.source, "transfer_checked", False)
        if (
            self.source_name == "live"
            and checked
            and isinstance(transfer, dict)
            and transfer != self._transfer_sent
        ):
            self._transfer_sent = dict(transfer)
            for sub in self.subscribers:
                sub.set_transfer.remote(self.key, self._transfer_sent)
        if time.monotonic() - self._last_redis_flush >= self.settings.market.redis_flush_s:
            await self._flush_quotes()
        while len(self._in_flight) > MAX_IN_FLIGHT:
            await self._await_oldest()

    async def _await_oldest(self, deadline: float | None = None) -> None:
        # The ref leaves the deque only once answered: a pump cancelled while waiting
        # here leaves it for stop()'s drain, so no batch reaches the sink after shutdown.
        entry = self._in_flight[0]
        # A wrapped concurrent future: cancelling the pump cancels this wait at once
        # (awaiting the ObjectRef itself was seen to hold a cancelled pump for seconds).
        waiter = asyncio.shield(asyncio.wrap_future(entry[1]))
        try:
            if deadline is None:
                await waiter
            else:
                await asyncio.wait_for(waiter, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self._count_error("drain_timeout")
        except ray.exceptions.RayActorError:
            # The sink (or the detector) died with this batch buffered or in flight: it
            # is lost (bounded by the flush window) and never retried, so nothing is
            # written twice.
            self._count_error("actor_restarted")
        except Exception as exc:
            self._count_error(type(exc).__name__)
            log.warning("coordinator %s: downstream call failed: %s", self.key, exc)
        if self._in_flight and self._in_flight[0] is entry:
            self._in_flight.popleft()

    def _track(self, ref: Any) -> None:
        self._in_flight.append((ref, ref.future()))

    def _prune_done(self) -> None:
        """Drop acknowledged calls from the front, so ``sink_in_flight`` is the real backlog."""
        while self._in_flight and self._in_flight[0][1].done():
            _, future = self._in_flight.popleft()
            exc = None if future.cancelled() else future.exception()
            if isinstance(exc, ray.exceptions.RayActorError):
                self._count_error("actor_restarted")
            elif exc is not None:
                self._count_error(type(exc).__name__)

    async def _flush_quotes(self) -> None:
        self._last_redis_flush = time.monotonic()
        if not self._pending_quotes:
            return
        table = pa.concat_tables(self._pending_quotes)
        self._pending_quotes = []
        try:
            self.redis_keys_written += await self.store.put_table(table)
        except StoreUnavailable as exc:
            self._count_error("redis")
            log.warning("coordinator %s: %s", self.key, exc)

    async def _drain(self, deadline: float | None = None) -> None:
        await self._flush_quotes()
        while self._in_flight:
            await self._await_oldest(deadline)

    def _count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    # -- reporting -------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = time.time()
        source_stats = getattr(self.source, "stats", None)
        source_metrics = getattr(self.source, "metrics", None)
        return {
            "key": self.key,
            "source": self.source_name,
            "batches": self.batches,
            "rows": dict(self.rows),
            "arrow_bytes": self.arrow_bytes,
            "clock_ms": self.clock_ms,
            "lag_s": max(0.0, now - self.clock_ms / 1000) if self.source_name != "replay" else 0.0,
            "idle_s": now - self.last_batch_wall if self.last_batch_wall else None,
            "uptime_s": now - self.started_wall,
            "redis_keys_written": self.redis_keys_written,
            "sink_in_flight": len(self._in_flight),
            "errors": dict(self.errors),
            "source_stats": dict(source_stats) if isinstance(source_stats, dict) else {},
            # the live source's per-exchange figures and start state (actors.monitor, /readyz)
            "source_metrics": source_metrics() if callable(source_metrics) else {},
            "done": self.done,
            "failed": self.failed,
        }


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class MarketDataCoordinatorActor:
    def __init__(
        self, settings: Settings, key: str, source_name: MarketSourceName, realtime: bool = True
    ) -> None:
        # The sink and the detector are found by name, so a restarted coordinator needs
        # no handles; without a detector (ingest only) batches go to the lake alone.
        sink = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
        self.impl = MarketDataCoordinator(settings, key, source_name, sink=sink, realtime=realtime)
        with contextlib.suppress(ValueError):
            self.impl.subscribe(ray.get_actor(DETECTOR_NAME, namespace=settings.ray.namespace))
        # Constructed means wanted running: after a restart by Ray the first call
        # (the orchestrator polls stats) starts the pump again.
        self.running = True

    def _ensure(self) -> None:
        if self.running:
            self.impl.start()

    async def start(self) -> bool:
        self.running = True
        self._ensure()
        return True

    async def subscribe(self, handle: Any) -> None:
        self.impl.subscribe(handle)

    async def stats(self) -> dict[str, Any]:
        self._ensure()
        return self.impl.stats()

    async def wait_done(self, timeout_s: float | None = None) -> dict[str, Any]:
        self._ensure()
        return await self.impl.wait_done(timeout_s)

    async def stop(self) -> dict[str, Any]:
        self.running = False
        return await self.impl.stop()


HOST_PREFIX = "md:host"


def host_name(index: int) -> str:
    return f"{HOST_PREFIX}:{index:02d}"


def coordinator_layout(settings: Settings, keys: list[str]) -> dict[str, str]:
    """Each coordinator key → the actor it runs in: ``md:<key>`` when every key gets a process
    of its own (``market.coordinator_hosts`` 0 or at least the number of keys; a replay's
    single key), else ``md:host:NN`` (keys in sorted order, round robin)."""
    hosts = settings.market.coordinator_hosts
    ordered = sorted(keys)
    if hosts == 0 or hosts >= len(ordered):
        return {key: coordinator_name(key) for key in ordered}
    return {key: host_name(i % hosts) for i, key in enumerate(ordered)}


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class MarketDataHostActor:
    """``md:host:NN``: the coordinators of several exchanges in one process.

    A coordinator is mostly waiting on the network or the simulator's clock: one process
    each (≈ 210 MB) was most of its cost on a small host. Each key has its own
    :class:`MarketDataCoordinator` (its own pump task on this actor's loop), called by key
    like the one-exchange actor; constructed means wanted running, so after a restart by
    Ray the first call for a key starts its pump again."""

    def __init__(
        self, settings: Settings, keys: list[str], source_name: MarketSourceName, realtime: bool = True
    ) -> None:
        sink = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
        self.impls = {
            key: MarketDataCoordinator(settings, key, source_name, sink=sink, realtime=realtime)
            for key in keys
        }
        with contextlib.suppress(ValueError):
            detector = ray.get_actor(DETECTOR_NAME, namespace=settings.ray.namespace)
            for impl in self.impls.values():
                impl.subscribe(detector)
        self.running = set(keys)

    def _ensure(self, key: str) -> MarketDataCoordinator:
        impl = self.impls[key]
        if key in self.running:
            impl.start()
        return impl

    async def start(self, key: str) -> bool:
        self.running.add(key)
        self._ensure(key)
        return True

    async def subscribe(self, key: str, handle: Any) -> None:
        self.impls[key].subscribe(handle)

    async def stats(self, key: str) -> dict[str, Any]:
        return self._ensure(key).stats()

    async def wait_done(self, key: str, timeout_s: float | None = None) -> dict[str, Any]:
        return await self._ensure(key).wait_done(timeout_s)

    async def stop(self, key: str) -> dict[str, Any]:
        self.running.discard(key)
        return await self.impls[key].stop()

    async def keys(self) -> list[str]:
        return sorted(self.impls)


class _KeyedMethod:
    def __init__(self, host: Any, method: str, key: str) -> None:
        self.call = getattr(host, method)
        self.key = key

    def remote(self, *args: Any) -> Any:
        return self.call.remote(self.key, *args)


class HostedCoordinator:
    """A coordinator in its ``md:host:NN``, called like ``md:<key>``: ``handle.stats.remote()``."""

    def __init__(self, host: Any, key: str, host_name: str) -> None:
        self.host = host
        self.key = key
        self.host_name = host_name

    def __getattr__(self, method: str) -> _KeyedMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _KeyedMethod(self.host, method, self.key)


def start_coordinators(
    settings: Settings, keys: list[str], source_name: MarketSourceName, *, realtime: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start (or find) the coordinators of ``keys`` as :func:`coordinator_layout` says.

    Returns ``(by key: a handle with the one-exchange actor's methods, by actor name: the
    actors)``; the sink actor ``sink:lake`` must exist already."""
    layout = coordinator_layout(settings, keys)
    handles: dict[str, Any] = {}
    actors: dict[str, Any] = {}
    hosted: dict[str, list[str]] = {}
    for key, name in layout.items():
        if name == coordinator_name(key):
            handles[key] = actors[name] = start_coordinator(settings, key, source_name, realtime=realtime)
        else:
            hosted.setdefault(name, []).append(key)
    for name, group in hosted.items():
        host = actors[name] = MarketDataHostActor.options(  # type: ignore[attr-defined]
            name=name, namespace=settings.ray.namespace, get_if_exists=True
        ).remote(settings, group, source_name, realtime)
        for key in group:
            handles[key] = HostedCoordinator(host, key, name)
    return {key: handles[key] for key in keys}, actors


def start_coordinator(
    settings: Settings, key: str, source_name: MarketSourceName, *, realtime: bool = True
) -> Any:
    """Start (or find) ``md:<key>``; the sink actor ``sink:lake`` must exist already."""
    # A replay restarted from its first line would write the file's rows twice: a
    # replay coordinator is not restarted; it fails loudly instead.
    return MarketDataCoordinatorActor.options(  # type: ignore[attr-defined]
        name=coordinator_name(key),
        namespace=settings.ray.namespace,
        get_if_exists=True,
        max_restarts=0 if source_name == "replay" else -1,
    ).remote(settings, key, source_name, realtime)
