"""LazyImpl: built once however many calls wait; the heap settled once built, before launch."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from actors.lazy import LazyImpl, settle_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the session collects as usual


class Impl:
    def __init__(self, n: int) -> None:
        self.n = n


class Built(LazyImpl[Impl]):
    def __init__(self) -> None:
        self.builds = 0
        self.frozen_while_building = -1
        self.frozen_at_launch = -1

    async def build(self) -> Impl:
        self.builds += 1
        self.frozen_while_building = gc.get_freeze_count()
        await asyncio.sleep(0.01)
        return Impl(self.builds)

    async def launch(self, impl: Impl) -> None:
        self.frozen_at_launch = gc.get_freeze_count()


@pytest.mark.usefixtures("unfrozen")
def test_concurrent_calls_build_once_and_the_built_heap_is_frozen() -> None:
    actor = Built()

    async def main() -> list[Impl]:
        return list(await asyncio.gather(*(actor.impl_() for _ in range(5))))

    impls = asyncio.run(main())
    assert actor.builds == 1 and all(i is impls[0] for i in impls)
    assert actor.frozen_while_building == 0
    assert actor.frozen_at_launch > 0  # settled before its loops start, not under them
    # everything alive once built (the implementation among it) is out of the collector's reach
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(impls[0])
    assert not any(o is impls[0] for g in range(3) for o in gc.get_objects(generation=g))


class Node:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.usefixtures("unfrozen")
def test_settle_heap_collects_garbage_before_freezing_what_is_left() -> None:
    cycle = Node()  # garbage only the collector can free: it must not be frozen forever
    gone = weakref.ref(cycle)
    del cycle
    frozen = settle_heap()
    assert gone() is None
    assert frozen == gc.get_freeze_count() > 0


@pytest.mark.usefixtures("unfrozen")
async def test_a_built_actor_keeps_its_heap_settled_and_frees_frozen_cycles_at_each_reset() -> None:
    from actors.lazy import keep_heap_settled

    task = asyncio.create_task(keep_heap_settled(every_s=0.01, reset_every_s=1.0))
    try:
        late = Node()  # lives on, then becomes cyclic garbage after it was frozen
        gone = weakref.ref(late)
        for _ in range(50):
            await asyncio.sleep(0.01)
            if gc.get_freeze_count() > 0:
                break
        assert gc.get_freeze_count() > 0
        del late
        await asyncio.sleep(0.05)  # settled again, with a collection: it is frozen, not seen
        assert gone() is not None
        for _ in range(300):  # the reset: one collection over everything, then frozen again
            await asyncio.sleep(0.01)
            if gone() is None:
                break
        assert gone() is None
        assert gc.get_freeze_count() > 0
    finally:
        task.cancel()


def test_percentiles_are_nearest_rank_and_empty_is_empty() -> None:
    from actors.lazy import percentiles

    assert percentiles([]) == {}
    assert percentiles(float(v) for v in range(1, 101)) == {"p50": 51.0, "p99": 100.0, "max": 100.0}


async def test_the_settling_task_measures_its_loops_lag_and_its_own_time() -> None:
    import actors.lazy as lazy

    lazy.LOOP_LAG_MS.clear()
    lazy.SETTLE_MS.clear()
    task = asyncio.get_running_loop().create_task(lazy.keep_heap_settled(every_s=0.05))
    await asyncio.sleep(0.08)
    time.sleep(0.2)  # noqa: ASYNC251 - holds the loop on purpose: the task wakes ~0.17 s late
    await asyncio.sleep(0.12)
    task.cancel()
    gc.unfreeze()
    stats = lazy.loop_stats()
    assert stats["lag_max_ms"] >= 100, stats
    assert stats["lag_p50_ms"] < stats["lag_max_ms"] and stats["settle_max_ms"] >= 0
