"""The alert monitor's plain class: one :meth:`AlertMonitor.poll` collects the actors'
figures, exports them, evaluates the rules (``core.alerts``), persists the state and
the outbox, and notifies the SuperAdmins."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.market_data import coordinator_name
from actors.monitor.metrics import BREAKER_VALUES, MetricsExporter
from actors.monitor.ports import AlertSender, AlertStore, OutboxItem, SendVerdict, StatsSource
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

MAX_SEND_ATTEMPTS = 50
"""Polls a notice is retried for (Telegram 429/5xx, network) before it is dropped."""


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
        lag_ms = (stats.get("loop") or {}).get("lag_p99_ms")  # a shard of an older release: none
        if lag_ms is not None:
            self.metrics.set("arbflow_queue_loop_lag_p99_seconds", float(lag_ms) / 1000, shard=name)
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
