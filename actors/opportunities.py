"""The opportunity engine on Ray: one detector, one coordinator per exchange pair.

- ``detect:engine`` (``DetectorActor``, :mod:`actors.detector`) runs the vectorised
  detectors per tick and hands each pair's candidates to that pair's coordinator.
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
import time
import zlib
from collections import deque
from datetime import UTC, datetime
from typing import Any

import numpy as np
import ray

from actors.sink import SINK_NAME
from core.candidates import Candidate
from core.errors import StoreUnavailable
from core.lifecycle import EventType, LifecycleEvent, OpportunityTracker
from core.settings import Settings
from pipeline.engine import Pair
from pipeline.open_set import RedisOpportunityStore
from pipeline.opportunities import OPPORTUNITIES_DATASET, events_to_table
from state.redis import redis_client

log = logging.getLogger(__name__)

LATENCY_WINDOW = 20_000
DISTRIBUTOR_NAME = "dist:engine"
"""The distributor (``actors.distributor``), fed the opened and closed events and the
updates whose ``pushable`` flipped (:func:`for_distributor`)."""


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
