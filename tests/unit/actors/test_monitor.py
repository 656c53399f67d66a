"""The alert monitor's plain class with fake actors, store and sender (no Ray, no Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.monitor import (
    AlertMonitor,
    MetricsExporter,
    OutboxItem,
    SendVerdict,
)
from core.alerts import AlertKind, AlertNotice, AlertRules, AlertState, Incident, NoticeEvent
from core.settings import Settings
from notify import texts

T0 = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RULES = AlertRules(stale_after_s=10, max_lag_s=5, clear_after_s=5, window_s=60, min_attempts=5)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, s: float) -> None:
        self.now += timedelta(seconds=s)


class FakeActors:
    """Stats by actor name; a name absent from ``stats`` does not answer."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, Any]] = {}

    async def ask(self, name: str, method: str = "stats") -> dict[str, Any] | None:
        st = self.stats.get(name)
        return None if st is None else dict(st)


class MemoryStore:
    def __init__(self) -> None:
        self.state = AlertState()
        self.outbox: list[dict[str, Any]] = []
        self.log: list[AlertNotice] = []

    async def load(self) -> tuple[AlertState, list[OutboxItem]]:
        return AlertState.from_json(self.state.to_json()), [OutboxItem.from_dict(d) for d in self.outbox]

    async def save(self, state: AlertState, outbox: Sequence[OutboxItem]) -> None:
        self.state = AlertState.from_json(state.to_json())
        self.outbox = [i.to_dict() for i in outbox]

    async def record(self, notices: Sequence[AlertNotice]) -> None:
        self.log.extend(notices)


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.verdicts: dict[int, SendVerdict] = {}

    async def send(self, chat_id: int, text: str) -> SendVerdict:
        verdict = self.verdicts.get(chat_id, SendVerdict.SENT)
        if verdict is SendVerdict.SENT:
            self.sent.append((chat_id, text))
        return verdict


def coord(clock: Clock, idle_s: float, lag_s: float = 0.2) -> dict[str, Any]:
    clock_ms = (clock.now.timestamp() - idle_s - lag_s) * 1000
    return {"source": "sim", "batches": 10, "clock_ms": clock_ms, "idle_s": idle_s, "lag_s": lag_s + idle_s}


def shard(sent: int, failed: int = 0, throttled: int = 0, pending: int = 0) -> dict[str, Any]:
    return {"sent": sent, "failed": failed, "throttled": throttled, "pending": pending}


def make(
    actors: FakeActors, store: MemoryStore, sender: FakeSender, clock: Clock, admins: Sequence[int] = (1, 2)
) -> AlertMonitor:
    return AlertMonitor(
        Settings(),
        source=actors,
        store=store,
        sender=sender,
        metrics=MetricsExporter(use_ray=False),
        rules=RULES,
        exchanges=["binance", "okx"],
        shards=2,
        admins=admins,
        clock=clock,
    )


async def test_a_stale_exchange_is_announced_once_to_each_admin_and_resolved_once() -> None:
    actors, store, sender, clock = FakeActors(), MemoryStore(), FakeSender(), Clock()
    monitor = make(actors, store, sender, clock)
    idle = 0.0
    for _ in range(12):  # okx stops at the start; binance keeps going
        actors.stats = {"md:binance": coord(clock, 0.5), "md:okx": coord(clock, idle)}
        await monitor.poll()
        clock.tick(2)
        idle += 2
    assert [c for c, _ in sender.sent] == [1, 2]
    assert "stale market data" in sender.sent[0][1] and "okx" in sender.sent[0][1]
    assert list(store.state.open) == ["stale_data:okx"]
    exported = monitor.metrics.snapshot()
    assert exported["arbflow_market_data_age_seconds"]["exchange=okx"] == 22.0
    assert exported["arbflow_market_data_age_seconds"]["exchange=binance"] == 0.5
    assert exported["arbflow_ingest_lag_seconds"]["exchange=okx"] == pytest.approx(
        0.2
    )  # lag at its last batch
    assert exported["arbflow_alert_incidents_open"]["kind=stale_data"] == 1
    assert exported["arbflow_actor_up"]["actor=uq:000"] == 0  # no shard: tolerated

    for _ in range(5):  # okx is back
        actors.stats = {"md:binance": coord(clock, 0.5), "md:okx": coord(clock, 0.5)}
        await monitor.poll()
        clock.tick(2)
    assert len(sender.sent) == 4
    assert all("Resolved" in t for _, t in sender.sent[2:])
    assert store.state.open == {}
    assert [n.event for n in store.log] == [NoticeEvent.OPENED, NoticeEvent.RESOLVED]


async def test_a_restarted_monitor_does_not_announce_an_open_incident_again() -> None:
    actors, store, sender, clock = FakeActors(), MemoryStore(), FakeSender(), Clock()
    actors.stats = {"md:binance": coord(clock, 0.5)}  # okx's coordinator is missing
    first = make(actors, store, sender, clock)
    await first.poll()
    clock.tick(11)
    await first.poll()
    assert len(sender.sent) == 2
    second = make(actors, store, sender, clock)  # Ray restarted the actor
    for _ in range(3):
        clock.tick(2)
        await second.poll()
    assert len(sender.sent) == 2
    assert list(store.state.open) == ["stale_data:okx"]


async def test_a_notice_that_could_not_reach_an_admin_is_retried_at_the_next_poll() -> None:
    actors, store, sender, clock = FakeActors(), MemoryStore(), FakeSender(), Clock()
    sender.verdicts = {2: SendVerdict.RETRY, 3: SendVerdict.GAVE_UP}
    monitor = make(actors, store, sender, clock, admins=(1, 2, 3))
    actors.stats = {"md:binance": coord(clock, 0.5), "md:okx": coord(clock, 0.5)}
    await monitor.poll()
    clock.tick(11)
    actors.stats = {"md:binance": coord(clock, 0.5), "md:okx": coord(clock, 11.5)}
    await monitor.poll()
    assert [c for c, _ in sender.sent] == [1]
    assert len(store.outbox) == 1 and store.outbox[0]["done"] == [1, 3]
    sender.verdicts = {}
    clock.tick(1)
    await monitor.poll()
    assert [c for c, _ in sender.sent] == [1, 2]  # 1 not again, 3 gave up (blocked the bot)
    assert store.outbox == []


async def test_delivery_counters_export_per_shard_and_429s_open_an_incident() -> None:
    actors, store, sender, clock = FakeActors(), MemoryStore(), FakeSender(), Clock()
    monitor = make(actors, store, sender, clock)
    actors.stats = {"uq:000": shard(10, 1, 0, pending=4), "uq:001": shard(5)}
    await monitor.poll()  # first sight: exported, but the alert window starts here
    assert sender.sent == []
    clock.tick(5)
    actors.stats = {"uq:000": shard(12, 1, 2), "uq:001": shard(3)}  # uq:001 restarted
    actors.stats["uq:000"]["loop"] = {"lag_p50_ms": 2.0, "lag_p99_ms": 250.0}
    await monitor.poll()
    exported = monitor.metrics.snapshot()
    # the shard's loop lag, where the shard reports one (uq:001 is of an older release here)
    assert exported["arbflow_queue_loop_lag_p99_seconds"] == {"shard=uq:000": 0.25}
    assert exported["arbflow_deliveries_sent"] == {"shard=uq:000": 12.0, "shard=uq:001": 8.0}
    assert exported["arbflow_deliveries_failed"] == {"shard=uq:000": 1.0}
    assert exported["arbflow_telegram_429"] == {"shard=uq:000": 2.0}
    assert exported["arbflow_queue_pending"]["shard=uq:000"] == 0.0
    assert list(store.state.open) == ["rate_limited:telegram"]
    assert len(sender.sent) == 2 and "429" in sender.sent[0][1]


def test_alert_texts_are_escaped_html_with_the_facts() -> None:
    inc = Incident(AlertKind.STALE_DATA, "<okx>", T0, 30.0, 42.0, 95.0, 3.0)
    opened = texts.alert_notice(AlertNotice(NoticeEvent.OPENED, inc, T0))
    assert opened.startswith("🚨 <b>Alert: stale market data · <code>&lt;okx&gt;</code></b>")
    assert "No market data for 42 s (threshold 30 s)." in opened
    resolved = texts.alert_notice(AlertNotice(NoticeEvent.RESOLVED, inc, T0 + timedelta(minutes=3)))
    assert "Lasted 3m; worst 95 s, now 3.0 s." in resolved
    rate = Incident(AlertKind.DELIVERY_FAILURES, "telegram", T0, 0.2, 0.35, 0.35, 0.35)
    assert "35% of pushes failed in the last 5m (threshold 20%)" in texts.alert_notice(
        AlertNotice(NoticeEvent.OPENED, rate, T0), window_s=300
    )
