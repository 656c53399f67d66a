"""``arbflow demo`` and ``arbflow run``: drive the pipeline with progress, then summarise."""

from __future__ import annotations

import signal
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from core.settings import Settings
from pipeline.sources.factory import validate_source
from serve.orchestrator import MarketPipeline, PipelineStats
from serve.runtime import embedded

SAMPLE_QUERY = """
SELECT exchange, symbol, count(*) AS quotes,
       round(avg((ask - bid) / ((ask + bid) / 2)) * 1e4, 2) AS avg_spread_bps,
       max(ts) AS last_ts
FROM quotes
GROUP BY exchange, symbol
ORDER BY symbol, exchange
LIMIT 12
""".strip()


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _status(stats: PipelineStats) -> str:
    rate = stats.quotes / stats.wall_s if stats.wall_s else 0.0
    files = stats.sink.get("total", {}).get("files", 0)
    return f"{stats.quotes:>9,} quotes  {rate:>8,.0f}/s  lag {stats.max_lag_s:4.1f} s  {files} files"


def _drive(pipeline: MarketPipeline, duration: float | None, console: Console, label: str) -> None:
    stop = {"now": False}
    previous = signal.getsignal(signal.SIGINT)

    def _interrupt(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _interrupt)
    columns: list[Any] = [TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.fields[status]}")]
    columns.append(TimeRemainingColumn() if duration else TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=duration, status="starting")
            start = time.monotonic()
            while not stop["now"]:
                time.sleep(0.5)
                stats = pipeline.stats()
                elapsed = time.monotonic() - start
                progress.update(task, completed=min(elapsed, duration or elapsed), status=_status(stats))
                if (duration and elapsed >= duration) or (pipeline.source == "replay" and stats.done):
                    break
    finally:
        signal.signal(signal.SIGINT, previous)


def summary_tables(stats: PipelineStats, lake_rows: dict[str, int]) -> list[Table]:
    sink_total = stats.sink.get("total", {})
    wall = max(stats.wall_s, 1e-9)
    rates = Table(title="Ingest", title_justify="left")
    rates.add_column("figure")
    rates.add_column("value", justify="right")
    rates.add_row("wall time", f"{stats.wall_s:,.1f} s")
    rates.add_row("quotes/s", f"{stats.quotes / wall:,.0f}")
    rates.add_row("Arrow MB/s into the sink", f"{sink_total.get('arrow_bytes', 0) / wall / 1e6:,.2f}")
    rates.add_row("Parquet written", _fmt_bytes(sink_total.get("parquet_bytes", 0)))
    rates.add_row("files written", f"{sink_total.get('files', 0):,}")
    rates.add_row("max coordinator lag", f"{stats.max_lag_s:.2f} s")
    errors: dict[str, int] = {}
    for c in stats.coordinators.values():
        for k, v in c.get("errors", {}).items():
            errors[k] = errors.get(k, 0) + v
    rates.add_row("errors", ", ".join(f"{k}={v}" for k, v in errors.items()) or "none")

    datasets = Table(title="Rows per dataset", title_justify="left")
    datasets.add_column("dataset")
    datasets.add_column("this run", justify="right")
    datasets.add_column("in the lake", justify="right")
    for name in sorted(set(stats.rows) | set(lake_rows)):
        datasets.add_row(name, f"{stats.rows.get(name, 0):,}", f"{lake_rows.get(name, 0):,}")
    return [rates, datasets]


def _lake_rows(settings: Settings) -> dict[str, int]:
    from pipeline.lake import Lake
    from pipeline.query import run_query

    lake = Lake.from_settings(settings.lake)
    out: dict[str, int] = {}
    for name in ("quotes", "order_books", "funding_rates"):
        try:
            out[name] = int(run_query(lake, f"SELECT count(*) AS n FROM {name}").column("n")[0].as_py())
        except Exception:
            out[name] = 0
    return out


def run_pipeline(settings: Settings, *, duration: float | None, console: Console) -> PipelineStats:
    """``arbflow run``: ingest until Ctrl-C, ``duration``, or the end of a replay file."""
    source = settings.market.source or "live"
    validate_source(settings, source)
    with embedded(settings) as live_settings:
        pipeline = MarketPipeline(live_settings, source).start()
        try:
            _drive(pipeline, duration, console, f"ingest ({source})")
        finally:
            stats = pipeline.stop()
    for table in summary_tables(stats, _lake_rows(settings)):
        console.print(table)
    failed = [f"{k}: {c['failed']}" for k, c in stats.coordinators.items() if c.get("failed")]
    if failed:
        raise SystemExit("source failed: " + "; ".join(failed))
    return stats


def run_demo(
    settings: Settings, *, duration: float, users: int, console: Console, open_browser: bool
) -> PipelineStats:
    from pipeline.lake import Lake
    from pipeline.query import format_table, run_query

    source = settings.market.source or "sim"
    validate_source(settings, source)
    console.print(
        f"[bold]arbflow demo[/]: {source} market data for {duration:g} s on "
        f"{', '.join(settings.market.exchanges)} x {len(settings.market.symbols)} symbols → "
        f"lake at {settings.lake.url}"
    )
    with embedded(settings) as live_settings:
        pipeline = MarketPipeline(live_settings, source).start()
        try:
            _drive(pipeline, duration, console, f"demo ({source})")
        finally:
            stats = pipeline.stop()
    for table in summary_tables(stats, _lake_rows(settings)):
        console.print(table)
    console.print("[bold]Sample DuckDB query[/] (arbflow query):")
    console.print(f"[dim]{SAMPLE_QUERY}[/]")
    console.print(format_table(run_query(Lake.from_settings(settings.lake), SAMPLE_QUERY), "table"))
    console.print(
        'Next: [bold]uv run --frozen arbflow query "SELECT * FROM funding_rates LIMIT 5"[/], '
        f"the lake under [bold]{settings.lake.url}[/], docs/lake.md for the layout."
    )
    return stats
