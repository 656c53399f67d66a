"""Issue 14's footprint on one host: counts of actor processes that follow the CPUs, the pair
coordinators grouped into few processes with one writer per pair, and queued pushes of a
bigger shard count never left unread."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import redis

from actors.opportunities import coordinator_name, get_detector, host_name
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
