"""The outbound webhook registry on a real Redis (``state.webhooks``): records of an older
format still read, the users' hash the shards read follows enabled endpoints, the delivered
marks, ``/forget`` takes every endpoint away."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from core.outbound import RECORD_VERSION, parse_ranges
from serve.runtime import EmbeddedRedis
from state.erase import erase_user
from state.webhooks import RedisWebhookStore, Refused, resolve_checked

NOW = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


@pytest.fixture
async def store(redis_server: EmbeddedRedis) -> AsyncIterator[RedisWebhookStore]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield RedisWebhookStore(client, prefix=f"w{uuid.uuid4().hex[:8]}")
    await client.aclose()


async def test_a_record_written_before_the_newer_fields_still_reads(store: RedisWebhookStore) -> None:
    # what a first release might have written: no version, none of the counters or flags
    await store.client.hset(
        store.key("wh_old"),
        mapping={"id": "wh_old", "user_id": "11", "url": "https://a.example/h", "secret": "whsec_x" * 3},
    )
    await store.client.sadd(store.user_key(11), "wh_old")
    (old,) = await store.of_user(11)
    assert (old.failures, old.disabled, old.delivered, old.created_by) == (0, False, 0, 11)
    # the code of today updates it without losing it, and writes its version
    assert await store.note_failed(old, "HTTP 500", NOW) == 1
    back = await store.get("wh_old")
    assert back is not None and back.failures == 1 and back.last_status == "HTTP 500"
    await store.set_enabled("wh_old", False, reason="too many", now=NOW)
    again = await store.get("wh_old")
    assert again is not None and again.disabled and again.disabled_reason == "too many"
    fresh = await store.add(11, "https://b.example/h", NOW)
    assert fresh is not None
    assert (await store.client.hget(store.key(fresh.id), "v")) == str(RECORD_VERSION).encode()


async def test_users_hash_follows_enabled_endpoints_and_admin_grants(store: RedisWebhookStore) -> None:
    mine = await store.add(21, "https://a.example/h", NOW)
    assert mine is not None and await store.users() == {21: False}
    granted = await store.add(22, "https://a.example/h", NOW, created_by=0)
    assert granted is not None and (await store.users())[22] is True
    await store.set_enabled(mine.id, False, reason="x", now=NOW)
    assert 21 not in await store.users()
    await store.set_enabled(mine.id, True)
    assert 21 in await store.users()
    assert await store.add(21, "https://c.example/h", NOW, limit=2) is not None
    assert await store.add(21, "https://d.example/h", NOW, limit=2) is None  # the limit
    assert not await store.remove(21, granted.id)  # not theirs
    assert await store.remove(22, granted.id) and 22 not in await store.users()
    # a delivered mark, and a failure on an endpoint removed meanwhile leaves no stub
    await store.note_delivered(mine, "d1", 200, NOW, ttl_s=60)
    assert await store.delivered(mine.id, "d1") and not await store.delivered(mine.id, "d2")
    assert 0 < await store.client.ttl(store.sent_key(mine.id, "d1")) <= 60
    assert await store.note_failed(granted, "HTTP 500", NOW) == 0
    assert await store.get(granted.id) is None


async def test_forget_erases_every_endpoint(store: RedisWebhookStore) -> None:
    prefix = store.p.rstrip(":")
    for url in ("https://a.example/h", "https://b.example/h"):
        await store.add(31, url, NOW)
    await erase_user(store.client, 31, prefix=prefix)
    assert await store.of_user(31) == [] and 31 not in await store.users()


async def test_resolve_checked_refuses_names_that_resolve_to_loopback() -> None:
    with pytest.raises(Refused) as refused:
        await resolve_checked("https://localhost/h", [])
    assert refused.value.reason == "loopback"
    target, addresses = await resolve_checked(
        "http://localhost:9/h", parse_ranges(["127.0.0.0/8", "::1/128"])
    )
    assert target.host == "localhost" and addresses
    with pytest.raises(Refused) as unresolved:
        await resolve_checked("https://no-such-host.invalid/h", [])
    assert unresolved.value.reason == "unresolved"
