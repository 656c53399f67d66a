"""Per-exchange figures of the live source in the monitor's metrics, and the ``source_down`` alert."""

from __future__ import annotations

from typing import Any

from actors.market_data import UnstartableSource, source_problem
from core.errors import ConfigError
from tests.unit.actors.test_monitor import Clock, FakeActors, FakeSender, MemoryStore, coord, make


def live(clock: Clock, messages: int, **metrics: Any) -> dict[str, Any]:
    values = {
        "state": "running", "start_error": None, "down_s": 0.0, "messages": messages, "reconnects": 0,
        "errors_by_class": {}, "breaker": "closed", "book_age_p99_s": 0.4, "dropped_symbols": 0,
    }  # fmt: skip
    values.update(metrics)
    return {**coord(clock, 0.5), "source": "live", "source_metrics": values}


async def test_exchange_figures_are_exported_per_exchange() -> None:
    actors, store, sender, clock = FakeActors(), MemoryStore(), FakeSender(), Clock()
    monitor = make(actors, store, sender, clock)
    actors.stats = {"md:binance": live(clock, 100), "md:okx": live(clock, 50)}
    await monitor.poll()
    clock.tick(2)
    actors.stats = {
        "md:binance": live(clock, 500, reconnects=1, errors_by_class={"ExchangeUnavailable": 3}),
        "md:okx": live(clock, 10, breaker="open", book_age_p99_s=7.5, dropped_symbols=2),  # restarted
    }
    await monitor.poll()
    m = monitor.metrics.snapshot()
    assert m["arbflow_exchange_messages_per_second"]["exchange=binance"] == 200.0
    assert m["arbflow_exchange_messages"]["exchange=binance"] == 500.0
    assert m["arbflow_exchange_messages"]["exchange=okx"] == 60.0  # 50, then 10 after the restart
    assert m["arbflow_exchange_reconnects"]["exchange=binance"] == 1.0
    assert m["arbflow_exchange_errors"]["error=ExchangeUnavailable,exchange=binance"] == 3.0
    assert m["arbflow_exchange_breaker_state"] == {"exchange=binance": 0.0, "exchange=okx": 1.0}
    assert m["arbflow_exchange_book_age_p99_seconds"]["exchange=okx"] == 7.5
    assert m["arbflow_exchange_dropped_symbols"]["exchange=okx"] == 2.0
    assert store.state.open == {}


async def test_a_source_that_cannot_start_alerts_once_and_resolves_when_it_runs() -> None:
    actors, store, sender, clock = FakeActors(), MemoryStore(), FakeSender(), Clock()
    monitor = make(actors, store, sender, clock)
    down = {"state": "down", "start_error": "ExchangeUnavailable: okx 503", "down_s": 3.0}
    for _ in range(3):
        actors.stats = {
            "md:binance": live(clock, 100),
            "md:okx": {**coord(clock, 0.5), "source_metrics": down},
        }
        await monitor.poll()
        clock.tick(2)
    assert list(store.state.open) == ["source_down:okx"]
    assert [c for c, _ in sender.sent] == [1, 2]
    assert "market source cannot start" in sender.sent[0][1] and "okx" in sender.sent[0][1]
    assert source_problem(actors.stats["md:okx"]) == "cannot start: ExchangeUnavailable: okx 503"
    for _ in range(5):  # retried, and it runs
        actors.stats = {"md:binance": live(clock, 100), "md:okx": live(clock, 100)}
        await monitor.poll()
        clock.tick(2)
    assert store.state.open == {}
    assert "Resolved" in sender.sent[-1][1]
    assert source_problem(actors.stats["md:okx"]) is None


def test_an_unstartable_source_says_why() -> None:
    source = UnstartableSource(ConfigError("'binanse' is not a ccxt exchange id"))
    stats = {"failed": None, "source_metrics": source.metrics()}
    assert source_problem(stats) == "cannot start: ConfigError: 'binanse' is not a ccxt exchange id"
    assert source_problem(None) == "the coordinator does not answer"
