"""Ingest benchmark: ``ParquetSink`` throughput vs plain Polars ``write_parquet``,
then the whole market-data pipeline end to end.

    uv run python -m bench.ingest [--quick] [--duration S] [--mb MB]
                                  [--e2e | --no-e2e] [--e2e-duration S] [--e2e-rate Q]

(a) baseline: each quote batch written with ``pl.from_arrow(batch).write_parquet``
(zstd) to its own local file; (b) ours: the same batches through ``ParquetSink`` on
a local tmp lake (default thresholds, flush at the end). Throughput counts Arrow
bytes in (``table.nbytes``). Then a memory-flatness run feeds the sink for
``--duration`` seconds (written files are deleted as it goes so the disk does not
fill) and compares RSS between the start and the end of the run.

End to end (``--e2e``, on by default): a private Redis and a local Ray
(``serve.runtime.embedded``) on a temp data dir and lake, then
``MarketPipeline(settings, "sim")`` with the simulator at ``--e2e-rate`` quotes/s in
total (50,000) over the 3 default exchanges and 24 symbols, for ``--e2e-duration``
seconds (60; quick: 15). ``pipeline.stats()`` is sampled every second: coordinator
lag (wall now - source clock of the last batch handed on), achieved quotes/s, the
sink's lag (age of its oldest buffered row) and buffered rows, and the RSS of the Ray
worker processes; and the age of the newest quote per exchange in Redis (what a
reader sees; the coordinator's own ``lag_s`` is answered on its event loop between
batches, so it cannot see a pump stuck inside one). The simulator skips ticks when
its consumer falls more than 1 s behind, so a pipeline too slow for the rate shows
up as an achieved rate below the target, not as unbounded lag: both are checked.

The last line is the JSON result (CONTRACT.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from core.settings import LakeSettings
from pipeline.lake import Lake
from pipeline.schemas import QUOTES
from pipeline.sink import ParquetSink

TARGET = "ratio >= 0.8 and >= 100 MB/s, flat memory; e2e 50k quotes/s with bounded lag"
RSS_FLAT_MB = 64.0
E2E_RATE = 50_000.0
E2E_WARMUP_S = 3.0
"""Samples before this (actor start, first flushes) are left out of the figures."""
E2E_MAX_LAG_S = 2.0
E2E_MIN_RATE_FRACTION = 0.95
E2E_TREND_S = 0.5
"""Bounded: the second half's mean lag exceeds the first half's by less than this."""
E2E_BASES = ["BTC", "ETH", "SOL", "XRP", "DOGE", "BNB", "ADA", "LINK", "AVAX", "DOT", "LTC", "TRX"]

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


def e2e_symbols(n: int) -> list[str]:
    """``n`` symbols: spot and USDT perpetual of each base in turn (24 -> 12 bases x 2)."""
    pairs = [sym for base in E2E_BASES for sym in (f"{base}/USDT", f"{base}/USDT:USDT")]
    return pairs[:n]


def ray_workers_usage() -> dict[str, float]:
    """RSS (MB) and CPU seconds of the pipeline's Ray actor processes (children of our
    local Ray), by kind: ``{"coordinators_mb", "coordinators_cpu_s", "sink_mb", "sink_cpu_s"}``."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil ships with ray[default]
        return {}
    out: dict[str, float] = {}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            title = " ".join(proc.cmdline()[:1])
            kind = (
                "coordinators"
                if "MarketDataCoordinator" in title or "MarketDataHost" in title
                else "sink"
                if "LakeSink" in title
                else None
            )
            if kind:
                cpu = proc.cpu_times()
                out[f"{kind}_mb"] = out.get(f"{kind}_mb", 0.0) + proc.memory_info().rss / 2**20
                out[f"{kind}_cpu_s"] = out.get(f"{kind}_cpu_s", 0.0) + cpu.user + cpu.system
    return out


def redis_age_s(client: Any, keys: Sequence[tuple[str, str]], now_ms: int) -> float:
    """Worst over exchanges of (now - newest quote ``ts`` in Redis): what readers see."""
    raw = client.mget([f"quote:{ex}:{sym}" for ex, sym in keys])
    newest: dict[str, int] = {}
    for (ex, _), value in zip(keys, raw, strict=True):
        if value is not None:
            newest[ex] = max(newest.get(ex, 0), int(json.loads(value)["ts"]))
    if len(newest) < len({ex for ex, _ in keys}):
        return float("nan")  # an exchange has nothing in Redis yet
    return max((now_ms - ts) / 1000.0 for ts in newest.values())


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_e2e(
    duration_s: float, total_rate: float, n_symbols: int, root: Path, *, detect: bool = False
) -> dict[str, Any]:
    """The real pipeline (embedded Redis + local Ray + actors) on the sim; sampled each second."""
    import ray

    from core.settings import MarketSettings, RaySettings, RedisSettings, Settings
    from serve.orchestrator import MarketPipeline
    from serve.runtime import embedded

    base = Settings()
    exchanges = list(base.market.exchanges) or ["binance", "bybit", "okx"]
    settings = base.model_copy(
        update={
            "data_dir": root / "data",
            "lake": LakeSettings(url=str(root / "lake")),
            "redis": RedisSettings(),
            "ray": RaySettings(namespace=f"bench-ingest-{os.getpid()}"),
            "market": MarketSettings(
                exchanges=exchanges,
                symbols=e2e_symbols(n_symbols),
                sim_rate=total_rate / len(exchanges),
            ),
        }
    )
    import redis

    samples: list[dict[str, float]] = []
    keys = [(ex, sym) for ex in exchanges for sym in settings.market.symbols]
    t_boot = time.monotonic()
    with embedded(settings) as live:
        boot_s = time.monotonic() - t_boot
        client = redis.Redis.from_url(live.redis.url)
        pipeline = MarketPipeline(live, "sim", detect=detect).start()
        started = time.monotonic()
        try:
            next_at = started + 1.0
            while (now := time.monotonic()) - started < duration_s:
                time.sleep(max(0.0, next_at - now))
                next_at += 1.0
                st = pipeline.stats()
                total = st.sink.get("total", {})
                usage = ray_workers_usage()
                samples.append(
                    {
                        "t": time.monotonic() - started,
                        "lag_s": st.max_lag_s,
                        "redis_age_s": redis_age_s(client, keys, time.time_ns() // 1_000_000),
                        "quotes": float(st.quotes),
                        "sink_rows_in": float(total.get("rows_in", 0)),
                        "sink_lag_s": float(total.get("lag_s", 0.0)),
                        "sink_buffered_rows": float(total.get("buffered_rows", 0)),
                        "in_flight": float(
                            max((c.get("sink_in_flight", 0) for c in st.coordinators.values()), default=0)
                        ),
                        "rss_coord_mb": usage.get("coordinators_mb", 0.0),
                        "rss_sink_mb": usage.get("sink_mb", 0.0),
                        "cpu_coord_s": usage.get("coordinators_cpu_s", 0.0),
                        "cpu_sink_s": usage.get("sink_cpu_s", 0.0),
                    }
                )
        finally:
            t_stop = time.monotonic()
            final = pipeline.stop()
            stop_s = time.monotonic() - t_stop
            client.close()
            with contextlib.suppress(Exception):
                ray.shutdown()
    errors: dict[str, int] = {}
    for coord in final.coordinators.values():
        for kind, n in coord.get("errors", {}).items():
            errors[kind] = errors.get(kind, 0) + n
    result = summarise_e2e(samples, total_rate, boot_s, stop_s, final.sink.get("total", {}), errors)
    result["raw"] = samples
    return result


def summarise_e2e(
    samples: Sequence[dict[str, float]],
    total_rate: float,
    boot_s: float = 0.0,
    stop_s: float = 0.0,
    sink_total: dict[str, Any] | None = None,
    errors: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Figures from the per-second samples, after :data:`E2E_WARMUP_S`."""
    steady = [s for s in samples if s["t"] >= E2E_WARMUP_S] or list(samples)
    if len(steady) < 2:
        raise RuntimeError("end-to-end run too short: need at least 2 samples after warm-up")
    first, last = steady[0], steady[-1]
    span = last["t"] - first["t"]
    quotes_per_s = (last["quotes"] - first["quotes"]) / span
    sink_rows_per_s = (last["sink_rows_in"] - first["sink_rows_in"]) / span
    lags = [s["lag_s"] for s in steady]
    half = len(steady) // 2
    first_mean = statistics.fmean(lags[:half])
    second_mean = statistics.fmean(lags[half:])
    rss_first = [s["rss_coord_mb"] + s["rss_sink_mb"] for s in steady[:half]]
    rss_last = [s["rss_coord_mb"] + s["rss_sink_mb"] for s in steady[half:]]
    ages = [s["redis_age_s"] for s in steady if not math.isnan(s.get("redis_age_s", math.nan))]
    age_max = max(ages) if ages else float("inf")
    lag_max = max(lags)
    bounded = lag_max <= E2E_MAX_LAG_S and age_max <= E2E_MAX_LAG_S and second_mean - first_mean < E2E_TREND_S
    rate_ok = quotes_per_s >= E2E_MIN_RATE_FRACTION * total_rate
    third = max(1, len(steady) // 3)
    return {
        "target_quotes_per_s": total_rate,
        "cpu_coordinators": (last.get("cpu_coord_s", 0.0) - first.get("cpu_coord_s", 0.0)) / span,
        "cpu_sink": (last.get("cpu_sink_s", 0.0) - first.get("cpu_sink_s", 0.0)) / span,
        "rss_coord_mb": [
            statistics.median(s["rss_coord_mb"] for s in part) for part in (steady[:third], steady[-third:])
        ],
        "rss_sink_mb": [
            statistics.median(s["rss_sink_mb"] for s in part) for part in (steady[:third], steady[-third:])
        ],
        "quotes_per_s": quotes_per_s,
        "sink_rows_per_s": sink_rows_per_s,
        "lag_p50_s": _pct(lags, 0.50),
        "lag_p99_s": _pct(lags, 0.99),
        "lag_max_s": lag_max,
        "lag_first_half_s": first_mean,
        "lag_second_half_s": second_mean,
        "redis_age_p50_s": _pct(ages, 0.50),
        "redis_age_p99_s": _pct(ages, 0.99),
        "redis_age_max_s": age_max,
        "sink_lag_max_s": max(s["sink_lag_s"] for s in steady),
        "sink_buffered_max": max(s["sink_buffered_rows"] for s in steady),
        "in_flight_max": max(s["in_flight"] for s in steady),
        "rss_workers_start_mb": statistics.median(rss_first) if rss_first else 0.0,
        "rss_workers_end_mb": statistics.median(rss_last) if rss_last else 0.0,
        "samples": len(steady),
        "seconds": span,
        "boot_s": boot_s,
        "stop_s": stop_s,
        "files": int((sink_total or {}).get("files", 0)),
        "errors": errors or {},
        "bounded": bounded,
        "rate_ok": rate_ok,
        "ok": bounded and rate_ok,
    }


def run_e2e_stage(args: argparse.Namespace, duration_s: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="arbflow-bench-e2e-"))
    try:
        e2e = run_e2e(duration_s, args.e2e_rate, args.e2e_symbols, tmp, detect=args.e2e_detect)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.e2e_samples is not None:
        args.e2e_samples.write_text(json.dumps(e2e.pop("raw"), indent=1))
    print_e2e(e2e)
    return e2e


def print_e2e(e2e: dict[str, Any]) -> None:
    print()
    print(f"end to end: sim -> coordinators -> Redis + sink -> lake ({e2e['seconds']:.0f} s sampled)")
    print(f"{'boot (redis + ray.init) / stop':<34}{e2e['boot_s']:>8.1f} s / {e2e['stop_s']:.1f} s")
    print(
        f"{'quotes/s achieved / target':<34}{e2e['quotes_per_s']:>10.0f} / {e2e['target_quotes_per_s']:.0f}"
    )
    print(f"{'sink rows in/s (all datasets)':<34}{e2e['sink_rows_per_s']:>10.0f}")
    lag = f"{e2e['lag_p50_s']:.2f} / {e2e['lag_p99_s']:.2f} / {e2e['lag_max_s']:.2f}"
    print(f"{'coordinator lag p50/p99/max':<34}{lag:>14} s")
    age = f"{e2e['redis_age_p50_s']:.2f} / {e2e['redis_age_p99_s']:.2f} / {e2e['redis_age_max_s']:.2f}"
    print(f"{'Redis quote age p50/p99/max':<34}{age:>14} s")
    halves = f"{e2e['lag_first_half_s']:.2f} -> {e2e['lag_second_half_s']:.2f}"
    print(f"{'lag mean 1st half -> 2nd half':<34}{halves:>14} s")
    sink = f"{e2e['sink_lag_max_s']:.1f} s, {e2e['sink_buffered_max']:.0f} rows"
    print(f"{'sink lag max, buffered max':<34}{sink:>14}")
    print(f"{'sink calls in flight (max)':<34}{e2e['in_flight_max']:>14.0f}")
    rss = f"{e2e['rss_workers_start_mb']:.0f} -> {e2e['rss_workers_end_mb']:.0f} MB"
    print(f"{'RSS actors (3 coord + sink)':<34}{rss:>14}")
    coord, sink_mb = e2e["rss_coord_mb"], e2e["rss_sink_mb"]
    parts = f"{coord[0]:.0f} -> {coord[1]:.0f}, sink {sink_mb[0]:.0f} -> {sink_mb[1]:.0f} MB"
    print(f"{'RSS 3 coordinators (1st->last 3rd)':<34}{parts:>14}")
    cpu = f"{e2e['cpu_coordinators']:.2f} + {e2e['cpu_sink']:.2f}"
    print(f"{'CPU cores: coordinators + sink':<34}{cpu:>14}")
    print(f"{'files / errors':<34}{e2e['files']:>8} / {e2e['errors'] or '{}'}")
    print(f"{'bounded / rate ok':<34}{e2e['bounded']!s:>8} / {e2e['rate_ok']}")


def e2e_json(e2e: dict[str, Any]) -> dict[str, Any]:
    return {
        "e2e_quotes_per_s": round(e2e["quotes_per_s"], 0),
        "e2e_lag_p99_s": round(e2e["lag_p99_s"], 3),
        "e2e_lag_max_s": round(e2e["lag_max_s"], 3),
        "e2e_redis_age_p99_s": round(e2e["redis_age_p99_s"], 3),
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
    parser.add_argument(
        "--e2e",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the end-to-end pipeline stage (default: on)",
    )
    parser.add_argument("--e2e-duration", type=float, default=None, help="end-to-end seconds (60; quick: 15)")
    parser.add_argument("--e2e-rate", type=float, default=E2E_RATE, help="total sim quotes/s (50000)")
    parser.add_argument("--e2e-symbols", type=int, default=24, help="sim symbols (24)")
    parser.add_argument("--skip-sink", action="store_true", help="end-to-end stage only")
    parser.add_argument(
        "--e2e-detect", action="store_true", help="also run the opportunity engine (detector + pair actors)"
    )
    parser.add_argument("--e2e-samples", type=Path, default=None, help="write the per-second samples (JSON)")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (15.0 if args.quick else 300.0)
    target_mb = args.mb if args.mb is not None else (300.0 if args.quick else 800.0)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 6)
    e2e_duration = args.e2e_duration if args.e2e_duration is not None else (15.0 if args.quick else 60.0)
    if args.skip_sink:
        only = run_e2e_stage(args, e2e_duration)
        print(json.dumps({"bench": "ingest", **e2e_json(only), "target": TARGET, "ok": only["ok"]}))
        return 0 if only["ok"] else 1
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
    e2e = run_e2e_stage(args, e2e_duration) if args.e2e else None
    if e2e is not None:
        ok = ok and bool(e2e["ok"])
    result = {
        "bench": "ingest",
        "sink_mb_s": round(sink_mb_s, 1),
        "baseline_mb_s": round(baseline_mb_s, 1),
        "ratio": round(ratio, 3),
        "rss_growth_mb": round(mem["rss_growth_mb"], 1),
        **(e2e_json(e2e) if e2e is not None else {}),
        "target": TARGET,
        "ok": ok,
    }
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
