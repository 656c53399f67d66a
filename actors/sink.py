"""The lake sink actor: one ``ParquetSink`` behind a Ray actor named ``sink:lake``.

Batches arrive as Arrow tables from the coordinators; a timer flushes them by age,
compacts closed hours and, every ``ARBFLOW_LAKE__RETENTION_EVERY_S``, deletes the hour
partitions past their dataset's retention (``pipeline.retention``; idempotent, logged).
If the actor dies, Ray restarts it; ``recover()`` on
start cleans up after any interrupted write or compaction, so every committed file
is whole and no row is written twice. What was buffered but not flushed when it
died is lost: at most one flush window (``ARBFLOW_LAKE__FLUSH_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import ray

from core.errors import LakeError
from core.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline.retention import PruneReport

# pyarrow, Polars and the lake are imported by the sink's own process (``LakeSink``), not by
# whoever only creates or finds ``sink:lake`` (the command's driver at a cold start).

log = logging.getLogger(__name__)

SINK_NAME = "sink:lake"


class LakeSink:
    """Plain class: the actor's behaviour, testable without Ray."""

    def __init__(self, settings: Settings, *, tick_s: float = 0.5, compact_every_s: float = 300.0) -> None:
        from pipeline.lake import Lake
        from pipeline.retention import check_retention
        from pipeline.sink import ParquetSink

        self.settings = settings
        self.lake = Lake.from_settings(settings.lake)
        self.sink = ParquetSink(self.lake, settings.lake)
        self.tick_s = tick_s
        self.compact_every_s = compact_every_s
        self.started_at = time.time()
        self._timer: asyncio.Task[None] | None = None
        self._last_compact = time.monotonic()
        self._last_prune: float | None = None  # the first tick prunes
        self.retention = check_retention(settings.lake.retention)
        self.retention_stats: dict[str, Any] = {"runs": 0, "partitions": 0, "files": 0, "last_run_at": None}
        self.sink.recover()

    def add(self, dataset: str, table: pa.Table) -> int:
        self.sink.add(dataset, table)
        return table.num_rows

    def add_many(self, tables: dict[str, pa.Table]) -> int:
        return sum(self.add(name, table) for name, table in tables.items() if table.num_rows)

    def flush(self) -> dict[str, Any]:
        self.sink.flush()
        return self.counters()

    def compact(self) -> int:
        now = time.time()
        return sum(self.sink.compact(dataset, now) or 0 for dataset in self.sink.datasets())

    def prune(self, *, dry_run: bool = False, now: float | None = None) -> PruneReport:
        """Apply the retention now (``dry_run``: only list what would go)."""
        at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        from pipeline.retention import prune

        report = prune(self.lake, self.retention, at, dry_run=dry_run)
        if not dry_run:
            stats = self.retention_stats
            stats["runs"] += 1
            stats["partitions"] += report.partitions
            stats["files"] += report.deleted_files
            stats["last_run_at"] = at.isoformat()
            stats["last_deleted"] = [e.as_row() for e in report.expired]
        return report

    def counters(self) -> dict[str, Any]:
        return {**self.sink.counters(), "retention": dict(self.retention_stats)}

    def _prune_due(self) -> bool:
        every = self.settings.lake.retention_every_s
        if every <= 0 or not self.retention:
            return False
        return self._last_prune is None or time.monotonic() - self._last_prune >= every

    async def run_timer(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.sink.maybe_flush()
                if time.monotonic() - self._last_compact >= self.compact_every_s:
                    self._last_compact = time.monotonic()
                    self.compact()
                if self._prune_due():
                    self._last_prune = time.monotonic()
                    self.prune()
            except LakeError as exc:  # keeps rows buffered; retried next tick
                log.warning("lake sink: %s", exc)


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class LakeSinkActor:
    """``sink:lake`` — async actor; calls run on one event loop, so the buffer needs no lock."""

    def __init__(self, settings: Settings, tick_s: float = 0.5, compact_every_s: float = 300.0) -> None:
        self.impl = LakeSink(settings, tick_s=tick_s, compact_every_s=compact_every_s)
        self.settings = settings
        self._timer: asyncio.Task[None] | None = None

    async def _ensure_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self.impl.run_timer())

    async def ready(self) -> bool:
        await self._ensure_timer()
        return True

    async def add_many(self, tables: dict[str, pa.Table]) -> int:
        await self._ensure_timer()
        return self.impl.add_many(tables)

    async def add(self, dataset: str, table: pa.Table) -> int:
        await self._ensure_timer()
        return self.impl.add(dataset, table)

    async def flush(self) -> dict[str, Any]:
        return self.impl.flush()

    async def compact(self) -> int:
        return self.impl.compact()

    async def counters(self) -> dict[str, Any]:
        return self.impl.counters()

    async def prune(self, dry_run: bool = False) -> list[dict[str, Any]]:
        """Apply the retention now; the expired hour partitions (deleted unless ``dry_run``)."""
        report = self.impl.prune(dry_run=dry_run)
        return [{**e.as_row(), "paths": list(e.files)} for e in report.expired]

    async def personalize(self) -> dict[str, Any]:
        """Fit the engagement model over the lake now and replace it in Redis
        (``actors.personalization``): a lake job like compaction, run in this process, whose
        Polars and DuckDB are loaded already, off its event loop."""
        from actors.personalization import recompute_async

        return await recompute_async(self.settings)

    async def pid(self) -> int:
        import os

        return os.getpid()

    async def shutdown(self) -> dict[str, Any]:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        return self.impl.flush()


def get_sink(settings: Settings, **options: Any) -> Any:
    """The named sink actor, created on first use (``get_if_exists``)."""
    return LakeSinkActor.options(  # type: ignore[attr-defined]
        name=SINK_NAME,
        namespace=settings.ray.namespace,
        get_if_exists=True,
        lifetime=options.pop("lifetime", None),
        **options,
    ).remote(settings)
