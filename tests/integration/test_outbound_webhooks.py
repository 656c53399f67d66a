"""Outbound webhooks against a real HTTP receiver (aiohttp's server on loopback, allowed by
``ARBFLOW_OUTBOUND__ALLOW_PRIVATE``) that verifies every signature: the sender as a queue
shard holds it, on a private Redis, with the Telegram sandbox for the disable notice; and the
crossing test through real Ray: a pair coordinator, ``dist:engine``, the queue shards (which
send the POSTs), the lake: a push to a Premium user reaches the sandbox and the receiver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
import ray
import redis.asyncio as aioredis
from aiohttp import web

from actors.outbound import OutboundSender, notice_sender, probe_endpoint
from actors.sink import get_sink
from core.accounts import Tier, User
from core.outbound import DELIVERY_HEADER, SIGNATURE_HEADER, Endpoint, verify
from core.settings import Settings
from pipeline.lake import Lake
from pipeline.query import run_query
from serve.orchestrator import Distribution
from serve.runtime import EmbeddedRedis
from state.users import RedisUserStore
from state.webhooks import RedisWebhookStore
from tests.integration.test_distribution_seam import Pair, _settings, spread, users, wait_for
from tests.support.sandbox_thread import SandboxThread

LOOPBACK = ["127.0.0.0/8", "::1/128"]


class Receiver:
    """An HTTP receiver in a thread of its own: ``/ok`` answers 200, ``/flaky`` 503 to the
    first attempt of each delivery and 200 after, ``/down`` 500 always. Every request is kept
    with whether its signature verified against the secret registered for its path."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.secrets: dict[str, str] = {}
        self.seen: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            path = request.path
            delivery = request.headers.get(DELIVERY_HEADER, "")
            secret = self.secrets.get(path, "")
            self.requests.append(
                {
                    "path": path,
                    "body": body,
                    "delivery": delivery,
                    "verified": verify(secret, body, request.headers.get(SIGNATURE_HEADER)),
                    "host": request.headers.get("Host"),
                }
            )
            if path == "/down":
                return web.Response(status=500)
            if path == "/flaky" and (path, delivery) not in self.seen:
                self.seen.add((path, delivery))  # type: ignore[arg-type]
                return web.Response(status=503)
            return web.Response(status=200, text="ok")

        async def start() -> None:
            app = web.Application()
            app.router.add_route("POST", "/{tail:.*}", handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        self.loop.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        return [r for r in list(self.requests) if r["path"] == path]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _outbound(settings: Settings, **options: Any) -> Settings:
    values = {
        "allow_private": LOOPBACK,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.2,
        "refresh_s": 0.3,
        **options,
    }
    return settings.model_copy(update={"outbound": settings.outbound.model_copy(update=values)})


async def _register(url: str, user_id: int, hook_url: str, receiver: Receiver, path: str) -> Endpoint:
    client = aioredis.Redis.from_url(url)
    try:
        endpoint = await RedisWebhookStore(client).add(user_id, hook_url, datetime.now(UTC))
        assert endpoint is not None
        receiver.secrets[path] = endpoint.secret
        return endpoint
    finally:
        await client.aclose()


async def _endpoint(url: str, endpoint_id: str) -> Endpoint | None:
    client = aioredis.Redis.from_url(url)
    try:
        return await RedisWebhookStore(client).get(endpoint_id)
    finally:
        await client.aclose()


async def _user(url: str, user_id: int, tier: Tier = Tier.PREMIUM) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await RedisUserStore(client).create(User.new(user_id, datetime.now(UTC), tier=tier))
    finally:
        await client.aclose()


def event(opp: str | None = None) -> dict[str, Any]:
    return {
        "event": "opened",
        "opportunity_id": opp or uuid.uuid4().hex,
        "kind": "spot_spread",
        "symbol": "BTC/USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "gross_bps": 50.0,
        "net_bps": 30.0,
        "notional_usd": 10_000.0,
        "executable_usd": 10_000.0,
        "confidence": 0.9,
        "priority": "high",
        "pushable": True,
        "flags": [],
        "detected_at": datetime.now(UTC).isoformat(),
        "opened_at": datetime.now(UTC).isoformat(),
    }


def job(user_id: int, ev: dict[str, Any]) -> dict[str, Any]:
    return {"user_id": user_id, "event": ev, "queued_ms": int(time.time() * 1000), "tier": "premium"}


def _webhook_rows(settings: Settings) -> list[dict[str, Any]]:
    ray.get(get_sink(settings).flush.remote())
    sql = "SELECT * FROM deliveries WHERE channel = 'webhook' ORDER BY sent_at NULLS LAST"
    return list(run_query(Lake.from_settings(settings.lake), sql).to_pylist())


class Sender:
    """An :class:`OutboundSender` as a queue shard holds it: the real Redis, the notice
    through the sandbox; the rows it emits are kept (``rows``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = aioredis.Redis.from_url(settings.redis.url)
        self.tables: list[pa.Table] = []

        async def emit(dataset: str, table: pa.Table) -> None:
            assert dataset == "deliveries"
            self.tables.append(table)

        self.impl = OutboundSender(
            settings,
            RedisWebhookStore(self.client),
            emit=emit,
            notice=notice_sender(settings, self.client),
        )

    async def submit(self, *jobs: dict[str, Any]) -> None:
        await self.impl.submit(list(jobs))
        await self.impl.drain(10.0)

    def rows(self) -> list[dict[str, Any]]:
        return [r for t in self.tables for r in t.to_pylist()]

    async def close(self) -> None:
        await self.impl.close()
        await self.client.aclose()


async def eventually(cond: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cond):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_signed_posts_retried_once_delivered_deduplicated_then_disabled_with_a_notice(
    base_settings: Settings,
    sandbox: SandboxThread,
    private_redis: EmbeddedRedis,
    receiver: Receiver,
) -> None:
    settings = _outbound(
        _settings(base_settings, sandbox, private_redis.url), max_attempts=3, disable_after=2
    )
    uid = 7301
    await _user(private_redis.url, uid)
    flaky = await _register(private_redis.url, uid, receiver.url("/flaky"), receiver, "/flaky")
    sender = Sender(settings)
    try:
        # a 503, then a 200: retried, delivered once; every attempt signed with the secret
        ev = event()
        await sender.submit(job(uid, ev))
        first, second = receiver.at("/flaky")
        assert first["verified"] and second["verified"]
        assert first["body"] == second["body"] and first["delivery"] == second["delivery"]
        assert first["host"] == f"127.0.0.1:{receiver.port}"
        # handed again (a shard's restart, a second offer): never POSTed again
        await sender.submit(job(uid, ev), job(uid, ev))
        assert len(receiver.at("/flaky")) == 2
        stats = sender.impl.stats()
        assert stats["delivered"] == 1 and stats["duplicates"] >= 2 and stats["retries"] == 1
        # a new sender (a restarted shard) remembers it too: the mark is in Redis
        again = Sender(settings)
        try:
            await again.submit(job(uid, ev))
        finally:
            await again.close()
        assert len(receiver.at("/flaky")) == 2
        stored = await _endpoint(private_redis.url, flaky.id)
        assert stored is not None and stored.delivered == 1 and stored.failures == 0

        # an endpoint that always fails: each delivery tried max_attempts times, then, after
        # disable_after failed deliveries, disabled; its owner is told on Telegram
        down = await _register(private_redis.url, uid, receiver.url("/down"), receiver, "/down")
        await sender.submit(job(uid, event()))
        assert len(receiver.at("/down")) == 3
        assert not (await _endpoint(private_redis.url, down.id)).disabled  # type: ignore[union-attr]
        await sender.submit(job(uid, event()))
        assert len(receiver.at("/down")) == 6 and all(r["verified"] for r in receiver.at("/down"))
        gone = await _endpoint(private_redis.url, down.id)
        assert gone is not None and gone.disabled and "2 failed deliveries" in gone.disabled_reason
        await eventually(lambda: any(down.id in t and "disabled" in t for t in sandbox.texts(uid)))
        # disabled: no more POSTs to it; the other endpoint still gets its pushes
        await sender.submit(job(uid, event()))
        assert len(receiver.at("/down")) == 6
        # the flaky endpoint got each of the three new pushes too (503, then 200, each)
        assert len(receiver.at("/flaky")) == 2 + 3 * 2

        await sender.impl.flush()
        rows = sender.rows()
        by_status: dict[str, int] = {}
        for r in rows:
            by_status[r["status"]] = by_status.get(r["status"], 0) + 1
            assert r["user_id"] == uid and r["chat_id"] == uid and r["channel"] == "webhook"
        assert by_status == {"sent": 4, "retry": 4 + 4, "failed": 2}, by_status
        assert ev["opportunity_id"] in {r["opportunity_id"] for r in rows if r["status"] == "sent"}
        assert {r["attempt"] for r in rows if r["status"] == "failed"} == {3}
    finally:
        await sender.close()


async def test_a_loopback_endpoint_is_refused_at_send_time_when_the_setting_does_not_allow_it(
    base_settings: Settings,
    sandbox: SandboxThread,
    private_redis: EmbeddedRedis,
    receiver: Receiver,
) -> None:
    base = _settings(base_settings, sandbox, private_redis.url)
    uid = 7302
    await _user(private_redis.url, uid)
    # registered while the range was allowed; the operator then took the setting away
    endpoint = await _register(private_redis.url, uid, receiver.url("/ok"), receiver, "/ok")
    named = await _register(
        private_redis.url, uid, f"http://localhost:{receiver.port}/named", receiver, "/named"
    )
    sender = Sender(_outbound(base, allow_private=[], max_attempts=2))
    try:
        await sender.submit(job(uid, event()))
        assert receiver.requests == []  # nothing reached the loopback receiver
        result = await sender.impl.test(endpoint.id)
        assert result == {"ok": False, "status": None, "error": "refused:loopback"}
        await sender.impl.flush()
        rows = sender.rows()
        assert sorted(r["reason"] for r in rows) == sorted(
            [f"{endpoint.id}: refused:loopback", f"{named.id}: refused:loopback"]
        )
        assert {r["status"] for r in rows} == {"failed"} and {r["attempt"] for r in rows} == {1}
    finally:
        await sender.close()
    # with the range allowed again, the same endpoint is reached (the admin API's and
    # /webhooks test's probe)
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        probe = await probe_endpoint(_outbound(base), RedisWebhookStore(client), endpoint.id)
    finally:
        await client.aclose()
    assert probe == {"ok": True, "status": 200, "error": None}
    assert len(receiver.at("/ok")) == 1 and receiver.at("/ok")[0]["verified"]


def test_a_push_crosses_the_shard_to_the_sender_and_the_receiver(
    ray_session: None,
    base_settings: Settings,
    sandbox: SandboxThread,
    private_redis: EmbeddedRedis,
    receiver: Receiver,
) -> None:
    settings = _outbound(_settings(base_settings, sandbox, private_redis.url, shards=2))
    premium, free, other = 8301, 8302, 8303
    users(private_redis.url, [(premium, Tier.PREMIUM, {}), (free, Tier.FREE, {}), (other, Tier.PREMIUM, {})])
    asyncio.run(_register(private_redis.url, premium, receiver.url("/ok"), receiver, "/ok"))
    asyncio.run(
        _register(private_redis.url, free, receiver.url("/free"), receiver, "/free")
    )  # below the tier
    dist = Distribution(settings).start()
    pair = Pair(settings)
    try:
        time.sleep(1.0)  # the shards read who has endpoints (refresh_s)
        assert pair.tick(spread(confidence=0.9, pushable=True)) == 1
        wait_for(lambda: sandbox.sent_to([premium, other]) == {premium: 1, other: 1})
        wait_for(lambda: len(receiver.at("/ok")) == 1, why=lambda: receiver.requests)
        (post,) = receiver.at("/ok")
        assert post["verified"]
        body = json.loads(post["body"])
        assert body["schema"] == "arbflow.push/1" and body["user_id"] == premium
        assert body["symbol"] == "BTC/USDT" and body["event"] in ("opened", "updated")
        assert body["delivery_id"] == post["delivery"]
        time.sleep(1.0)
        assert receiver.at("/free") == [] and len(receiver.at("/ok")) == 1
        stats = dist.stats()
        assert stats["outbound"]["delivered"] == 1
        wait_for(lambda: len(_webhook_rows(settings)) == 1)
        (row,) = _webhook_rows(settings)
        assert (row["user_id"], row["status"], row["opportunity_id"]) == (
            premium,
            "sent",
            body["opportunity_id"],
        )
    finally:
        pair.stop()
        dist.stop()
