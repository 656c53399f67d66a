"""UpdateForwarder: batched dedup + enqueue, order, duplicates, failures (fake Redis and shards)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from serve.dispatch import shard_index
from serve.forwarder import DUPLICATE, ENQUEUED, ForwardFailed, UpdateForwarder


class FakeRedis:
    """The dedup script (SET NX per key) and DEL, with switchable outages."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.down = False
        self.calls = 0

    def register_script(self, _lua: str) -> Any:
        async def script(keys: Sequence[str], args: Sequence[Any]) -> list[int]:
            self.calls += 1
            if self.down:
                raise ConnectionError("redis down")
            out = []
            for key in keys:
                out.append(0 if key in self.keys else 1)
                self.keys.add(key)
            return out

        return script

    async def delete(self, *keys: str) -> int:
        if self.down:
            raise ConnectionError("redis down")
        self.keys.difference_update(keys)
        return len(keys)


class FakeShards:
    """``submit_many`` like UpdateShards: one awaitable per shard, recording what each got."""

    def __init__(self, n: int = 2) -> None:
        self.n = n
        self.got: dict[int, list[int]] = {i: [] for i in range(n)}
        self.broken: set[int] = set()
        self.calls = 0

    def submit_many(self, updates: Sequence[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]:
        self.calls += 1
        groups: dict[int, list[int]] = {}
        for pos, update in enumerate(updates):
            groups.setdefault(shard_index(update, self.n), []).append(pos)
        out = {}
        for shard, positions in groups.items():
            out[shard] = (self._call(shard, [updates[i] for i in positions]), positions)
        return out

    async def _call(self, shard: int, updates: list[dict[str, Any]]) -> int:
        await asyncio.sleep(0)
        if shard in self.broken:
            raise RuntimeError(f"shard {shard} is gone")
        self.got[shard].extend(int(u["update_id"]) for u in updates)
        return len(self.got[shard])


def upd(update_id: int, chat: int) -> dict[str, Any]:
    return {"update_id": update_id, "message": {"message_id": update_id, "chat": {"id": chat}}}


def forwarder(redis: FakeRedis, shards: FakeShards, **kw: Any) -> UpdateForwarder:
    kw.setdefault("linger_s", 0.001)
    kw.setdefault("retry_s", (0.001, 0.002))
    return UpdateForwarder(shards, redis, lambda uid: f"tg:update:{uid}", ttl_s=60, **kw)  # type: ignore[arg-type]


async def test_offered_updates_are_batched_deduplicated_and_kept_in_order() -> None:
    redis, shards = FakeRedis(), FakeShards(2)
    fw = forwarder(redis, shards)
    for uid in range(1, 41):
        assert fw.offer(upd(uid, chat=uid % 3))
    assert fw.offer(upd(5, chat=5 % 3))  # a redelivery inside the same batch
    assert await fw.drain(2.0)
    for shard, ids in shards.got.items():
        assert ids == sorted(ids), shard  # arrival order per shard, hence per chat
    assert sorted(shards.got[0] + shards.got[1]) == list(range(1, 41))
    assert fw.duplicates == 1 and fw.enqueued == 40 and fw.healthy
    assert redis.calls < 10 and shards.calls < 10  # batches, not one call per update
    fw.close()


async def test_submit_reports_enqueued_then_duplicate() -> None:
    fw = forwarder(FakeRedis(), FakeShards())
    assert await fw.submit(upd(7, 1)) == ENQUEUED
    assert await fw.submit(upd(7, 1)) == DUPLICATE
    fw.close()


async def test_redis_down_fails_waiters_and_retries_offered_updates() -> None:
    redis, shards = FakeRedis(), FakeShards(1)
    fw = forwarder(redis, shards)
    redis.down = True
    with pytest.raises(ForwardFailed) as info:
        await fw.submit(upd(1, 1))
    assert info.value.store and not fw.healthy
    assert fw.offer(upd(2, 1))  # e.g. acknowledged just before the outage was seen
    await asyncio.sleep(0.02)
    assert shards.got[0] == [] and fw.pending == 1
    redis.down = False
    assert await fw.drain(2.0)
    assert shards.got[0] == [2] and fw.healthy
    fw.close()


async def test_a_broken_shard_only_loses_nothing_it_did_not_take() -> None:
    redis, shards = FakeRedis(), FakeShards(2)
    fw = forwarder(redis, shards)
    shards.broken = {1}
    waiting = fw.submit(upd(11, 1))  # shard 1
    ok = fw.submit(upd(12, 2))  # shard 0
    with pytest.raises(ForwardFailed) as info:
        await waiting
    assert not info.value.store
    assert await ok == ENQUEUED
    assert "tg:update:11" not in redis.keys  # its mark was removed: Telegram's redelivery gets through
    fw.offer(upd(13, 1))
    await asyncio.sleep(0.02)
    shards.broken = set()
    assert await fw.drain(2.0)
    assert shards.got == {0: [12], 1: [13]}  # 13 retried once the shard is back, not lost, not twice
    assert await fw.submit(upd(11, 1)) == ENQUEUED  # the redelivery of 11
    fw.close()


async def test_a_full_queue_is_refused() -> None:
    fw = forwarder(FakeRedis(), FakeShards(), max_pending=2, linger_s=0.05)
    assert fw.offer(upd(1, 1)) and fw.offer(upd(2, 1))
    assert not fw.offer(upd(3, 1))
    with pytest.raises(ForwardFailed):
        await fw.submit(upd(4, 1))
    assert await fw.drain(2.0)
    fw.close()


class TimedShards(FakeShards):
    """FakeShards that also records when each call was made and how many updates it carried."""

    def __init__(self, n: int = 1) -> None:
        super().__init__(n)
        self.log: list[tuple[float, int]] = []

    def submit_many(self, updates: Sequence[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]:
        self.log.append((asyncio.get_running_loop().time(), len(updates)))
        return super().submit_many(updates)


async def test_a_quiet_forwarder_sends_at_once() -> None:
    shards = TimedShards()
    fw = forwarder(FakeRedis(), shards, linger_s=5.0)
    started = asyncio.get_running_loop().time()
    fw.offer(upd(1, 1))
    assert await fw.drain(1.0)  # not 5 s: nothing was sent in the last linger_s
    assert shards.log[0][0] - started < 0.5 and shards.got[0] == [1]
    fw.close()


async def test_a_busy_forwarder_gathers_until_linger_after_its_last_batch() -> None:
    shards = TimedShards()
    fw = forwarder(FakeRedis(), shards, linger_s=0.1, batch_target=64)
    fw.offer(upd(1, 1))
    await asyncio.sleep(0.01)  # the first batch went at once
    for uid in range(2, 12):  # ten more over ~20 ms: one batch, not ten
        fw.offer(upd(uid, 1))
        await asyncio.sleep(0.002)
    assert await fw.drain(2.0)
    assert [n for _, n in shards.log] == [1, 10]
    gap = shards.log[1][0] - shards.log[0][0]
    assert gap >= 0.09, gap  # linger_s after the previous batch
    assert shards.got[0] == list(range(1, 12))
    fw.close()


async def test_the_batch_target_or_a_waiting_sender_ends_the_gathering() -> None:
    shards = TimedShards()
    fw = forwarder(FakeRedis(), shards, linger_s=5.0, batch_target=8)
    loop = asyncio.get_running_loop()
    fw.offer(upd(1, 1))
    await asyncio.sleep(0.01)
    t0 = loop.time()
    for uid in range(2, 10):  # eight pending: the batch target
        fw.offer(upd(uid, 1))
    await asyncio.sleep(0.05)
    assert [n for _, n in shards.log] == [1, 8] and shards.log[1][0] - t0 < 1.0
    fw.offer(upd(10, 1))
    t1 = loop.time()
    assert await fw.submit(upd(11, 1)) == ENQUEUED  # a sender waits: no lingering for it
    assert loop.time() - t1 < 1.0 and [n for _, n in shards.log][2:] == [2]
    fw.close()


class CappedShards(FakeShards):
    """Shards that take at most ``cap`` updates until ``release()`` (answers like ``accept_many``)."""

    def __init__(self, n: int = 1, cap: int = 2) -> None:
        super().__init__(n)
        self.cap = cap
        self.backlog = dict.fromkeys(range(n), 0)

    def release(self) -> None:
        self.backlog = dict.fromkeys(self.backlog, 0)

    async def _call(self, shard: int, updates: list[dict[str, Any]]) -> Any:  # type: ignore[override]
        await asyncio.sleep(0)
        room = max(0, self.cap - self.backlog[shard])
        taken = updates[:room]
        self.backlog[shard] += len(taken)
        self.got[shard].extend(int(u["update_id"]) for u in taken)
        return {"accepted": len(taken), "backlog": self.backlog[shard], "cap": self.cap}


async def test_a_full_shard_refuses_waiters_with_their_mark_removed_and_keeps_acked_updates() -> None:
    redis, shards = FakeRedis(), CappedShards(1, cap=2)
    fw = forwarder(redis, shards)
    assert await fw.submit(upd(1, 1)) == ENQUEUED
    assert fw.healthy
    assert fw.offer(upd(2, 1))  # acknowledged early: the shard takes it and is full now
    assert await fw.drain(1.0)
    assert not fw.healthy and fw.full == {0}  # the ingress stops acking before a shard holds an update
    with pytest.raises(ForwardFailed) as info:
        await fw.submit(upd(3, 1))
    assert info.value.busy and not info.value.store
    assert "tg:update:3" not in redis.keys  # Telegram's redelivery of 3 is not taken for a repeat
    fw.offer(upd(4, 1))  # acked before the pressure was known: kept, retried, never dropped
    for _ in range(100):  # until the full shard has refused it once more
        if fw.refused >= 2:
            break
        await asyncio.sleep(0.01)
    # refused, kept (queued or in a retry's flight), its mark kept: not lost, not re-taken
    assert fw.refused >= 2 and "tg:update:4" in redis.keys and 4 not in shards.got[0]
    shards.release()
    assert await fw.drain(2.0)
    assert await fw.submit(upd(3, 1)) == ENQUEUED  # the redelivery goes through
    assert shards.got[0] == [1, 2, 4, 3]
    assert not fw.healthy  # full again (2 of 2)
    shards.release()
    assert await fw.submit(upd(5, 1)) == ENQUEUED
    assert fw.healthy and not fw.full  # its answer showed room: early acks again
    fw.close()


async def test_with_a_pool_of_bots_the_same_update_id_of_two_bots_is_two_updates() -> None:
    from core.bots import BOT_FIELD

    redis = FakeRedis()
    fw = forwarder(redis, FakeShards())
    assert await fw.submit({**upd(7, 1), BOT_FIELD: 11}) == ENQUEUED
    assert await fw.submit({**upd(7, 1), BOT_FIELD: 22}) == ENQUEUED  # each bot numbers its own
    assert await fw.submit({**upd(7, 1), BOT_FIELD: 22}) == DUPLICATE
    assert await fw.submit(upd(7, 1)) == ENQUEUED  # untagged (one bot): the key as before
    assert redis.keys == {"tg:update:7:11", "tg:update:7:22", "tg:update:7"}
    fw.close()
