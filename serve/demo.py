"""``arbflow demo`` and ``arbflow run``: drive the pipeline with progress, then summarise."""

from __future__ import annotations

import contextlib
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from core.experiments import Experiment, Variant
from core.settings import ExchangeKey, MarketSourceName, Settings
from pipeline.sources.factory import validate_source
from serve.orchestrator import Distribution, MarketPipeline, PipelineStats, get_monitor, stop_monitor
from serve.runtime import embedded
from serve.standins.demo_webhooks import DemoWebhooks, with_demo_webhooks
from serve.summaries import delivery_tables

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
    sink_rows = {name: d.get("rows_in", 0) for name, d in stats.sink.get("datasets", {}).items()}
    for name in sorted(set(stats.rows) | set(lake_rows) | set(sink_rows)):
        this_run = stats.rows.get(name) or sink_rows.get(name, 0)
        datasets.add_row(name, f"{this_run:,}", f"{lake_rows.get(name, 0):,}")
    return [rates, datasets]


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def opportunity_tables(settings: Settings, since: datetime, stats: PipelineStats) -> list[Table]:
    """Opportunities of this run from the lake (``pipeline.analytics``): by kind, with the
    edges of the pushable ones in each kind's unit; the flagged ones by flag; the pushable
    ones by edge bucket; the best pushable ones per kind."""
    from pipeline import analytics as an
    from pipeline.lake import Lake

    try:
        with an.LakeView(Lake.from_settings(settings.lake)) as view:
            by_kind = view_rows(an.opportunities_by_kind(view, since))
            flagged = view_rows(an.flagged_opportunities(view, since))
            buckets = view_rows(an.opportunities_by_edge(view, since))
            best = view_rows(an.top_pushable(view, since))
    except Exception as exc:  # no opportunities dataset yet
        table = Table(title="Opportunities", title_justify="left")
        table.add_column("none yet")
        table.add_row(str(exc).splitlines()[0][:100])
        return [table]

    kinds = Table(title="Opportunities by kind (this run)", title_justify="left")
    columns = (
        "kind",
        "opened",
        "pushable",
        "flagged",
        "closed",
        "edge unit",
        "mean",
        "max",
        "median lifetime",
    )
    for col in columns:
        kinds.add_column(col, justify="left" if col in ("kind", "edge unit") else "right")
    for row in by_kind:
        lifetime = row["median_lifetime_s"]
        kinds.add_row(
            row["kind"],
            f"{row['opened']:,}",
            f"{row['pushable']:,}",
            f"{row['flagged']:,}",
            f"{row['closed']:,}",
            row["unit"],
            _fmt(row["mean_net"]),
            _fmt(row["max_net"]),
            "-" if lifetime is None else f"{lifetime:.1f} s",
        )
    caption = [
        "edges over pushable opportunities only; funding nets are a year's return, not its 168 h total"
    ]
    det = stats.detector
    if det:
        caption.append(
            f"detection p50 {det.get('detect_ms_p50', 0):.1f} ms / p99 "
            f"{det.get('detect_ms_p99', 0):.1f} ms per tick; "
            f"batch → event p50 {det.get('event_latency_ms_p50') or 0:.0f} ms / p99 "
            f"{det.get('event_latency_ms_p99') or 0:.0f} ms"
        )
    kinds.caption = "\n".join(caption)

    title = "Flagged (never pushable), by flag"
    flags = Table(title=title, title_justify="left", min_width=len(title))  # one line, even when empty
    for col in ("kind", "flag", "opportunities"):
        flags.add_column(col, justify="right" if col == "opportunities" else "left")
    for row in flagged:
        flags.add_row(row["kind"], row["flag"], f"{row['opportunities']:,}")
    if not flagged:
        flags.caption = "nothing flagged"

    dist = Table(
        title="Pushable by edge (spot: net bps, funding: net % APR)", min_width=52, title_justify="left"
    )
    spot = [r for r in buckets if r["kind"] == "spot_spread"]
    funding = [r for r in buckets if r["kind"] == "funding_rate"]
    for col in ("spot net bps", "spot", "funding net APR", "funding"):
        dist.add_column(col, justify="right")
    for s_row, f_row in zip(spot, funding, strict=True):
        dist.add_row(
            s_row["bucket"], f"{s_row['opportunities']:,}", f_row["bucket"], f"{f_row['opportunities']:,}"
        )

    top = Table(title="Top pushable (spot by net bps, funding by net % APR)", title_justify="left")
    for col in ("kind", "symbol", "buy → sell", "net", "unit", "notional", "confidence", "lifetime"):
        top.add_column(col, justify="right" if col in ("net", "notional", "confidence") else "left")
    for r in best:
        lifetime = r["lifetime_s"]
        top.add_row(
            r["kind"],
            r["symbol"],
            f"{r['buy_exchange']} → {r['sell_exchange']}",
            _fmt(r["net"]),
            r["unit"],
            _fmt(r["notional_usd"], ",.0f"),
            _fmt(r["confidence"], ".2f"),
            "still open" if lifetime is None else f"{lifetime:.1f} s",
        )
    return [kinds, flags, dist, top]


def view_rows(table: Any) -> list[dict[str, Any]]:
    return list(table.to_pylist())


def _lake_rows(settings: Settings) -> dict[str, int]:
    from pipeline.lake import Lake
    from pipeline.query import run_query

    lake = Lake.from_settings(settings.lake)
    out: dict[str, int] = {}
    for name in (
        "quotes",
        "order_books",
        "funding_rates",
        "opportunities",
        "validations",
        "session_events",
        "audit",
    ):
        try:
            out[name] = int(run_query(lake, f"SELECT count(*) AS n FROM {name}").column("n")[0].as_py())
        except Exception:
            out[name] = 0
    return out


def _run_and_summarise(
    settings: Settings,
    source: MarketSourceName,
    duration: float | None,
    console: Console,
    label: str,
    *,
    users: int = 0,
) -> PipelineStats:
    """Run the pipeline (embedded services), then print the ingest and opportunity tables.

    ``users > 0`` (the demo): the Telegram side runs alongside in the same runtime
    (:mod:`serve.standins.demo_users`); whatever happens there, the market summary is printed.
    """
    from serve.standins.demo_users import TelegramDemo, TelegramReport, session_events, telegram_tables

    since = datetime.now(UTC) - timedelta(seconds=5)
    if source == "replay":  # the replay clock is the file's, not the wall clock
        since = datetime(1970, 1, 1, tzinfo=UTC)
    report: TelegramReport | None = None
    push_stats: dict[str, Any] | None = None
    tg_since = datetime.now(UTC)
    with embedded(settings, command="demo", serves_http=users > 0) as live_settings:
        # The Telegram side starts first: Serve and the bot take seconds to come up, the
        # pipeline's actors meanwhile; its users start with the market run's clock.
        tg = TelegramDemo(live_settings, users, duration or 60.0, console).start() if users > 0 else None
        distribution: Distribution | None = None
        push_settings = tg.bot_settings() if tg is not None else None
        hooks: DemoWebhooks | None = None
        if push_settings is not None:  # pushes start before the market, so nothing is missed
            distribution = Distribution(push_settings).start()
            # the Premium users' outbound webhooks reach a local receiver (docs/outbound-webhooks.md)
            hooks = DemoWebhooks(push_settings, lambda: list(tg.plans) if tg is not None else []).start()
        # alerts:monitor: Prometheus metrics and SuperAdmin alerts while it runs
        monitor = get_monitor(push_settings or live_settings)
        try:
            pipeline = MarketPipeline(live_settings, source).start()
            try:
                if tg is not None:
                    tg.arm()
                _drive(pipeline, duration, console, f"{label} ({source})")
            finally:
                if tg is not None:
                    try:  # the users stop and the bot drains, so its events reach the sink
                        report = tg.stop()
                    except Exception as exc:  # the market summary comes first, whatever happened here
                        report = tg.report
                        report.errors.append(f"stopping: {type(exc).__name__}: {exc}"[:300])

                def stop_pushes() -> None:
                    nonlocal push_stats
                    stop_monitor(monitor)
                    if distribution is not None:
                        push_stats = distribution.stop()

                stats = pipeline.stop(before_sink=stop_pushes)
        finally:
            if hooks is not None:  # after the push side stopped: its last POSTs are in
                hooks.stop()
            if tg is not None:
                try:
                    tg.shutdown()
                except Exception as exc:
                    console.print(f"[yellow]stopping the demo's bot: {exc}[/]")
    for table in summary_tables(stats, _lake_rows(settings)):
        console.print(table)
    for table in opportunity_tables(settings, since, stats):
        console.print(table)
    if report is not None:
        report.session_events = session_events(settings, tg_since)
        for table in telegram_tables(report):
            console.print(table)
    if push_stats is not None:
        for table in delivery_tables(settings, push_stats, tg_since):
            console.print(table)
    if hooks is not None:
        console.print(hooks.table((push_stats or {}).get("outbound")))
    return stats


def _with_emulators(settings: Settings, stack: contextlib.ExitStack) -> tuple[Settings, str]:
    """Start the exchange emulators for the run (in this process) and point the live source
    at them: ``(settings with ARBFLOW_MARKET__ENDPOINTS set, a phrase for the banner)``."""
    from serve.standins.exchanges.server import default_fixtures_dir, exchanges_in_thread

    market = settings.market
    ex = stack.enter_context(
        exchanges_in_thread(
            default_fixtures_dir(),
            exchanges=list(market.exchanges),
            symbols=list(market.symbols),
            seed=market.sim_seed,
            rate=market.sim_rate,
        )
    )
    # The emulators sign nothing: any read-only key opens their currency endpoints, so the
    # demo checks deposit/withdraw status and fees as production does with operator keys.
    keys = {
        name: settings.exchange_keys.get(name)
        or ExchangeKey(api_key=SecretStr("demo"), secret=SecretStr("demo"), password=SecretStr("demo"))
        for name in market.exchanges
    }
    live = settings.model_copy(
        update={
            "market": market.model_copy(update={"endpoints": ex.endpoints}),
            "exchange_keys": {**settings.exchange_keys, **keys},
        }
    )
    return live, f" (ccxt against the exchange emulators at {ex.url})"


DEMO_DIGEST_PERIOD_S = 8.0
"""The demo's "missed while delayed" digest period: a daily digest would never come in a
run of a minute (``ARBFLOW_DISTRIBUTION__DIGEST_PERIOD_S`` set by the user wins)."""


def with_demo_digests(settings: Settings, duration: float) -> Settings:
    """``settings`` with a digest period short enough for the run to show its digests."""
    if settings.distribution.digest_period_s is not None:
        return settings
    period = max(1.0, min(DEMO_DIGEST_PERIOD_S, duration / 3))
    dist = settings.distribution.model_copy(update={"digest_period_s": period})
    return settings.model_copy(update={"distribution": dist})


DEMO_EXPERIMENT = Experiment(
    name="demo-layout",
    description="the demo's: full pushes (control) or compact ones; its users press compact ones more",
    variants=[Variant(name="full"), Variant(name="compact", layout="compact")],
)
"""The demo's experiment when ``ARBFLOW_EXPERIMENTS`` sets none: half the simulated users get the
compact layout, and those press a push's button more often (a planted effect:
``serve.standins.demo_users.plan.PRESS_LIFT``), so its report shows a real difference."""


def with_demo_experiment(settings: Settings) -> Settings:
    """``settings`` with :data:`DEMO_EXPERIMENT` unless the operator configured experiments."""
    if settings.experiments:
        return settings
    return settings.model_copy(update={"experiments": [DEMO_EXPERIMENT]})


def with_demo_personalization(settings: Settings, duration: float) -> Settings:
    """``settings`` with the engagement model recomputed during the run (every half of it, at
    least every 30 s), unless ``ARBFLOW_PERSONALIZATION__INTERVAL_S`` is set."""
    if "interval_s" in settings.personalization.model_fields_set:
        return settings
    conf = settings.personalization.model_copy(update={"interval_s": max(30.0, duration / 2)})
    return settings.model_copy(update={"personalization": conf})


def run_demo(
    settings: Settings, *, duration: float, users: int, console: Console, open_browser: bool
) -> PipelineStats:
    from pipeline.lake import Lake
    from pipeline.query import format_table, run_query

    source = settings.market.source or "live"
    with contextlib.ExitStack() as stack:  # the emulators, when started, run as long as the market
        where = ""
        if source == "live" and not settings.market.endpoints:
            # The production path (ccxt, ccxt.pro) against the exchange emulators: prices
            # from the seeded sim, reached through binance's, bybit's and okx's own protocols.
            settings, where = _with_emulators(settings, stack)
        validate_source(settings, source)
        settings = with_demo_digests(settings, duration)
        settings = with_demo_experiment(settings)
        settings = with_demo_personalization(settings, duration)
        settings = with_demo_webhooks(settings)
        console.print(
            f"[bold]arbflow demo[/]: {source} market data{where} for {duration:g} s on "
            f"{', '.join(settings.market.exchanges)} x {len(settings.market.symbols)} symbols → "
            f"lake at {settings.lake.url}"
        )
        started = datetime.now(UTC)
        stats = _run_and_summarise(settings, source, duration, console, "demo", users=users)
    console.print("[bold]Sample DuckDB query[/] (arbflow query):")
    console.print(f"[dim]{SAMPLE_QUERY}[/]")
    console.print(format_table(run_query(Lake.from_settings(settings.lake), SAMPLE_QUERY), "table"))
    console.print(
        'Next: [bold]uv run --frozen arbflow query "SELECT * FROM funding_rates LIMIT 5"[/], '
        f"the lake under [bold]{settings.lake.url}[/], docs/lake.md for the layout."
    )
    if users > 0:
        from serve.standins.demo_users import try_by_hand_hint

        console.print(try_by_hand_hint(settings))
    _report_and_dashboard(settings, console, since=started)
    return stats


def _report_and_dashboard(settings: Settings, console: Console, *, since: datetime) -> None:
    """``arbflow report`` over this run, then where the dashboard lives."""
    from pipeline.analytics import report, rich_tables
    from pipeline.lake import Lake
    from serve.webhook import admin_token

    console.print(f"[bold]arbflow report[/] (this run, since {since.isoformat(timespec='seconds')}):")
    try:
        for table in rich_tables(report(Lake.from_settings(settings.lake), since)):
            console.print(table)
    except Exception as exc:  # the summary above stands on its own
        console.print(f"[yellow]report: {type(exc).__name__}: {exc}[/]")
    _experiment_reports(settings, console, since=since)
    token = admin_token(settings.secret_key, settings.data_dir)
    console.print(
        "Dashboard: [bold]uv run --frozen arbflow serve[/], then open "
        f"[bold]http://{settings.http.host}:{settings.http.port}/dashboard?token={token}[/] "
        "(charts of this lake, refreshing live; docs/analytics.md). "
        "The same tables any time: [bold]uv run --frozen arbflow report --since 1h[/]."
    )


def _experiment_reports(settings: Settings, console: Console, *, since: datetime) -> None:
    """``arbflow report --experiment NAME`` over this run, for each configured experiment."""
    from pipeline.analytics.experiments import experiment_report, rich_table
    from pipeline.lake import Lake

    lake = Lake.from_settings(settings.lake)
    for experiment in settings.experiments:
        console.print(
            f"[bold]arbflow report --experiment {experiment.name}[/] (this run; docs/experiments.md):"
        )
        try:
            console.print(rich_table(experiment_report(lake, experiment.name, settings.experiments, since)))
        except Exception as exc:  # the summary above stands on its own
            console.print(f"[yellow]experiment report: {type(exc).__name__}: {exc}[/]")
