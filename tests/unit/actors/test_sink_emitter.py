"""SinkEmitter without Ray: rows wait while the sink is away, in order, within their bounds."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pyarrow as pa
import pytest

from actors.lazy import SinkEmitter
from core.settings import load_settings


class FakeSink:
    """``sink.add.remote(dataset, table)`` like the actor's handle; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[int]]] = []
        self.down = False
        outer = self

        class _Add:
            async def remote(self, dataset: str, table: pa.Table) -> int:
                await asyncio.sleep(0)
                if outer.down:
                    raise ConnectionError("sink restarting")
                outer.got.append((dataset, table.column("n").to_pylist()))
                return table.num_rows

        self.add = _Add()


class Emitter(SinkEmitter):
    def __init__(self, sink: FakeSink | None, **kw: Any) -> None:
        super().__init__(load_settings(), **kw)
        self.fake = sink

    def _lookup(self) -> Any:
        if self.fake is None:
            raise ValueError("no sink")
        return self.fake


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def rows(*values: int) -> pa.Table:
    return pa.table({"n": list(values)})


async def test_rows_wait_while_the_sink_is_away_and_go_in_order() -> None:
    emit = Emitter(None)
    await emit("deliveries", rows(1, 2))
    await emit("deliveries", rows(3))
    assert emit.waiting_rows == 3 and emit.stats()["last_error"] == "no lake sink running"
    sink = FakeSink()
    emit.fake = sink
    assert await emit.drain(5.0)
    await emit("deliveries", rows(4))  # nothing waits: straight to the sink
    assert sink.got == [("deliveries", [1, 2]), ("deliveries", [3]), ("deliveries", [4])]
    assert emit.stats()["dropped_rows"] == 0 and emit.retried_rows == 3


async def test_a_failing_sink_keeps_the_rows_and_new_ones_queue_behind_them() -> None:
    sink = FakeSink()
    emit = Emitter(sink)
    sink.down = True
    await emit("deliveries", rows(1))
    sink.down = False
    await emit("deliveries", rows(2))  # behind 1, not before it
    assert await emit.drain(5.0)
    assert [v for _, v in sink.got] == [[1], [2]]


async def test_rows_past_the_bounds_are_dropped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    emit = Emitter(None, max_rows=5, max_age_s=60.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="actors.lazy"):
        await emit("deliveries", rows(1, 2, 3))
        await emit("deliveries", rows(4, 5, 6))  # 6 > 5: the oldest table goes
        for i in range(20):
            await emit("engagement", rows(100 + i))  # each pushes one older table out
    stats = emit.stats()
    assert stats["dropped"]["deliveries:overflow"] == 6
    assert stats["dropped"]["engagement:overflow"] == 15
    assert stats["waiting_rows"] == 5
    assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1  # rate-limited
    clock.t += 61.0  # the waiting rows expire
    await asyncio.sleep(0.3)  # the retry task wakes, finds them too old
    assert await emit.drain(1.0)
    assert emit.stats()["dropped"]["engagement:expired"] == 5


async def test_no_buffer_means_counted_at_once() -> None:
    emit = Emitter(None, max_rows=0)
    await emit("deliveries", rows(1, 2))
    assert emit.stats()["dropped"] == {"deliveries:overflow": 2} and emit.waiting_rows == 0


async def test_the_oldest_rows_go_first_also_while_a_retry_waits() -> None:
    emit = Emitter(None, max_rows=5)
    await emit("deliveries", rows(1, 2, 3))
    await asyncio.sleep(0.05)  # the retry task failed once and sleeps its backoff
    await emit("deliveries", rows(4, 5, 6))
    assert emit.stats()["dropped"] == {"deliveries:overflow": 3} and emit.waiting_rows == 3
    sink = FakeSink()
    emit.fake = sink
    assert await emit.drain(5.0)
    assert sink.got == [("deliveries", [4, 5, 6])]


async def test_rows_still_waiting_at_an_actors_stop_are_counted_as_dropped() -> None:
    """An actor that stops while the sink is away loses its waiting rows, counted (never silent)."""
    from actors.lazy import drain_emitter, emitter_stats

    sink = FakeSink()
    sink.down = True
    emit = Emitter(sink, name="uq:000")
    await emit("deliveries", pa.table({"n": [1, 2, 3]}))
    assert emit.waiting_rows == 3
    await drain_emitter(emit, timeout_s=0.2)
    stats = emitter_stats(emit)["lake_rows"]
    assert stats["waiting_rows"] == 0 and stats["dropped"] == {"deliveries:stopped": 3}
    assert emitter_stats(lambda *a: None) == {}
