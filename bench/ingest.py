"""Ingest benchmark: ``ParquetSink`` throughput vs plain Polars ``write_parquet``.

    uv run python -m bench.ingest [--quick] [--duration S] [--mb MB]

(a) baseline: each quote batch written with ``pl.from_arrow(batch).write_parquet``
(zstd) to its own local file; (b) ours: the same batches through ``ParquetSink`` on
a local tmp lake (default thresholds, flush at the end). Throughput counts Arrow
bytes in (``table.nbytes``). Then a memory-flatness run feeds the sink for
``--duration`` seconds (written files are deleted as it goes so the disk does not
fill) and compares RSS between the start and the end of the run.

The last line is the JSON result (CONTRACT.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from core.settings import LakeSettings
from pipeline.lake import Lake
from pipeline.schemas import QUOTES
from pipeline.sink import ParquetSink

TARGET = "ratio >= 0.8 and >= 100 MB/s, flat memory"
RSS_FLAT_MB = 64.0

EXCHANGES = ["binance", "bybit", "okx", "kraken", "gateio", "kucoin"]
SYMBOLS = {  # symbol: (reference price, market type)
    "BTC/USDT": (64_000.0, "spot"),
    "ETH/USDT": (3_100.0, "spot"),
    "SOL/USDT": (145.0, "spot"),
    "XRP/USDT": (0.52, "spot"),
    "DOGE/USDT": (0.12, "spot"),
    "BTC/USDT:USDT": (64_010.0, "swap"),
    "ETH/USDT:USDT": (3_101.0, "swap"),
    "SOL/USDT:USDT": (145.1, "swap"),
}


class QuoteGenerator:
    """Plausible quote batches: 8 symbols x 6 exchanges, random-walk mids, bps spreads."""

    def __init__(self, seed: int = 7, start_ms: int = 1_735_689_000_000, rows_per_s: float = 4_000.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.now_ms = float(start_ms)  # 10 minutes before an hour boundary
        self.rows_per_s = rows_per_s
        names = list(SYMBOLS)
        self.pairs = [(e, s) for s in names for e in EXCHANGES]
        self.exchange_ids = np.array([EXCHANGES.index(e) for e, _ in self.pairs], dtype=np.int32)
        self.symbol_ids = np.array([names.index(s) for _, s in self.pairs], dtype=np.int32)
        self.exchange_dict = pa.array(EXCHANGES)
        self.symbol_dict = pa.array(names)
        self.type_dict = pa.array([SYMBOLS[s][1] for s in names])
        ref = np.array([SYMBOLS[s][0] for s in names])
        # each exchange quotes slightly off the reference
        self.mid = ref[self.symbol_ids] * (1 + self.rng.normal(0, 2e-4, len(self.pairs)))
        self.ref = ref

    def batch(self, rows: int) -> pa.Table:
        rng = self.rng
        pair = rng.integers(0, len(self.pairs), rows)
        # random walk per pair, applied vectorised: cumulative returns within the batch
        steps = rng.normal(0, 5e-5, rows)
        self.mid *= 1 + rng.normal(0, 2e-4, len(self.pairs))
        mid = self.mid[pair] * np.exp(np.cumsum(steps) - np.arange(rows) * 0)
        spread = mid * rng.uniform(0.5e-4, 4e-4, rows)
        bid = np.round(mid - spread / 2, 6)
        ask = np.round(mid + spread / 2, 6)
        notional = rng.lognormal(8, 1.2, rows)
        dt = rng.exponential(1000.0 / self.rows_per_s, rows)
        ts = (self.now_ms + np.cumsum(dt)).astype(np.int64)
        self.now_ms = float(ts[-1])
        recv = ts + rng.integers(2, 60, rows)
        ex = pa.array(self.exchange_ids[pair])
        sym = pa.array(self.symbol_ids[pair])
        table = pa.table(
            {
                "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
                "recv_ts": pa.array(recv, pa.timestamp("ms", tz="UTC")),
                "exchange": self.exchange_dict.take(ex),
                "symbol": self.symbol_dict.take(sym),
                "market_type": self.type_dict.take(sym),
                "bid": bid,
                "ask": ask,
                "bid_size": np.round(notional / mid, 6),
                "ask_size": np.round(rng.lognormal(8, 1.2, rows) / mid, 6),
                "last": np.round(mid * (1 + rng.normal(0, 1e-4, rows)), 6),
                "base_volume": np.round(rng.lognormal(10, 1, rows), 3),
                "quote_volume": np.round(rng.lognormal(17, 1, rows), 2),
            },
        )
        return table.cast(QUOTES)


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: peak RSS is the best we have
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(batches: Sequence[pa.Table], out: Path, level: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i, batch in enumerate(batches):
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        frame.write_parquet(out / f"b{i:05d}.parquet", compression="zstd", compression_level=level)
    return time.perf_counter() - started


def run_sink(batches: Sequence[pa.Table], root: Path) -> tuple[float, dict[str, object]]:
    settings = LakeSettings(url=str(root))
    sink = ParquetSink(Lake.from_settings(settings), settings)
    started = time.perf_counter()
    for batch in batches:
        sink.add("quotes", batch)
    sink.flush()
    elapsed = time.perf_counter() - started
    return elapsed, sink.counters()["total"]


def memory_run(
    gen: QuoteGenerator, pool: Sequence[pa.Table], duration_s: float, root: Path
) -> dict[str, float]:
    """Feed the sink for ``duration_s``; RSS at the start vs the end (medians of samples)."""
    settings = LakeSettings(url=str(root))
    lake = Lake.from_settings(settings)
    sink = ParquetSink(lake, settings)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    last_clean = started
    mb_in = 0.0
    i = 0
    while (elapsed := time.monotonic() - started) < duration_s:
        batch = pool[i % len(pool)]
        sink.add("quotes", batch)
        sink.maybe_flush()
        mb_in += batch.nbytes / 1e6
        i += 1
        if i % 8 == 0:
            samples.append((elapsed, rss_mb()))
        if time.monotonic() - last_clean > 2.0:
            lake.delete(lake.list_files("quotes"))
            last_clean = time.monotonic()
    sink.flush()
    lake.delete(lake.list_files("quotes"))
    warm = [r for t, r in samples if duration_s * 0.15 <= t < duration_s * 0.35]
    late = [r for t, r in samples if t >= duration_s * 0.75]
    start_rss = statistics.median(warm) if warm else samples[0][1]
    end_rss = statistics.median(late) if late else samples[-1][1]
    return {
        "rss_start_mb": start_rss,
        "rss_end_mb": end_rss,
        "rss_growth_mb": end_rss - start_rss,
        "rss_max_mb": max(r for _, r in samples),
        "mb_in": mb_in,
        "seconds": duration_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="finish in under 60 s")
    parser.add_argument("--duration", type=float, default=None, help="memory run seconds (300; quick: 20)")
    parser.add_argument(
        "--mb", type=float, default=None, help="Arrow MB per throughput round (800; quick: 300)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds, best kept (6; quick: 4)")
    parser.add_argument("--batch-rows", type=int, default=25_000)
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (20.0 if args.quick else 300.0)
    target_mb = args.mb if args.mb is not None else (300.0 if args.quick else 800.0)
    rounds = args.rounds if args.rounds is not None else (4 if args.quick else 6)
    level = LakeSettings().compression_level

    gen = QuoteGenerator()
    t0 = time.perf_counter()
    batches: list[pa.Table] = []
    while sum(b.nbytes for b in batches) / 1e6 < target_mb:
        rows = int(gen.rng.integers(10_000, 50_001)) if args.batch_rows <= 0 else args.batch_rows
        batches.append(gen.batch(rows))
    mb = sum(b.nbytes for b in batches) / 1e6
    rows_total = sum(b.num_rows for b in batches)
    took = time.perf_counter() - t0
    print(f"generated {len(batches)} batches, {rows_total:,} rows, {mb:.0f} MB Arrow in {took:.1f}s")

    tmp = Path(tempfile.mkdtemp(prefix="arbflow-bench-ingest-"))
    try:
        base_times: list[float] = []
        sink_times: list[float] = []
        counters: dict[str, object] = {}
        for r in range(rounds):  # interleaved, best of N: fair on a busy 2-core machine
            base_times.append(run_baseline(batches, tmp / f"base{r}", level))
            shutil.rmtree(tmp / f"base{r}")
            elapsed, counters = run_sink(batches, tmp / f"lake{r}")
            sink_times.append(elapsed)
            shutil.rmtree(tmp / f"lake{r}")
        baseline_mb_s = mb / min(base_times)
        sink_mb_s = mb / min(sink_times)
        ratio = sink_mb_s / baseline_mb_s

        pool = batches[:32]
        mem = memory_run(gen, pool, duration, tmp / "mem")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out_mb = float(counters.get("parquet_bytes", 0)) / 1e6  # type: ignore[arg-type]
    print()
    print(f"{'measure':<34}{'value':>14}")
    print(f"{'baseline polars write_parquet':<34}{baseline_mb_s:>10.0f} MB/s")
    print(f"{'ParquetSink (add + flush)':<34}{sink_mb_s:>10.0f} MB/s")
    print(f"{'ratio sink / baseline':<34}{ratio:>14.2f}")
    print(f"{'sink files / parquet MB out':<34}{counters.get('files')!s:>7} / {out_mb:>5.0f}")
    print(f"{'rounds (best kept)':<34}{rounds:>14}")
    print(f"{'memory run':<34}{mem['seconds']:>12.0f} s, {mem['mb_in']:.0f} MB in")
    rss = f"{mem['rss_start_mb']:>8.0f} -> {mem['rss_end_mb']:.0f} ({mem['rss_max_mb']:.0f}) MB"
    print(f"{'RSS start -> end (max)':<34}{rss}")
    ok = ratio >= 0.8 and sink_mb_s >= 100.0 and mem["rss_growth_mb"] < RSS_FLAT_MB
    result = {
        "bench": "ingest",
        "sink_mb_s": round(sink_mb_s, 1),
        "baseline_mb_s": round(baseline_mb_s, 1),
        "ratio": round(ratio, 3),
        "rss_growth_mb": round(mem["rss_growth_mb"], 1),
        "target": TARGET,
        "ok": ok,
    }
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
