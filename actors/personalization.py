"""The engagement model's schedule: a Ray task fits it over the lake every ``interval_s``
and writes it to Redis; the directory then loads it (docs/personalization.md).

- :func:`recompute` does one run in the calling process: read the lake
  (``pipeline.personalization``, DuckDB + Polars, every user at once), encode one JSON record
  per user, and replace the model in Redis (``state.personalization``); returns its figures.
- :data:`personalize` is that as a Ray task (a worker process of its own, reserving no CPU:
  the fit's memory and CPU stay out of the distributor's event loop, and a host whose CPUs
  are all reserved by actors still runs it).
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

import ray

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


@ray.remote(num_cpus=0, max_retries=0)
def personalize(settings: Settings) -> dict[str, Any]:
    """The scheduled Ray task: one :func:`recompute`."""
    return recompute(settings)


async def run_task(settings: Settings) -> dict[str, Any]:
    """:data:`personalize` on the cluster, awaited."""
    return dict(await personalize.remote(settings))


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


__all__ = ["Schedule", "personalize", "recompute", "recompute_async", "run_task"]
