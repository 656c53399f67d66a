"""Upgrades replace the detached bot shards: a start with other code drains and replaces
shards of another code version (or of a release before versions), and keeps its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import redis

from core.settings import Settings
from serve.dispatch import UpdateShards, shard_name
from serve.handlers import RedisRecorder


def settings_for(redis_url: str) -> Settings:
    return Settings(redis={"url": redis_url}, ray={"namespace": "arbflow-test"})


def update(uid: int, chat: int) -> dict[str, Any]:
    return {
        "update_id": uid,
        "message": {"message_id": uid, "date": 0, "chat": {"id": chat, "type": "private"}},
    }


def actor_id(handle: Any) -> str:
    return str(handle._actor_id.hex())


@pytest.fixture
def prefix(ray_session: None) -> Iterator[str]:
    name = f"upg:{uuid.uuid4().hex[:6]}"
    yield name
    for i in range(2):
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(shard_name(i, name), namespace="arbflow-test"), no_restart=True)


def start(shards: UpdateShards, how: str) -> UpdateShards:
    """``start`` (a driver) or ``astart`` (what a Serve replica awaits)."""
    return shards.start() if how == "start" else asyncio.run(shards.astart())


@pytest.mark.parametrize("how", ["start", "astart"])
def test_a_start_with_new_code_drains_and_replaces_the_old_shards(
    prefix: str, isolated_redis_url: str, how: str
) -> None:
    settings = settings_for(isolated_redis_url)
    key = f"rec:{prefix}"
    handler = RedisRecorder(key, jitter_s=0.05)
    old = UpdateShards(settings, 2, handler=handler, prefix=prefix, version="1.0+aaaa").start()
    assert old.replaced == []
    states = ray.get([a.ready.remote(60.0) for a in old.actors], timeout=90)
    assert [s["ready"] for s in states] == [True, True]
    assert ray.get([a.version.remote() for a in old.actors]) == ["1.0+aaaa"] * 2
    refs = [old.submit(update(uid, chat=uid % 5)) for uid in range(1, 41)]
    ray.get(refs)  # held by the old shards, not all handled yet

    new = start(UpdateShards(settings, 2, handler=handler, prefix=prefix, version="1.1+bbbb"), how)
    assert new.replaced == [shard_name(0, prefix), shard_name(1, prefix)]
    assert ray.get([a.version.remote() for a in new.actors]) == ["1.1+bbbb"] * 2
    assert {actor_id(a) for a in new.actors}.isdisjoint({actor_id(a) for a in old.actors})
    recorded = [json.loads(r) for r in redis.Redis.from_url(isolated_redis_url).lrange(key, 0, -1)]
    assert sorted(r["update_id"] for r in recorded) == list(range(1, 41))  # drained before the kill
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(old.actors[0].version.remote(), timeout=30)

    again = start(UpdateShards(settings, 2, handler=handler, prefix=prefix, version="1.1+bbbb"), how)
    assert again.replaced == []
    assert [actor_id(a) for a in again.actors] == [actor_id(a) for a in new.actors]
    ray.get(again.submit(update(99, chat=1)))
    assert again.drain(10)[1]["handled"] >= 1


@ray.remote(num_cpus=0)
class ShardOfAnOldRelease:
    """What a shard looked like before versions: no ``version`` method."""

    def shutdown(self, timeout_s: float = 10.0) -> dict[str, Any]:
        return {}


def test_a_shard_that_cannot_say_its_version_is_replaced(prefix: str, isolated_redis_url: str) -> None:
    old = ShardOfAnOldRelease.options(  # type: ignore[attr-defined]
        name=shard_name(0, prefix), namespace="arbflow-test", lifetime="detached"
    ).remote()
    ray.get(old.shutdown.remote())
    shards = UpdateShards(
        settings_for(isolated_redis_url), 1, handler=RedisRecorder(f"rec:{prefix}"), prefix=prefix
    ).start()
    assert shards.replaced == [shard_name(0, prefix)]
    assert ray.get(shards.actors[0].version.remote()) == shards.version != ""
