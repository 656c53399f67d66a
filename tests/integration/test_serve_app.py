"""The Serve app end to end: webhook validation, dedup, per-chat order, health, admin API.

One Serve instance per module (``serve.start`` on a free port); three applications in
it: ``main`` at ``/`` (Redis up), ``bad`` at ``/bad`` (Redis URL on a closed
port, one bot shard) and ``capped`` at ``/capped`` (one bot shard that holds at most two updates).
The bot's work is a :class:`serve.handlers.RedisRecorder` that records every
update it handles in a Redis list, so no aiogram bot is involved.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from core.settings import Settings
from serve.dispatch import UpdateShards, shard_index
from serve.handlers import RedisRecorder
from serve.runtime import EmbeddedRedis, free_port
from serve.webhook import SECRET_HEADER, WebhookRejected, check_secret, parse_update, update_chat_id

UPDATES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "telegram" / "updates"
SECRET = "test-secret_0123456789"
TOKEN = "admin-token-for-tests"
SHARDS = 4
CAP = 2


@dataclass
class Deployed:
    url: str
    settings: Settings
    record_key: str
    shard_prefix: str
    opportunities_prefix: str
    redis: redis.Redis
    capped: Settings
    capped_prefix: str
    hold_key: str


def _settings(tmp: Path, redis_url: str) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": tmp / "var",
            "redis": {"url": redis_url},
            "lake": {"url": str(tmp / "lake")},
            "ray": {"namespace": "arbflow-test", "num_cpus": 4},
        }
    )


@pytest.fixture(scope="module")
def deployed(
    ray_session: None, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    with warnings.catch_warnings():  # Ray Serve's own pydantic models use deprecated Field kwargs
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray import serve

        from serve.app import build_app, shutdown_shards

    tmp = tmp_path_factory.mktemp("serve")
    run_id = uuid.uuid4().hex[:8]
    settings = _settings(tmp, redis_server.url)
    bad = _settings(tmp, f"redis://127.0.0.1:{free_port()}/0")
    key = f"test:{run_id}:handled"
    prefix, bad_prefix = f"test:{run_id}:shard", f"test:{run_id}:bad"
    capped = settings.model_copy(
        update={"telegram": settings.telegram.model_copy(update={"shard_backlog": CAP})}
    )
    capped_prefix, hold_key = f"test:{run_id}:capped", f"test:{run_id}:hold"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    client = redis.Redis.from_url(redis_server.url)
    try:
        common: dict[str, Any] = {
            "shards": SHARDS,
            "webhook_secret": SECRET,
            "admin_token": TOKEN,
            "dedup_prefix": f"test:{run_id}",
            "opportunities_prefix": f"test:{run_id}:opps",
        }
        serve.run(
            build_app(
                {
                    "settings": settings,
                    "shard_prefix": prefix,
                    "handler": RedisRecorder(key, jitter_s=0.02),
                    **common,
                }
            ),
            name="main",
            route_prefix="/",
        )
        serve.run(
            build_app(  # one shard is enough to answer 503 without Redis (each shard is a process)
                {
                    "settings": bad,
                    **common,
                    "shards": 1,
                    "shard_prefix": bad_prefix,
                    "handler": RedisRecorder(key),
                }
            ),
            name="bad",
            route_prefix="/bad",
        )
        serve.run(
            build_app(
                {
                    "settings": capped,
                    **common,
                    "shards": 1,
                    "shard_prefix": capped_prefix,
                    "handler": RedisRecorder(key, hold_key=hold_key),
                    "await_enqueue": False,  # the fast ack: 200 before the shard holds the update
                }
            ),
            name="capped",
            route_prefix="/capped",
        )
        yield Deployed(
            f"http://127.0.0.1:{port}",
            settings,
            key,
            prefix,
            common["opportunities_prefix"],
            client,
            capped,
            capped_prefix,
            hold_key,
        )
    finally:
        serve.shutdown()
        shutdown_shards(settings, SHARDS, prefix)
        shutdown_shards(bad, 1, bad_prefix)
        shutdown_shards(capped, 1, capped_prefix)
        client.close()


@pytest.fixture
def http(deployed: Deployed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployed.url, timeout=30) as client:
        yield client


def fixture_update(name: str = "teloxide_private_text_message.json") -> dict[str, Any]:
    return dict(json.loads((UPDATES / name).read_text()))


_next_id = [700_000_000 + int(time.time()) % 1_000_000 * 100]


def fresh(update: dict[str, Any]) -> dict[str, Any]:
    """A copy with an update_id not used before in this run."""
    _next_id[0] += 1
    out = copy.deepcopy(update)
    out["update_id"] = _next_id[0]
    return out


def post(http: httpx.Client, body: Any, secret: str | None = SECRET, **kw: Any) -> httpx.Response:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    if isinstance(body, bytes | str):
        return http.post("/telegram/webhook", content=body, headers=headers, **kw)
    return http.post("/telegram/webhook", json=body, headers=headers, **kw)


def handled(
    d: Deployed,
    update_ids: set[int],
    timeout_s: float = 20.0,
    shards: UpdateShards | None = None,
    app: str = "main",
) -> list[dict[str, Any]]:
    """The recorded rows of ``update_ids``, once all of them are in (or ``timeout_s``), the
    app's forwarder is idle and the shards have drained (the webhook acks before its
    forwarder's batch reaches a shard): a repeat, had it got through, is recorded by then."""
    from ray import serve

    shards = shards or UpdateShards.attach(d.settings, SHARDS, d.shard_prefix)
    ingress = serve.get_app_handle(app)
    deadline = time.monotonic() + timeout_s
    while True:
        assert ingress.drain_forwarder.remote(max(0.1, deadline - time.monotonic())).result()["idle"]
        shards.drain(max(0.1, deadline - time.monotonic()))
        rows = [json.loads(r) for r in d.redis.lrange(d.record_key, 0, -1)]
        mine = [r for r in rows if r["update_id"] in update_ids]
        if {r["update_id"] for r in mine} >= update_ids or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


# -- pure checks (no services) ---------------------------------------------------------------


def test_validation_rules_without_serve() -> None:
    with pytest.raises(WebhookRejected) as e:
        check_secret(SECRET, None)
    assert e.value.status == 401
    with pytest.raises(WebhookRejected):
        check_secret(SECRET, SECRET + "x")
    check_secret(SECRET, SECRET)
    update = fixture_update()
    assert parse_update(json.dumps(update).encode(), validate=lambda d: d) == update
    for body, why in [(b"nope", "not JSON"), (b"[1]", "object"), (b'{"update_id": "1"}', "update_id")]:
        with pytest.raises(WebhookRejected) as e:
            parse_update(body, validate=lambda d: d)
        assert e.value.status == 400 and why in e.value.error
    assert update_chat_id(update) == 218485655
    cq = fixture_update("nutgram_callback_query_inline_keyboard.json")
    assert update_chat_id(cq) == cq["callback_query"]["message"]["chat"]["id"]
    assert shard_index({"update_id": 9}, 4) == 1


# -- the webhook ------------------------------------------------------------------------------


def test_secret_is_required(http: httpx.Client) -> None:
    update = fresh(fixture_update())
    for secret in (None, "wrong", SECRET[:-1], ""):
        resp = post(http, update, secret=secret)
        assert resp.status_code == 401, secret
        assert resp.json()["ok"] is False


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"this is not json", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (json.dumps({"message": {"text": "hi"}}).encode(), "update_id"),
        (json.dumps({"update_id": True}).encode(), "update_id"),
        (
            json.dumps({"update_id": 5, "message": {"text": "no chat, no date"}}).encode(),
            "not a Telegram Update",
        ),
        (json.dumps({"update_id": 6, "callback_query": "nope"}).encode(), "not a Telegram Update"),
    ],
)
def test_bad_bodies_are_400(http: httpx.Client, body: bytes, error: str) -> None:
    resp = post(http, body)
    assert resp.status_code == 400
    assert resp.json()["ok"] is False
    assert error in resp.json()["error"]


def test_body_over_1_mib_is_413(http: httpx.Client) -> None:
    update = fresh(fixture_update())
    update["message"]["text"] = "x" * (1024 * 1024)
    body = json.dumps(update).encode()
    assert post(http, body).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: judged on the bytes read
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    resp = http.post("/telegram/webhook", content=chunks(), headers={SECRET_HEADER: SECRET})
    assert resp.status_code == 413
    assert post(http, body, secret="wrong").status_code == 401  # the secret is checked first


def test_real_update_is_handled_exactly_once(deployed: Deployed, http: httpx.Client) -> None:
    from ray import serve

    ingress = serve.get_app_handle("main")
    before = ingress.drain_forwarder.remote(10.0).result()
    update = fresh(fixture_update())
    first = post(http, update)
    assert first.status_code == 200 and first.json() == {"ok": True}
    again = post(http, update)  # fast ack: 200 at once; the forwarder drops the repeat
    assert again.status_code == 200 and again.json()["ok"] is True
    # wait for the forwarder to be idle (both copies handed on or dropped), not for a linger
    after = ingress.drain_forwarder.remote(10.0).result()
    assert after["idle"] and after["pending"] == 0
    assert after["duplicates"] == before["duplicates"] + 1
    rows = handled(deployed, {update["update_id"]})
    assert len(rows) == 1
    assert rows[0]["chat"] == 218485655
    assert rows[0]["shard"] == 218485655 % SHARDS


def test_every_fixture_update_is_accepted(deployed: Deployed, http: httpx.Client) -> None:
    ids = set()
    for path in sorted(UPDATES.glob("*.json")):
        update = fresh(json.loads(path.read_text()))
        ids.add(update["update_id"])
        assert post(http, update).status_code == 200, path.name
    assert {r["update_id"] for r in handled(deployed, ids)} == ids


def test_updates_of_one_chat_are_handled_in_order(deployed: Deployed, http: httpx.Client) -> None:
    base = fixture_update()
    other = fixture_update("teloxide_private_text_message_2.json")
    sent: list[int] = []
    other_ids: set[int] = set()
    for i in range(50):
        update = fresh(base)
        update["message"]["text"] = f"message {i}"
        assert post(http, update).status_code == 200
        sent.append(update["update_id"])
        if i % 5 == 0:  # another chat interleaved: it must not disturb the order
            extra = fresh(other)
            other_ids.add(extra["update_id"])
            assert post(http, extra).status_code == 200
    rows = handled(deployed, set(sent) | other_ids)
    mine = [r["update_id"] for r in rows if r["update_id"] in set(sent)]
    assert mine == sent
    assert {r["update_id"] for r in rows} >= other_ids


def test_a_full_shard_makes_the_webhook_answer_503_and_the_redelivery_is_processed(
    deployed: Deployed, http: httpx.Client
) -> None:
    shards = UpdateShards.attach(deployed.capped, 1, deployed.capped_prefix)
    headers = {SECRET_HEADER: SECRET}

    def send(update: dict[str, Any]) -> httpx.Response:
        return http.post("/capped/telegram/webhook", json=update, headers=headers)

    deployed.redis.set(deployed.hold_key, 1)  # the bot is busy: the shard's backlog only grows
    try:
        held = [fresh(fixture_update()) for _ in range(CAP)]
        for update in held:  # fast ack: 200 before the shard holds them
            assert send(update).status_code == 200
        deadline = time.monotonic() + 20
        while shards.stats()[0]["backlog"] < CAP:
            assert time.monotonic() < deadline, shards.stats()
            time.sleep(0.05)
        time.sleep(0.3)  # the replica has the shard's answer ("full") by now
        over = fresh(fixture_update())
        refused = send(over)
        assert refused.status_code == 503, refused.text
        assert send(over).status_code == 503  # still full: a redelivery now is refused too
        dedup_prefix = deployed.capped_prefix.rsplit(":", 1)[0]
        assert not deployed.redis.exists(f"{dedup_prefix}:tg:update:{over['update_id']}")  # mark removed
    finally:
        deployed.redis.delete(deployed.hold_key)
    rows = handled(deployed, {u["update_id"] for u in held}, shards=shards, app="capped")
    assert sorted(r["update_id"] for r in rows) == sorted(u["update_id"] for u in held)
    stats = shards.stats()[0]
    assert stats["refused"] >= 2 and stats["backlog"] == 0

    # Telegram redelivers the refused update: its dedup mark was removed, so it is processed, once
    again = send(over)
    assert again.status_code == 200 and again.json() == {"ok": True}
    assert [r["update_id"] for r in handled(deployed, {over["update_id"]}, shards=shards, app="capped")] == [
        over["update_id"]
    ]
    assert send(over).status_code == 200  # a repeat after that is a duplicate, not processed again
    assert [r["update_id"] for r in handled(deployed, {over["update_id"]}, shards=shards, app="capped")] == [
        over["update_id"]
    ]


# -- health and readiness ---------------------------------------------------------------------


def test_healthz(http: httpx.Client) -> None:
    resp = http.get("/healthz")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    assert resp.json()["webhook_fast_path"] is True  # the replica registered its answer


def test_readyz_reports_each_check(http: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while True:
        resp = http.get("/readyz")
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    body = resp.json()
    assert resp.status_code == 200, body
    checks = body["checks"]
    assert checks["redis"]["ok"] and checks["lake"]["ok"] and checks["shards"]["ok"]
    assert checks["shards"]["shards"] == SHARDS
    assert set(checks) == {
        "redis", "lake", "shards", "sink", "detector", "distributor", "limiter", "poller", "market"
    }  # fmt: skip
    # no market source runs here: each one is named, and the check is not required
    assert checks["market"]["ok"] is False and "binance: not running" in checks["market"]["error"]
    assert checks["market"]["required"] is False
    assert checks["sink"]["required"] is False and checks["redis"]["required"] is True
    # no push side runs in this test: reported, not required
    assert checks["distributor"]["ok"] is False and "dist:engine" in checks["distributor"]["error"]
    assert checks["distributor"]["required"] is False


def test_readyz_is_503_when_redis_is_down(http: httpx.Client) -> None:
    resp = http.get("/bad/readyz")
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert checks["redis"]["ok"] is False and checks["lake"]["ok"] is True
    assert http.get("/bad/healthz").status_code == 200
    # without Redis there is no dedup: 503, so that Telegram redelivers later
    resp = http.post("/bad/telegram/webhook", json=fresh(fixture_update()), headers={SECRET_HEADER: SECRET})
    assert resp.status_code == 503


# -- admin API --------------------------------------------------------------------------------


def test_api_webhooks_registers_lists_and_removes_for_any_user(
    deployed: Deployed, http: httpx.Client
) -> None:
    """Outbound webhooks' admin API (serve/outbound_api.py): the token, the address rules, the
    secret in the 201 only, a user's list masked, remove; a test POST to an address where
    nothing answers says so."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    uid = 990_000 + int(uuid.uuid4().int % 9_999)
    assert http.get("/api/webhooks").status_code == 401
    assert (
        http.post("/api/webhooks", json={"user_id": uid, "url": "https://93.184.216.34/h"}).status_code == 401
    )
    refused = http.post("/api/webhooks", json={"user_id": uid, "url": "http://127.0.0.1:9/h"}, headers=auth)
    assert refused.status_code == 400 and refused.json()["reason"] == "loopback"
    mapped = http.post(
        "/api/webhooks", json={"user_id": uid, "url": "https://[::ffff:10.0.0.1]/h"}, headers=auth
    )
    assert mapped.status_code == 400 and mapped.json()["reason"] == "private"
    assert (
        http.post("/api/webhooks", json={"url": "https://93.184.216.34/h"}, headers=auth).status_code == 400
    )
    assert http.post("/api/webhooks", content=b"nope", headers=auth).status_code == 400
    made = http.post("/api/webhooks", json={"user_id": uid, "url": "https://93.184.216.34/h"}, headers=auth)
    assert made.status_code == 201, made.text
    secret, endpoint = made.json()["secret"], made.json()["endpoint"]
    assert secret.startswith("whsec_") and endpoint["user_id"] == uid and endpoint["created_by"] == 0
    listed = http.get(f"/api/webhooks?user_id={uid}", headers=auth)
    assert listed.status_code == 200 and [e["id"] for e in listed.json()["endpoints"]] == [endpoint["id"]]
    assert secret not in listed.text
    assert deployed.redis.hget("webhooks:users", str(uid)) == b"admin"  # delivered whatever the tier
    probe = http.post(f"/api/webhooks/{endpoint['id']}/test", headers=auth, timeout=30)
    assert probe.status_code == 200 and probe.json()["ok"] is False  # nothing answers there
    assert http.post(f"/api/webhooks/{endpoint['id']}/enable", headers=auth).status_code == 200
    assert http.delete(f"/api/webhooks/{endpoint['id']}", headers=auth).json() == {
        "ok": True,
        "removed": endpoint["id"],
    }
    assert http.delete(f"/api/webhooks/{endpoint['id']}", headers=auth).status_code == 404
    assert http.get(f"/api/webhooks?user_id={uid}", headers=auth).json()["endpoints"] == []
    assert deployed.redis.hget("webhooks:users", str(uid)) is None


def test_api_opportunities_needs_the_admin_token(deployed: Deployed, http: httpx.Client) -> None:
    assert http.get("/api/opportunities").status_code == 401
    assert http.get("/api/opportunities", headers={"Authorization": "Bearer nope"}).status_code == 401
    run_prefix = deployed.opportunities_prefix
    body = {"opportunity_id": "o1", "kind": "spot_spread", "symbol": "BTC/USDT", "net_bps": 12.5}
    deployed.redis.hset(f"{run_prefix}:open", "o1", json.dumps(body))
    deployed.redis.zadd(f"{run_prefix}:open:by_net", {"o1": 12.5})
    deployed.redis.zadd(f"{run_prefix}:open:by_net:spot_spread", {"o1": 12.5})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = http.get("/api/opportunities", headers=auth)
    assert resp.status_code == 200
    (row,) = resp.json()
    assert row.items() >= body.items()  # every field a client had is still there
    assert http.get("/api/opportunities?kind=funding_rate", headers=auth).json() == []
    assert http.get("/api/opportunities?kind=spot_spread&limit=1", headers=auth).json() == [row]
    assert http.get("/api/opportunities?kind=bogus", headers=auth).status_code == 400
    deployed.redis.delete(
        f"{run_prefix}:open", f"{run_prefix}:open:by_net", f"{run_prefix}:open:by_net:spot_spread"
    )


def test_api_opportunities_ranks_per_kind_with_units_and_drops_stale_entries(
    deployed: Deployed, http: httpx.Client
) -> None:
    """Through the store as a pair coordinator writes it: a spot spread, a funding carry
    with a larger net_bps (over its horizon), and a spot spread last seen live long ago."""
    import asyncio

    import redis.asyncio as aioredis

    from core.candidates import Candidate
    from core.lifecycle import EventType, LifecycleEvent
    from core.models import OpportunityKind, Priority
    from pipeline.open_set import RedisOpportunityStore

    now = datetime.now(UTC)

    def event(oid: str, kind: OpportunityKind, symbol: str, net: float) -> LifecycleEvent:
        funding = kind is OpportunityKind.FUNDING_RATE
        cand = Candidate(
            kind=kind, symbol=symbol, buy_exchange="binance", sell_exchange="okx", gross_bps=net + 10,
            net_bps=net, gross_apr=0.5 if funding else None, notional_usd=10_000.0,
            executable_usd=10_000.0, confidence=0.9, priority=Priority.HIGH, pushable=True, flags=(),
            detected_at=now, details={"net_apr": 0.26} if funding else {},
        )  # fmt: skip
        return LifecycleEvent(EventType.OPENED, oid, cand, now, now)

    async def write() -> None:
        client = aioredis.Redis.from_url(deployed.settings.redis.url)
        store = RedisOpportunityStore(client, prefix=deployed.opportunities_prefix)
        await store.apply(
            [
                event("spot-1", OpportunityKind.SPOT_SPREAD, "BTC/USDT", 12.0),
                event("fund-1", OpportunityKind.FUNDING_RATE, "BTC/USDT:USDT", 50.0),
            ]
        )
        dead = int((now - timedelta(minutes=10)).timestamp() * 1000)
        await store.apply([event("spot-dead", OpportunityKind.SPOT_SPREAD, "ETH/USDT", 90.0)], seen_ms=dead)
        await client.aclose()

    asyncio.run(write())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rows = http.get("/api/opportunities", headers=auth).json()
    # the dead spot spread (best net_bps of all) is not listed; spot first, then funding
    assert [r["opportunity_id"] for r in rows] == ["spot-1", "fund-1"]
    spot, funding = rows
    assert spot["edge_unit"].startswith("bps (instant") and spot["net_bps_instant"] == 12.0
    assert funding["edge_unit"].startswith("APR %") and funding["horizon_hours"] == 168.0
    assert funding["net_apr_pct"] == pytest.approx(26.0)
    assert funding["net_bps_per_day"] == pytest.approx(50.0 * 24 / 168)
    assert funding["net_bps"] == 50.0 and "seen_at" in funding  # old fields kept
    grouped = http.get("/api/opportunities?group=kind", headers=auth).json()
    assert [r["opportunity_id"] for r in grouped["spot_spread"]["items"]] == ["spot-1"]
    assert grouped["funding_rate"]["horizon_hours"] == 168.0 and grouped["technical"]["edge_unit"] is None
    assert http.get("/api/opportunities?group=nope", headers=auth).status_code == 400
