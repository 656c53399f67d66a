"""UpdateShard (the bot shard's behaviour, without Ray): per-chat order, chats concurrent, errors, its cap."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest

from core.settings import Settings, load_settings
from serve.dispatch import ShardFull, UpdateHandler, UpdateShard


def upd(update_id: int, chat: int) -> dict[str, Any]:
    return {"update_id": update_id, "message": {"message_id": update_id, "chat": {"id": chat}}}


class Recorder:
    """Handler factory: records ``(chat, update_id)`` after a short random sleep; fails on ``fail``."""

    def __init__(self, delay_s: float = 0.0, fail: frozenset[int] = frozenset()) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.seen: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0

    def __call__(self, settings: Settings, shard: int) -> UpdateHandler:
        async def handle(update: dict[str, Any]) -> None:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                if self.delay_s:
                    await asyncio.sleep(random.uniform(0, self.delay_s))
                uid = int(update["update_id"])
                with self.lock:
                    self.seen.append((int(update["message"]["chat"]["id"]), uid))
                if uid in self.fail:
                    raise RuntimeError(f"injected failure on {uid}")
            finally:
                self.running -= 1

        return handle


def test_one_chat_in_order_different_chats_concurrently() -> None:
    rec = Recorder(delay_s=0.02)
    shard = UpdateShard(load_settings(), 0, handler=rec)
    sent = [upd(uid, chat=uid % 5) for uid in range(1, 101)]
    started = time.monotonic()
    for i in range(0, 100, 7):  # batches of 7, chats interleaved
        shard.handle_many(sent[i : i + 7])
    stats = shard.drain(10.0)
    elapsed = time.monotonic() - started
    assert stats["received"] == stats["handled"] == 100 and stats["errors"] == 0
    for chat in range(5):
        got = [uid for c, uid in rec.seen if c == chat]
        assert got == [uid for uid in range(1, 101) if uid % 5 == chat], chat
    assert rec.most_running == 5  # one at a time per chat, all five chats at once
    assert elapsed < 1.5, elapsed  # 20 per chat x ≤ 20 ms; one chain of 100 would take ~1 s
    shard.shutdown(2.0)


def test_a_failing_update_is_counted_and_its_chat_carries_on() -> None:
    rec = Recorder(fail=frozenset({3}))
    shard = UpdateShard(load_settings(), 1, handler=rec)
    assert shard.handle(upd(1, 7)) == 1
    assert shard.handle_many([upd(2, 7), upd(3, 7), upd(4, 7)]) == 4
    stats = shard.drain(5.0)
    assert stats["handled"] == 3 and stats["errors"] == 1 and stats["inflight"] == 0
    assert [uid for _, uid in rec.seen] == [1, 2, 3, 4]
    shard.handle(upd(5, 7))  # the chat's worker ended with its queue; a new one starts
    assert shard.drain(5.0)["handled"] == 4 and rec.seen[-1] == (7, 5)
    shard.shutdown(2.0)


class Gate:
    """Handler factory whose handler waits until ``open`` is set (the bot busy elsewhere)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.seen: list[int] = []

    def __call__(self, settings: Settings, shard: int) -> UpdateHandler:
        async def handle(update: dict[str, Any]) -> None:
            await asyncio.to_thread(self.open.wait)
            self.seen.append(int(update["update_id"]))

        return handle


def test_a_full_shard_takes_what_fits_and_refuses_the_rest() -> None:
    gate = Gate()
    settings = load_settings(telegram={"shard_backlog": 3})
    shard = UpdateShard(settings, 0, handler=gate)
    assert shard.accept_many([upd(1, 7), upd(2, 8)]) == {"accepted": 2, "backlog": 2, "cap": 3}
    assert shard.accept_many([upd(3, 7), upd(4, 7), upd(5, 9)]) == {"accepted": 1, "backlog": 3, "cap": 3}
    with pytest.raises(ShardFull):
        shard.handle(upd(4, 7))
    stats = shard.stats()
    assert stats["received"] == 3 and stats["refused"] == 3 and stats["backlog"] == 3
    gate.open.set()
    assert shard.drain(5.0)["backlog"] == 0
    assert shard.accept_many([upd(4, 7), upd(5, 9)])["accepted"] == 2  # room again: the redelivery
    assert shard.drain(5.0)["handled"] == 5
    assert sorted(gate.seen) == [1, 2, 3, 4, 5]
    shard.shutdown(2.0)


def test_handler_paths_of_earlier_releases_still_resolve() -> None:
    from serve.dispatch import resolve_factory
    from serve.handlers import noop_handler_factory

    assert resolve_factory("serve.dispatch:noop_handler_factory") is noop_handler_factory
    assert resolve_factory("serve.handlers:noop_handler_factory") is noop_handler_factory
