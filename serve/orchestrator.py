"""Wires the market-data pipeline on Ray: the lake sink and one coordinator per exchange."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.detector import get_detector
from actors.market_data import start_coordinators
from actors.sink import get_sink
from core.settings import MarketSourceName, Settings
from pipeline.sources.factory import coordinator_keys

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0
"""How long :meth:`MarketPipeline.stop` waits for the last opportunity events to reach the push
side (a distributor working through a backlog must not hold a stop for minutes)."""


@dataclass
class PipelineStats:
    wall_s: float
    coordinators: dict[str, dict[str, Any]]
    sink: dict[str, Any]
    rows: dict[str, int] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)

    @property
    def quotes(self) -> int:
        return self.rows.get("quotes", 0)

    @property
    def max_lag_s(self) -> float:
        return max((c.get("lag_s") or 0.0 for c in self.coordinators.values()), default=0.0)

    @property
    def done(self) -> bool:
        return all(c.get("done") for c in self.coordinators.values())


def _ask(ref: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    try:
        return dict(ray.get(ref, timeout=timeout_s))
    except (
        ray.exceptions.RayActorError,
        ray.exceptions.ActorUnavailableError,
        ray.exceptions.GetTimeoutError,
    ) as exc:
        return {"unavailable": type(exc).__name__}


def close_open_set(settings: Settings, sink: Any, *, stopping: bool, detector: Any = None) -> int:
    """Leave no opportunity open that nothing will close; returns how many closed here.

    ``stopping`` (a clean stop): the detector's coordinators close everything they hold
    (lake, Redis, distributor), then whatever is still in the Redis open set is closed.
    At start: entries last seen live longer ago than their bound (``Settings.stale_after``)
    are what a crash left; each gets a ``closed`` lake row (at its last-seen time,
    ``details.closed_by`` = ``stale``) and leaves Redis. Fresh ones stay: a running
    detector's coordinators restore and close them.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.open_set import RedisOpportunityStore
    from pipeline.opportunities import OPPORTUNITIES_DATASET, closing_events, events_to_table
    from state.redis import redis_client

    closed = 0
    if detector is not None:
        try:
            closed = int(ray.get(detector.close_all.remote(), timeout=120))
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            log.warning("the detector could not close its open set (%s): closing it from Redis", exc)

    async def sweep() -> list[Any]:
        client = redis_client(settings.redis.url)
        try:
            store = RedisOpportunityStore.from_settings(client, settings)
            left = [o for o in await store.all_open() if stopping or store.is_stale(o)]
            events = closing_events(left, reason="stop" if stopping else "stale")
            await store.apply(events)
            return events
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever runs in this thread
        events = pool.submit(asyncio.run, sweep()).result()
    if events:
        ray.get(sink.add.remote(OPPORTUNITIES_DATASET, events_to_table(events)))
    return closed + len(events)


class MarketPipeline:
    """Starts, observes and stops the ingest actors of one source."""

    def __init__(
        self, settings: Settings, source: MarketSourceName, *, realtime: bool = True, detect: bool = True
    ) -> None:
        if settings.market.source != source:  # the detector judges its clock by the source
            settings = settings.model_copy(
                update={"market": settings.market.model_copy(update={"source": source})}
            )
        self.settings = settings
        self.source = source
        self.realtime = realtime
        self.detect = detect
        self.sink: Any = None
        self.detector: Any = None
        self.coordinators: dict[str, Any] = {}
        """By key (exchange, or ``replay``): handles with the coordinator's methods."""
        self.actors: dict[str, Any] = {}
        """The actors they run in, by name."""
        self.started = 0.0

    def start(self) -> MarketPipeline:
        self.started = time.monotonic()
        self.sink = get_sink(self.settings)
        ray.get(self.sink.ready.remote())
        if self.detect:
            close_open_set(self.settings, self.sink, stopping=False)  # what a crash left
            self.detector = get_detector(self.settings)
            ray.get(self.detector.ready.remote())
            if self.source != "replay":
                ray.get(self.detector.prestart.remote(list(self.settings.market.exchanges)))
        keys = list(coordinator_keys(self.settings, self.source))
        self.coordinators, self.actors = start_coordinators(
            self.settings, keys, self.source, realtime=self.realtime
        )
        ray.get([c.start.remote() for c in self.coordinators.values()])
        return self

    def stats(self) -> PipelineStats:
        keys = list(self.coordinators)
        coords = ray.get([self.coordinators[k].stats.remote() for k in keys])
        # A restarting sink or detector must not take the monitoring down with it.
        sink = _ask(self.sink.counters.remote())
        detector = _ask(self.detector.stats.remote()) if self.detector is not None else {}
        rows: dict[str, int] = {}
        for c in coords:
            for name, n in c["rows"].items():
                rows[name] = rows.get(name, 0) + n
        return PipelineStats(
            time.monotonic() - self.started, dict(zip(keys, coords, strict=True)), sink, rows, detector
        )

    def wait_done(self, timeout_s: float | None = None) -> None:
        ray.get([c.wait_done.remote() for c in self.coordinators.values()], timeout=timeout_s)

    def stop_sources(self) -> None:
        """Stop intake: the coordinators stop polling and hand their last batches on."""
        ray.get([c.stop.remote() for c in self.coordinators.values()])

    def drain_detection(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait until every tick handed on is detected and its events are out; after
        ``timeout_s`` go on without them (``{"timed_out": True}``: the open set is closed next
        anyway, and what is queued for users stays in Redis)."""
        if self.detector is None:
            return {}
        try:
            return dict(ray.get(self.detector.drain.remote(), timeout=timeout_s) or {})
        except ray.exceptions.GetTimeoutError:
            log.warning("detection did not drain within %.0f s: stopping without its last events", timeout_s)
            return {"timed_out": True}

    def close_open_set(self) -> int:
        """Close every open opportunity (lake, Redis, distributor) while the sink takes rows."""
        if self.detector is None:
            return 0
        return close_open_set(self.settings, self.sink, stopping=True, detector=self.detector)

    def finish(self) -> PipelineStats:
        """Flush the lake (the sink writes what it holds) and end the pipeline's actors."""
        stats = self.stats()
        stats.sink = ray.get(self.sink.shutdown.remote())
        for handle in self.actors.values():  # md:<key> or md:host:NN
            ray.kill(handle)
        self.actors.clear()
        if self.detector is not None:
            for name in ray.get(self.detector.host_names.remote()):
                ray.kill(ray.get_actor(name, namespace=self.settings.ray.namespace))
            ray.kill(self.detector)
        ray.kill(self.sink)
        self.coordinators.clear()
        return stats

    def stop(self, before_sink: Callable[[], Any] | None = None) -> PipelineStats:
        """Stop the sources, hand every batch to the sink, flush the lake.

        ``before_sink`` runs once the last opportunity events are out and before the sink
        shuts down (the push side stops there, so its last rows reach the lake).
        """
        self.stop_sources()
        self.drain_detection(DRAIN_TIMEOUT_S)
        self.close_open_set()
        if before_sink is not None:
            before_sink()
        return self.finish()


def queued_shard_indexes(redis_url: str) -> set[int]:
    """Indexes of the ``uq:NNN`` shards that hold fan-out batches in Redis."""
    import re

    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5.0, socket_timeout=10.0)
    pattern = re.compile(rb"^uq:(\d+):batches$")
    try:
        keys = client.scan_iter(match="uq:*:batches", count=1000)
        return {int(m[1]) for key in keys if (m := pattern.match(key))}
    finally:
        client.close()


def cover_queued_shards(settings: Settings) -> Settings:
    """``settings`` with enough queue shards for every shard that still holds queued pushes.

    The default count follows the CPUs, so a data dir written by a bigger host (or an older
    release, 8 shards) may hold batches of ``uq:007`` on a host whose default is 1: those
    shards start too, restore their queues and send them, rather than leaving them unread."""
    try:
        found = queued_shard_indexes(settings.redis.url)
    except Exception as exc:  # Redis is checked for real by the shards themselves
        log.warning("could not look for queued pushes of other shard counts: %s", exc)
        return settings
    need = max(found, default=-1) + 1
    if need <= settings.distribution.shards:
        return settings
    log.warning(
        "Redis holds queued pushes of %d queue shards (uq:000-uq:%03d); starting %d instead of %d",
        need,
        need - 1,
        need,
        settings.distribution.shards,
    )
    dist = settings.distribution.model_copy(update={"shards": need})
    return settings.model_copy(update={"distribution": dist})


def outbound_totals(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' outbound webhook figures (``actors.outbound``: each shard sends its users'), summed."""
    totals: dict[str, Any] = {}
    for shard in shards:
        for key, value in (shard.get("outbound") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    return totals


class Distribution:
    """Starts, observes and stops the push side: rate limiter, queue shards, distributor.

    Start it before the :class:`MarketPipeline` so the pair coordinators find
    ``dist:engine``; stop it after, so the last events are pushed or persisted.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sink: Any = None
        self.limiter: Any = None
        self.shards: list[Any] = []
        self.distributor: Any = None

    def start(self) -> Distribution:
        from actors.distributor import get_distributor
        from actors.queues import get_shards
        from actors.ratelimit import get_rate_limiter

        self.settings = cover_queued_shards(self.settings)
        # The shards and the distributor write their rows to the sink; holding a handle
        # keeps it alive when no pipeline runs (an actor goes when its last handle does).
        self.sink = get_sink(self.settings)
        ray.get(self.sink.ready.remote())
        self.limiter = get_rate_limiter(self.settings)
        self.shards = get_shards(self.settings)
        ray.get([s.ready.remote() for s in self.shards])
        self.distributor = get_distributor(self.settings)
        ray.get(self.distributor.ready.remote())
        return self

    def stats(self) -> dict[str, Any]:
        shards = [_ask(s.stats.remote()) for s in self.shards]
        totals: dict[str, Any] = {}
        for shard in shards:
            for key, value in shard.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
                elif key == "skipped" and isinstance(value, dict):
                    bucket = totals.setdefault("skipped", {})
                    for reason, n in value.items():
                        bucket[reason] = bucket.get(reason, 0) + n
        return {
            "distributor": _ask(self.distributor.stats.remote()) if self.distributor else {},
            "limiter": _ask(self.limiter.stats.remote()) if self.limiter else {},
            "outbound": outbound_totals(shards),
            "shards": shards,
            "totals": totals,
        }

    def stop(self) -> dict[str, Any]:
        """Stop pushing; what is still queued stays in Redis for the next start."""
        if self.distributor is not None:
            _ask(self.distributor.stop.remote())
        stopping = [s.stop.remote() for s in self.shards]  # all at once; each waits for its sends
        shard_stats = [_ask(ref, timeout_s=60.0) for ref in stopping]
        stats = {
            "distributor": _ask(self.distributor.stats.remote()) if self.distributor else {},
            "shards": shard_stats,
        }
        stats["outbound"] = outbound_totals(shard_stats)
        for handle in [self.distributor, self.limiter, *self.shards]:
            if handle is not None:
                ray.kill(handle)
        self.shards = []
        self.distributor = self.limiter = None
        return stats


def get_monitor(settings: Settings) -> Any:
    """``alerts:monitor`` (``actors.monitor``): polls the actors, exports Prometheus metrics,
    tells the SuperAdmins about incidents."""
    from actors.monitor import get_monitor as start

    return start(settings)


def stop_monitor(monitor: Any) -> None:
    if monitor is None:
        return
    _ask(monitor.stop.remote(), timeout_s=15.0)
    ray.kill(monitor)
