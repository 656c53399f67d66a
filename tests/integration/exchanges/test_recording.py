"""Record -> replay: what the live source received from the emulators, replayed, gives the same rows.

The live sources of binance, bybit and okx run against the emulators (real ccxt /
ccxt.pro) with a recorder attached; the batches they cut go to one lake through the
lake's own sink (what the live pipeline writes). The file is then replayed through the
real actors (``md:replay`` -> ``sink:lake``) into a second lake, and the two lakes must
hold the same rows, dataset by dataset.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from core.settings import Settings
from pipeline.lake import Lake
from pipeline.query import run_query
from pipeline.schemas import MarketBatch
from pipeline.sink import ParquetSink
from pipeline.sources.recording import record_live
from pipeline.sources.replay import ReplayMarketSource
from serve.orchestrator import MarketPipeline
from serve.standins.exchanges import Exchanges
from tests.integration.exchanges.conftest import SYMBOLS

pytestmark = pytest.mark.timeout(240)

DATASETS = ("quotes", "order_books", "funding_rates")


def _rows(lake: Lake, dataset: str) -> list[tuple[object, ...]]:
    table = run_query(lake, f"SELECT * EXCLUDE (year, month, day, hour) FROM {dataset} ORDER BY ALL")
    return [tuple(row.values()) for row in table.to_pylist()]


def test_a_recording_replays_to_the_same_lake_rows(
    ray_session: None, base_settings: Settings, emulators_in_thread: Exchanges, tmp_path: Path
) -> None:
    market = base_settings.market.model_copy(
        update={"source": "live", "symbols": SYMBOLS, "endpoints": emulators_in_thread.endpoints}
    )
    live_settings = base_settings.model_copy(update={"market": market})
    out = tmp_path / "recorded.ndjson"
    live_lake = Lake.from_settings(live_settings.lake.model_copy(update={"url": str(tmp_path / "live")}))
    sink = ParquetSink(live_lake, live_settings.lake)
    batches: list[MarketBatch] = []

    def keep(_exchange: str, batch: MarketBatch) -> None:
        batches.append(batch)
        for name, table in batch.tables.items():
            sink.add(name, table)

    result = asyncio.run(record_live(live_settings, out, 8.0, on_batch=keep))
    sink.flush()
    assert result["failed"] == {}
    assert set(result["by_exchange"]) == {"binance", "bybit", "okx"}
    assert set(result["by_kind"]) == {"order_book", "ticker", "funding_rate"}
    live_rows = {d: sum(b.tables[d].num_rows for b in batches if d in b.tables) for d in DATASETS}
    assert all(live_rows.values()), live_rows
    lines = out.read_text().splitlines()
    assert len(lines) == result["records"]
    first = json.loads(lines[0])
    assert set(first) == {"ts", "exchange", "kind", "data"}

    replay_settings = base_settings.model_copy(
        update={
            "lake": base_settings.lake.model_copy(update={"url": str(tmp_path / "replayed")}),
            "market": base_settings.market.model_copy(
                update={"source": "replay", "replay_path": out, "symbols": SYMBOLS}
            ),
        }
    )
    pipeline = MarketPipeline(replay_settings, "replay", detect=False).start()
    pipeline.wait_done(timeout_s=120)
    stats = pipeline.stop()
    assert stats.coordinators["replay"]["source_stats"]["malformed"] == 0
    replayed_lake = Lake.from_settings(replay_settings.lake)
    for dataset in DATASETS:
        live, replayed = _rows(live_lake, dataset), _rows(replayed_lake, dataset)
        assert len(live) == live_rows[dataset]
        assert live == replayed, dataset
    # okx swap books are in contracts at ccxt (0.01 BTC): the lake holds base units either way
    books = run_query(
        replayed_lake,
        "SELECT bid_sz[1] AS sz FROM order_books WHERE exchange = 'okx' AND symbol = 'BTC/USDT:USDT' LIMIT 1",
    )
    assert books.num_rows == 1


async def test_a_recorded_contract_size_converts_sizes_on_replay(tmp_path: Path) -> None:
    book = {"symbol": "BTC/USDT:USDT", "timestamp": 1_700_000_000_000, "nonce": 5,
            "bids": [[100.0, 3.0]], "asks": [[101.0, 4.0]], "contractSize": 0.01}  # fmt: skip
    path = tmp_path / "r.ndjson"
    path.write_text(
        json.dumps({"ts": 1_700_000_000_100, "exchange": "okx", "kind": "order_book", "data": book}) + "\n"
    )
    [batch] = [b async for b in ReplayMarketSource(path).batches()]
    table: pa.Table = batch.tables["order_books"]
    assert table.column("bid_sz").to_pylist() == [[0.03]]
    assert table.column("ask_sz").to_pylist() == [[0.04]]


def test_arbflow_record_writes_a_replay_file(emulators_in_thread: Exchanges, tmp_path: Path) -> None:
    out = tmp_path / "cli.ndjson"
    env = {
        "ARBFLOW_MARKET__ENDPOINTS": json.dumps(emulators_in_thread.endpoints),
        "ARBFLOW_DATA_DIR": str(tmp_path / "var"),
    }
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "serve.cli", "record", "--duration", "20", "--out", str(out),
         "--exchanges", "bybit,okx", "--symbols", "BTC/USDT,BTC/USDT:USDT"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["exchange"] for r in records} == {"bybit", "okx"}
    assert {r["kind"] for r in records} >= {"order_book", "ticker"}
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["records"] == len(records)
