"""Wires the market-data pipeline on Ray: the lake sink and one coordinator per exchange."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.market_data import start_coordinator
from actors.opportunities import get_detector
from actors.sink import get_sink
from core.settings import MarketSourceName, Settings
from pipeline.sources.factory import coordinator_keys


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


def _ask(ref: Any) -> dict[str, Any]:
    try:
        return dict(ray.get(ref, timeout=30))
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
        return {"unavailable": type(exc).__name__}


class MarketPipeline:
    """Starts, observes and stops the ingest actors of one source."""

    def __init__(
        self, settings: Settings, source: MarketSourceName, *, realtime: bool = True, detect: bool = True
    ) -> None:
        self.settings = settings
        self.source = source
        self.realtime = realtime
        self.detect = detect
        self.sink: Any = None
        self.detector: Any = None
        self.coordinators: dict[str, Any] = {}
        self.started = 0.0

    def start(self) -> MarketPipeline:
        self.started = time.monotonic()
        self.sink = get_sink(self.settings)
        ray.get(self.sink.ready.remote())
        if self.detect:
            self.detector = get_detector(self.settings)
            ray.get(self.detector.ready.remote())
            if self.source != "replay":
                ray.get(self.detector.prestart.remote(list(self.settings.market.exchanges)))
        for key in coordinator_keys(self.settings, self.source):
            self.coordinators[key] = start_coordinator(
                self.settings, key, self.source, realtime=self.realtime
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

    def stop(self) -> PipelineStats:
        """Stop the sources, hand every batch to the sink, flush the lake."""
        ray.get([c.stop.remote() for c in self.coordinators.values()])
        if self.detector is not None:
            ray.get(self.detector.drain.remote())
        stats = self.stats()
        stats.sink = ray.get(self.sink.shutdown.remote())
        for handle in self.coordinators.values():
            ray.kill(handle)
        if self.detector is not None:
            for name in ray.get(self.detector.coordinator_names.remote()):
                ray.kill(ray.get_actor(name, namespace=self.settings.ray.namespace))
            ray.kill(self.detector)
        ray.kill(self.sink)
        self.coordinators.clear()
        return stats
