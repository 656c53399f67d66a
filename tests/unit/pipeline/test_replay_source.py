"""ReplayMarketSource: NDJSON replay, batching by replay time, malformed lines, pacing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError
from core.ports import MarketSource
from pipeline.schemas import MarketBatch
from pipeline.sources.replay import ReplayMarketSource

T0 = 1_706_803_900_000


def _book(symbol: str, px: float, ts: int | None) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "bids": [[px, 1.0], [px - 1, 2.0]],
        "asks": [[px + 1, 1.5, 0]],
        "timestamp": ts,
        "datetime": None,
        "nonce": None,
    }


def _line(ts: int, exchange: str, kind: str, data: Any) -> str:
    return json.dumps({"ts": ts, "exchange": exchange, "kind": kind, "data": data})


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def replay_file(tmp_path: Path, recorded: Any) -> Path:
    """Records built from recorded ccxt results, plus malformed lines."""
    bybit_book = recorded.cases("bybit", "fetchOrderBook")[0]["parsedResponse"]
    okx_ticker = recorded.cases("okx", "fetchTicker")[0]["parsedResponse"]
    funding = dict(recorded.cases("bybit", "fetchFundingRate")[0]["parsedResponse"])
    lines = [
        _line(T0, "bybit", "order_book", bybit_book),  # 1
        _line(T0 + 10, "okx", "ticker", okx_ticker),  # 2
        "{not json",  # 3
        _line(T0 + 20, "binance", "trade", {"symbol": "BTC/USDT"}),  # 4: unknown kind
        _line(T0 + 30, "binance", "order_book", _book("BTC/USDT", 100.0, None)),  # 5
        _line(T0 + 40, "binance", "order_book", {"symbol": "BTC/USDT", "bids": 7, "asks": []}),  # 6
        "",  # 7: blank
        _line(T0 + 150, "bybit", "funding_rate", funding),  # 8: next window
        _line(T0 + 160, "binance", "ticker", {"symbol": "BTC/USDT", "bid": 99.5, "ask": 100.5}),  # 9
        json.dumps({"ts": "soon", "exchange": "okx", "kind": "ticker", "data": {}}),  # 10
        _line(T0 + 400, "okx", "order_book", _book("BTC/USDT:USDT", 50.0, T0 + 399)),  # 11
    ]
    return _write(tmp_path / "replay.ndjson", lines)


async def _collect(source: ReplayMarketSource) -> list[MarketBatch]:
    return [batch async for batch in source.batches()]


async def test_replay_batches_clock_and_malformed_lines(
    replay_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = ReplayMarketSource(replay_file)
    assert isinstance(source, MarketSource)
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.replay"):
        batches = await _collect(source)
    # windows of 100 ms of replay time: [T0, T0+40], [T0+150, T0+160], [T0+400]
    assert [b.clock_ms for b in batches] == [T0 + 30, T0 + 160, T0 + 400]
    assert [b.rows for b in batches] == [3, 2, 1]

    first = batches[0]
    books = first.get("order_books").to_pylist()
    assert [r["exchange"] for r in books] == ["bybit", "binance"]
    assert books[0]["bid_px"] == [42544.7, 42544.5]
    # exchange time kept; recv_ts is the record's replay time
    assert int(books[0]["ts"].timestamp() * 1000) == 1706803948569
    assert int(books[0]["recv_ts"].timestamp() * 1000) == T0
    # no exchange time in the structure: ts falls back to the record ts
    assert int(books[1]["ts"].timestamp() * 1000) == T0 + 30
    assert books[1]["ask_sz"] == [1.5]
    quotes = first.get("quotes").to_pylist()
    assert quotes[0]["exchange"] == "okx" and quotes[0]["bid"] == 73384.7

    funding = batches[1].get("funding_rates").to_pylist()
    assert funding[0]["funding_rate"] == 0.0001 and funding[0]["interval_hours"] == 8.0
    assert batches[2].get("order_books").to_pylist()[0]["market_type"] == "swap"

    assert source.stats["malformed"] == 4
    assert source.stats["records"] == 6
    assert source.stats["blank"] == 1
    assert source.stats["lines"] == 11
    assert source.stats["batches"] == 3 and source.stats["rows"] == 6
    assert [n for n, _ in source.errors] == [3, 4, 6, 10]
    reasons = dict(source.errors)
    assert "not JSON" in reasons[3]
    assert "unknown kind 'trade'" in reasons[4]
    assert "bids is not a list" in reasons[6]
    assert "ts is not an epoch-ms integer" in reasons[10]
    for number in (3, 4, 6, 10):
        assert sum(f":{number}: malformed" in r.getMessage() for r in caplog.records) == 1
    assert source.clock_ms == T0 + 400


async def test_replay_filters_exchanges(replay_file: Path) -> None:
    source = ReplayMarketSource(replay_file, exchanges=["okx"])
    batches = await _collect(source)
    exchanges = {row["exchange"] for b in batches for name in b.tables for row in b.get(name).to_pylist()}
    assert exchanges == {"okx"}
    assert sum(b.rows for b in batches) == 2
    assert source.stats["filtered"] == 5


async def test_replay_cuts_batches_by_record_count(tmp_path: Path) -> None:
    lines = [
        _line(T0, "okx", "ticker", {"symbol": "BTC/USDT", "bid": float(i), "ask": i + 1.0}) for i in range(7)
    ]
    source = ReplayMarketSource(_write(tmp_path / "r.ndjson", lines), batch_max_records=3)
    batches = await _collect(source)
    assert [b.rows for b in batches] == [3, 3, 1]
    assert all(b.clock_ms == T0 for b in batches)


async def test_replay_clock_never_goes_backwards(tmp_path: Path) -> None:
    lines = [
        _line(T0 + 500, "okx", "ticker", {"symbol": "A/B", "bid": 1.0}),
        _line(T0 + 100, "okx", "ticker", {"symbol": "A/B", "bid": 2.0}),
        _line(T0 + 900, "okx", "ticker", {"symbol": "A/B", "bid": 3.0}),
    ]
    source = ReplayMarketSource(_write(tmp_path / "r.ndjson", lines), batch_window_ms=0)
    clocks = [b.clock_ms for b in await _collect(source)]
    assert clocks == sorted(clocks)
    assert source.stats["out_of_order"] == 1


async def test_replay_paces_at_speed(tmp_path: Path) -> None:
    lines = [_line(T0 + i * 1000, "okx", "ticker", {"symbol": "A/B", "bid": 1.0}) for i in range(3)]
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    source = ReplayMarketSource(
        _write(tmp_path / "r.ndjson", lines), speed=2.0, sleep=fake_sleep, monotonic=lambda: now[0]
    )
    batches = await _collect(source)
    assert len(batches) == 3
    # 1 s of replay time between records at 2x speed: 0.5 s of waiting each
    assert slept == pytest.approx([0.5, 0.5])


async def test_replay_streams_a_large_file_without_losing_records(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(20_000):
            fh.write(_line(T0 + i, "bybit", "ticker", {"symbol": "BTC/USDT", "bid": 1.0, "ask": 2.0}) + "\n")
            if i == 777:
                fh.write('{"ts": 1, "exchange": "bybit"\n')
    source = ReplayMarketSource(path)
    total = 0
    biggest = 0
    async for batch in source.batches():
        total += batch.rows
        biggest = max(biggest, batch.rows)
    assert total == 20_000
    assert biggest <= 100  # 100 ms windows at one record per ms
    assert source.stats["malformed"] == 1 and source.errors[0][0] == 779


async def test_replay_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await _collect(ReplayMarketSource(tmp_path / "nope.ndjson"))
    with pytest.raises(ConfigError):
        ReplayMarketSource(tmp_path / "x", speed=-1)


async def test_replay_close_stops_early(tmp_path: Path) -> None:
    lines = [_line(T0 + i * 1000, "okx", "ticker", {"symbol": "A/B", "bid": 1.0}) for i in range(5)]
    source = ReplayMarketSource(_write(tmp_path / "r.ndjson", lines))
    seen = 0
    async for _ in source.batches():
        seen += 1
        await source.close()
    assert seen == 1
