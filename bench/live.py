"""Live-source benchmark: market updates/s through the real ccxt / ccxt.pro clients and the
exchange emulators, against the direct sim source at the same market size.

    uv run python bench/live.py [--quick] [--rate Q] [--duration S] [--symbols N]

(a) baseline: ``SimMarketSource`` of binance, bybit and okx (one instance, as the
emulators run it) at ``--rate`` updates/s per exchange over the symbols, realtime,
for ``--duration`` seconds: the updates it offers per second, counted as an exchange
publishes them (the emulators' feed folds each sim tick into one book and one ticker
state per symbol, so a tick's updates of one symbol are one book message and one
ticker message; the sim's raw rows per tick would be a bound no exchange reaches).
(b) ours: the emulators in a process of their own (the outside world) fed by the same
sim, and one ``CcxtMarketSource`` per exchange in this process (websocket books and
tickers, REST funding): the rows of ``quotes`` + ``order_books`` it yields per second,
the books the source re-confirms while quiet left out. ``ratio`` = ours / baseline (target ≥ 0.5).

Book age p99: every 0.1 s each source's ``book_age_p99_s()`` (the time since each
symbol's book was last received or confirmed, the figure the monitor exports) is
sampled; the p99 over all samples is reported.

The last line is the JSON result (CONTRACT.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import MarketSettings
from pipeline.sources.live import CcxtMarketSource
from pipeline.sources.sim import SimMarketSource

TARGET = "ratio >= 0.5 (live source + emulators vs the direct sim source, updates/s)"
EXCHANGES = ["binance", "bybit", "okx"]
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"]
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "exchanges"
WARMUP_S = 4.0
READY_S = 30.0

EMULATOR_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from serve.standins.exchanges import start_exchanges

async def main():
    async with start_exchanges(Path(sys.argv[1]), seed=7, symbols=json.loads(sys.argv[2]),
                               rate=float(sys.argv[3])) as ex:
        print(json.dumps(ex.endpoints), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def updates(batch: Any) -> int:
    return sum(batch.tables[d].num_rows for d in ("quotes", "order_books") if d in batch.tables)


def published(batch: Any) -> int:
    """The sim batch's updates as an exchange publishes them: one state per symbol and kind per tick."""
    total = 0
    for dataset in ("quotes", "order_books"):
        table = batch.tables.get(dataset)
        if table is not None and table.num_rows:
            pairs = zip(table.column("exchange").to_pylist(), table.column("symbol").to_pylist(), strict=True)
            total += len(set(pairs))
    return total


async def baseline(symbols: list[str], rate: float, duration: float) -> float:
    source = SimMarketSource(EXCHANGES, symbols, seed=7, rate=rate, depth=20, realtime=True)
    counted, started = 0, time.monotonic()
    async for batch in source.batches():
        now = time.monotonic() - started
        if now >= WARMUP_S:
            counted += published(batch)
        if now >= WARMUP_S + duration:
            break
    await source.close()
    return counted / duration


async def live(
    symbols: list[str], endpoints: dict[str, Any], duration: float
) -> tuple[float, float, dict[str, Any]]:
    settings = MarketSettings(symbols=symbols, endpoints=endpoints, exchanges=EXCHANGES)
    sources = [CcxtMarketSource(e, symbols, settings) for e in EXCHANGES]
    counted = [0]
    measuring = [False]
    ages: list[float] = []

    async def pump(source: CcxtMarketSource) -> None:
        async for batch in source.batches():
            if measuring[0]:
                counted[0] += updates(batch)

    tasks = [asyncio.ensure_future(pump(s)) for s in sources]
    ready_by = time.monotonic() + READY_S  # markets loaded, streams subscribed, first books in
    while time.monotonic() < ready_by:
        if all(s.stats["messages"] > len(symbols) for s in sources):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(WARMUP_S / 2)
    confirmed = sum(s.stats["confirmations"] for s in sources)
    measuring[0] = True
    started = time.monotonic()
    while time.monotonic() - started < duration:
        await asyncio.sleep(0.1)
        ages.extend(a for s in sources if (a := s.book_age_p99_s()) is not None)
    measuring[0] = False
    elapsed = time.monotonic() - started
    confirmed = sum(s.stats["confirmations"] for s in sources) - confirmed
    stats = {
        s.exchange_id: {k: s.stats[k] for k in ("messages", "errors", "reconnects", "restarts")}
        for s in sources
    }
    for s in sources:
        await s.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ages.sort()
    p99 = ages[min(len(ages) - 1, int(0.99 * len(ages)))] if ages else float("nan")
    return (counted[0] - confirmed) / elapsed, p99, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s")
    parser.add_argument(
        "--rate", type=float, default=None, help="sim updates/s per exchange (200; quick 200)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per side (60; quick 15)"
    )
    parser.add_argument("--symbols", type=int, default=len(SYMBOLS), help=f"symbols (up to {len(SYMBOLS)})")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="shared/fixtures/exchanges")
    args = parser.parse_args(argv)
    duration = args.duration or (15.0 if args.quick else 60.0)
    rate = args.rate or 200.0
    symbols = SYMBOLS[: max(1, args.symbols)]

    base = asyncio.run(baseline(symbols, rate, duration))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", EMULATOR_SCRIPT, str(args.fixtures), json.dumps(symbols), str(rate)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        endpoints = json.loads(proc.stdout.readline())
        cpu0, wall0 = time.process_time(), time.monotonic()
        ours, age_p99, stats = asyncio.run(live(symbols, endpoints, duration))
        source_cpu, live_wall = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    emulator_cpu = usage.ru_utime + usage.ru_stime
    ratio = ours / base if base else 0.0
    ok = ratio >= 0.5
    print(json.dumps({"sources": stats}), file=sys.stderr)
    result = {
        "bench": "live",
        "updates_per_s": round(ours, 1),
        "sim_updates_per_s": round(base, 1),
        "book_age_p99_s": round(age_p99, 3),
        "rate_per_exchange": rate,
        # where the time went: a live run CPU-starved on a shared machine shows it here
        "live_wall_s": round(live_wall, 1),
        "source_cpu_s": round(source_cpu, 1),
        "emulator_cpu_s": round(emulator_cpu, 1),
        "symbols": len(symbols),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "ok": ok,
    }
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
