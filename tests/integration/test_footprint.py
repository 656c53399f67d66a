"""Issue 14's footprint on one host: counts of actor processes that follow the CPUs, the pair
coordinators grouped into few processes with one writer per pair, and queued pushes of a
bigger shard count never left unread."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import redis

from actors.detector import get_detector
from actors.opportunities import coordinator_name, host_name
from actors.sink import get_sink
from core.settings import Settings
from serve.orchestrator import cover_queued_shards
from serve.runtime import EmbeddedRedis

EXCHANGES = ["binance", "bybit", "okx"]
PAIRS = [(a, b) for i, a in enumerate(EXCHANGES) for b in EXCHANGES[i:]]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_queue_shards_grow_to_cover_pushes_queued_by_more_shards(
    tmp_path: Path, private_redis: EmbeddedRedis
) -> None:
    """A data dir written with 8 shards (an older release, a bigger host) keeps its queued
    pushes in ``uq:007:batches``: a host whose default is 1 shard starts 8, so they are sent."""
    settings = Settings(
        data_dir=tmp_path / "var", redis={"url": private_redis.url}, distribution={"shards": 1}
    )
    assert cover_queued_shards(settings) is settings  # nothing queued: the default stands
    client = redis.Redis.from_url(private_redis.url)
    client.hset("uq:000:batches", "b0", b"x")
    client.hset("uq:007:batches", "b1", b"x")
    client.set("uq:009:done:b1", "1")  # not a batch list: does not count
    client.close()
    assert cover_queued_shards(settings).distribution.shards == 8
    more = settings.model_copy(
        update={"distribution": settings.distribution.model_copy(update={"shards": 12})}
    )
    assert cover_queued_shards(more).distribution.shards == 12  # never fewer than asked


@pytest.mark.timeout(180)
def test_pair_coordinators_share_host_processes_one_writer_per_pair(
    ray_session: None, base_settings: Settings, private_redis: EmbeddedRedis
) -> None:
    """Six pair coordinators (three exchanges) live in ``coordinator_hosts`` processes, not
    six; each pair in exactly one host, and the detector reaches each through its host."""
    settings = base_settings.model_copy(
        update={
            "redis": base_settings.redis.model_copy(update={"url": private_redis.url}),
            "ray": base_settings.ray.model_copy(update={"namespace": f"hosts-{uuid.uuid4().hex[:8]}"}),
            "market": base_settings.market.model_copy(update={"source": "sim"}),
            "opportunities": base_settings.opportunities.model_copy(
                update={"technical": False, "coordinator_hosts": 2}
            ),
        }
    )
    ns = settings.ray.namespace
    sink = get_sink(settings)
    ray.get(sink.ready.remote())
    detector = get_detector(settings)
    hosts: list[str] = []
    try:
        ray.get(detector.prestart.remote(EXCHANGES), timeout=120)
        assert sorted(ray.get(detector.coordinator_names.remote())) == sorted(
            coordinator_name(p) for p in PAIRS
        )
        hosts = ray.get(detector.host_names.remote())
        assert set(hosts) <= {host_name(0), host_name(1)} and hosts
        held = {h: ray.get(ray.get_actor(h, namespace=ns).names.remote()) for h in hosts}
        everyone = [name for names in held.values() for name in names]
        assert sorted(everyone) == sorted(coordinator_name(p) for p in PAIRS)  # each pair once
        for pair in PAIRS:  # no one-pair actor of the old layout exists
            with pytest.raises(ValueError):
                ray.get_actor(coordinator_name(pair), namespace=ns)
        stats = ray.get(detector.stats.remote(), timeout=60)
        assert sorted(tuple(c["pair"]) for c in stats["coordinators"]) == sorted(PAIRS)
    finally:
        for name in hosts:
            ray.kill(ray.get_actor(name, namespace=ns))
        ray.kill(detector)
        ray.get(sink.shutdown.remote())
        ray.kill(sink)


def test_market_data_layout_follows_the_host_count() -> None:
    from actors.market_data import coordinator_layout

    def layout(hosts: int, keys: list[str]) -> dict[str, str]:
        s = Settings(market={"coordinator_hosts": hosts})
        return coordinator_layout(s, keys)

    assert layout(1, EXCHANGES) == {ex: "md:host:00" for ex in EXCHANGES}
    assert layout(2, EXCHANGES) == {"binance": "md:host:00", "bybit": "md:host:01", "okx": "md:host:00"}
    for hosts in (0, 3, 8):  # a process per exchange, named as ever
        assert layout(hosts, EXCHANGES) == {ex: f"md:{ex}" for ex in EXCHANGES}
    assert layout(1, ["replay"]) == {"replay": "md:replay"}


@pytest.mark.timeout(240)
def test_market_data_coordinators_share_one_host_and_answer_by_their_names(
    ray_session: None, base_settings: Settings, private_redis: EmbeddedRedis
) -> None:
    """On a small host the three exchanges' coordinators run in ``md:host:00``: every
    exchange's rows reach the lake sink, and the monitor's stats lookup by ``md:<exchange>``
    reaches each one in its host."""
    import asyncio

    from actors.monitor import RayStatsSource
    from serve.orchestrator import MarketPipeline

    settings = base_settings.model_copy(
        update={
            "redis": base_settings.redis.model_copy(update={"url": private_redis.url}),
            "ray": base_settings.ray.model_copy(update={"namespace": f"mdhost-{uuid.uuid4().hex[:8]}"}),
            "market": base_settings.market.model_copy(update={"source": "sim", "coordinator_hosts": 1}),
        }
    )
    ns = settings.ray.namespace
    pipeline = MarketPipeline(settings, "sim", detect=False).start()
    try:
        assert set(pipeline.actors) == {"md:host:00"}
        for ex in EXCHANGES:
            with pytest.raises(ValueError):
                ray.get_actor(f"md:{ex}", namespace=ns)
        deadline = time.monotonic() + 60
        while True:
            stats = pipeline.stats()
            if all(stats.coordinators[ex]["rows"].get("quotes") for ex in EXCHANGES):
                break
            assert time.monotonic() < deadline, stats.coordinators
            time.sleep(0.5)
        source = RayStatsSource(ns, hosted={f"md:{ex}": ("md:host:00", ex) for ex in EXCHANGES})

        async def ask_all() -> list[dict[str, object] | None]:
            return [await source.ask(f"md:{ex}") for ex in EXCHANGES]

        answers = asyncio.run(ask_all())
        assert all(a is not None and a["rows"].get("quotes") for a in answers), answers
    finally:
        stopped = pipeline.stop()
    assert all(stopped.coordinators[ex]["rows"].get("quotes") for ex in EXCHANGES)
