"""The Ray Serve application: Telegram webhook, health, readiness and the admin API.

    from ray import serve
    from serve.app import build_app
    serve.run(build_app({"settings": settings}))      # or `arbflow serve`

``build_app(args)`` is a typed Serve app builder (``serve run serve.app:build_app
settings='{...}'`` and Serve config files work too). Arguments (:class:`AppArgs`):
``settings`` (a ``Settings``, its dict or JSON; default: the environment, read at
build time), ``num_replicas``, ``max_ongoing_requests``, ``shards`` (bot shard
actors), ``shard_prefix``, ``handler`` (the update handler factory, an import path
or a picklable callable, see :mod:`serve.dispatch`), ``dedup_prefix``,
``opportunities_prefix``, ``webhook_secret`` / ``admin_token`` (default: resolved
from the settings, see :mod:`serve.webhook`), ``require`` (the readiness checks that
must pass), ``set_webhook``.

Routes (CONTRACT "HTTP"):

- ``POST /telegram/webhook`` — secret header (401), size (413), JSON ``Update``
  (400), then ``{"ok": true}``; the replica's :class:`serve.forwarder.UpdateForwarder`
  dedups ``update_id`` in Redis (a repeat is not processed again) and enqueues the
  update on its bot shard (``chat_id % N``) in batches; the bot's work runs on the
  shard, off the request path. With one replica the 200 comes as soon as the update is
  queued on the replica's forwarder (a fast ack: the bot's work and even the dedup are
  off the request path; a replica that crashes loses the ~50 ms it held); with several
  replicas, or ``await_enqueue=True``, the 200 waits for the dedup and the shard. Redis or
  the shard unavailable → 503 (Telegram redelivers).
- ``GET /healthz`` — the process is up.
- ``GET /readyz`` — Redis ``PING``, the lake, the bot shards, ``sink:lake``,
  ``detect:engine``, ``dist:engine``, ``ratelimit:global``, the ``getUpdates`` poller's
  heartbeat (``arbflow run`` without a public URL, serve/polling.py) and ``market`` (every
  ``md:<exchange>`` source delivering or starting; one that cannot start is named, e.g. an
  exchange down at start or a mistyped id; not required by default: the bot answers
  without market data): each reported; 200
  when every required check passes (by default Redis, the lake and the bot shards; ``arbflow
  run`` requires what an answer needs now: Redis, the shards, and the poller when polling),
  else 503.
- ``GET /api/opportunities?kind=&limit=`` — open opportunities, best net first
  (``Authorization: Bearer <admin token>``).
- ``GET/POST /api/webhooks``, ``DELETE /api/webhooks/{id}``, ``POST /api/webhooks/{id}/enable``
  and ``/test``: outbound webhook endpoints of any user (serve/outbound_api.py, admin token).
- ``GET /dashboard`` (``?token=`` or the Bearer header), ``GET /api/dashboard?window=1h``
  and ``GET /static/<file>``: the admin analytics page and its data (serve/dashboard.py).
- ``GET /api/experiments/<name>?since=24h`` (admin token): an experiment's engagement per
  variant with intervals and p-values (docs/experiments.md); 404 naming the known ones.
- ``GET /api/personalization?user=ID`` (admin token): the engagement model's last run
  (version, time, users with a model) and one user's strongest affinities
  (docs/personalization.md).
"""

# No `from __future__ import annotations` here: Serve's class-based FastAPI views need
# real annotation objects (a string "Request" would become a query parameter).
import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from core.bots import BOT_FIELD, bot_secret, webhook_path
from core.errors import LakeError, StoreUnavailable
from core.settings import Settings, load_settings
from serve.dispatch import DEFAULT_HANDLER, DEFAULT_SHARDS, SHARD_PREFIX, UpdateShards
from serve.forwarder import DUPLICATE, ForwardFailed, UpdateForwarder
from serve.webhook import (
    WEBHOOK_PATH,
    Headers,
    Receive,
    WebhookFastPath,
    WebhookRejected,
    admin_token,
    check_bearer,
    check_content_length,
    check_secret,
    parse_update,
    read_body,
    rejection,
    set_webhook,
    webhook_headers,
    webhook_secret,
)

log = logging.getLogger(__name__)

CHECKS = ("redis", "lake", "shards", "sink", "detector", "distributor", "limiter", "poller", "market")
DEFAULT_REQUIRED = ["redis", "lake", "shards"]
CHECK_TIMEOUT_S = 3.0

_OK = b'{"ok":true}'
_DUPLICATE = b'{"ok":true,"duplicate":true}'
_BUSY = b'{"ok":false,"error":"busy"}'


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (all optional)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    settings: Any = None
    """A ``Settings``, its dict or its JSON; None: read the environment at build time."""
    num_replicas: int = 1
    max_ongoing_requests: int = 64
    shards: int = DEFAULT_SHARDS
    shard_prefix: str = SHARD_PREFIX
    handler: Any = DEFAULT_HANDLER
    """Update handler factory: ``"module:attr"`` or a picklable callable (serve.dispatch)."""
    dedup_prefix: str = ""
    opportunities_prefix: str = "opps"
    webhook_secret: str | None = None
    admin_token: str | None = None
    require: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUIRED))
    """Readiness checks that must pass (of redis, lake, shards, sink, detector); others are reported."""
    set_webhook: bool = True
    """Call ``setWebhook`` at start when ``settings.telegram.public_url`` is set."""
    code_version: str | None = None
    """The code version the bot shards are created with (serve.version); None: the
    ``ARBFLOW_CODE_VERSION`` of the Serve config's runtime_env, else this process's code."""
    await_enqueue: bool | None = None
    """True: answer 200 once deduplicated and on the shard (a repeat says ``"duplicate": true``);
    False: once validated and queued on the replica's forwarder (while it is healthy): fast,
    but what a crashing replica held (≤ ~50 ms of updates) is lost; None (default): False
    with one replica, True with more (keeps one chat's order across replicas)."""


def resolve_settings(value: Any) -> Settings:
    if value is None:
        return load_settings()
    if isinstance(value, Settings):
        return value
    if isinstance(value, str | bytes):
        return Settings.model_validate_json(value)
    if isinstance(value, dict):
        return load_settings(**value)
    raise TypeError(f"settings must be a Settings, a dict or JSON, not {type(value).__name__}")


@dataclass
class IngressConfig:
    """What every replica gets: settings and the secrets resolved once on the driver."""

    settings: Settings
    webhook_secret: str
    admin_token: str
    shards: int = DEFAULT_SHARDS
    shard_prefix: str = SHARD_PREFIX
    handler: Any = DEFAULT_HANDLER
    dedup_prefix: str = ""
    opportunities_prefix: str = "opps"
    require: list[str] = field(default_factory=lambda: list(DEFAULT_REQUIRED))
    set_webhook: bool = True
    await_enqueue: bool = False
    code_version: str = ""
    """Resolved once where the app is built, so every replica (started at any time) and the
    driver that created the shards agree; "" (a config pickled by an older release): the
    replica's own."""


api = FastAPI(title="arbflow", docs_url=None, redoc_url=None, openapi_url=None)
api.add_middleware(WebhookFastPath)  # the webhook answered ahead of the routing (serve.webhook)


# Serve pickles the class when it is decorated: helpers it calls must be defined above it.
def _replica_rank() -> int:
    try:
        rank: Any = serve.get_replica_context().rank
        return int(getattr(rank, "rank", rank))
    except Exception:
        return 0


@serve.deployment(name="ArbflowIngress", max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(api)
class ArbflowIngress:
    """FastAPI ingress: the webhook (fast 200, work on the bot shards), health, admin API."""

    async def __init__(self, config: IngressConfig) -> None:  # type: ignore[misc]
        from actors.lazy import keep_heap_settled, settle_heap
        from pipeline.lake import Lake
        from pipeline.open_set import RedisOpportunityStore
        from serve.webhook import _aiogram_validator
        from state.dedup import RedisUpdateDedup
        from state.redis import redis_client

        self.config = config
        self.settings = settings = config.settings
        self.redis = redis_client(settings.redis.url)
        self.dedup = RedisUpdateDedup(self.redis, prefix=config.dedup_prefix)
        self.opp_store = RedisOpportunityStore.from_settings(
            self.redis, settings, prefix=config.opportunities_prefix
        )
        self.lake = Lake.from_settings(settings.lake)
        self.validate = _aiogram_validator()
        self.shards = UpdateShards(
            settings,
            config.shards,
            handler=config.handler,
            prefix=config.shard_prefix,
            version=getattr(config, "code_version", "") or None,
        )
        await self.shards.astart()
        self.forwarder = UpdateForwarder(self.shards, self.redis, self.dedup._key, ttl_s=self.dedup.ttl_s)
        self.started = time.time()
        # the replica's heap (aiogram's models, Ray, FastAPI) out of the collector's reach, and
        # kept so: the updates a forwarder holds for its next batch live long enough to be
        # promoted, and full collections over all of it stalled the requests behind them
        settle_heap()
        self.settling = asyncio.get_running_loop().create_task(keep_heap_settled())
        # a pool of bots (docs/bot-pool.md): each bot's path and secret; updates carry their bot
        self.bot_ids = settings.telegram.bot_ids
        self.bot_secrets = {bot: bot_secret(config.webhook_secret, bot) for bot in self.bot_ids}
        self.tag_bots = len(self.bot_ids) > 1
        WebhookFastPath.answer = self.answer_update
        self.webhook_task: asyncio.Task[None] | None = None
        self.webhook_status: str = "not configured"
        self.menus_set = 0
        """How many command menus ``setMyCommands`` set (after the webhook)."""
        if config.set_webhook and settings.telegram.public_url and settings.telegram.token:
            if _replica_rank() == 0:
                self.webhook_task = asyncio.get_running_loop().create_task(self._set_webhook())
            else:
                self.webhook_status = "left to replica 0"

    async def _set_webhook(self) -> None:
        tg = self.settings.telegram
        for attempt in range(5):
            try:
                await set_webhook(tg.api_base, tg.token, tg.public_url, self.config.webhook_secret)
                log.info("setWebhook %s%s done", tg.public_url, WEBHOOK_PATH)
                from bot.menus import register_commands

                # the other bots of a pool: each its own path and secret (the primary keeps the
                # contract's path and the stored secret), each its command menu
                for bot, token in zip(self.bot_ids[1:], tg.pool[1:], strict=True):
                    await set_webhook(tg.api_base, token, tg.public_url, self.bot_secrets[bot], bot=bot)
                    log.info("setWebhook %s%s done", tg.public_url, webhook_path(bot))
                self.webhook_status = "set"
                self.menus_set = await register_commands(self.settings)
                for token in tg.pool[1:]:
                    own = tg.model_copy(update={"token": token})
                    await register_commands(self.settings.model_copy(update={"telegram": own}))
                return
            except Exception as exc:
                self.webhook_status = f"failed: {exc}"
                log.warning("setWebhook attempt %d failed: %s", attempt + 1, exc)
                await asyncio.sleep(min(30.0, 2.0**attempt))

    # -- the webhook -----------------------------------------------------------------

    @api.post(WEBHOOK_PATH)
    async def webhook(self, request: Request) -> Response:
        """The route as FastAPI sees it; requests are answered ahead of it by
        :class:`serve.webhook.WebhookFastPath` once this replica is built (the same answer)."""
        status, body = await self.answer_update(request.headers.raw, request.receive)
        return Response(body, status_code=status, media_type="application/json")

    @api.post(WEBHOOK_PATH + "/{bot}")
    async def bot_webhook(self, request: Request, bot: int) -> Response:
        """One bot's webhook of the pool (docs/bot-pool.md); answered ahead like the primary's."""
        status, body = await self.answer_update(request.headers.raw, request.receive, bot)
        return Response(body, status_code=status, media_type="application/json")

    async def answer_update(
        self, headers: Headers, receive: Receive, bot: int | None = None
    ) -> tuple[int, bytes]:
        """Status and JSON body for one webhook request: secret (401), size (413), ``Update``
        (400), then queued on the forwarder (fast ack) or enqueued (503 when it could not be).

        ``bot``: the request came to ``/telegram/webhook/<bot>`` (404 for a bot not in the pool;
        its own secret); None: the primary bot's path and the stored secret. With a pool of
        several bots the update carries its bot's id (``core.bots.BOT_FIELD``)."""
        secret, length = webhook_headers(headers)
        try:
            if bot is None:
                check_secret(self.config.webhook_secret, secret)
            else:
                expected = self.bot_secrets.get(bot)
                if expected is None:
                    raise WebhookRejected(404, "no such bot")
                check_secret(expected, secret)
            check_content_length(length)
            update = parse_update(await read_body(receive), validate=self.validate)
        except WebhookRejected as exc:
            return rejection(exc)
        if self.tag_bots:
            update[BOT_FIELD] = self.bot_ids[0] if bot is None else bot
        forwarder = self.forwarder
        if not self.config.await_enqueue and forwarder.healthy:
            # fast ack: dedup and enqueue follow in the forwarder's next batch (ms)
            if forwarder.offer(update):
                return 200, _OK
            return 503, _BUSY
        # ack once enqueued; also the path while the forwarder is failing (→ 503)
        try:
            outcome = await forwarder.submit(update)
        except ForwardFailed as exc:  # Redis or the shard is down: let Telegram redeliver
            log.warning("webhook: update %s not enqueued: %s", update["update_id"], exc)
            error = "store unavailable" if exc.store else "bot unavailable"
            return rejection(WebhookRejected(503, error))
        return 200, _DUPLICATE if outcome == DUPLICATE else _OK

    async def drain_forwarder(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Wait until every update this replica acknowledged is on a shard or dropped as a
        repeat (through a deployment handle: operators before a stop, tests); its stats."""
        idle = await self.forwarder.drain(timeout_s)
        return {"idle": idle, **self.forwarder.stats()}

    async def __del__(self) -> None:
        """Serve calls this on a graceful stop: hand on what was acknowledged but not yet sent."""
        forwarder = getattr(self, "forwarder", None)
        if forwarder is None:
            return
        try:
            if not await forwarder.drain(5.0):
                log.warning("webhook: %d acknowledged updates not handed on at stop", forwarder.pending)
        except Exception as exc:  # a loop already closing: report, never raise from __del__
            log.warning("webhook: draining the forwarder at stop failed: %s", exc)
        forwarder.close()

    # -- health ------------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "uptime_s": round(time.time() - self.started, 3),
            # this replica answers the webhook ahead of the routing (serve.webhook.WebhookFastPath)
            "webhook_fast_path": WebhookFastPath.answer == self.answer_update,
            # the pool of bots (ids are public: the bots' user ids), the primary first
            "bots": self.bot_ids,
        }

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        names = list(CHECKS)
        results = await asyncio.gather(
            self._check_redis(),
            self._check_lake(),
            self._check_shards(),
            self._check_sink(),
            self._check_detector(),
            self._check_distributor(),
            self._check_limiter(),
            self._check_poller(),
            self._check_market(),
        )
        checks = dict(zip(names, results, strict=True))
        for name, result in checks.items():
            result["required"] = name in self.config.require
        ready = all(r["ok"] for r in checks.values() if r["required"])
        body = {"status": "ready" if ready else "not ready", "checks": checks, "webhook": self.webhook_status}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _timed(self, coro: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            detail = await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
            out: dict[str, Any] = {"ok": True}
            if isinstance(detail, dict):
                out.update(detail)
        except TimeoutError:
            out = {"ok": False, "error": f"timed out after {CHECK_TIMEOUT_S:.0f} s"}
        except Exception as exc:
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        out["ms"] = round((time.perf_counter() - started) * 1000, 2)
        return out

    async def _check_redis(self) -> dict[str, Any]:
        async def ping() -> None:
            if not await self.redis.ping():
                raise RuntimeError("no PONG")

        return await self._timed(ping())

    async def _check_lake(self) -> dict[str, Any]:
        async def ping() -> dict[str, Any]:
            await asyncio.to_thread(self.lake.ping)
            return {"url": self.settings.lake.url}

        return await self._timed(ping())

    async def _check_shards(self) -> dict[str, Any]:
        async def ready() -> dict[str, Any]:
            answers = await asyncio.gather(*(a.ready.remote() for a in self.shards.actors))
            waiting = [a["shard"] for a in answers if not a["ready"]]
            if waiting:
                errors = sorted({a["error"] for a in answers if a.get("error")})
                raise RuntimeError(f"shards {waiting} not ready" + (f": {errors[0]}" if errors else ""))
            return {"shards": len(answers)}

        return await self._timed(ready())

    async def _named_actor(self, name: str) -> dict[str, Any]:
        import ray

        async def ready() -> dict[str, Any]:
            try:
                handle = await asyncio.to_thread(ray.get_actor, name, namespace=self.settings.ray.namespace)
            except ValueError:
                raise RuntimeError(f"actor {name} not found") from None
            await handle.ready.remote()
            return {"actor": name}

        return await self._timed(ready())

    async def _check_sink(self) -> dict[str, Any]:
        from actors.sink import SINK_NAME

        return await self._named_actor(SINK_NAME)

    async def _check_detector(self) -> dict[str, Any]:
        from actors.detector import DETECTOR_NAME

        return await self._named_actor(DETECTOR_NAME)

    async def _check_distributor(self) -> dict[str, Any]:
        from actors.opportunities import DISTRIBUTOR_NAME

        return await self._named_actor(DISTRIBUTOR_NAME)

    async def _check_limiter(self) -> dict[str, Any]:
        from actors.ratelimit import RATE_LIMITER_NAME

        return await self._named_actor(RATE_LIMITER_NAME)

    async def _check_poller(self) -> dict[str, Any]:
        """``arbflow run`` in polling mode: the poller's heartbeat (serve.polling) is fresh."""
        from serve.polling import heartbeat_key

        async def beat() -> dict[str, Any]:
            raw = await self.redis.get(heartbeat_key(self.config.dedup_prefix))
            if raw is None:
                raise RuntimeError("no getUpdates poller answered recently")
            return {"last_poll_s_ago": round(time.time() - float(json.loads(raw)["at"]), 1)}

        return await self._timed(beat())

    async def _check_market(self) -> dict[str, Any]:
        """Every market-data source delivers or is starting; one that cannot start is named."""
        import ray

        from actors.market_data import coordinator_name, source_problem

        market = self.settings.market
        keys = ["replay"] if market.source == "replay" else list(market.exchanges)

        async def one(key: str) -> str | None:
            try:
                handle = await asyncio.to_thread(
                    ray.get_actor, coordinator_name(key), namespace=self.settings.ray.namespace
                )
            except ValueError:
                return "not running"
            try:
                return source_problem(dict(await handle.stats.remote()))
            except Exception as exc:
                return f"does not answer ({type(exc).__name__})"

        async def sources() -> dict[str, Any]:
            problems = await asyncio.gather(*(one(k) for k in keys))
            down = {k: p for k, p in zip(keys, problems, strict=True) if p}
            if down:
                raise RuntimeError("; ".join(f"{k}: {p}" for k, p in down.items()))
            return {"sources": keys}

        return await self._timed(sources())

    # -- admin API -----------------------------------------------------------------------

    @api.get("/api/opportunities")
    async def opportunities(
        self, request: Request, kind: str | None = None, limit: int = 100, group: str | None = None
    ) -> Response:
        """Open opportunities seen live within their bound, ranked per kind, units stated.

        A list (as before): kind after kind, each ranked by its own ``net_bps``, every row
        with ``edge_unit`` and its kind's figures added. ``group=kind``: an object by kind.
        """
        try:
            check_bearer(self.config.admin_token, request.headers.get("authorization"))
        except WebhookRejected as exc:
            return JSONResponse(exc.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
        from core.models import OpportunityKind

        if kind:
            try:
                kind = OpportunityKind(kind).value
            except ValueError:
                kinds = ", ".join(k.value for k in OpportunityKind)
                return JSONResponse({"ok": False, "error": f"kind must be one of {kinds}"}, status_code=400)
        if group not in (None, "", "kind"):
            return JSONResponse({"ok": False, "error": "group must be kind"}, status_code=400)
        from pipeline.opportunities import EDGE_UNITS, with_units

        limit = max(1, min(limit, 1000))
        horizon = self.settings.opportunities.funding_horizon_hours
        try:
            grouped = await self.opp_store.open_by_kind(limit, kinds=[kind] if kind else None)
        except StoreUnavailable as exc:
            return JSONResponse({"ok": False, "error": str(exc)[:300]}, status_code=503)
        rows = {k: [with_units(r, horizon_hours=horizon) for r in found] for k, found in grouped.items()}
        if group == "kind":
            return JSONResponse(
                {
                    k: {"edge_unit": EDGE_UNITS.get(k), "ranked_by": "net_bps", "items": found}
                    | ({"horizon_hours": horizon} if k == "funding_rate" else {})
                    for k, found in rows.items()
                }
            )
        return JSONResponse([r for found in rows.values() for r in found])

    # -- outbound webhooks (serve/outbound_api.py) -----------------------------------------

    async def _webhooks(self, request: Request, call: Any) -> Response:
        """The admin token, then one of serve/outbound_api.py's functions."""
        try:
            check_bearer(self.config.admin_token, request.headers.get("authorization"))
        except WebhookRejected as exc:
            return JSONResponse(exc.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
        from state.webhooks import RedisWebhookStore

        status, body = await call(RedisWebhookStore(self.redis))
        return JSONResponse(body, status_code=status)

    @api.get("/api/webhooks")
    async def webhooks_list(self, request: Request, user_id: str | None = None) -> Response:
        from serve.outbound_api import list_endpoints

        return await self._webhooks(request, lambda store: list_endpoints(store, user_id))

    @api.post("/api/webhooks")
    async def webhooks_add(self, request: Request) -> Response:
        from serve.outbound_api import add_endpoint

        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        return await self._webhooks(request, lambda store: add_endpoint(store, self.settings, body))

    @api.delete("/api/webhooks/{endpoint_id}")
    async def webhooks_remove(self, request: Request, endpoint_id: str) -> Response:
        from serve.outbound_api import remove_endpoint

        return await self._webhooks(request, lambda store: remove_endpoint(store, endpoint_id))

    @api.post("/api/webhooks/{endpoint_id}/enable")
    async def webhooks_enable(self, request: Request, endpoint_id: str) -> Response:
        from serve.outbound_api import enable_endpoint

        return await self._webhooks(request, lambda store: enable_endpoint(store, endpoint_id))

    @api.post("/api/webhooks/{endpoint_id}/test")
    async def webhooks_test(self, request: Request, endpoint_id: str) -> Response:
        from serve.outbound_api import test_endpoint

        async def tester(eid: str) -> dict[str, Any]:
            from actors.outbound import probe_endpoint
            from state.webhooks import RedisWebhookStore

            return await probe_endpoint(self.settings, RedisWebhookStore(self.redis), eid)

        return await self._webhooks(request, lambda store: test_endpoint(store, endpoint_id, tester))

    # -- dashboard (serve/dashboard.py) ---------------------------------------------------

    @api.get("/dashboard")
    async def dashboard(self, request: Request, token: str | None = None) -> Response:
        from serve.dashboard import is_admin, page_html

        if not is_admin(self.config.admin_token, request.headers.get("authorization"), token):
            return Response(
                "admin token required: /dashboard?token=… or Authorization: Bearer …",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(page_html(), media_type="text/html", headers={"Cache-Control": "no-store"})

    @api.get("/api/dashboard")
    async def dashboard_api(self, request: Request, token: str | None = None, window: str = "1h") -> Response:
        from serve.dashboard import dashboard_data, is_admin, parse_window

        if not is_admin(self.config.admin_token, request.headers.get("authorization"), token):
            return JSONResponse(
                {"ok": False, "error": "admin token required (Authorization: Bearer …)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            span = parse_window(window)
        except ValueError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        try:
            data = await asyncio.to_thread(
                dashboard_data, self.lake, window=span, experiments=self.settings.experiments
            )
        except LakeError as exc:
            return JSONResponse({"ok": False, "error": str(exc)[:300]}, status_code=503)
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    @api.get("/api/experiments/{name}")
    async def experiment_api(
        self, request: Request, name: str, token: str | None = None, since: str = "24h"
    ) -> Response:
        """An experiment's engagement per variant (``arbflow report --experiment`` as JSON)."""
        from datetime import UTC, datetime

        from pipeline.analytics import parse_since
        from pipeline.analytics.experiments import UnknownExperiment, experiment_report
        from serve.dashboard import is_admin

        if not is_admin(self.config.admin_token, request.headers.get("authorization"), token):
            return JSONResponse(
                {"ok": False, "error": "admin token required (Authorization: Bearer …)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        now = datetime.now(UTC)
        try:
            start = parse_since(since, now)
        except ValueError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        try:
            found = await asyncio.to_thread(
                experiment_report, self.lake, name, self.settings.experiments, start, now=now
            )
        except UnknownExperiment as exc:
            return JSONResponse({"ok": False, "error": str(exc), "known": exc.known}, status_code=404)
        except LakeError as exc:
            return JSONResponse({"ok": False, "error": str(exc)[:300]}, status_code=503)
        body = {"since": start and start.isoformat(), **found.as_dict()}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @api.get("/api/personalization")
    async def personalization_api(
        self, request: Request, token: str | None = None, user: int | None = None
    ) -> Response:
        """The engagement model's state (last run, users with a model) and one user's model."""
        from core.errors import StoreUnavailable
        from serve.dashboard import is_admin
        from serve.personalization import model_state

        if not is_admin(self.config.admin_token, request.headers.get("authorization"), token):
            return JSONResponse(
                {"ok": False, "error": "admin token required (Authorization: Bearer …)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            body = await model_state(self.redis, self.settings, user)
        except StoreUnavailable as exc:
            return JSONResponse({"ok": False, "error": str(exc)[:300]}, status_code=503)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @api.get("/static/{name}")
    async def static(self, name: str) -> Response:
        from serve.dashboard import static_file

        found = static_file(name)
        if found is None:
            return JSONResponse({"ok": False, "error": "not found"}, status_code=404)
        body, media_type = found
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


def deployed_code_version() -> str:
    """The ``ARBFLOW_CODE_VERSION`` of the Serve config (``serve deploy``), else this code's."""
    import os

    from serve.version import ENV_VAR, code_version

    return os.environ.get(ENV_VAR) or code_version()


def build_app(args: dict[str, Any] | AppArgs) -> serve.Application:
    """The Serve application (a typed app builder: ``serve.run(build_app({...}))``)."""
    a = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    settings = resolve_settings(a.settings)
    unknown = set(a.require) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown readiness checks {sorted(unknown)}: use {', '.join(CHECKS)}")
    if not settings.redis.url:
        raise ValueError("settings.redis.url is empty: start the embedded runtime first (arbflow serve does)")
    config = IngressConfig(
        settings=settings,
        webhook_secret=a.webhook_secret
        or webhook_secret(settings.telegram.webhook_secret, settings.data_dir),
        admin_token=a.admin_token or admin_token(settings.secret_key, settings.data_dir),
        shards=a.shards,
        shard_prefix=a.shard_prefix,
        handler=a.handler,
        dedup_prefix=a.dedup_prefix,
        opportunities_prefix=a.opportunities_prefix,
        require=list(a.require),
        set_webhook=a.set_webhook,
        await_enqueue=a.num_replicas > 1 if a.await_enqueue is None else a.await_enqueue,
        code_version=a.code_version or deployed_code_version(),
    )
    return ArbflowIngress.options(  # type: ignore[attr-defined]
        num_replicas=a.num_replicas,
        max_ongoing_requests=a.max_ongoing_requests,
        # no CPU reserved, as for every actor of ours: Serve's default (one CPU a replica)
        # left `--replicas 3` on two cores waiting for CPUs forever
        ray_actor_options={"num_cpus": 0},
    ).bind(config)


def shutdown_shards(
    settings: Settings, n: int = DEFAULT_SHARDS, prefix: str = SHARD_PREFIX
) -> list[dict[str, Any]]:
    """Stop the (detached) bot shards of an app, after ``serve.shutdown()`` or ``serve.delete``:
    each answers what it holds, then closes. Returns their last stats."""
    import ray

    shards = UpdateShards(settings, n, prefix=prefix, version="")
    for name in shards.names:
        try:
            shards.actors.append(ray.get_actor(name, namespace=settings.ray.namespace))
        except ValueError:
            continue
    if not shards.actors:
        return []
    return shards.shutdown()
