"""``detect:engine``: the detector on Ray (:class:`DetectorActor`).

It subscribes to the market-data coordinators, keeps the latest books and funding rates
of every exchange, and per tick runs the vectorised detectors over all symbols and pairs
at once (``pipeline.engine``). It writes every validation outcome to the lake
(``validations``) and hands each pair's candidates to that pair's coordinator
(:mod:`actors.opportunities`). It ticks on a wall-clock timer when no batch arrives
(``idle_tick_s``), so opportunities whose legs aged past the freshness bound close even
when the market source stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import ray

from actors.opportunities import (
    LATENCY_WINDOW,
    CoordinatorHostActor,
    PairHandle,
    coordinator_name,
    host_name,
    host_of,
    settle,
)
from actors.sink import SINK_NAME
from core.candidates import Candidate
from core.errors import StoreUnavailable
from core.fees import FeeSchedule
from core.models import TransferStatus
from core.settings import Settings
from pipeline.engine import OpportunityEngine, Pair, recent_quotes
from pipeline.open_set import RedisOpportunityStore
from pipeline.opportunities import VALIDATIONS_DATASET
from pipeline.schemas import MarketBatch
from state.redis import redis_client

log = logging.getLogger(__name__)

DETECTOR_NAME = "detect:engine"


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
