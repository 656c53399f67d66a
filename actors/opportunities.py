"""The opportunity engine on Ray: one detector, one coordinator per exchange pair.

- ``detect:engine`` (``DetectorActor``) subscribes to the market-data coordinators,
  keeps the latest books and funding rates of every exchange, and per tick runs the
  vectorised detectors over all symbols and pairs at once (``pipeline.engine``). It
  writes every validation outcome to the lake (``validations``) and hands each pair's
  candidates to that pair's coordinator.
- ``coord:<a>:<b>`` (a :class:`PairCoordinator`, ``a <= b``; ``coord:<x>:<x>``
  holds the single-exchange technical signals of ``x``), hosted with the other pairs in
  ``coord:host:NN`` (``CoordinatorHostActor``; ``opportunities.coordinator_hosts``
  processes, 1 on a small host; each pair in exactly one), dedups on (kind, symbol, buy
  exchange, sell exchange) and runs the lifecycle opened → updated → closed
  (``core.lifecycle``). Open opportunities live in Redis; every event is a row of the
  ``opportunities`` dataset. A restarted coordinator restores its open and recently
  closed opportunities from Redis, so it neither re-opens nor forgets one.

Liveness (docs/opportunities.md): an opportunity closes only after ``close_after_s``
without an edge (hysteresis); the detector ticks on a wall-clock timer when no batch
arrives (``idle_tick_s``), so opportunities whose legs aged past the freshness bound
close even when the market source stops; a Redis write that failed is kept and retried
on every later tick until it lands; each open entry's last-seen time is refreshed in
Redis while it stays live, and readers drop entries not seen for their bound.

Both are plain (threaded-off) actors: calls from one caller run in order, which the
lifecycle needs (an async actor may run one caller's calls out of order).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import ray
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from actors.sink import SINK_NAME
from core.candidates import Candidate
from core.errors import StoreUnavailable
from core.fees import FeeSchedule
from core.lifecycle import EventType, LifecycleEvent, OpportunityTracker
from core.models import TransferStatus
from core.settings import Settings
from pipeline.engine import OpportunityEngine, Pair, recent_quotes
from pipeline.opportunities import (
    OPPORTUNITIES_DATASET,
    VALIDATIONS_DATASET,
    RedisOpportunityStore,
    events_to_table,
)
from pipeline.schemas import MarketBatch

log = logging.getLogger(__name__)

DETECTOR_NAME = "detect:engine"
DISTRIBUTOR_NAME = "dist:engine"
"""The distributor (``actors.distributor``), fed the opened and closed events and the
updates whose ``pushable`` flipped (:func:`for_distributor`)."""
LATENCY_WINDOW = 20_000


def settle(ref: Any) -> bool:
    """Wait for a fire-and-forget call; a restarted callee loses it (counted, not raised).

    Calls are never retried: a sink or coordinator that died with a batch lost that
    batch (bounded by its flush window) and must not receive it twice.
    """
    try:
        ray.get(ref)
        return True
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
        log.warning("a downstream actor restarted; one call lost: %s", type(exc).__name__)
        return False
    except ray.exceptions.RayTaskError as exc:  # its failure is the callee's to report
        log.error("a downstream call failed: %s", exc)
        return False


def event_payload(ev: LifecycleEvent) -> dict[str, Any]:
    """A lifecycle event as the distributor takes it (JSON-safe)."""
    return {
        "event": ev.event.value,
        "opportunity_id": ev.opportunity_id,
        **ev.candidate.to_dict(),
        "opened_at": ev.opened_at.isoformat(),
        "reopened": ev.reopened,
    }


def for_distributor(events: list[LifecycleEvent], pushable: dict[str, bool]) -> list[dict[str, Any]]:
    """The events the distributor must hear: every ``opened`` and ``closed``, and the
    ``updated`` ones whose ``pushable`` flipped (false→true fans out like an opening,
    true→false expires what is queued). ``pushable`` (id → last pushable state, updated
    here; an id leaves on close) is the coordinator's memory; an id it does not know (held
    since before a restart) forwards its update: the distributor and the shards dedup.
    """
    out = []
    for ev in events:
        oid, now = ev.opportunity_id, ev.candidate.pushable
        if ev.event is EventType.CLOSED:
            pushable.pop(oid, None)
        elif ev.event is EventType.UPDATED:
            before = pushable.get(oid)
            pushable[oid] = now
            if before is not None and before == now:
                continue
        else:
            pushable[oid] = now
        out.append(event_payload(ev))
    return out


def coordinator_name(pair: Pair) -> str:
    return f"coord:{pair[0]}:{pair[1]}"


def redis_client(url: str) -> aioredis.Redis:
    """A client that fails fast (and reconnects by itself) when Redis restarts."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        health_check_interval=30,
    )


class PairCoordinator:
    """Plain class: the lifecycle of one exchange pair's opportunities."""

    def __init__(self, settings: Settings, pair: Pair, *, sink: Any = None) -> None:
        s = settings.opportunities
        self.pair = pair
        self.tracker = OpportunityTracker(
            s.material_bps, s.material_size_frac, s.cooldown_s, settings.close_after()
        )
        self.loop = asyncio.new_event_loop()
        self.store = RedisOpportunityStore.from_settings(redis_client(settings.redis.url), settings)
        self.sink = sink
        self.events: dict[str, int] = {"opened": 0, "updated": 0, "closed": 0}
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.store_errors = 0
        self.unwritten: dict[str, LifecycleEvent] = {}
        """Events whose Redis write failed, the last one per id: retried every tick until they land."""
        self.touch_every_s = min(1.0, min(self.store.stale_after_s.values()) / 4)
        self._touched = -math.inf
        self.in_flight: deque[Any] = deque()
        self._restored = False
        self.namespace = settings.ray.namespace
        self._distributor: Any = None
        self._looked_up = -math.inf
        self.pushable: dict[str, bool] = {}
        """Each open id's last ``pushable`` (what :func:`for_distributor` compares with)."""

    def distributor(self) -> Any:
        """``dist:engine`` when it runs (looked up again at most every 5 s until found)."""
        if self._distributor is None and time.monotonic() - self._looked_up > 5.0:
            self._looked_up = time.monotonic()
            try:
                self._distributor = ray.get_actor(DISTRIBUTOR_NAME, namespace=self.namespace)
            except ValueError:
                self._distributor = None
        return self._distributor

    def _restore(self, now: datetime) -> None:
        if self._restored:
            return
        try:
            opened = self.loop.run_until_complete(self.store.for_pair(*self.pair))
            closed = self.loop.run_until_complete(self.store.recent_closed_for_pair(*self.pair, now))
            self.tracker.restore(opened, closed, now=now)
            self._restored = True
        except StoreUnavailable as exc:
            log.warning("%s: cannot restore from redis yet: %s", coordinator_name(self.pair), exc)

    def _write(self, events: list[LifecycleEvent]) -> None:
        """This tick's events to Redis, after any that failed before (in order, last per id)."""
        for ev in events:
            self.unwritten.pop(ev.opportunity_id, None)
            self.unwritten[ev.opportunity_id] = ev
        if not self.unwritten:
            return
        batch = list(self.unwritten.values())
        try:
            self.loop.run_until_complete(self.store.apply(batch))
        except StoreUnavailable as exc:  # kept in unwritten: the next tick (or timer tick) retries
            self.store_errors += 1
            log.warning("%s: %d events not in redis yet: %s", coordinator_name(self.pair), len(batch), exc)
            return
        self.unwritten.clear()

    def _touch(self, now: datetime) -> None:
        """Refresh the last-seen time of what was live in this tick (at most every ``touch_every_s``)."""
        wall = time.time()
        if wall - self._touched < self.touch_every_s:
            return
        ids = self.tracker.live_ids(now)
        try:
            self.loop.run_until_complete(self.store.touch(ids, int(wall * 1000)))
            self._touched = wall
        except StoreUnavailable as exc:
            log.warning("%s: %s", coordinator_name(self.pair), exc)

    def observe(
        self,
        candidates: list[Candidate],
        now_ms: int,
        kinds: frozenset[str],
        t_in: float | None = None,
        *,
        final: bool = False,
    ) -> int:
        """One tick of this pair. ``final``: nothing is live any more, close every one now
        (a clean stop), whatever the hysteresis."""
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        self._restore(now)
        if final:
            events = self.tracker.observe([], now, kinds=None, close_after_s=0.0)
        else:
            events = self.tracker.observe(candidates, now, kinds=set(kinds))
            self._touch(now)
        if not events:
            if self.unwritten:
                self._write([])
            return 0
        for ev in events:
            self.events[ev.event.value] += 1
        if t_in is not None:  # the event exists now: batch in coordinator → event decided
            self.latencies_ms.append((time.time() - t_in) * 1000)
        if self.sink is not None:
            self.in_flight.append(self.sink.add.remote(OPPORTUNITIES_DATASET, events_to_table(events)))
            while len(self.in_flight) > 32:
                settle(self.in_flight.popleft())
        self._write(events)
        distributor = self.distributor()
        payload = for_distributor(events, self.pushable)
        if distributor is not None and payload:
            self.in_flight.append(distributor.on_events.remote(payload))
            while len(self.in_flight) > 32:
                settle(self.in_flight.popleft())
        return len(events)

    def drain(self) -> None:
        while self.in_flight:
            settle(self.in_flight.popleft())
        if self.unwritten:
            self._write([])

    def close_all(self, now_ms: int) -> int:
        """A clean stop: close every open opportunity (lake, Redis, distributor) and drain."""
        n = self.observe([], now_ms, frozenset(), final=True)
        self.drain()
        return n

    def reset_stats(self) -> None:
        self.latencies_ms.clear()

    def stats(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {
            "pair": list(self.pair),
            "open": len(self.tracker),
            "events": dict(self.events),
            "store_errors": self.store_errors,
            "unwritten": len(self.unwritten),
            "latency_ms": {}
            if lat is None
            else {
                "n": int(lat.size),
                "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max()),
            },
        }


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class OpportunityCoordinatorActor:
    def __init__(self, settings: Settings, a: str, b: str) -> None:
        sink = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
        self.impl = PairCoordinator(settings, (a, b), sink=sink)

    def observe(
        self, candidates: list[Candidate], now_ms: int, kinds: frozenset[str], t_in: float | None = None
    ) -> int:
        return self.impl.observe(candidates, now_ms, kinds, t_in)

    def close_all(self, now_ms: int) -> int:
        return self.impl.close_all(now_ms)

    def stats(self) -> dict[str, Any]:
        return self.impl.stats()

    def drain(self) -> None:
        self.impl.drain()

    def reset_stats(self) -> None:
        self.impl.reset_stats()


HOST_PREFIX = "coord:host"


def host_name(index: int) -> str:
    return f"{HOST_PREFIX}:{index:02d}"


def host_of(pair: Pair, hosts: int) -> int:
    """The host of a pair: a stable hash of its name, so every caller finds the same one."""
    return zlib.crc32(coordinator_name(pair).encode()) % max(1, hosts)


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class CoordinatorHostActor:
    """``coord:host:NN``: the pair coordinators ``coord:<a>:<b>`` whose names hash to it.

    A pair coordinator holds a few open opportunities and writes a few Redis keys per tick:
    a process each (≈ 170-200 MB) was most of its cost. A host keeps one
    :class:`PairCoordinator` per pair, keyed by the pair as the actors were named, made on
    first use (a restarted host restores each from Redis as a restarted actor did). Each pair
    lives in exactly one host (:func:`host_of`) and a host is a plain actor running one call
    at a time, in the caller's order: one writer per pair, as before.
    """

    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index
        self.sink = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
        self.pairs: dict[Pair, PairCoordinator] = {}

    def _pair(self, pair: Pair) -> PairCoordinator:
        pair = (pair[0], pair[1])
        impl = self.pairs.get(pair)
        if impl is None:
            impl = self.pairs[pair] = PairCoordinator(self.settings, pair, sink=self.sink)
        return impl

    def observe(
        self,
        pair: Pair,
        candidates: list[Candidate],
        now_ms: int,
        kinds: frozenset[str],
        t_in: float | None = None,
    ) -> int:
        return self._pair(pair).observe(candidates, now_ms, kinds, t_in)

    def close_all(self, pair: Pair, now_ms: int) -> int:
        return self._pair(pair).close_all(now_ms)

    def stats(self, pair: Pair) -> dict[str, Any]:
        return self._pair(pair).stats()

    def drain(self, pair: Pair) -> None:
        self._pair(pair).drain()

    def reset_stats(self, pair: Pair) -> None:
        self._pair(pair).reset_stats()

    def names(self) -> list[str]:
        return [coordinator_name(p) for p in self.pairs]


class _HostedMethod:
    def __init__(self, host: Any, method: str, pair: Pair) -> None:
        self.call = getattr(host, method)
        self.pair = pair

    def remote(self, *args: Any) -> Any:
        return self.call.remote(self.pair, *args)


class PairHandle:
    """A pair coordinator in its host, called like the one-pair actor it replaces:
    ``handle.observe.remote(candidates, now_ms, kinds, t_in)``."""

    def __init__(self, host: Any, pair: Pair, host_name: str) -> None:
        self.host = host
        self.pair = pair
        self.host_name = host_name

    def __getattr__(self, method: str) -> _HostedMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _HostedMethod(self.host, method, self.pair)


class Detector:
    """Plain class: the engine plus routing to pair coordinators and the audit sink."""

    def __init__(self, settings: Settings, *, sink: Any = None) -> None:
        from pipeline.history import persistence_from_lake
        from pipeline.lake import Lake

        self.settings = settings
        self.sink = sink
        lake = Lake.from_settings(settings.lake)
        s = settings.opportunities
        self.engine = OpportunityEngine(
            s,
            FeeSchedule.build(settings.fees),
            exchanges=list(settings.market.exchanges),
            persistence_loader=lambda: persistence_from_lake(
                lake,
                min_lifetime_s=s.persistence_min_lifetime_s,
                window_hours=s.persistence_window_hours,
                end=self._clock(),
            ),
            # The lake read runs on its own thread: a tick never waits for it.
            persistence_executor=ThreadPoolExecutor(1, thread_name_prefix="persistence"),
        )
        self.market_fees: dict[str, dict[str, float]] = {}
        self.coordinators: dict[Pair, PairHandle] = {}
        self.hosts: dict[str, Any] = {}
        """The ``coord:host:NN`` actors the coordinators live in, by name."""
        self.active: set[Pair] = set()
        self.in_flight: deque[Any] = deque()
        self.detect_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.batches = 0
        self.candidates = 0
        self.idle_ticks = 0
        self.lock = threading.RLock()
        """on_batch, the idle timer and the control calls take turns (the timer has its own thread)."""
        self._last_tick = time.monotonic()
        self._last_batch = time.monotonic()
        self._reloaded = False
        self.stopped = False
        market = settings.market
        self.clock_rate = market.replay_speed if market.source == "replay" else 1.0
        """Source-clock seconds per wall second while no batch comes: a replay's clock is
        the file's (it moves at ``replay_speed``; 0, as fast as possible, not at all)."""
        if s.technical and s.backfill_hours > 0:
            try:
                self.engine.backfill_bars(recent_quotes(lake, s.backfill_hours, datetime.now(UTC)).collect())
            except Exception as exc:  # no lake yet, or unreadable: start with empty bars
                log.info("no technical backfill: %s", exc)

    def set_market_fees(self, exchange: str, fees: dict[str, float]) -> None:
        """Taker fees per market type from an exchange's ccxt markets."""
        self.market_fees[exchange] = {f"{kind}_taker": rate for kind, rate in fees.items()}
        self.engine.fees = FeeSchedule.build(self.settings.fees, self.market_fees)

    def set_transfer(self, exchange: str, transfer: dict[str, TransferStatus]) -> None:
        """What ``exchange`` says about moving each asset (``core.transfers``): routes are
        checked and costed from now on; an asset it does not mention is unknown."""
        self.engine.transfer[exchange] = dict(transfer)

    def prestart(self, exchanges: list[str]) -> None:
        """Start the coordinators of every pair up front: the first event pays no actor start."""
        names = sorted(set(exchanges))
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i:]]
        ray.get([self._coordinator(p).stats.remote() for p in pairs])

    def _coordinator(self, pair: Pair) -> PairHandle:
        handle = self.coordinators.get(pair)
        if handle is None:
            index = host_of(pair, self.settings.opportunities.coordinator_hosts)
            name = host_name(index)
            host = self.hosts.get(name)
            if host is None:
                host = self.hosts[name] = CoordinatorHostActor.options(  # type: ignore[attr-defined]
                    name=name, namespace=self.settings.ray.namespace, get_if_exists=True
                ).remote(self.settings, index)
            handle = self.coordinators[pair] = PairHandle(host, pair, name)
        return handle

    def _clock(self) -> datetime:
        """The source clock (a replay's is the file's), the wall clock before any data."""
        ms = self.engine.clock_ms
        return datetime.fromtimestamp(ms / 1000, UTC) if ms > 0 else datetime.now(UTC)

    def _reload_active(self) -> None:
        """Once: the pairs that hold open opportunities in Redis hear every tick from now on
        (a restarted detector would otherwise never tick a pair with no new candidate)."""
        if self._reloaded:
            return
        client = redis_client(self.settings.redis.url)
        loop = asyncio.new_event_loop()
        try:
            pairs = loop.run_until_complete(RedisOpportunityStore(client).open_pairs())
            self.active.update(pairs)
            self._reloaded = True
        except StoreUnavailable as exc:
            log.warning("detector: cannot reload the open pairs from redis yet: %s", exc)
        finally:
            loop.run_until_complete(client.aclose())
            loop.close()

    def idle_tick(self) -> int:
        """The timer: with no tick for ``idle_tick_s`` (wall clock), tick at the source clock
        moved on by the wall time since the last batch, so stale legs stop being candidates
        and their opportunities close (and failed Redis writes are retried)."""
        with self.lock:
            now = time.monotonic()
            if self.stopped or now - self._last_tick < self.settings.opportunities.idle_tick_s:
                return 0
            self._reload_active()
            self._last_tick = now
            self.idle_ticks += 1
            clock = self.engine.clock_ms
            elapsed_ms = int((now - self._last_batch) * 1000 * self.clock_rate)
            now_ms = clock + elapsed_ms if clock > 0 else int(time.time() * 1000)
            self.engine.refresh_persistence(time.time())
            tick = self.engine.idle_tick(now_ms)
            sent = self._route(tick.candidates, tick.now_ms, tick.kinds, time.time())
            while len(self.in_flight) > 64:
                settle(self.in_flight.popleft())
            return sent

    def close_all(self) -> int:
        """A clean stop: every coordinator closes what it holds (lake, Redis, distributor).

        The idle timer stops ticking first (fresh books would re-open what closes here)."""
        with self.lock:
            self.stopped = True
            self.drain()
            now_ms = int(self._clock().timestamp() * 1000)
            return sum(ray.get([h.close_all.remote(now_ms) for h in self.coordinators.values()]))

    def on_batch(self, batch: MarketBatch, t_in: float | None = None) -> int:
        with self.lock:
            return self._on_batch(batch, t_in)

    def _on_batch(self, batch: MarketBatch, t_in: float | None = None) -> int:
        t_in = t_in or time.time()
        self.batches += 1
        self._last_batch = time.monotonic()
        self._reload_active()
        self.engine.ingest(batch)
        self.engine.refresh_persistence(time.time())
        sent = 0
        if self.engine.due():
            self._last_tick = time.monotonic()
            tick = self.engine.tick()
            self.detect_ms.append(tick.timings_ms.get("total", 0.0))
            sent += self._route(tick.candidates, tick.now_ms, tick.kinds, t_in)
            if tick.validations is not None and self.sink is not None and tick.validations.num_rows:
                self.in_flight.append(self.sink.add.remote(VALIDATIONS_DATASET, tick.validations))
        if self.engine.technical_due():
            tech = self.engine.technical_tick()
            sent += self._route(tech.candidates, tech.now_ms, tech.kinds, t_in)
        while len(self.in_flight) > 64:
            settle(self.in_flight.popleft())
        return sent

    def _route(
        self, candidates: dict[Pair, list[Candidate]], now_ms: int, kinds: frozenset[str], t_in: float
    ) -> int:
        # Every pair that ever had a candidate hears every tick: absence is how an
        # opportunity closes.
        self.active.update(candidates)
        for pair in self.active:
            cands = candidates.get(pair, [])
            self.candidates += len(cands)
            self.in_flight.append(self._coordinator(pair).observe.remote(cands, now_ms, kinds, t_in))
        return sum(len(c) for c in candidates.values())

    def drain(self) -> dict[str, Any]:
        """Wait until every tick handed on is in the coordinators and the sink."""
        with self.lock:
            while self.in_flight:
                settle(self.in_flight.popleft())
            ray.get([h.drain.remote() for h in self.coordinators.values()])
            return self.stats()

    def reset_stats(self) -> None:
        """Forget latency samples (benchmarks drop their warm-up)."""
        self.detect_ms.clear()
        ray.get([h.reset_stats.remote() for h in self.coordinators.values()])

    def stats(self) -> dict[str, Any]:
        det = np.asarray(self.detect_ms) if self.detect_ms else np.zeros(1)
        coords = ray.get([h.stats.remote() for h in self.coordinators.values()]) if self.coordinators else []
        lat = [c["latency_ms"] for c in coords if c["latency_ms"]]
        return {
            "batches": self.batches,
            "idle_ticks": self.idle_ticks,
            "candidates": self.candidates,
            "engine": self.engine.snapshot(),
            "detect_ms_p50": float(np.percentile(det, 50)),
            "detect_ms_p99": float(np.percentile(det, 99)),
            "coordinators": coords,
            "open": sum(c["open"] for c in coords),
            "events": {k: sum(c["events"][k] for c in coords) for k in ("opened", "updated", "closed")},
            "event_latency_ms_p99": max((c["p99"] for c in lat), default=None),
            "event_latency_ms_p50": float(np.median([c["p50"] for c in lat])) if lat else None,
        }


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class DetectorActor:
    def __init__(self, settings: Settings) -> None:
        sink = ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
        self.impl = Detector(settings, sink=sink)
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._idle_loop, name="idle-tick", daemon=True)
        self._timer.start()

    def _idle_loop(self) -> None:
        period = self.impl.settings.opportunities.idle_tick_s
        while not self._stop.wait(period / 2):
            try:
                self.impl.idle_tick()
            except Exception:  # the timer must outlive one bad tick (a coordinator restarting)
                log.exception("detector idle tick failed")

    def ready(self) -> bool:
        return True

    def close_all(self) -> int:
        n = self.impl.close_all()
        self._stop.set()
        return n

    def on_batch(self, batch: MarketBatch, t_in: float | None = None) -> int:
        return self.impl.on_batch(batch, t_in)

    def set_market_fees(self, exchange: str, fees: dict[str, float]) -> None:
        with self.impl.lock:
            self.impl.set_market_fees(exchange, fees)

    def prestart(self, exchanges: list[str]) -> None:
        with self.impl.lock:
            self.impl.prestart(exchanges)

    def set_transfer(self, exchange: str, transfer: dict[str, TransferStatus]) -> None:
        with self.impl.lock:
            self.impl.set_transfer(exchange, transfer)

    def transfer(self) -> dict[str, dict[str, TransferStatus]]:
        """What each live venue said about moving each asset, as the detector uses it."""
        with self.impl.lock:
            return {ex: dict(assets) for ex, assets in self.impl.engine.transfer.items()}

    def drain(self) -> dict[str, Any]:
        return self.impl.drain()

    def reset_stats(self) -> None:
        with self.impl.lock:
            self.impl.reset_stats()

    def stats(self) -> dict[str, Any]:
        with self.impl.lock:
            return self.impl.stats()

    def coordinator_names(self) -> list[str]:
        """The pair coordinators (``coord:<a>:<b>``) started so far."""
        with self.impl.lock:
            return [coordinator_name(p) for p in self.impl.coordinators]

    def host_names(self) -> list[str]:
        """The actors they live in (``coord:host:NN``)."""
        with self.impl.lock:
            return sorted(self.impl.hosts)


def get_detector(settings: Settings) -> Any:
    return DetectorActor.options(  # type: ignore[attr-defined]
        name=DETECTOR_NAME, namespace=settings.ray.namespace, get_if_exists=True
    ).remote(settings)
