"""``alerts:monitor``: watches the pipeline's actors, exports Prometheus metrics, alerts SuperAdmins.

Every ``interval_s`` the monitor asks the market-data coordinators (``md:<exchange>``)
and the queue shards (``uq:NNN``) for their stats, by name in ``settings.ray.namespace``
(an actor that is missing, restarting or slow simply counts as "did not answer"), then

1. exports what it saw with Ray's metrics API (:mod:`ray.util.metrics`; Ray's metrics
   agent on each node serves them to Prometheus on the node's metrics export port,
   names prefixed ``ray_``):

   | metric | type | tags |
   |---|---|---|
   | ``arbflow_market_data_age_seconds`` | gauge | ``exchange`` |
   | ``arbflow_ingest_lag_seconds`` | gauge | ``exchange`` |
   | ``arbflow_deliveries_sent`` / ``_failed`` | counter (``…_total``) | ``shard`` |
   | ``arbflow_telegram_429`` | counter (``…_total``) | ``shard`` |
   | ``arbflow_queue_pending`` | gauge | ``shard`` |
   | ``arbflow_delivery_failure_rate`` | gauge (over the rules' window) | |
   | ``arbflow_alert_incidents_open`` | gauge | ``kind`` |
   | ``arbflow_actor_up`` | gauge (1 answered, 0 not) | ``actor`` |
   | ``arbflow_exchange_messages`` / ``_reconnects`` | counter (``…_total``) | ``exchange`` |
   | ``arbflow_exchange_errors`` | counter (``…_total``) | ``exchange``, ``error`` (class) |
   | ``arbflow_exchange_messages_per_second`` | gauge | ``exchange`` |
   | ``arbflow_exchange_breaker_state`` | gauge (0 closed, 0.5 half-open, 1 open) | ``exchange`` |
   | ``arbflow_exchange_book_age_p99_seconds`` | gauge | ``exchange`` |
   | ``arbflow_exchange_dropped_symbols`` | gauge | ``exchange`` |
   | ``arbflow_exchange_source_down_seconds`` | gauge | ``exchange`` |

   (the ``arbflow_exchange_*`` series come from the live source of each ``md:<exchange>``)

2. evaluates :mod:`core.alerts` on that snapshot, and
3. sends every incident's "opened" and "resolved" message (``notify.texts.alert_notice``)
   to each SuperAdmin (``settings.superadmin_ids``) through the bot.

The rules' state (open incidents, the delivery samples) and an outbox of notices not yet
delivered to every SuperAdmin live in Redis (``alerts:state``, ``alerts:outbox``; the
last 1,000 notices in ``alerts:log``). The state is saved before anything is sent, so a
monitor restarted by Ray picks up its open incidents and does not announce them again;
a notice whose sending was cut short is finished by the next poll (a SuperAdmin may, in
that one case, get it twice).

The actor starts polling as soon as it is constructed (also after a restart by Ray):
:func:`get_monitor` is all a caller needs. :class:`AlertMonitor` is the plain class
(stats source, store, sender and metrics injected), :class:`AlertMonitorActor` the thin
Ray wrapper.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import ray

from actors.lazy import stop_task
from actors.market_data import coordinator_name
from actors.queues import shard_name
from core.alerts import (
    AlertKind,
    AlertNotice,
    AlertRules,
    AlertState,
    DeliveryTotals,
    Evaluation,
    ExchangeReading,
    StatsSnapshot,
    evaluate,
    open_by_kind,
)
from core.settings import Settings

log = logging.getLogger(__name__)

MONITOR_NAME = "alerts:monitor"
STATE_KEY = "alerts:state"
OUTBOX_KEY = "alerts:outbox"
LOG_KEY = "alerts:log"
LOG_KEEP = 1_000
DEFAULT_INTERVAL_S = 5.0
SESSION_SWEEP_S = 60.0
"""How often the monitor ends the sessions that expired (each an ``expired`` lake event)
and returns the users whose tier paid in Telegram Stars ended to Free (with a notice)."""
ASK_TIMEOUT_S = 3.0
MAX_SEND_ATTEMPTS = 50
"""Polls a notice is retried for (Telegram 429/5xx, network) before it is dropped."""

# -- ports -----------------------------------------------------------------------------------


class StatsSource(Protocol):
    async def ask(self, name: str, method: str = "stats") -> dict[str, Any] | None:
        """The answer of actor ``name``'s ``method``; None when it is missing or does not answer."""
        ...


class AlertStore(Protocol):
    async def load(self) -> tuple[AlertState, list[OutboxItem]]: ...

    async def save(self, state: AlertState, outbox: Sequence[OutboxItem]) -> None: ...

    async def record(self, notices: Sequence[AlertNotice]) -> None: ...


class SendVerdict(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    """429, 5xx, network: try again at the next poll."""
    GAVE_UP = "gave_up"
    """403 (blocked), 400, 401: this chat will not get it."""


class AlertSender(Protocol):
    async def send(self, chat_id: int, text: str) -> SendVerdict: ...


# -- the outbox ------------------------------------------------------------------------------


@dataclass
class OutboxItem:
    """A notice and the SuperAdmins it reached (or who cannot be reached)."""

    notice: AlertNotice
    done: set[int] = field(default_factory=set)
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"notice": self.notice.to_dict(), "done": sorted(self.done), "attempts": self.attempts}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutboxItem:
        return cls(
            AlertNotice.from_dict(dict(d["notice"])), set(d.get("done", [])), int(d.get("attempts", 0))
        )


# -- metrics ---------------------------------------------------------------------------------

GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "arbflow_market_data_age_seconds": (
        "Seconds since the exchange's last market-data batch.",
        ("exchange",),
    ),
    "arbflow_ingest_lag_seconds": ("Exchange timestamp to arrival, at the last batch (s).", ("exchange",)),
    "arbflow_queue_pending": ("Pushes queued in the shard.", ("shard",)),
    "arbflow_delivery_failure_rate": ("Failed / attempted pushes over the alert window.", ()),
    "arbflow_alert_incidents_open": ("Open alert incidents.", ("kind",)),
    "arbflow_actor_up": ("1 when the actor answered the last poll, else 0.", ("actor",)),
    "arbflow_exchange_messages_per_second": (
        "Structures (books, tickers, funding rates) the live source received per second.",
        ("exchange",),
    ),
    "arbflow_exchange_breaker_state": ("Circuit breaker: 0 closed, 0.5 half-open, 1 open.", ("exchange",)),
    "arbflow_exchange_book_age_p99_seconds": (
        "p99 over the symbols of the time since each book was last received or confirmed (s).",
        ("exchange",),
    ),
    "arbflow_exchange_dropped_symbols": (
        "Symbols the live source dropped (not listed, refused).",
        ("exchange",),
    ),
    "arbflow_exchange_source_down_seconds": (
        "Seconds the market source has been failing to start (0: running).",
        ("exchange",),
    ),
}
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "arbflow_deliveries_sent": ("Pushes delivered to Telegram.", ("shard",)),
    "arbflow_deliveries_failed": ("Pushes failed for good (permanent errors, dead letters).", ("shard",)),
    "arbflow_telegram_429": ("Telegram 429 (Too Many Requests) answers.", ("shard",)),
    "arbflow_exchange_messages": ("Structures the live source received.", ("exchange",)),
    "arbflow_exchange_reconnects": ("Websocket reconnections of the live source.", ("exchange",)),
    "arbflow_exchange_errors": ("Errors of the live source's calls, by class.", ("exchange", "error")),
}
BREAKER_VALUES = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


def _tag_key(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


class MetricsExporter:
    """Gauges and counters through :mod:`ray.util.metrics` (``use_ray``), with a copy of what
    was exported (``snapshot()``: name → ``"tag=value,…"`` → value; counters as totals)."""

    def __init__(self, *, use_ray: bool = True) -> None:
        self.values: dict[str, dict[str, float]] = {name: {} for name in (*GAUGES, *COUNTERS)}
        self._ray: dict[str, Any] = {}
        if use_ray:
            from ray.util.metrics import Counter, Gauge

            for name, (desc, keys) in GAUGES.items():
                self._ray[name] = Gauge(name, desc, tag_keys=keys)
            for name, (desc, keys) in COUNTERS.items():
                self._ray[name] = Counter(name, desc, tag_keys=keys)

    def set(self, name: str, value: float, **tags: str) -> None:
        if name not in GAUGES:
            raise KeyError(f"not a gauge: {name}")
        self.values[name][_tag_key(tags)] = float(value)
        if name in self._ray:
            self._ray[name].set(float(value), tags=tags or None)

    def inc(self, name: str, value: float, **tags: str) -> None:
        if name not in COUNTERS:
            raise KeyError(f"not a counter: {name}")
        if value <= 0:
            return
        key = _tag_key(tags)
        self.values[name][key] = self.values[name].get(key, 0.0) + float(value)
        if name in self._ray:
            self._ray[name].inc(float(value), tags=tags or None)

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {name: dict(series) for name, series in self.values.items()}


# -- adapters --------------------------------------------------------------------------------


class RayStatsSource:
    """Asks named actors in one namespace; caches handles and forgets them when they fail."""

    def __init__(
        self,
        namespace: str,
        timeout_s: float = ASK_TIMEOUT_S,
        hosted: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.hosted = dict(hosted or {})
        """Names that live in a host actor: ``md:binance`` → (``md:host:00``, ``binance``)."""
        self._handles: dict[str, Any] = {}

    async def ask(self, name: str, method: str = "stats") -> dict[str, Any] | None:
        actor = name
        args: tuple[str, ...] = ()
        if name in self.hosted:
            actor, key = self.hosted[name]
            args = (key,)
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(actor, namespace=self.namespace)
            except ValueError:
                return None
            self._handles[name] = handle
        try:
            ref = getattr(handle, method).remote(*args)
            return dict(await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.timeout_s))
        except (TimeoutError, ray.exceptions.ActorUnavailableError):
            return None  # restarting or busy: ask again next time
        except Exception as exc:  # dead for good, or replaced: look it up by name again
            log.debug("monitor: %s.%s failed: %r", name, method, exc)
            self._handles.pop(name, None)
            return None


class RedisAlertStore:
    """The alert state and outbox in Redis (one JSON value each) and a capped log of notices."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.state_key = prefix + STATE_KEY
        self.outbox_key = prefix + OUTBOX_KEY
        self.log_key = prefix + LOG_KEY

    async def load(self) -> tuple[AlertState, list[OutboxItem]]:
        state, outbox = await self.client.mget([self.state_key, self.outbox_key])
        items = [OutboxItem.from_dict(d) for d in json.loads(outbox)] if outbox else []
        return AlertState.from_json(state), items

    async def save(self, state: AlertState, outbox: Sequence[OutboxItem]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.state_key, state.to_json())
        pipe.set(self.outbox_key, json.dumps([item.to_dict() for item in outbox]))
        await pipe.execute()

    async def record(self, notices: Sequence[AlertNotice]) -> None:
        if not notices:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(self.log_key, *[json.dumps(n.to_dict()) for n in notices])
        pipe.ltrim(self.log_key, 0, LOG_KEEP - 1)
        await pipe.execute()


class TelegramAlertSender:
    """Sends an alert's HTML text through an aiogram ``Bot`` (Telegram or the sandbox)."""

    def __init__(self, bot: Any, timeout_s: float = 10.0) -> None:
        self.bot = bot
        self.timeout_s = timeout_s

    async def send(self, chat_id: int, text: str) -> SendVerdict:
        from aiogram.enums import ParseMode
        from aiogram.exceptions import (
            ClientDecodeError,
            TelegramAPIError,
            TelegramNetworkError,
            TelegramRetryAfter,
            TelegramServerError,
        )

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML)
        except (TelegramRetryAfter, TelegramServerError, TelegramNetworkError, TimeoutError) as exc:
            log.info("alert to %s: will retry: %s", chat_id, exc)
            return SendVerdict.RETRY
        except TelegramAPIError as exc:  # 400, 401, 403, 404: this chat cannot get it
            log.warning("alert to %s: gave up: %s", chat_id, exc)
            return SendVerdict.GAVE_UP
        except (ClientDecodeError, OSError) as exc:
            log.info("alert to %s: will retry: %r", chat_id, exc)
            return SendVerdict.RETRY
        return SendVerdict.SENT

    async def close(self) -> None:
        await self.bot.session.close()


# -- the monitor -----------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _ShardSeen:
    sent: int = 0
    failed: int = 0
    throttled: int = 0


class AlertMonitor:
    """Plain class: one :meth:`poll` collects, exports, evaluates, persists and notifies."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: StatsSource,
        store: AlertStore,
        sender: AlertSender | None,
        metrics: MetricsExporter,
        rules: AlertRules | None = None,
        exchanges: Sequence[str] | None = None,
        shards: int | None = None,
        admins: Sequence[int] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self.sender = sender
        self.metrics = metrics
        self.rules = rules or AlertRules()
        if exchanges is None:
            exchanges = ["replay"] if settings.market.source == "replay" else list(settings.market.exchanges)
        self.exchanges = list(exchanges)
        self.shards = settings.distribution.shards if shards is None else shards
        self.admins = list(settings.superadmin_ids if admins is None else admins)
        self.clock = clock
        self.state: AlertState | None = None
        self.outbox: list[OutboxItem] = []
        self.last: Evaluation | None = None
        self._last_batch: dict[str, datetime] = {}
        self._exchange_seen: dict[str, tuple[datetime, dict[str, float]]] = {}
        self._shards_seen: dict[str, _ShardSeen] = {}
        self._totals = DeliveryTotals()
        self._lock = asyncio.Lock()
        self.polls = 0
        self.sent = 0
        self.store_errors = 0

    # -- collecting ----------------------------------------------------------------------------
    def _exchange(self, exchange: str, stats: dict[str, Any] | None, now: datetime) -> ExchangeReading:
        self.metrics.set("arbflow_actor_up", 0.0 if stats is None else 1.0, actor=coordinator_name(exchange))
        if stats is None:
            return ExchangeReading(exchange, self._last_batch.get(exchange))
        idle = stats.get("idle_s")
        if idle is not None:
            self._last_batch[exchange] = now - timedelta(seconds=float(idle))
        down_s = self._export_source(exchange, stats.get("source_metrics") or {}, now)
        replay = stats.get("source") == "replay"
        lag: float | None = None
        if replay:
            lag = 0.0
        elif idle is not None and stats.get("batches") and stats.get("clock_ms"):
            # ``lag_s`` is now - source clock; less the idle time: how late the last batch arrived
            lag = max(0.0, float(stats.get("lag_s") or 0.0) - float(idle))
        return ExchangeReading(
            exchange,
            self._last_batch.get(exchange),
            lag,
            done=replay and bool(stats.get("done")),
            down_s=down_s,
        )

    def _export_source(self, exchange: str, m: Mapping[str, Any], now: datetime) -> float | None:
        """The live source's per-exchange figures (``CcxtMarketSource.metrics``); its down time."""
        if not m:
            return None
        down = m.get("down_s")
        if down is not None:
            self.metrics.set("arbflow_exchange_source_down_seconds", float(down), exchange=exchange)
        if "messages" not in m:  # a source that never started has nothing else to say
            return None if down is None else float(down)
        totals = {"messages": float(m.get("messages") or 0), "reconnects": float(m.get("reconnects") or 0)}
        for cls, n in (m.get("errors_by_class") or {}).items():
            totals[f"error:{cls}"] = float(n)
        seen = self._exchange_seen.get(exchange)
        self._exchange_seen[exchange] = (now, totals)
        before = seen[1] if seen else {}
        deltas = {}
        for key, cur in totals.items():
            prev = before.get(key, 0.0)
            deltas[key] = cur - prev if cur >= prev else cur  # a restarted source counts from 0
        self.metrics.inc("arbflow_exchange_messages", deltas["messages"], exchange=exchange)
        self.metrics.inc("arbflow_exchange_reconnects", deltas["reconnects"], exchange=exchange)
        for key, delta in deltas.items():
            if key.startswith("error:"):
                self.metrics.inc("arbflow_exchange_errors", delta, exchange=exchange, error=key[6:])
        if seen is not None and (elapsed := (now - seen[0]).total_seconds()) > 0:
            rate = deltas["messages"] / elapsed
            self.metrics.set("arbflow_exchange_messages_per_second", rate, exchange=exchange)
        breaker = BREAKER_VALUES.get(str(m.get("breaker")))
        if breaker is not None:
            self.metrics.set("arbflow_exchange_breaker_state", breaker, exchange=exchange)
        age = m.get("book_age_p99_s")
        if age is not None:
            self.metrics.set("arbflow_exchange_book_age_p99_seconds", float(age), exchange=exchange)
        self.metrics.set(
            "arbflow_exchange_dropped_symbols", float(m.get("dropped_symbols") or 0), exchange=exchange
        )
        return None if down is None else float(down)

    def _shard(self, name: str, stats: dict[str, Any] | None) -> DeliveryTotals | None:
        self.metrics.set("arbflow_actor_up", 0.0 if stats is None else 1.0, actor=name)
        if stats is None:
            return None
        self.metrics.set("arbflow_queue_pending", float(stats.get("pending", 0)), shard=name)
        now = _ShardSeen(
            int(stats.get("sent", 0)), int(stats.get("failed", 0)), int(stats.get("throttled", 0))
        )
        seen = self._shards_seen.get(name)
        self._shards_seen[name] = now
        deltas = []
        for field_, metric in (("sent", "sent"), ("failed", "failed"), ("throttled", "429")):
            cur, before = getattr(now, field_), (getattr(seen, field_) if seen else 0)
            delta = cur - before if cur >= before else cur  # a restarted shard counts from 0
            name_ = "arbflow_telegram_429" if metric == "429" else f"arbflow_deliveries_{metric}"
            self.metrics.inc(name_, delta, shard=name)
            deltas.append(delta if seen is not None else 0)  # the alert window starts now
        return DeliveryTotals(*deltas)

    async def collect(self, now: datetime) -> StatsSnapshot:
        coord_names = [coordinator_name(ex) for ex in self.exchanges]
        shard_names = [shard_name(i) for i in range(self.shards)]
        answers = await asyncio.gather(*(self.source.ask(n) for n in [*coord_names, *shard_names]))
        coords, shards = answers[: len(coord_names)], answers[len(coord_names) :]
        readings = tuple(self._exchange(ex, st, now) for ex, st in zip(self.exchanges, coords, strict=True))
        deltas = [d for name, st in zip(shard_names, shards, strict=True) if (d := self._shard(name, st))]
        deliveries: DeliveryTotals | None = None
        if deltas:
            t = self._totals
            self._totals = DeliveryTotals(
                t.sent + sum(d.sent for d in deltas),
                t.failed + sum(d.failed for d in deltas),
                t.throttled + sum(d.throttled for d in deltas),
            )
            deliveries = self._totals
        return StatsSnapshot(readings, deliveries)

    # -- one poll -----------------------------------------------------------------------------
    async def poll(self) -> dict[str, Any]:
        async with self._lock:
            now = self.clock()
            if self.state is None:
                try:
                    self.state, self.outbox = await self.store.load()
                except Exception as exc:  # Redis down at start: run from memory until it is back
                    self._store_error("load", exc)
                    self.state, self.outbox = AlertState(), []
            snapshot = await self.collect(now)
            ev = evaluate(snapshot, self.state, self.rules, now)
            self._export(ev)
            self.state = ev.state
            self.outbox.extend(OutboxItem(n) for n in ev.notices)
            await self._save(ev.notices)
            if self.outbox and await self._deliver():
                await self._save(())
            self.last = ev
            self.polls += 1
            return self.summary()

    def _export(self, ev: Evaluation) -> None:
        for r in ev.readings:
            if r.value is None:
                continue
            if r.kind is AlertKind.STALE_DATA:
                self.metrics.set("arbflow_market_data_age_seconds", r.value, exchange=r.subject)
            elif r.kind is AlertKind.INGEST_LAG:
                self.metrics.set("arbflow_ingest_lag_seconds", r.value, exchange=r.subject)
            elif r.kind is AlertKind.DELIVERY_FAILURES:
                self.metrics.set("arbflow_delivery_failure_rate", r.value)
        for kind, n in open_by_kind(ev.state).items():
            self.metrics.set("arbflow_alert_incidents_open", float(n), kind=kind.value)

    async def _save(self, notices: Sequence[AlertNotice]) -> None:
        assert self.state is not None
        try:
            await self.store.save(self.state, self.outbox)
            await self.store.record(notices)
        except Exception as exc:
            self._store_error("save", exc)

    def _store_error(self, what: str, exc: Exception) -> None:
        self.store_errors += 1
        log.warning("monitor: cannot %s the alert state: %r", what, exc)

    async def _deliver(self) -> bool:
        """Send what the outbox holds to every SuperAdmin still missing it; True if it changed."""
        from notify import texts

        changed = False
        keep: list[OutboxItem] = []
        for item in self.outbox:
            if self.sender is not None:
                text = texts.alert_notice(item.notice, window_s=self.rules.window_s)
                for chat in self.admins:
                    if chat in item.done:
                        continue
                    verdict = await self.sender.send(chat, text)
                    if verdict is not SendVerdict.RETRY:
                        item.done.add(chat)
                        changed = True
                        self.sent += int(verdict is SendVerdict.SENT)
            item.attempts += 1
            missing = set(self.admins) - item.done
            if missing and item.attempts < MAX_SEND_ATTEMPTS and self.sender is not None:
                keep.append(item)
                continue
            if missing:
                log.warning("monitor: alert %s not delivered to %s", item.notice.incident.id, sorted(missing))
            changed = True
        self.outbox = keep
        return changed

    def summary(self) -> dict[str, Any]:
        state = self.state or AlertState()
        ev = self.last
        return {
            "polls": self.polls,
            "open": {k: v.to_dict() for k, v in state.open.items()},
            "outbox": len(self.outbox),
            "sent": self.sent,
            "store_errors": self.store_errors,
            "readings": [
                {"kind": r.kind.value, "subject": r.subject, "value": r.value, "threshold": r.threshold}
                for r in (ev.readings if ev else [])
            ],
        }


# -- the actor -------------------------------------------------------------------------------


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class AlertMonitorActor:
    """``alerts:monitor``: an :class:`AlertMonitor` polling every ``interval_s`` from construction."""

    def __init__(
        self,
        settings: Settings,
        interval_s: float = DEFAULT_INTERVAL_S,
        rules: AlertRules | None = None,
        exchanges: list[str] | None = None,
        shards: int | None = None,
        key_prefix: str = "",
    ) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.rules = rules
        self.exchanges = exchanges
        self.shards = shards
        self.key_prefix = key_prefix
        self.impl: AlertMonitor | None = None
        self.errors = 0
        self._sender: TelegramAlertSender | None = None
        self.sessions_swept = 0
        self._last_sweep = float("-inf")
        self._sessions: Any = None
        self._emit: Any = None
        self.tiers_expired = 0
        self._payments: Any = None
        self._tier_sender: TelegramAlertSender | None = None
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._loop())

    def _hosted(self) -> dict[str, tuple[str, str]]:
        """The market-data coordinators that live in ``md:host:NN`` actors (see ``coordinator_layout``)."""
        from actors.market_data import coordinator_layout

        s = self.settings
        keys = list(self.exchanges or (["replay"] if s.market.source == "replay" else s.market.exchanges))
        return {
            coordinator_name(key): (actor, key)
            for key, actor in coordinator_layout(s, keys).items()
            if actor != coordinator_name(key)
        }

    async def _ensure(self) -> AlertMonitor:
        if self.impl is None:
            from actors.opportunities import redis_client

            sender = None
            if self.settings.telegram.token and self.settings.superadmin_ids:
                from notify.client import build_bot

                sender = self._sender = TelegramAlertSender(build_bot(self.settings))
            self.impl = AlertMonitor(
                self.settings,
                source=RayStatsSource(self.settings.ray.namespace, hosted=self._hosted()),
                store=RedisAlertStore(redis_client(self.settings.redis.url), self.key_prefix),
                sender=sender,
                metrics=MetricsExporter(),
                rules=self.rules,
                exchanges=self.exchanges,
                shards=self.shards,
            )
        return self.impl

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await (await self._ensure()).poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("monitor: poll failed")
            if started - self._last_sweep >= SESSION_SWEEP_S:
                self._last_sweep = started
                try:
                    await self.sweep_sessions()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the next sweep catches up
                    log.warning("monitor: session sweep failed: %r", exc)
                try:
                    await self.sweep_tiers()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the next sweep catches up
                    log.warning("monitor: paid tier sweep failed: %r", exc)
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def sweep_sessions(self) -> int:
        """End every session that expired (``RedisSessionStore.sweep``) and write one
        ``expired`` event each to ``session_events``; returns how many ended."""
        if self._sessions is None:
            from actors.opportunities import redis_client
            from state.sessions import RedisSessionStore

            self._sessions = RedisSessionStore(redis_client(self.settings.redis.url))  # the bot's keys
        self._emitter()
        from core.sessions import end_event
        from state.sessions import SESSION_EVENTS_DATASET, session_events_table

        ended = await self._sessions.sweep(datetime.now(UTC))
        if ended:
            await self._emitter()(SESSION_EVENTS_DATASET, session_events_table([end_event(s) for s in ended]))
            self.sessions_swept += len(ended)
        return len(ended)

    def _emitter(self) -> Any:
        if self._emit is None:
            from actors.lazy import sink_emitter

            self._emit = sink_emitter(self.settings, name="alerts:monitor")
        return self._emit

    async def sweep_tiers(self) -> int:
        """Return every user whose tier paid in Telegram Stars ended to Free, with a notice
        through the bot and ``expired`` rows (``actors.tiers.expire_paid_tiers``); how many."""
        from actors.tiers import expire_paid_tiers
        from state.payments import RedisPaymentStore

        if self._payments is None:
            from actors.opportunities import redis_client
            from state.users import RedisUserStore

            self._payments = RedisPaymentStore(RedisUserStore(redis_client(self.settings.redis.url)))
        if self._tier_sender is None and self.settings.telegram.token:
            from notify.client import build_bot

            self._tier_sender = TelegramAlertSender(build_bot(self.settings))
        sender = self._tier_sender

        async def notify(chat_id: int, text: str) -> None:
            assert sender is not None
            for attempt in range(3):  # 429 / 5xx / network: a few tries, then it is logged
                verdict = await sender.send(chat_id, text)
                if verdict is not SendVerdict.RETRY:
                    return
                await asyncio.sleep(1.0 + attempt)

        n = await expire_paid_tiers(
            self._payments, self._emitter(), notify if sender is not None else None, datetime.now(UTC)
        )
        self.tiers_expired += n
        return n

    async def poll(self) -> dict[str, Any]:
        """One poll now (besides the loop's)."""
        return await (await self._ensure()).poll()

    async def status(self) -> dict[str, Any]:
        impl = await self._ensure()
        return {
            **impl.summary(),
            "running": self._task is not None and not self._task.done(),
            "errors": self.errors,
            "sessions_swept": self.sessions_swept,
            "tiers_expired": self.tiers_expired,
        }

    async def metrics(self) -> dict[str, dict[str, float]]:
        """What was exported, as ``{metric: {"tag=value": value}}`` (counters as totals)."""
        return (await self._ensure()).metrics.snapshot()

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
        if self._tier_sender is not None:
            await self._tier_sender.close()
            self._tier_sender = None
        if self._emit is not None:
            from actors.lazy import drain_emitter

            await drain_emitter(self._emit)
        return await self.status()


def get_monitor(settings: Settings, **options: Any) -> Any:
    """Start (or find) ``alerts:monitor``; it polls from the start.

    ``options``: ``interval_s``, ``rules`` (:class:`core.alerts.AlertRules`), ``exchanges``,
    ``shards``, ``key_prefix`` (of its Redis keys), and Ray actor options (``lifetime``,
    ``resources``, …).
    """
    init = {
        k: options.pop(k)
        for k in ("interval_s", "rules", "exchanges", "shards", "key_prefix")
        if k in options
    }
    return AlertMonitorActor.options(  # type: ignore[attr-defined]
        name=MONITOR_NAME, namespace=settings.ray.namespace, get_if_exists=True, **options
    ).remote(settings, **init)


__all__ = [
    "COUNTERS",
    "GAUGES",
    "MONITOR_NAME",
    "AlertMonitor",
    "AlertMonitorActor",
    "AlertSender",
    "AlertStore",
    "MetricsExporter",
    "OutboxItem",
    "RayStatsSource",
    "RedisAlertStore",
    "SendVerdict",
    "StatsSource",
    "TelegramAlertSender",
    "get_monitor",
]
