"""What the distributor remembers per opportunity id stays bounded (issue 10, problem 4)."""

from __future__ import annotations

from typing import Any

import pytest

import actors.distributor.engine
from actors.distributor import Distributor
from core.settings import Settings


class _Shard:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []

    async def expire(self, ids: list[str], reason: str = "closed") -> int:
        self.calls.append((list(ids), reason))
        return 0


def _distributor(now: list[float], shards: int = 3) -> tuple[Distributor, list[_Shard]]:
    handles = [_Shard() for _ in range(shards)]
    settings = Settings(opportunities={"cooldown_s": 60.0}, distribution={"shards": shards})
    dist = Distributor(settings, client=Any, directory=Any, shards=handles, clock=lambda: now[0])  # type: ignore[arg-type]
    return dist, handles


def test_remembered_ids_are_capped_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors.distributor.engine, "RECORDS_MAX", 100)
    dist, _ = _distributor([1_000.0])
    for i in range(250):
        dist._seen(f"id-{i}")
    assert len(dist.seen) == 100
    assert next(iter(dist.seen)) == "id-150"


async def test_closed_ids_are_forgotten_after_the_reopen_window_and_closes_go_where_items_went() -> None:
    now = [1_000.0]
    dist, shards = _distributor(now)
    dist._seen("a").shards = {1}  # fanned out to shard 1 only
    dist._seen("a").fanned_ms = 1
    dist._seen("b")  # opened, never pushable: queued nowhere
    await dist.on_events(
        [{"event": "closed", "opportunity_id": "a"}, {"event": "closed", "opportunity_id": "b"}]
    )
    assert [s.calls for s in shards] == [[], [(["a"], "closed")], []]
    # an id it never heard of goes everywhere, once, and is then remembered as done
    await dist.on_events([{"event": "closed", "opportunity_id": "c"}])
    assert [len(s.calls) for s in shards] == [1, 2, 1]
    assert dist.seen["c"].fanned_ms is not None
    now[0] += 30
    assert dist.prune() == 0  # a reopen is still possible
    now[0] += 100  # past the lifecycle's cooldown (60 s) + a minute
    assert dist.prune() == 3
    assert not dist.seen
