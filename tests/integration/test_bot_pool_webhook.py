"""A pool of two bots through the deployed webhook: the sandbox hosting both → Ray Serve → the
bot shards → the real aiogram bot, answering through the bot each update came to.

The Serve replica registers each bot's webhook at start (``setWebhook``): the primary at
``/telegram/webhook`` with the stored secret, the other at ``/telegram/webhook/<its id>`` with
the secret derived for it (``core.bots.bot_secret``). A user who starts a bot is answered by
it and bound to it in Redis (``state.bots``); starting another bot of the pool rebinds.
"""

from __future__ import annotations

import itertools
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from core.bots import bot_secret
from core.settings import LakeSettings, MarketSettings, RaySettings, RedisSettings, Settings, TelegramSettings
from serve.runtime import EmbeddedRedis, free_port
from serve.standins.sandbox import sandbox_tokens
from serve.webhook import SECRET_HEADER
from state.keys import BOT_BINDINGS_KEY
from tests.support.sandbox_thread import SandboxThread

A, B = sandbox_tokens(2)
BOT_A, BOT_B = int(A.split(":")[0]), int(B.split(":")[0])
SECRET = "pool-webhook-secret_0123456789"
SHARDS = 2
NAMESPACE = "arbflow-test"
UPDATE = {
    "update_id": 1,
    "message": {
        "message_id": 1,
        "date": 1_700_000_000,
        "chat": {"id": 9_001, "type": "private", "first_name": "P"},
        "from": {"id": 9_001, "is_bot": False, "first_name": "P"},
        "text": "hello",
    },
}


@dataclass
class Pool:
    sandbox: SandboxThread
    serve_url: str
    http: httpx.Client
    redis: redis.Redis

    def control(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        url = f"{self.sandbox.handle.base_url}/sandbox/{path}"
        resp = self.http.post(url, json=body) if body is not None else self.http.get(url, params=params)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return dict(resp.json())

    def wait_for(self, what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (got := check()):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.05)
        return got

    def bot_messages(self, user_id: int, token: str) -> list[str]:
        rows = self.control(f"chats/{user_id}/messages", token=token)["messages"]
        return [str(m["text"]) for m in rows]

    def start(self, user_id: int, token: str) -> None:
        """``/start`` sent to the bot of ``token``; returns once that bot answered."""
        before = len(self.bot_messages(user_id, token))
        out = self.control("send", {"user_id": user_id, "text": "/start", "token": token, "wait": True})
        assert out["delivery"]["status"] == 200, out
        self.wait_for("the bot's answer", lambda: len(self.bot_messages(user_id, token)) > before)

    def bound(self, chat: int) -> int | None:
        raw = self.redis.hget(BOT_BINDINGS_KEY, str(chat))
        return None if raw is None else int(raw)


@pytest.fixture(scope="module")
def pool(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    import ray

    with warnings.catch_warnings():  # Ray Serve's own pydantic models use deprecated Field kwargs
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray import serve

        from serve.app import build_app, shutdown_shards

    from actors.sink import SINK_NAME, get_sink

    tmp = tmp_path_factory.mktemp("pool-webhook")
    redis_server = EmbeddedRedis(tmp / "redis").start()
    ticks = itertools.count()
    sandbox = SandboxThread(tokens=[A, B], clock=lambda: next(ticks) * 100.0)  # buckets always full
    port = free_port()
    serve_url = f"http://127.0.0.1:{port}"
    run_id = uuid.uuid4().hex[:8]
    shard_prefix = f"pool:{run_id}:shard"
    settings = Settings(
        data_dir=tmp / "var",
        redis=RedisSettings(url=redis_server.url),
        lake=LakeSettings(url=str(tmp / "lake"), flush_seconds=0.5),
        ray=RaySettings(namespace=NAMESPACE, num_cpus=4),
        market=MarketSettings(exchanges=["binance", "bybit", "okx"]),
        telegram=TelegramSettings(tokens=[A, B], api_base=sandbox.handle.base_url, public_url=serve_url),
    )
    try:
        ray.get_actor(SINK_NAME, namespace=NAMESPACE)
        sink = None
    except ValueError:
        sink = get_sink(settings)
    http = httpx.Client(timeout=30)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    client = redis.Redis.from_url(redis_server.url)
    try:
        serve.run(
            build_app(
                {
                    "settings": settings,
                    "shards": SHARDS,
                    "shard_prefix": shard_prefix,
                    "dedup_prefix": f"pool:{run_id}",
                    "webhook_secret": SECRET,
                    "admin_token": "pool-admin-token",
                }
            ),
            name="pool",
            route_prefix="/",
        )
        stack = Pool(sandbox, serve_url, http, client)

        def both_set() -> bool:
            urls = {b["id"]: b["webhook_url"] for b in stack.control("bots")["bots"]}
            return urls == {
                BOT_A: f"{serve_url}/telegram/webhook",
                BOT_B: f"{serve_url}/telegram/webhook/{BOT_B}",
            }

        stack.wait_for("both bots' webhooks set on the sandbox", both_set)
        stack.wait_for("/readyz", lambda: http.get(f"{serve_url}/readyz").status_code == 200)
        yield stack
    finally:
        http.close()
        serve.shutdown()
        shutdown_shards(settings, SHARDS, shard_prefix)
        if sink is not None:
            try:
                ray.get(sink.shutdown.remote(), timeout=10)
            finally:
                ray.kill(sink, no_restart=True)
        sandbox.stop()
        client.close()
        redis_server.stop()


def test_each_bot_answers_its_users_and_binds_them_and_another_bot_rebinds(pool: Pool) -> None:
    pool.start(601, B)  # a user who found the second bot
    pool.start(602, A)  # one who started the primary
    assert pool.bot_messages(601, B) and pool.bot_messages(601, A) == []  # answered by bot B only
    assert pool.bot_messages(602, A) and pool.bot_messages(602, B) == []
    assert pool.bound(601) == BOT_B and pool.bound(602) == BOT_A
    pool.start(601, A)  # the same user talks to the primary now: its pushes follow
    assert pool.wait_for("the rebinding", lambda: pool.bound(601) == BOT_A)
    # each bot's replies went through that bot's own Bot API path
    replies = pool.control("requests", method="sendMessage", bot=str(BOT_B))["requests"]
    assert {r["chat_id"] for r in replies} == {601}
    assert pool.http.get(f"{pool.serve_url}/healthz").json()["bots"] == [BOT_A, BOT_B]


def test_each_bot_path_takes_only_its_own_secret(pool: Pool) -> None:
    url = f"{pool.serve_url}/telegram/webhook"
    mine = bot_secret(SECRET, BOT_B)

    def post(path: str, secret: str, update_id: int) -> int:
        body = {**UPDATE, "update_id": update_id}
        return pool.http.post(path, json=body, headers={SECRET_HEADER: secret}).status_code

    assert post(f"{url}/{BOT_B}", SECRET, 11) == 401  # the primary's secret is not bot B's
    assert post(url, mine, 12) == 401  # nor bot B's the primary's
    assert post(f"{url}/{BOT_A}", mine, 13) == 401  # nor the primary's own path of the pool
    assert post(f"{url}/{BOT_A}", bot_secret(SECRET, BOT_A), 14) == 200
    assert post(f"{url}/{BOT_B}", mine, 15) == 200
    assert post(f"{url}/123456", mine, 16) == 404  # no such bot in the pool
    assert post(url, SECRET, 17) == 200  # the contract's path, unchanged
