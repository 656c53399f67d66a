"""Each emulator fault, and the live source recovering from it without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.sources.factory import build_source
from pipeline.sources.live import CcxtMarketSource
from serve.standins.exchanges import Exchanges, FaultSpec
from tests.integration.exchanges.conftest import live_settings, pro_client

pytestmark = pytest.mark.timeout(120)


class Collector:
    """Runs a live source in the background; rows are kept with their arrival time."""

    def __init__(self, source: Any) -> None:
        self.source: CcxtMarketSource = source
        self.rows: list[tuple[float, str, dict[str, Any]]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.source.batches():
            now = time.monotonic()
            for dataset in ("quotes", "order_books", "funding_rates"):
                self.rows += [(now, dataset, r) for r in batch.get(dataset).to_pylist()]

    def since(self, t: float, dataset: str = "order_books") -> list[dict[str, Any]]:
        return [r for at, d, r in self.rows if at >= t and d == dataset]

    async def wait(self, pred: Callable[[], bool], within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not pred():
            assert not self.task.done(), self.task.exception()
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.1)

    async def books_after(
        self, t: float, n: int = 3, within: float = 30.0, symbol: str | None = None
    ) -> None:
        def enough() -> bool:
            rows = self.since(t)
            return len([r for r in rows if symbol is None or r["symbol"] == symbol]) >= n

        await self.wait(enough, within)

    async def close(self) -> None:
        await self.source.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def start(ex: Exchanges, name: str, **market: Any) -> Collector:
    collector = Collector(build_source(live_settings(ex, **market), name, "live"))
    try:
        await collector.books_after(0.0, n=5)
    except BaseException:
        await collector.close()
        raise
    return collector


@pytest.mark.parametrize("name", ["binance", "bybit", "okx"])
async def test_websocket_disconnect(emulators: Exchanges, name: str) -> None:
    c = await start(emulators, name)
    try:
        connections = emulators.emulators[name].stats["ws_connections"]
        emulators.fault(name, "disconnect")
        await c.wait(lambda: emulators.emulators[name].stats["ws_connections"] > connections)  # reconnected
        t = time.monotonic()
        await c.books_after(t, n=5)
        assert c.source.stats["restarts"] == 0  # ccxt's own reconnect, inside the retry loop
    finally:
        await c.close()


@pytest.mark.parametrize("name", ["binance", "okx"])
async def test_sequence_gap_resyncs_the_book(emulators: Exchanges, name: str) -> None:
    c = await start(emulators, name, symbols=["BTC/USDT", "BTC/USDT:USDT"])
    try:
        errors = c.source.stats["errors"]
        emulators.fault(name, "gap")  # every symbol's next update skips 5 ids
        t = time.monotonic()
        await c.wait(lambda: c.source.stats["errors"] > errors)  # ccxt.pro saw the hole
        for symbol in ("BTC/USDT", "BTC/USDT:USDT"):
            await c.books_after(t, n=3, symbol=symbol)
        assert c.source.stats["refused"] == 0 and not c.source.rest_books
    finally:
        await c.close()


async def test_stalled_stream_comes_back(emulators: Exchanges) -> None:
    c = await start(emulators, "bybit")
    try:
        emulators.fault("bybit", "stall", duration_s=2.0)
        t = time.monotonic()
        await c.books_after(t + 2.0, n=5)
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("kind", "arg"), [("rate_limit", "1"), ("ban", "418"), ("ban", "403"), ("maintenance", None)]
)
async def test_http_refusals_are_waited_out(emulators: Exchanges, kind: str, arg: str | None) -> None:
    c = await start(emulators, "binance", websockets=False, poll_interval_s=0.3, max_backoff_s=2.0)
    try:
        retries = c.source.stats["retries"]
        emulators.fault("binance", kind, arg, duration_s=2.0)
        t = time.monotonic()
        await c.wait(lambda: c.source.stats["retries"] > retries)
        await c.books_after(t + 2.0, n=5)
        assert c.source.symbols  # nothing dropped for a transport problem
        assert emulators.emulators["binance"].stats["rejected"] > 0
    finally:
        await c.close()


async def test_maintenance_drops_websockets_and_they_come_back(emulators: Exchanges) -> None:
    c = await start(emulators, "okx", max_backoff_s=1.0)
    try:
        emulators.fault("okx", "maintenance", duration_s=2.0)
        t = time.monotonic()
        await c.books_after(t + 2.0, n=5)
    finally:
        await c.close()


async def test_a_delisted_symbol_is_dropped_and_the_rest_goes_on(emulators: Exchanges) -> None:
    c = await start(emulators, "bybit", websockets=False, poll_interval_s=0.3)
    try:
        emulators.fault("bybit", "delist", "SOL/USDT")
        t = time.monotonic()
        await c.wait(lambda: "SOL/USDT" not in c.source.symbols)
        await c.books_after(t, n=5, symbol="BTC/USDT")
        assert c.source.stats["dropped_symbols"] == 1
        assert c.source.breaker.times_opened == 0
    finally:
        await c.close()


async def test_clock_skew_shows_in_exchange_times_and_data_flows(emulators: Exchanges) -> None:
    c = await start(emulators, "okx", symbols=["BTC/USDT"])
    try:
        emulators.fault("okx", "skew", "5000")
        t = time.monotonic()
        await c.books_after(t + 0.5, n=5)
        lags = [(r["ts"] - r["recv_ts"]).total_seconds() for r in c.since(t + 0.5)]
        assert max(lags) > 3.0  # the exchange's clock runs 5 s ahead
    finally:
        await c.close()


@pytest.mark.parametrize("name", ["binance", "bybit", "okx"])
async def test_withdrawals_close_in_the_currency_list(emulators: Exchanges, name: str) -> None:
    keys = {"apiKey": "read-only", "secret": "s3cret", "password": "pass"}
    client = pro_client(emulators, name, **keys)
    try:
        before = (await client.fetch_currencies())["BTC"]
        assert before["withdraw"] is True and before["networks"]
        assert all(n["fee"] is not None and n["fee"] > 0 for n in before["networks"].values())
        emulators.fault(name, "withdrawals", "BTC")
        after = (await client.fetch_currencies())["BTC"]
        assert after["withdraw"] is False and after["deposit"] is True
        assert (await client.fetch_currencies())["USDT"]["withdraw"] is True
    finally:
        await client.close()


def test_fault_specs_from_the_command_line() -> None:
    assert FaultSpec.parse("bybit:gap@10") == FaultSpec("gap", "bybit", None, 10.0, None)
    assert FaultSpec.parse("rate_limit=2@5+3") == FaultSpec("rate_limit", None, "2", 5.0, 3.0)
    assert FaultSpec.parse("okx:delist=SOL/USDT:USDT@1") == FaultSpec(
        "delist", "okx", "SOL/USDT:USDT", 1.0, None
    )
    with pytest.raises(ValueError, match="unknown fault"):
        FaultSpec.parse("explode@1")
    with pytest.raises(ValueError, match="unknown exchange"):
        FaultSpec.parse("kraken:gap")


async def test_a_quiet_book_is_confirmed_by_its_live_stream(emulators: Exchanges) -> None:
    """No book message for 3 s but the connection is up: rows keep coming, stamped with the
    confirmation time (main: nothing until the next change, so the book looked stale)."""
    c = await start(emulators, "bybit", freshness_s=1.0, symbols=["BTC/USDT"])
    try:
        emulators.fault("bybit", "stall", duration_s=3.0)
        t = time.monotonic()
        await asyncio.sleep(2.5)
        during = c.since(t + 0.6)
        assert during and c.source.stats["confirmations"] > 0
        newest = max(r["ts"] for r in during)
        assert (max(r["recv_ts"] for r in during) - newest).total_seconds() < 1.5
    finally:
        await c.close()


async def test_okx_funding_rates_come_by_websocket(emulators: Exchanges) -> None:
    c = await start(emulators, "okx", symbols=["BTC/USDT:USDT", "ETH/USDT:USDT"])
    try:
        assert c.source.ws_funding
        await c.wait(lambda: len(c.since(0.0, "funding_rates")) >= 2)
        assert {r["symbol"] for r in c.since(0.0, "funding_rates")} <= {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    finally:
        await c.close()
