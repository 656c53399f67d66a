"""The engagement model's schedule: a Ray task fits it over the lake every ``interval_s``
and writes it to Redis; the directory then loads it (docs/personalization.md).

- :func:`recompute` does one run in the calling process: read the lake
  (``pipeline.personalization``, DuckDB + Polars, every user at once), encode one JSON record
  per user, and replace the model in Redis (``state.personalization``); returns its figures.
- :func:`run_task` is that as a Ray task of the lake sink (``sink:lake``'s ``personalize``,
  a lake job beside compaction and retention): the fit's memory and CPU stay out of the
  distributor's event loop, and no worker process is started for it. A worker of its own
  (a plain Ray task) cost a second of CPU at each start; on 2 cores that held the queue
  shards' sends for a few hundred ms, and their late sends drew 429s (bench/deliver.py).
- :class:`Schedule` runs in ``dist:engine`` (started with it by ``arbflow run`` and the demo,
  when ``ARBFLOW_PERSONALIZATION__ENABLED``): a first run shortly after start, then one every
  ``interval_s``; after each it has the directory re-read the model. A failed run is logged
  and counted; the model in Redis stays as it was (users keep their last scores).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from actors.lazy import stop_task
from core.settings import Settings

log = logging.getLogger(__name__)

FIRST_RUN_S = 5.0
"""The first run starts this long after the schedule (the lake sink and Redis are up by then)."""


async def recompute_async(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """One run: fit over the lake and replace the model in Redis; returns its figures."""
    from pipeline.lake import Lake
    from pipeline.personalization import compute, records
    from state.personalization import RedisModelStore
    from state.redis import redis_client

    t0 = time.perf_counter()
    now = now or datetime.now(UTC)
    conf = settings.personalization
    model = await asyncio.to_thread(compute, Lake.from_settings(settings.lake), now, conf)
    encoded = records(model)
    pairs = list(
        zip(encoded.get_column("user_id").to_list(), encoded.get_column("record").to_list(), strict=True)
    )
    took_ms = round((time.perf_counter() - t0) * 1000, 1)
    client = redis_client(settings.redis.url)
    try:
        version = await RedisModelStore(client).replace(
            pairs,
            now,
            affinities=model.affinities.height,
            global_rate=round(model.global_rate, 5),
            took_ms=took_ms,
            half_life_days=conf.half_life_days,
        )
    finally:
        await client.aclose()
    return {
        "version": version,
        "users": model.size,
        "affinities": model.affinities.height,
        "global_rate": model.global_rate,
        "computed_at": now.isoformat(),
        "took_ms": took_ms,
    }


def recompute(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """:func:`recompute_async` from synchronous code (a Ray task, the CLI)."""
    return asyncio.run(recompute_async(settings, now))


async def run_task(settings: Settings) -> dict[str, Any]:
    """One :func:`recompute_async` as a task of the lake sink actor, awaited."""
    from actors.sink import get_sink

    return dict(await get_sink(settings).personalize.remote())


class Schedule:
    """Runs ``run`` (a recompute) every ``interval_s`` and then ``after`` (the directory's
    re-read). Plain async class; the figures of the last run are in :meth:`stats`."""

    def __init__(
        self,
        settings: Settings,
        run: Callable[[], Awaitable[dict[str, Any]]],
        after: Callable[[], Awaitable[Any]],
        *,
        first_s: float = FIRST_RUN_S,
    ) -> None:
        self.interval_s = float(settings.personalization.interval_s)
        self.run = run
        self.after = after
        self.first_s = first_s
        self.runs = 0
        self.errors = 0
        self.last: dict[str, Any] = {}
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def once(self) -> dict[str, Any]:
        """One run now, then the re-read; failures are counted and raised."""
        try:
            result = await self.run()
        except Exception as exc:
            self.errors += 1
            self.last_error = repr(exc)[:300]
            raise
        self.runs += 1
        self.last, self.last_error = result, None
        await self.after()
        return result

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_s)
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("personalization: the model run failed (the last model stays): %r", exc)
            await asyncio.sleep(self.interval_s)

    def stats(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "runs": self.runs,
            "errors": self.errors,
            "last": self.last,
            "last_error": self.last_error,
        }


__all__ = ["Schedule", "recompute", "recompute_async", "run_task"]
