"""Helpers shared by the push side's async actors: a lazily built implementation, the sink.

An async actor's ``__init__`` cannot await, and building its plain implementation needs
Redis and other actors: :class:`LazyImpl` builds it on the first call (once, however
many calls arrive meanwhile) and every method awaits :meth:`LazyImpl.impl_`. Once built,
the process's heap is settled (:func:`settle_heap`), then it is launched, and kept settled
(:func:`keep_heap_settled`).

:func:`sink_emitter` hands delivery and skip rows to the lake sink (``sink:lake``). While
the sink is away (not started yet, restarting, killed) the rows are kept in the actor and
retried, oldest first, for at most ``ARBFLOW_LAKE__SINK_BUFFER_S`` seconds and
``ARBFLOW_LAKE__SINK_BUFFER_ROWS`` rows; what falls out of either bound is dropped, and
every dropped row is counted (:meth:`SinkEmitter.stats`, the Prometheus counter
``arbflow_lake_rows_dropped`` by ``dataset`` and ``reason``) and logged — one line per
``log_every_s``, not one per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

import pyarrow as pa
import ray

from core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

Emit = Callable[[str, pa.Table], Awaitable[None]]


def settle_heap() -> int:
    """Collect once, then move every object alive (the imported libraries, the clients, the
    built implementation: most of a worker's heap) out of the collector's reach; returns how
    many. A full collection then scans only what came after: in a queue shard at 1,000
    messages/s it stopped the event loop for ~170 ms every 1.5 s before (sends bunched behind
    it and met Telegram's flood limit), ~20 ms after."""
    _settle()
    return gc.get_freeze_count()  # walks every frozen object: not for a loop


def _settle() -> None:
    gc.collect()
    gc.freeze()


SETTLE_EVERY_S = 1.0
"""How often a built actor settles its heap again (what came and lived since the last time)."""
RESET_EVERY_S = 600.0
"""How often it lets the collector see everything again (one full collection): what became
cyclic garbage after it was frozen is freed then."""


async def keep_heap_settled(every_s: float = SETTLE_EVERY_S, reset_every_s: float = RESET_EVERY_S) -> None:
    """Settle the heap every ``every_s`` (a collection over only what came since the last
    time, then freeze), and every ``reset_every_s`` over everything. A queue shard at 1,000
    messages/s holds ~15,000 queued items it was given after it was built: full collections
    over them stopped its loop for 15-115 ms, up to three in 250 ms, with nothing to free; the
    sends held behind them left together, and Telegram counted them in the second of the
    ones after (429s). Cyclic garbage frozen before it is found waits for the next reset."""
    loop = asyncio.get_running_loop()
    reset_at = loop.time() + reset_every_s
    while True:
        asleep = loop.time()
        await asyncio.sleep(every_s)
        woke = loop.time()
        LOOP_LAG_MS.append((woke - asleep - every_s) * 1000)
        if woke >= reset_at:
            gc.unfreeze()
            reset_at = woke + reset_every_s
        _settle()
        SETTLE_MS.append((loop.time() - woke) * 1000)


LOOP_LAG_MS: deque[float] = deque(maxlen=600)
"""How late the settling task woke, each time (ms): how long ready work waits for this
process's event loop (the last ten minutes)."""
SETTLE_MS: deque[float] = deque(maxlen=600)
"""How long each settling took (ms): the loop stops for it."""


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """``p50``, ``p99`` and ``max`` of ``values`` (nearest rank, rounded to 0.01); empty: ``{}``."""
    arr = sorted(values)
    if not arr:
        return {}
    return {
        "p50": round(arr[min(len(arr) - 1, len(arr) // 2)], 2),
        "p99": round(arr[min(len(arr) - 1, int(0.99 * len(arr)))], 2),
        "max": round(arr[-1], 2),
    }


def loop_stats() -> dict[str, float]:
    """The event loop's lag and settle times (``lag_p50_ms`` … ``settle_max_ms``) as
    :func:`keep_heap_settled` saw them in this process."""
    return {
        f"{name}_{label}_ms": value
        for name, ms in (("lag", LOOP_LAG_MS), ("settle", SETTLE_MS))
        for label, value in percentiles(ms).items()
    }


class LazyImpl(Generic[T]):
    """Mixin for an async actor whose implementation ``build()`` makes on first use."""

    _impl: T | None = None
    _starting: asyncio.Task[T] | None = None
    _settling: asyncio.Task[None] | None = None

    async def build(self) -> T:
        raise NotImplementedError

    async def launch(self, impl: T) -> None:
        """Start what :meth:`build` made (its loops); the heap is settled between the two, so
        that the collection does not stall loops already running, and kept settled after."""

    async def _build_settled(self) -> T:
        impl = await self.build()
        settle_heap()
        await self.launch(impl)
        self._settling = asyncio.get_running_loop().create_task(keep_heap_settled())
        return impl

    async def impl_(self) -> T:
        if self._impl is None:
            if self._starting is None:
                self._starting = asyncio.get_running_loop().create_task(self._build_settled())
            self._impl = await asyncio.shield(self._starting)
        return self._impl


DROPPED_METRIC = "arbflow_lake_rows_dropped"
WAITING_METRIC = "arbflow_lake_rows_waiting"
_metrics: dict[str, Any] = {}


def _metric(name: str) -> Any:
    """The process's Ray metric ``name`` (one object per process), or None outside Ray."""
    if name not in _metrics:
        metric: Any = None
        if ray.is_initialized():
            try:
                from ray.util.metrics import Counter as RayCounter
                from ray.util.metrics import Gauge

                if name == DROPPED_METRIC:
                    metric = RayCounter(
                        name,
                        "Lake rows dropped (the sink away too long, or too many waiting).",
                        ("dataset", "reason"),
                    )
                else:
                    metric = Gauge(
                        name, "Lake rows waiting in an actor for the sink to come back.", ("actor",)
                    )
            except Exception as exc:  # metrics are a report, never a reason to lose rows
                log.warning("lake rows: no Ray metric %s: %s", name, exc)
        _metrics[name] = metric
    return _metrics[name]


class SinkEmitter:
    """Rows to the lake through ``sink:lake``, kept and retried while the sink is away.

    ``await emitter(dataset, table)``: with nothing waiting it hands the table to the sink
    at once (as before); when that fails, or while earlier rows wait, the table joins the
    queue and a background task retries the queue in order (0.2 s → 5 s backoff), finding
    the sink by name again each time (a restarted or re-created sink is found). Bounds:
    ``max_rows`` rows waiting (the oldest are dropped first, reason ``overflow``) and
    ``max_age_s`` seconds (reason ``expired``); ``max_rows=0`` keeps nothing.
    """

    RETRY_S = (0.2, 5.0)

    def __init__(
        self,
        settings: Settings,
        *,
        max_rows: int | None = None,
        max_age_s: float | None = None,
        log_every_s: float = 60.0,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = settings.ray.namespace
        self.max_rows = settings.lake.sink_buffer_rows if max_rows is None else max_rows
        self.max_age_s = settings.lake.sink_buffer_s if max_age_s is None else max_age_s
        self.log_every_s = log_every_s
        self.name = name
        self.clock = clock
        self.sent_rows = 0
        self.retried_rows = 0
        self.dropped: Counter[str] = Counter()
        """Rows dropped, by ``"dataset:reason"``."""
        self.last_error: str | None = None
        self._sink: Any = None
        self._waiting: deque[tuple[float, str, pa.Table]] = deque()
        self._waiting_rows = 0
        self._task: asyncio.Task[None] | None = None
        self._in_flight: pa.Table | None = None
        self._unlogged: Counter[str] = Counter()
        self._last_log = -1e18

    # -- the caller's side --------------------------------------------------------------
    async def __call__(self, dataset: str, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if not self._waiting:
            try:
                await self._send(dataset, table)
                return
            except Exception as exc:  # the sink away: keep the rows, retry in the background
                self._note_failure(exc)
        self._keep(dataset, table)

    @property
    def waiting_rows(self) -> int:
        return self._waiting_rows

    def stats(self) -> dict[str, Any]:
        return {
            "sent_rows": self.sent_rows,
            "retried_rows": self.retried_rows,
            "waiting_rows": self._waiting_rows,
            "dropped_rows": sum(self.dropped.values()),
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until nothing waits (True) or ``timeout_s`` passed (False; the rows stay queued)."""
        deadline = self.clock() + timeout_s
        while self._waiting and self.clock() < deadline:
            self._ensure_task()
            await asyncio.sleep(0.05)
        return not self._waiting

    # -- the sink ----------------------------------------------------------------------
    def _lookup(self) -> Any:
        from actors.sink import SINK_NAME

        if self._sink is None:
            self._sink = ray.get_actor(SINK_NAME, namespace=self.namespace)  # ValueError: none runs
        return self._sink

    async def _send(self, dataset: str, table: pa.Table) -> None:
        sink = self._lookup()
        try:
            await sink.add.remote(dataset, table)
        except Exception:
            self._sink = None  # look it up again next time (restarted, or started anew)
            raise
        self.sent_rows += table.num_rows

    def _note_failure(self, exc: BaseException) -> None:
        error = "no lake sink running" if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        if self.last_error is None:
            log.warning(
                "lake rows: the sink is away (%s); keeping rows for up to %.0f s", error, self.max_age_s
            )
        self.last_error = error

    # -- waiting rows --------------------------------------------------------------------
    def _keep(self, dataset: str, table: pa.Table) -> None:
        self._waiting.append((self.clock(), dataset, table))
        self._waiting_rows += table.num_rows
        while self._waiting and self._waiting_rows > self.max_rows:
            if self._waiting[0][2] is self._in_flight:  # being sent: drop the next-oldest instead
                if len(self._waiting) == 1:
                    break
                head = self._waiting.popleft()
                self._drop_head("overflow")
                self._waiting.appendleft(head)
            else:
                self._drop_head("overflow")
        self._report_waiting()
        self._ensure_task()

    def _expire(self) -> None:
        cutoff = self.clock() - self.max_age_s
        while self._waiting and self._waiting[0][0] < cutoff:
            self._drop_head("expired")
        self._report_waiting()

    def _drop_head(self, reason: str) -> None:
        _, dataset, table = self._waiting.popleft()
        self._waiting_rows -= table.num_rows
        self._dropped(dataset, reason, table.num_rows)

    def drop_waiting(self, reason: str) -> int:
        """Give up every waiting row (an actor stopping): each counted as dropped; returns how many."""
        lost = 0
        while self._waiting:
            _, dataset, table = self._waiting.popleft()
            self._dropped(dataset, reason, table.num_rows)
            lost += table.num_rows
        self._waiting_rows = 0
        if lost:
            log.warning("lake rows: %d rows still waiting for the sink are lost (%s)", lost, reason)
        return lost

    def _dropped(self, dataset: str, reason: str, rows: int) -> None:
        key = f"{dataset}:{reason}"
        self.dropped[key] += rows
        self._unlogged[key] += rows
        metric = _metric(DROPPED_METRIC)
        if metric is not None:
            with contextlib.suppress(Exception):
                metric.inc(float(rows), tags={"dataset": dataset, "reason": reason})
        now = self.clock()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            what = ", ".join(f"{n} {k}" for k, n in sorted(self._unlogged.items()))
            self._unlogged.clear()
            log.error(
                "lake rows dropped (%s) since the last report: %s; %d dropped in all",
                self.last_error or "the sink is away",
                what,
                sum(self.dropped.values()),
            )

    def _report_waiting(self) -> None:
        metric = _metric(WAITING_METRIC)
        if metric is not None:
            with contextlib.suppress(Exception):
                metric.set(float(self._waiting_rows), tags={"actor": self.name or "-"})

    def _ensure_task(self) -> None:
        if self._waiting and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        delay = self.RETRY_S[0]
        while self._waiting:
            self._expire()
            if not self._waiting:
                break
            _, dataset, table = self._waiting[0]
            self._in_flight = table
            try:
                await self._send(dataset, table)
            except Exception as exc:
                self._in_flight = None
                self._note_failure(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_S[1])
                continue
            finally:
                self._in_flight = None
            self._waiting.popleft()  # the head: never dropped while in flight
            self._waiting_rows -= table.num_rows
            self.retried_rows += table.num_rows
            delay = self.RETRY_S[0]
            if not self._waiting:
                log.warning("lake rows: the sink is back; %d rows handed on late", self.retried_rows)
                self.last_error = None
        self._report_waiting()


async def drain_emitter(emit: Any, timeout_s: float = 10.0) -> None:
    """At an actor's stop: wait for the lake rows still waiting for the sink (if ``emit`` keeps any).

    Rows still waiting after ``timeout_s`` are lost with the process: counted as dropped
    (reason ``stopped``) and logged, never silently."""
    if not isinstance(emit, SinkEmitter):
        return
    if not await emit.drain(timeout_s):
        emit.drop_waiting("stopped")


def emitter_stats(emit: Any) -> dict[str, Any]:
    """The lake-row counters of ``emit`` for an actor's stats (empty for a plain callable)."""
    return {"lake_rows": emit.stats()} if isinstance(emit, SinkEmitter) else {}


def sink_emitter(settings: Settings, *, name: str = "") -> SinkEmitter:
    """Rows to the lake through ``sink:lake`` (awaited; kept and retried while the sink is away)."""
    return SinkEmitter(settings, name=name)


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
