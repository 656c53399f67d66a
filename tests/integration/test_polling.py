"""``getUpdates`` polling (serve.polling) against the sandbox and a real Redis: updates reach
the shards in order through the webhook's forwarder, offsets are confirmed only once the
shards hold them, a repeat is dropped, and the heartbeat /readyz reads is kept."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from core.settings import Settings
from serve.polling import UpdatePoller, heartbeat_key
from serve.runtime import EmbeddedRedis
from tests.support.sandbox_thread import SandboxThread


class RecordingShards:
    """Stands in for the bot shard actors (``submit_many``); ``fail`` makes the next call fail."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.fail = 0

    def submit_many(self, updates: list[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]:
        done = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            done.set_exception(RuntimeError("shard down"))
        else:
            self.got.extend(updates)
            done.set_result(len(self.got))
        return {0: (done, list(range(len(updates))))}


def _wait(check: Any, poller: UpdatePoller, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out: {poller.stats()}")


def test_polled_updates_reach_the_shards_once_and_in_order(
    sandbox: SandboxThread, redis_server: EmbeddedRedis
) -> None:
    settings = Settings(
        redis={"url": redis_server.url},
        telegram={"token": sandbox.handle.token, "api_base": sandbox.handle.base_url},
    )

    async def setup() -> None:
        sb = sandbox.handle.sandbox
        bot = sb.bot()
        user = sb.add_user(901, "Ada")
        for text in ("/start", "/help", "/status"):
            sb.emit(bot, {"message": sb.user_message(bot, user, sb.chat(901), text)})
        bot.webhook_url = "http://127.0.0.1:9/left-by-a-webhook-run"  # getUpdates would answer 409

    sandbox.call(setup())
    shards = RecordingShards()
    shards.fail = 1  # the first hand-off fails: the batch is asked for again, not lost
    poller = UpdatePoller(settings, shards, poll_timeout_s=1, dedup_prefix="polltest:")  # type: ignore[arg-type]
    poller.start()
    try:
        _wait(lambda: len(shards.got) >= 3, poller)
        client = redis.Redis.from_url(redis_server.url)
        assert client.exists(heartbeat_key("polltest:"))
        texts = [u["message"]["text"] for u in shards.got]
        assert texts == ["/start", "/help", "/status"]
        ids = [u["update_id"] for u in shards.got]

        async def more() -> None:
            sb = sandbox.handle.sandbox
            sb.emit(sb.bot(), {"message": sb.user_message(sb.bot(), sb.user(901), sb.chat(901), "/stop")})

        sandbox.call(more())
        _wait(lambda: len(shards.got) >= 4, poller)
        assert [u["message"]["text"] for u in shards.got] == ["/start", "/help", "/status", "/stop"]
        assert poller.offset == max(ids) + 2
        assert poller.stats()["errors"] >= 1
    finally:
        stats = poller.stop()
    assert stats["forwarded"] == 4

    # Telegram redelivering one we already took: a poller restarted before it confirmed asks
    # from offset 0 (a redelivery during a running poll raced the poll's own offset)
    async def redeliver() -> None:
        sandbox.handle.sandbox.bot().pending.append(dict(shards.got[0]))

    sandbox.call(redeliver())
    again = UpdatePoller(settings, shards, poll_timeout_s=1, dedup_prefix="polltest:")  # type: ignore[arg-type]
    again.start()
    try:
        _wait(lambda: again.stats()["duplicates"] >= 1, again)
        time.sleep(0.5)
        assert len(shards.got) == 4  # dropped as a repeat, not handed to the shards again
    finally:
        assert again.stop()["forwarded"] == 0
    assert not redis.Redis.from_url(redis_server.url).exists(heartbeat_key("polltest:"))
