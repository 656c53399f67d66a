"""HandoverShards (serve/first_answers.py): the command's own shard answers until the shard
actors are ready, then they take over once it is idle, so each chat keeps its order."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from core.settings import Settings, load_settings
from serve.dispatch import UpdateHandler, UpdateShard
from serve.first_answers import HandoverShards, preload_bot


def upd(update_id: int, chat: int) -> dict[str, Any]:
    return {"update_id": update_id, "message": {"message_id": update_id, "chat": {"id": chat}}}


class Gated:
    """Handler factory: records update ids; waits while ``hold`` is clear."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.seen: list[int] = []

    def __call__(self, settings: Settings, shard: int) -> UpdateHandler:
        async def handle(update: dict[str, Any]) -> None:
            await asyncio.to_thread(self.hold.wait)
            self.seen.append(int(update["update_id"]))

        return handle


class Actors:
    """The shard actors' side of the hand-over: ``ready`` says ``ok``; takes what it is given."""

    def __init__(self) -> None:
        self.ok = False
        self.got: list[int] = []

    def ready(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        return [{"ready": self.ok, "error": None, "shard": 0}]

    def submit_many(self, updates: Sequence[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]:
        self.got += [int(u["update_id"]) for u in updates]
        done = asyncio.get_running_loop().create_future()
        done.set_result({"accepted": len(updates), "backlog": 0, "cap": 100})
        return {0: (done, list(range(len(updates))))}


async def submit(router: HandoverShards, updates: list[dict[str, Any]]) -> list[Any]:
    calls = router.submit_many(updates)
    return list(await asyncio.gather(*(ref for ref, _ in calls.values())))


def wait(cond: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_local_shard_answers_until_the_actors_are_ready_and_it_is_idle() -> None:
    handler = Gated()
    router = HandoverShards(UpdateShard(load_settings(), 0, handler=handler))
    answers = asyncio.run(submit(router, [upd(1, 7), upd(2, 8)]))
    assert answers == [{"accepted": 2, "backlog": 2, "cap": answers[0]["cap"]}]
    wait(lambda: handler.seen == [1, 2])
    assert router.ready()["ready"] and router.stats()["handled"] == 2

    actors = Actors()
    router.attach(actors)  # type: ignore[arg-type]
    handler.hold.clear()  # the local shard is busy with update 3 when the actors get ready
    asyncio.run(submit(router, [upd(3, 7)]))
    actors.ok = True
    time.sleep(0.5)
    assert not router.switched  # not while update 3 is being answered here
    asyncio.run(submit(router, [upd(4, 7)]))  # so chat 7's next one queues behind it, here
    assert actors.got == []
    handler.hold.set()
    wait(lambda: router.switched and router.local is None)  # switched, the local shard closed
    assert handler.seen == [1, 2, 3, 4]
    asyncio.run(submit(router, [upd(5, 7), upd(6, 9)]))
    assert actors.got == [5, 6] and handler.seen == [1, 2, 3, 4]  # the actors' from now on
    assert router.stats()["handled"] == 4  # its counts kept
    assert router.close()["handled"] == 4


def test_close_before_the_actors_take_over_drains_the_local_shard() -> None:
    handler = Gated()
    router = HandoverShards(UpdateShard(load_settings(), 0, handler=handler))
    router.attach(Actors())  # type: ignore[arg-type]  # never ready
    asyncio.run(submit(router, [upd(1, 5), upd(2, 5), upd(3, 6)]))
    stats = router.close(5.0)
    assert stats["handled"] == 3 and sorted(handler.seen) == [1, 2, 3] and not router.switched
    assert [u for u in handler.seen if u != 3] == [1, 2]  # chat 5 in order


def test_preload_imports_on_a_thread() -> None:
    name = "json.tool"  # light, and not imported by the test run before
    sys.modules.pop(name, None)
    preload_bot([name]).join(10.0)
    assert name in sys.modules
