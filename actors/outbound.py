"""Outbound webhooks: the sender, hosted by each queue shard for its own users.

- :class:`OutboundSender` (a plain class): for each push handed over, one delivery per
  enabled endpoint of the user: the signed JSON of ``core.outbound`` POSTed with aiohttp,
  the host resolved and checked at send time and the connection made to the checked
  address (:class:`CheckedResolver`: no second lookup a DNS rebinding could answer; the
  URL's host stays the ``Host`` header and the TLS server name), retried with backoff on
  5xx, 429, timeouts and connection errors, never twice for a delivery already answered 2xx
  (``state.webhooks``: a mark with a TTL in Redis, so a restart does not re-post), and
  recorded as ``deliveries`` rows with ``channel = "webhook"``. After
  ``outbound.disable_after`` failed deliveries in a row the endpoint is disabled and its
  owner gets a Telegram notice (:func:`notice_sender`, through their bot of the pool).
- :class:`OutboundHandoff`: what a queue shard (``uq:NNN``) holds: the users with endpoints
  (re-read from Redis every ``outbound.refresh_s``), the pushes of theirs that ended (sent,
  failed or blocked on Telegram: the webhook is a channel of its own), handed in batches to
  the shard's own sender. A user without endpoints costs one dict lookup. The sender lives
  in the shard's process, not an actor of its own: the deliveries are sharded with the
  queues (a user's pushes and POSTs in one process), and ``arbflow run`` keeps issue 14's
  budget of actor processes.
- :func:`probe_endpoint`: one sample POST from the asking process (``/webhooks test``, the
  admin API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import redis.asyncio as aioredis
from aiohttp.abc import AbstractResolver, ResolveResult

from core.accounts import Tier
from core.errors import StoreUnavailable
from core.outbound import (
    Endpoint,
    IPNetwork,
    Verdict,
    address_refusal,
    backoff_s,
    build_payload,
    delivery_id,
    encode_body,
    parse_ranges,
    request_headers,
    verdict,
)
from core.settings import Settings
from pipeline.deliveries import (
    DELIVERIES_DATASET,
    Audience,
    DeliveryChannel,
    DeliveryStatus,
    deliveries_table,
)
from state.webhooks import RedisWebhookStore, Refused, resolve, resolve_checked

log = logging.getLogger(__name__)

HANDOFF_FLUSH_S = 0.2
HANDOFF_MAX = 50_000
"""Pushes a shard keeps for the sender while it is away (the oldest give way)."""
HANDED = frozenset({DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.BLOCKED})
"""The Telegram outcomes whose pushes are POSTed too: the push went (or was meant to go) to the
user; an item that expired, was skipped or waits for a retry is not a push (yet)."""
TEST_EVENT = "test"
MAX_ANSWER_BYTES = 64 * 1024
"""At most this much of an endpoint's answer is read (the status is what counts)."""

Emit = Callable[[str, pa.Table], Awaitable[Any] | None]
Notify = Callable[[int, str], Awaitable[Any]]
Notice = Callable[[Endpoint], Awaitable[str | None]]


class AddressRefused(OSError):
    """The resolver found only addresses the policy refuses (aiohttp wraps it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver: every connection resolves its host now and connects only to
    addresses that pass the policy (``core.outbound.address_refusal``)."""

    def __init__(self, allowed: list[IPNetwork]) -> None:
        self.allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve(host, port)
        why = address_refusal(addresses, self.allowed)
        if why is not None:
            raise AddressRefused(why)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


class OutboundSender:
    """The deliveries (module docstring). ``emit`` takes ``deliveries`` rows; ``notice``
    tells an endpoint's owner it was disabled (None: nobody is told)."""

    def __init__(
        self,
        settings: Settings,
        store: RedisWebhookStore,
        *,
        emit: Emit | None = None,
        notice: Notice | None = None,
        clock: Callable[[], datetime] = _now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.cfg = settings.outbound
        self.store = store
        self.emit = emit
        self.notice = notice
        self.clock = clock
        self.sleep = sleep
        self.allowed = parse_ranges(self.cfg.allow_private)
        self.stats_: Counter[str] = Counter()
        self._session: Any = None
        self._slots = asyncio.Semaphore(self.cfg.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[tuple[str, str]] = set()
        self.rows: list[dict[str, Any]] = []

    # -- life ----------------------------------------------------------------------------
    def session(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(self.allowed),
                use_dns_cache=False,  # each new connection is resolved and checked anew
                limit=self.cfg.concurrency,
            )
            timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s, connect=self.cfg.connect_timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)
        return self._session

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait for the deliveries in flight (their retries included) up to ``timeout_s``."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        await self.flush()
        return not self._tasks

    async def close(self, timeout_s: float = 10.0) -> None:
        await self.drain(timeout_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        await self.flush()
        if self._session is not None:
            await self._session.close()
        closing = getattr(self.notice, "aclose", None)  # the notice's bots (notice_sender)
        if closing is not None:
            await closing()

    async def flush(self) -> None:
        if self.rows and self.emit is not None:
            rows, self.rows = self.rows, []
            out = self.emit(DELIVERIES_DATASET, deliveries_table(rows))
            if asyncio.iscoroutine(out):
                await out

    def stats(self) -> dict[str, Any]:
        from actors.lazy import emitter_stats

        return {"in_flight": len(self._tasks), **dict(self.stats_), **emitter_stats(self.emit)}

    # -- intake ----------------------------------------------------------------------------
    async def submit(self, jobs: Sequence[Mapping[str, Any]]) -> int:
        """Pushes handed over (``user_id``, ``event``, ``queued_ms``, ``tier``): a delivery
        per enabled endpoint of each user, started now; returns how many started."""
        started = 0
        endpoints_of: dict[int, list[Endpoint]] = {}
        for job in jobs:
            uid = int(job["user_id"])
            if uid not in endpoints_of:
                try:
                    endpoints_of[uid] = [e for e in await self.store.of_user(uid) if not e.disabled]
                except StoreUnavailable as exc:
                    self.stats_["redis_errors"] += 1
                    log.warning("outbound: cannot read the endpoints of %s: %s", uid, exc)
                    endpoints_of[uid] = []
            for endpoint in endpoints_of[uid]:
                started += self.start(endpoint, dict(job["event"]), job)
        self.stats_["handed"] += len(jobs)
        return started

    def start(self, endpoint: Endpoint, event: dict[str, Any], job: Mapping[str, Any]) -> int:
        delivery = delivery_id(endpoint.user_id, event)
        key = (endpoint.id, delivery)
        if key in self._inflight:
            self.stats_["duplicates"] += 1
            return 0
        self._inflight.add(key)
        task = asyncio.get_running_loop().create_task(self._deliver(endpoint, event, delivery, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 1

    # -- one delivery ------------------------------------------------------------------------
    async def _deliver(
        self, endpoint: Endpoint, event: dict[str, Any], delivery: str, job: Mapping[str, Any]
    ) -> None:
        try:
            if await self.store.delivered(endpoint.id, delivery):
                self.stats_["duplicates"] += 1
                return
            await self._attempts(endpoint, event, delivery, job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbound: delivery %s to %s failed unexpectedly", delivery, endpoint.id)
            self.stats_["errors"] += 1
        finally:
            self._inflight.discard((endpoint.id, delivery))
            if len(self.rows) >= 500:
                await self.flush()

    async def _attempts(
        self, endpoint: Endpoint, event: dict[str, Any], delivery: str, job: Mapping[str, Any]
    ) -> None:
        body = encode_body(build_payload(event, user_id=endpoint.user_id, delivery=delivery))
        name = str(event.get("event") or "opened")
        attempt = 0
        while True:
            attempt += 1
            status, error, retry_after = await self.post(endpoint, body, delivery, name, attempt)
            outcome = verdict(status) if error is None or not error.startswith("refused:") else Verdict.FAILED
            if outcome is Verdict.DELIVERED:
                now = self.clock()
                await self.store.note_delivered(
                    endpoint, delivery, int(status or 200), now, self.cfg.dedup_ttl_s
                )
                self.stats_["delivered"] += 1
                self._row(endpoint, event, job, DeliveryStatus.SENT, attempt, reason=endpoint.id, sent_at=now)
                return
            reason = f"{endpoint.id}: {error or status}"
            if outcome is Verdict.RETRY and attempt < self.cfg.max_attempts:
                self.stats_["retries"] += 1
                self._row(endpoint, event, job, DeliveryStatus.RETRY, attempt, reason=reason)
                await self.sleep(
                    backoff_s(
                        attempt,
                        base_s=self.cfg.retry_base_s,
                        cap_s=self.cfg.retry_cap_s,
                        jitter=random.random(),
                        retry_after_s=retry_after,
                    )
                )
                current = await self.store.get(endpoint.id)
                if current is None or current.disabled:  # removed or disabled meanwhile
                    self.stats_["abandoned"] += 1
                    return
                endpoint = current
                continue
            self.stats_["failed"] += 1
            self._row(endpoint, event, job, DeliveryStatus.FAILED, attempt, reason=reason)
            await self._failed(endpoint, str(error or status))
            return

    async def post(
        self, endpoint: Endpoint, body: bytes, delivery: str, event: str, attempt: int
    ) -> tuple[int | None, str | None, float | None]:
        """One attempt: (HTTP status or None, an error or None, a 429's Retry-After).
        A refused address is the error ``refused:<reason>`` (final)."""
        import aiohttp

        try:
            await resolve_checked(endpoint.url, self.allowed)  # IP literals never reach the resolver
        except Refused as exc:
            self.stats_["refused"] += 1
            return None, f"refused:{exc.reason}", None
        headers = request_headers(
            endpoint.secret, body, delivery=delivery, event=event, attempt=attempt, now=self.clock()
        )
        try:
            async with (
                self._slots,
                self.session().post(endpoint.url, data=body, headers=headers, allow_redirects=False) as resp,
            ):
                await resp.content.read(MAX_ANSWER_BYTES)  # bounded: a huge answer is not read
                retry_after = None
                if resp.status == 429:
                    with contextlib.suppress(TypeError, ValueError):
                        retry_after = float(resp.headers.get("Retry-After", ""))
                self.stats_[f"http_{resp.status // 100}xx"] += 1
                return resp.status, None if resp.status < 300 else f"HTTP {resp.status}", retry_after
        except aiohttp.ClientConnectorError as exc:
            cause = getattr(exc, "os_error", None) or exc.__cause__
            if isinstance(cause, AddressRefused):
                self.stats_["refused"] += 1
                return None, f"refused:{cause.reason}", None
            return None, f"connect: {type(exc).__name__}", None
        except TimeoutError:
            return None, "timeout", None
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}", None

    async def _failed(self, endpoint: Endpoint, status: str) -> None:
        now = self.clock()
        failures = await self.store.note_failed(endpoint, status[:80], now)
        if failures < self.cfg.disable_after:
            return
        fresh = await self.store.get(endpoint.id)
        if fresh is None or fresh.disabled:
            return
        reason = f"{failures} failed deliveries in a row (last: {status[:60]})"
        disabled = await self.store.set_enabled(endpoint.id, False, reason=reason, now=now)
        self.stats_["disabled"] += 1
        log.info("outbound: endpoint %s of %s disabled: %s", endpoint.id, endpoint.user_id, reason)
        if self.notice is not None and disabled is not None:
            try:
                await self.notice(disabled)
                self.stats_["notices"] += 1
            except Exception as exc:  # the endpoint stays disabled; /webhooks shows why
                log.warning("outbound: disable notice to %s not sent: %r", endpoint.user_id, exc)

    def _row(
        self,
        endpoint: Endpoint,
        event: Mapping[str, Any],
        job: Mapping[str, Any],
        status: DeliveryStatus,
        attempt: int,
        *,
        reason: str | None,
        sent_at: datetime | None = None,
    ) -> None:
        now = self.clock()
        queued_ms = job.get("queued_ms")
        queued = datetime.fromtimestamp(float(queued_ms) / 1000, UTC) if queued_ms else now
        detected: datetime | None = None
        with contextlib.suppress(TypeError, ValueError):
            detected = datetime.fromisoformat(str(event.get("detected_at")))
        net = event.get("net_bps")
        self.rows.append(
            {
                "queued_at": queued,
                "opportunity_id": str(event.get("opportunity_id", "")),
                "chat_id": endpoint.user_id,
                "user_id": endpoint.user_id,
                "audience": Audience.USER.value,
                "status": status.value,
                "reason": (reason or "")[:200] or None,
                "kind": event.get("kind"),
                "tier": job.get("tier"),
                "priority": event.get("priority"),
                "net_bps": float(net) if isinstance(net, int | float) else None,
                "attempt": attempt,
                "detected_at": detected,
                "sent_at": sent_at,
                "latency_ms": (sent_at - detected).total_seconds() * 1000 if sent_at and detected else None,
                "channel": DeliveryChannel.WEBHOOK.value,
            }
        )

    # -- a test POST ---------------------------------------------------------------------------
    async def test(self, endpoint_id: str) -> dict[str, Any]:
        """One POST of a sample push (``event = "test"``) to an endpoint, now, no retry, no row:
        what it answered (``/webhooks test``, ``POST /api/webhooks/{id}/test``)."""
        endpoint = await self.store.get(endpoint_id)
        if endpoint is None:
            return {"ok": False, "error": "unknown endpoint"}
        now = self.clock()
        event = {
            "event": TEST_EVENT,
            "opportunity_id": f"test-{int(now.timestamp() * 1000)}",
            "kind": "spot_spread",
            "symbol": "BTC/USDT",
            "buy_exchange": "binance",
            "sell_exchange": "okx",
            "gross_bps": 30.0,
            "net_bps": 12.5,
            "notional_usd": 10_000.0,
            "executable_usd": 10_000.0,
            "confidence": 0.9,
            "priority": "high",
            "pushable": True,
            "detected_at": now.isoformat(),
        }
        delivery = delivery_id(endpoint.user_id, event)
        body = encode_body(build_payload(event, user_id=endpoint.user_id, delivery=delivery))
        status, error, _ = await self.post(endpoint, body, delivery, TEST_EVENT, 1)
        return {
            "ok": verdict(status) is Verdict.DELIVERED and error is None,
            "status": status,
            "error": error,
        }


# -- the actor -----------------------------------------------------------------------------------


async def _token_of(settings: Settings, client: aioredis.Redis, user_id: int) -> str:
    """The token of the bot of the pool the user talks to (``state.bots``), else the primary."""
    pool = settings.telegram.pool
    if len(pool) > 1:
        from core.bots import bot_id
        from state.bots import RedisBotBindings

        with contextlib.suppress(Exception):  # unknown: the primary bot
            bound = await RedisBotBindings(client).bot_of(user_id)
            for token in pool:
                if bot_id(token) == bound:
                    return token
    return settings.telegram.token


def notice_sender(settings: Settings, client: aioredis.Redis) -> Notice | None:
    """A disabled endpoint's notice to its owner, in their language, through their bot of the
    pool (None without a bot token)."""
    if not settings.telegram.token:
        return None
    holder: dict[str, Any] = {}

    async def notice(endpoint: Endpoint) -> str | None:
        from actors.monitor.adapters import SendVerdict, TelegramAlertSender
        from notify.i18n import use_locale
        from notify.languages import pick_locale
        from notify.texts.webhooks import webhook_disabled
        from state.users import RedisUserStore

        user = await RedisUserStore(client).get(endpoint.user_id)
        lang = pick_locale(user.preferences.language, user.language_code) if user is not None else None
        with use_locale(lang or "en"):
            text = webhook_disabled(endpoint.id, endpoint.url, endpoint.disabled_reason)
        token = await _token_of(settings, client, endpoint.user_id)
        sender = holder.get(token)
        if sender is None:
            from notify.client import build_bot

            sender = holder[token] = TelegramAlertSender(build_bot(settings, token=token))
        for attempt in range(3):
            verdict_ = await sender.send(endpoint.user_id, text)
            if verdict_ is not SendVerdict.RETRY:
                return text if verdict_ is SendVerdict.SENT else None
            await asyncio.sleep(1.0 + attempt)
        return None

    async def aclose() -> None:
        for sender in holder.values():
            with contextlib.suppress(Exception):
                await sender.close()
        holder.clear()

    notice.aclose = aclose  # type: ignore[attr-defined]
    return notice


# -- the queue shards' side ----------------------------------------------------------------------


class OutboundHandoff:
    """A shard's outbound webhooks (module docstring): the users with endpoints, the pushes of
    theirs that ended, handed in batches to the shard's own :class:`OutboundSender`."""

    def __init__(
        self,
        settings: Settings,
        store: RedisWebhookStore,
        sender: OutboundSender,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sender = sender
        self.min_rank = Tier(settings.outbound.min_tier).rank
        self.clock = clock
        self.users: dict[int, bool] = {}
        self.pending: list[dict[str, Any]] = []
        self.handed = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Hand over what is pending, then let the deliveries in flight end (up to ``timeout_s``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.flush()
        await self.sender.close(timeout_s)

    def offer(
        self, user_id: int | None, audience: str, tier: str, event: Mapping[str, Any] | None, queued_ms: int
    ) -> bool:
        """A push to ``user_id`` ended on Telegram: kept for the sender when they have endpoints."""
        if user_id is None or event is None or audience != Audience.USER:
            return False
        granted = self.users.get(user_id)
        if granted is None:
            return False
        if not granted:
            try:
                if Tier(tier).rank < self.min_rank:
                    return False
            except ValueError:
                return False
        self.pending.append({"user_id": user_id, "event": dict(event), "queued_ms": queued_ms, "tier": tier})
        if len(self.pending) > HANDOFF_MAX:
            del self.pending[: len(self.pending) - HANDOFF_MAX]
            self.dropped += 1
        return True

    async def refresh(self) -> None:
        self.users = await self.store.users()

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            await self.sender.submit(batch)
            self.handed += len(batch)
        except Exception as exc:  # Redis away: kept for the next turn
            self.pending = batch + self.pending
            log.debug("outbound hand-off waits: %r", exc)

    def stats(self) -> dict[str, Any]:
        return {"users": len(self.users), "pending": len(self.pending), **self.sender.stats()}

    async def _loop(self) -> None:
        last_refresh = -1e18
        while True:
            now = self.clock()
            if now - last_refresh >= self.settings.outbound.refresh_s:
                try:
                    await self.refresh()
                    last_refresh = now
                except (StoreUnavailable, OSError) as exc:
                    log.debug("outbound hand-off: users not re-read: %r", exc)
            await self.flush()
            try:
                await self.sender.flush()
            except Exception:
                log.exception("outbound: rows not handed to the lake")
            await asyncio.sleep(HANDOFF_FLUSH_S)


async def probe_endpoint(settings: Settings, store: RedisWebhookStore, endpoint_id: str) -> dict[str, Any]:
    """``/webhooks test`` and ``POST /api/webhooks/{id}/test``: one sample POST from the asking
    process (its own session, no row), under the same address rules."""
    sender = OutboundSender(settings, store)
    try:
        return await sender.test(endpoint_id)
    finally:
        await sender.close(1.0)


__all__ = [
    "HANDED",
    "AddressRefused",
    "CheckedResolver",
    "OutboundHandoff",
    "OutboundSender",
    "notice_sender",
    "probe_endpoint",
]
