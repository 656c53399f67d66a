"""Delivery and skip rows of the push side's actors while the lake sink is away.

An actor holds a :class:`actors.lazy.SinkEmitter` as the distributor and the queue shards
do; the real ``sink:lake`` actor is missing at first, then killed: the rows wait in the
actor and land in the lake once the sink is back. Past the bound they are dropped and
counted: in the emitter's stats and in the Prometheus counter Ray's metrics agent serves.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
import ray

from actors.lazy import DROPPED_METRIC, SinkEmitter
from actors.sink import SINK_NAME, get_sink
from core.errors import LakeError
from core.settings import Settings
from pipeline.deliveries import DELIVERIES, DELIVERIES_DATASET
from pipeline.lake import Lake
from pipeline.query import scan


def skip_rows(opportunity: str, n: int) -> pa.Table:
    now = pa.array([int(datetime.now(UTC).timestamp() * 1000)] * n, pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )
    given = {
        "queued_at": now,
        "opportunity_id": pa.array([opportunity] * n),
        "chat_id": pa.array(range(1, n + 1), pa.int64()),
        "audience": pa.array(["user"] * n),
        "status": pa.array(["skipped"] * n),
        "reason": pa.array(["quota"] * n),
    }
    return pa.Table.from_arrays(
        [given[f.name].cast(f.type) if f.name in given else pa.nulls(n, f.type) for f in DELIVERIES],
        schema=DELIVERIES,
    )


@ray.remote(num_cpus=0)
class Emitting:
    """Stands in for the distributor / a queue shard: an async actor writing rows through a SinkEmitter."""

    def __init__(self, settings: Settings) -> None:
        self.emit = SinkEmitter(settings, name="test", log_every_s=3600)

    async def rows(self, opportunity: str, n: int) -> dict[str, Any]:
        await self.emit(DELIVERIES_DATASET, skip_rows(opportunity, n))
        return self.emit.stats()

    async def stats(self) -> dict[str, Any]:
        return self.emit.stats()


def wait_for(cond: Callable[[], Any], within: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not met within {within:.0f} s")


def landed(settings: Settings, sink: Any) -> dict[str, int]:
    ray.get(sink.flush.remote(), timeout=30)
    try:
        frame = scan(Lake.from_settings(settings.lake), DELIVERIES_DATASET).collect()
    except LakeError:  # no file yet: the rows are still on their way
        return {}
    if not frame.height:
        return {}
    counts = frame.group_by("opportunity_id").agg(pl.len().alias("n"))
    return {str(o): int(n) for o, n in counts.iter_rows()}


def scrape_dropped(dataset: str, reason: str) -> float:
    """The counter's value on Ray's Prometheus endpoints (summed over the reporting workers)."""
    total = 0.0
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if not (node.get("Alive") and port):
            continue
        try:
            with urllib.request.urlopen(
                f"http://{node['NodeManagerAddress']}:{port}/metrics", timeout=5
            ) as r:
                body = r.read().decode()
        except OSError:
            continue
        for line in body.splitlines():
            m = re.match(rf"^ray_{DROPPED_METRIC}(?:_total)?\{{(.*)\}} (\S+)$", line)
            if m and f'dataset="{dataset}"' in m.group(1) and f'reason="{reason}"' in m.group(1):
                total += float(m.group(2))
    return total


def _exists(ns: str) -> bool:
    try:
        ray.get_actor(SINK_NAME, namespace=ns)
    except ValueError:
        return False
    return True


def test_rows_wait_for_the_sink_and_land_when_it_is_back(ray_session: None, base_settings: Settings) -> None:
    ns = f"lake-rows-{uuid.uuid4().hex[:8]}"
    settings = base_settings.model_copy(
        update={"ray": base_settings.ray.model_copy(update={"namespace": ns})}
    )
    actor = Emitting.options(namespace=ns).remote(settings)  # type: ignore[attr-defined]
    sink = None
    try:
        # no sink yet (the pipeline not started, say): the rows wait in the actor
        stats = ray.get(actor.rows.remote("o-before", 30), timeout=60)
        assert stats["waiting_rows"] == 30 and stats["dropped_rows"] == 0
        sink = get_sink(settings)
        wait_for(lambda: ray.get(actor.stats.remote())["waiting_rows"] == 0, what="the rows handed on")
        assert wait_for(lambda: landed(settings, sink).get("o-before") == 30, what="the rows in the lake")

        # the sink killed for good: rows wait again (the actor had a handle to the dead one),
        # and land in the sink started anew
        ray.kill(sink, no_restart=True)
        wait_for(lambda: not _exists(ns), 30, "the dead sink's name released")
        stats = ray.get(actor.rows.remote("o-during", 20), timeout=60)
        assert stats["waiting_rows"] == 20 and stats["dropped_rows"] == 0
        sink = get_sink(settings)
        wait_for(lambda: landed(settings, sink).get("o-during") == 20, what="the rows in the new sink")
        assert ray.get(actor.stats.remote())["dropped_rows"] == 0
    finally:
        ray.kill(actor)
        if sink is not None:
            ray.kill(sink, no_restart=True)


def test_rows_past_the_bound_are_dropped_and_counted(ray_session: None, base_settings: Settings) -> None:
    ns = f"lake-drop-{uuid.uuid4().hex[:8]}"
    settings = base_settings.model_copy(
        update={
            "ray": base_settings.ray.model_copy(update={"namespace": ns}),
            "lake": base_settings.lake.model_copy(update={"sink_buffer_rows": 50}),
        }
    )
    actor = Emitting.options(namespace=ns).remote(settings)  # type: ignore[attr-defined]
    sink = None
    try:
        ray.get(actor.rows.remote("o-old", 40), timeout=60)
        stats = ray.get(actor.rows.remote("o-new", 30), timeout=60)  # 70 > 50: the oldest 40 go
        assert stats["waiting_rows"] == 30
        assert stats["dropped"] == {f"{DELIVERIES_DATASET}:overflow": 40}
        wait_for(
            lambda: scrape_dropped(DELIVERIES_DATASET, "overflow") >= 40,
            60,
            "the counter on the metrics endpoint",
        )
        sink = get_sink(settings)
        wait_for(lambda: landed(settings, sink).get("o-new") == 30, what="the kept rows in the lake")
        assert "o-old" not in landed(settings, sink)
    finally:
        ray.kill(actor)
        if sink is not None:
            ray.kill(sink, no_restart=True)
