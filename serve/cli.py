"""The ``arbflow`` command line (Typer). Every command has ``--help``."""

from __future__ import annotations

import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.errors import ArbflowError
from core.settings import MarketSourceName, Settings, load_settings

app = typer.Typer(
    name="arbflow",
    help="Crypto arbitrage opportunities: market data on Ray, a Parquet lake, pushes on Telegram.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Summary tables are wide: give them room when the output is not a terminal (CI logs).
console = Console() if sys.stdout.isatty() else Console(width=140)
err = Console(stderr=True, soft_wrap=True)


class Source(StrEnum):
    sim = "sim"
    replay = "replay"
    live = "live"


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _settings(source: MarketSourceName | None, default: MarketSourceName, **market: Any) -> Settings:
    settings = load_settings()
    chosen = source or settings.market.source or default
    update = {"source": chosen, **{k: v for k, v in market.items() if v is not None}}
    return settings.model_copy(update={"market": settings.market.model_copy(update=update)})


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds of market data to run.")] = 60.0,
    users: Annotated[int, typer.Option(help="Simulated Telegram users to opt in.")] = 200,
    source: Annotated[
        Source | None,
        typer.Option(
            help="Market source: live (ccxt against the local exchange emulators unless "
            "ARBFLOW_MARKET__ENDPOINTS is set; the default), sim (the simulator directly) or replay."
        ),
    ] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open the dashboard.")] = False,
    bots: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sandbox bots of a pool, the users spread over them "
            "(default: ARBFLOW_TELEGRAM__TOKENS's count, else 1).",
        ),
    ] = None,
) -> None:
    """The whole system on one machine: market data in, the lake written, a summary out."""
    from serve.demo import run_demo

    settings = _settings(source.value if source else None, "live")
    if bots is not None:  # the demo's sandbox hosts that many bots (docs/bot-pool.md)
        from serve.standins.sandbox import sandbox_tokens

        tokens = sandbox_tokens(bots) if bots > 1 else []
        telegram = settings.telegram.model_copy(update={"tokens": tokens})
        settings = settings.model_copy(update={"telegram": telegram})
    run_demo(settings, duration=duration, users=users, console=console, open_browser=not no_browser)


@app.command()
def run(
    source: Annotated[
        Source | None, typer.Option(help="Market source (default: ARBFLOW_MARKET__SOURCE or live).")
    ] = None,
    replay_path: Annotated[Path | None, typer.Option(help="NDJSON file for the replay source.")] = None,
    speed: Annotated[float | None, typer.Option(help="Replay speed: 0 = as fast as possible.")] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    shards: Annotated[
        int | None, typer.Option(help="Bot shard actors (default: by the CPUs, 1-4).", min=1)
    ] = None,
    replicas: Annotated[int, typer.Option(help="Replicas of the HTTP ingress deployment.", min=1)] = 1,
) -> None:
    """Production: ingest, detect, push, and serve the bot (webhook, or getUpdates polling
    without ARBFLOW_TELEGRAM__PUBLIC_URL), the API and the dashboard; one Redis, one Ray.
    Long-running; SIGTERM / Ctrl-C stops in order. A replay file: process it and exit."""
    from serve.foreground import run_production

    settings = _settings(
        source.value if source else None, "live", replay_path=replay_path, replay_speed=speed
    )
    run_production(settings, duration=duration, console=console, shards=shards, replicas=replicas)


@app.command()
def query(
    sql: Annotated[
        str, typer.Argument(help="DuckDB SQL; every dataset is a view by its name (quotes, order_books, …).")
    ],
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """Run SQL over the lake with DuckDB (local folder or S3)."""
    from pipeline.lake import Lake
    from pipeline.query import format_table, run_query

    settings = load_settings()
    result = run_query(Lake.from_settings(settings.lake), sql)
    out = format_table(result, format.value)
    if isinstance(out, str):
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    else:
        console.print(out)


def progress_bar(total_s: float | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@app.command("serve")
def serve_command(
    replicas: Annotated[int, typer.Option(help="Replicas of the HTTP ingress deployment.")] = 1,
    shards: Annotated[int, typer.Option(help="Bot shard actors (updates of one chat go to one shard).")] = 4,
    host: Annotated[str | None, typer.Option(help="HTTP host (default: ARBFLOW_HTTP__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: ARBFLOW_HTTP__PORT).")] = None,
    ha_proxy: Annotated[
        bool, typer.Option("--ha-proxy", help="Serve's high-throughput mode (HAProxy; docs/webhook.md).")
    ] = False,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print the Serve config for `serve deploy` on a cluster and exit."
        ),
    ] = False,
    include_secrets: Annotated[
        bool, typer.Option(help="With --print-config: put the secrets in the config's env too.")
    ] = False,
) -> None:
    """Only the Ray Serve app: Telegram webhook, /healthz, /readyz, /api/opportunities, /dashboard.
    Ctrl-C stops."""
    import os
    import signal
    import threading
    import warnings

    from serve.runtime import embedded
    from serve.webhook import ADMIN_TOKEN_FILE, WEBHOOK_PATH

    settings = load_settings()
    http = settings.http.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    settings = settings.model_copy(update={"http": http})
    if print_config:
        from serve.deploy import render_serve_config

        sys.stdout.write(
            render_serve_config(
                settings,
                num_replicas=replicas,
                host=host,
                port=port,
                ha_proxy=ha_proxy,
                include_secrets=include_secrets,
            )
        )
        return
    if ha_proxy:  # read by Ray Serve when its processes start: before ray.init
        from serve.deploy import HA_PROXY_ENV

        os.environ.update(HA_PROXY_ENV)
    with embedded(settings, command="serve", role="attach", serves_http=True) as live:
        with warnings.catch_warnings():  # Ray Serve's pydantic models warn at import
            warnings.simplefilter("ignore", DeprecationWarning)
            from ray import serve as ray_serve

            from serve.app import build_app, shutdown_shards
        base = f"http://{live.http.host}:{live.http.port}"
        with console.status(f"starting Ray Serve on {base} …"):
            ray_serve.start(http_options={"host": live.http.host, "port": live.http.port})
            ray_serve.run(
                build_app({"settings": live, "num_replicas": replicas, "shards": shards}),
                name="arbflow",
                route_prefix="/",
            )
        tg = live.telegram
        console.print(f"[bold green]arbflow serve[/] at {base}  (Ctrl-C to stop)")
        console.print(f"  webhook   POST {base}{WEBHOOK_PATH}")
        if tg.public_url:
            console.print(
                f"            setWebhook → {tg.public_url.rstrip('/')}{WEBHOOK_PATH} (via {tg.api_base})"
            )
        console.print(f"  health    {base}/healthz   {base}/readyz")
        console.print(
            f"  admin API {base}/api/opportunities  (Bearer token in {live.data_dir / ADMIN_TOKEN_FILE})"
        )
        # Ray leaves SIGINT deferred in the driver after serve.run: own SIGINT/SIGTERM here.
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                pass
            console.print("stopping …")
        finally:
            ray_serve.shutdown()
            shutdown_shards(live, shards)


@app.command()
def bot(
    polling: Annotated[
        bool, typer.Option("--polling", help="Long-poll getUpdates (development; no public URL needed).")
    ] = False,
) -> None:
    """Run the Telegram bot by long polling (development). Webhook mode is `arbflow serve`."""
    if not polling:
        err.print(
            "webhook mode runs inside the Serve app: `arbflow serve` (set ARBFLOW_TELEGRAM__PUBLIC_URL "
            "to have it call setWebhook). For development without a public URL: `arbflow bot --polling`."
        )
        raise typer.Exit(2)
    from serve.foreground import StopSignals, print_stop
    from serve.production import ProductionSystem, run_steps
    from serve.runtime import embedded

    settings = load_settings()
    if not settings.telegram.token:
        err.print("bot --polling needs ARBFLOW_TELEGRAM__TOKEN (`arbflow sandbox` prints one)")
        raise typer.Exit(2)
    # The bot alone, on the same path as `arbflow run`'s polling: getUpdates → the bot
    # shards (dedup, pacing by ratelimit:global, session events to the lake).
    settings = settings.model_copy(
        update={"telegram": settings.telegram.model_copy(update={"public_url": ""})}
    )
    from serve.first_answers import preload_bot

    preload_bot()  # while Redis and Ray start (serve/first_answers.py)
    signals = StopSignals()
    signals.starting = False
    signals.install()
    with embedded(settings, command="bot") as live:
        signals.install()
        system = ProductionSystem(live, "sim", serve_http=False)
        system.start_bot()
        console.print(
            f"[bold green]arbflow bot[/]: polling getUpdates at {live.telegram.api_base} (Ctrl-C stops)"
        )
        system.wait_bot(stop=signals.event)  # then the shard actors take over
        signals.event.wait()
        bot_steps = ("stop polling", "drain the bot shards", "flush the lake")
        steps = [s for s in system.stop_steps() if s.name in bot_steps]
        print_stop(console, run_steps(steps), 0.0)


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="Port of the sandbox Bot API server.")] = 8081,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    token: Annotated[
        list[str] | None,
        typer.Option(help="Bot token to accept, repeatable for a pool of bots (default: the sandbox's)."),
    ] = None,
    bots: Annotated[
        int, typer.Option(min=1, help="Host this many sandbox bots (a pool: ARBFLOW_TELEGRAM__TOKENS).")
    ] = 1,
) -> None:
    """The local Telegram Bot API sandbox (point ARBFLOW_TELEGRAM__API_BASE at it)."""
    from serve.standins.sandbox import main as sandbox_main

    sandbox_main(port, host, token or None, bots=bots)


@app.command()
def exchanges(
    port: Annotated[int, typer.Option(help="Port of the emulators' HTTP + websocket server.")] = 8090,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    source: Annotated[
        Source, typer.Option(help="Prices from the seeded simulator or a replay file.")
    ] = Source.sim,
    replay: Annotated[Path | None, typer.Option(help="NDJSON replay file for --source replay.")] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="[EXCHANGE:]KIND[=ARG][@AT][+FOR], e.g. bybit:gap@10, rate_limit=2@5+3 (repeatable)."
        ),
    ] = None,
    fixtures: Annotated[
        Path | None, typer.Option(help="Recorded exchange responses (shared/fixtures/exchanges).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated market.")] = 7,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
) -> None:
    """Local emulators of binance, bybit and okx (public REST + websocket protocols)."""
    import asyncio
    import contextlib
    import json

    from serve.standins.exchanges.server import FaultSpec, default_fixtures_dir, serve_forever

    try:
        specs = [FaultSpec.parse(f) for f in fault or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fault") from None
    if source == Source.live:
        raise typer.BadParameter("the emulators take prices from sim or replay", param_hint="--source")

    def ready(ex: Any) -> None:
        console.print(f"exchange emulators at {ex.url}; point the live source at them with")
        console.print(f"ARBFLOW_MARKET__ENDPOINTS='{json.dumps(ex.endpoints)}'", soft_wrap=True)

    run = serve_forever(
        fixtures or default_fixtures_dir(), host=host, port=port, source=source.value,
        replay_path=replay, faults=specs, seed=seed, duration_s=duration, on_ready=ready,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run)


@app.command()
def record(
    duration: Annotated[float, typer.Option(help="Seconds to record.", min=0.1)],
    out: Annotated[Path, typer.Option(help="NDJSON file to write (the replay format).")],
    exchanges: Annotated[
        str | None, typer.Option(help="Comma-separated ccxt ids (default: ARBFLOW_MARKET__EXCHANGES).")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated unified symbols (default: ARBFLOW_MARKET__SYMBOLS).")
    ] = None,
) -> None:
    """Record what the live source receives as a replay NDJSON file (replay it with --source replay)."""
    import asyncio
    import json

    from pipeline.sources.recording import record_live

    def split(text: str | None) -> list[str] | None:
        return None if text is None else [p.strip() for p in text.split(",") if p.strip()]

    from pydantic import ValidationError

    settings = load_settings()
    values = settings.market.model_dump()
    values.update(
        source="live",
        **{k: v for k, v in (("exchanges", split(exchanges)), ("symbols", split(symbols))) if v},
    )
    try:
        settings = settings.model_copy(update={"market": type(settings.market).model_validate(values)})
    except ValidationError as exc:
        err.print(f"record: {exc}")
        raise typer.Exit(2) from None
    with progress_bar(duration) as bar:
        task = bar.add_task("recording", total=duration, status=str(out))
        try:
            result = asyncio.run(
                record_live(settings, out, duration, on_tick=lambda s: bar.update(task, completed=s))
            )
        except ArbflowError as exc:
            err.print(f"record: {exc}")
            raise typer.Exit(2) from None
        bar.update(task, completed=duration)
    summary = {k: result[k] for k in ("path", "records", "by_kind", "by_exchange", "duration_s", "failed")}
    sys.stdout.write(json.dumps(summary) + "\n")
    if not result["records"]:
        err.print("record: nothing was received (are the exchanges reachable? ARBFLOW_MARKET__ENDPOINTS)")
        raise typer.Exit(1)


@app.command()
def report(
    since: Annotated[
        str, typer.Option(help="Window: a duration back from now (15m, 24h, 7d), an ISO time, or 'all'.")
    ] = "24h",
    format: Annotated[
        Format, typer.Option("--format", "-f", help="table (Rich tables) or json (one object of tables).")
    ] = Format.table,
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            "-e",
            help="Only this experiment's report: engagement per variant (docs/experiments.md).",
        ),
    ] = None,
) -> None:
    """Analytics tables over the lake: sessions, users, funnel, deliveries, latency, engagement, 429s;
    with --experiment NAME, that experiment's engagement per variant."""
    import json
    from datetime import UTC, datetime

    from pipeline.analytics import REPORT, parse_since, rich_tables
    from pipeline.analytics import report as lake_report
    from pipeline.lake import Lake
    from pipeline.query import format_table

    if format is Format.csv:
        err.print("report: --format is table or json")
        raise typer.Exit(2)
    now = datetime.now(UTC)
    try:
        start = parse_since(since, now)
    except ValueError as exc:
        err.print(f"report: {exc}")
        raise typer.Exit(2) from None
    settings = load_settings()
    if experiment is not None:
        _experiment_report(settings, experiment, start, now, format)
        return
    tables = lake_report(Lake.from_settings(settings.lake), start, now=now)
    window = "all time" if start is None else f"since {start.isoformat(timespec='seconds')}"
    if format is Format.json:
        body = {key: json.loads(str(format_table(tables[key], "json"))) for key, _, _ in REPORT}
        out = {"lake": settings.lake.url, "now": now.isoformat(), "since": start and start.isoformat()}
        sys.stdout.write(json.dumps({**out, "tables": body}, ensure_ascii=False) + "\n")
        return
    console.print(f"[bold]arbflow report[/] · {settings.lake.url} · {window} (UTC)")
    for table in rich_tables(tables):
        console.print(table)
    if settings.experiments:
        names = ", ".join(e.name for e in settings.experiments)
        console.print(f"Experiments: {names} (per variant: [bold]arbflow report --experiment NAME[/])")


def _experiment_report(
    settings: Settings, name: str, start: datetime | None, now: datetime, format: Format
) -> None:
    """``arbflow report --experiment NAME``: exit 2 naming the known experiments when unknown."""
    import json

    from pipeline.analytics.experiments import UnknownExperiment, experiment_report, rich_table
    from pipeline.lake import Lake

    try:
        lake = Lake.from_settings(settings.lake)
        found = experiment_report(lake, name, settings.experiments, start, now=now)
    except UnknownExperiment as exc:
        err.print(f"report: {exc}")
        raise typer.Exit(2) from None
    if format is Format.json:
        out = {"lake": settings.lake.url, "now": now.isoformat(), "since": start and start.isoformat()}
        sys.stdout.write(json.dumps({**out, **found.as_dict()}, ensure_ascii=False) + "\n")
        return
    window = "all time" if start is None else f"since {start.isoformat(timespec='seconds')}"
    console.print(f"[bold]arbflow report --experiment {name}[/] · {settings.lake.url} · {window} (UTC)")
    console.print(rich_table(found))


@app.command()
def personalize(
    run_now: Annotated[
        bool,
        typer.Option("--run", help="Recompute the model from the lake now (the running system reads it)."),
    ] = False,
    user: Annotated[int | None, typer.Option("--user", "-u", help="Show this user's model too.")] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """The engagement model (docs/personalization.md): its last run and a user's affinities, from
    the Redis of ARBFLOW_REDIS__URL; --run recomputes it from the lake first."""
    import asyncio
    import json

    from actors.personalization import recompute_async
    from serve.personalization import model_state
    from state.redis import redis_client

    if format is Format.csv:
        err.print("personalize: --format is table or json")
        raise typer.Exit(2)
    settings = load_settings()
    if not settings.redis.url:
        err.print("personalize: set ARBFLOW_REDIS__URL to the running system's Redis")
        raise typer.Exit(2)

    async def go() -> dict[str, Any]:
        ran = await recompute_async(settings) if run_now else None
        client = redis_client(settings.redis.url)
        try:
            state = await model_state(client, settings, user)
        finally:
            await client.aclose()
        return {**state, "run": ran} if ran is not None else state

    state = asyncio.run(go())
    if format is Format.json:
        sys.stdout.write(json.dumps(state, ensure_ascii=False, default=str) + "\n")
        return
    model = state["model"]
    console.print(
        rows_table(
            "Engagement model",
            [
                ("enabled", str(settings.personalization.enabled)),
                ("version", str(model.get("version", 0))),
                ("computed at", str(model.get("computed_at", "never"))),
                ("users with a model", str(model.get("users", 0))),
                ("affinities", str(model.get("affinities", 0))),
                ("everyone's open rate", f"{100 * float(model.get('global_rate', 0)):.1f}%"),
                ("run took", f"{model.get('took_ms', 0)} ms"),
                ("half-life", f"{settings.personalization.half_life_days:g} days"),
                ("every", f"{settings.personalization.interval_s:g} s"),
            ],
        )
    )
    if user is not None:
        found = state.get("user")
        if not found or "error" in found:
            console.print(f"user {user}: no model (neutral: pushes keep priority, then newest)")
            return
        rows = [("base open rate", f"{100 * found['base_rate']:.1f}%"), ("events", str(found["events"]))]
        rows += [(a["feature"], f"{a['affinity']:+.2f}") for a in found["top"]]
        console.print(rows_table(f"User {user}", rows))


class BacktestKind(StrEnum):
    funding_rate = "funding_rate"
    spot_spread = "spot_spread"


@app.command()
def backtest(
    kind: Annotated[BacktestKind, typer.Argument(help="funding_rate (a carry) or spot_spread.")],
    symbol: Annotated[str, typer.Argument(help="Unified symbol: BTC/USDT:USDT (funding), BTC/USDT (spot).")],
    legs: Annotated[
        str, typer.Option("--legs", help="A,B: funding: long A, short B; spot: buy on A, sell on B.")
    ],
    days: Annotated[int, typer.Option("--days", help="Window before --end: 7, 30 or 90 days.")] = 7,
    notional: Annotated[float, typer.Option(help="USD per leg (funding).")] = 10_000.0,
    threshold_bps: Annotated[
        float | None, typer.Option(help="Spot: open above this net bps (default: the detector's minimum).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="End of the window, ISO-8601 UTC (default: now).")] = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """What an opportunity would have earned over the last days, from the lake's own history."""
    import json
    from datetime import UTC, datetime

    from core.fees import FeeSchedule
    from pipeline.backtest import WINDOW_DAYS, funding_carry, spot_spread
    from pipeline.lake import Lake
    from pipeline.query import window_bounds

    if days not in WINDOW_DAYS:
        err.print(f"backtest: --days is one of {', '.join(map(str, WINDOW_DAYS))}")
        raise typer.Exit(2)
    pair = [p.strip() for p in legs.split(",") if p.strip()]
    if len(pair) != 2 or pair[0] == pair[1]:
        err.print("backtest: --legs takes two different exchanges, A,B")
        raise typer.Exit(2)
    try:
        stop = window_bounds(None, end, hours=1)[1] if end else datetime.now(UTC)
    except ValueError as exc:
        err.print(f"backtest: --end: {exc}")
        raise typer.Exit(2) from None
    settings = load_settings()
    lake = Lake.from_settings(settings.lake)
    fees = FeeSchedule.build(settings.fees)
    result: Any
    if kind is BacktestKind.funding_rate:
        result = funding_carry(
            lake, symbol, pair[0], pair[1], end=stop, days=days, notional=notional, fees=fees
        )
    else:
        threshold = settings.opportunities.min_net_bps if threshold_bps is None else threshold_bps
        result = spot_spread(
            lake,
            symbol,
            pair[0],
            pair[1],
            end=stop,
            days=days,
            threshold_bps=threshold,
            fees=fees,
            freshness_s=max(settings.opportunities.freshness_s, settings.market.poll_interval_s),
        )
    body = result.as_dict()
    if format is Format.json:
        sys.stdout.write(json.dumps({"kind": kind.value, **body}) + "\n")
        return
    console.print(
        rows_table(
            f"Backtest · {kind.value} · {symbol} · {pair[0]} → {pair[1]} · {days} d",
            [(k.replace("_", " "), f"{v:,.6g}" if isinstance(v, float) else str(v)) for k, v in body.items()],
        )
    )


lake_app = typer.Typer(help="Lake maintenance: retention.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


@lake_app.command("prune")
def lake_prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Delete the hour partitions older than each dataset's ARBFLOW_LAKE__RETENTION (days)."""
    import json

    from pipeline.lake import Lake
    from pipeline.retention import check_retention, prune

    settings = load_settings()
    retention = check_retention(settings.lake.retention)
    report = prune(Lake.from_settings(settings.lake), retention, dry_run=dry_run)
    rows = [e.as_row() for e in report.expired]
    if format is Format.json:
        sys.stdout.write(
            json.dumps({"dry_run": dry_run, "now": report.now.isoformat(), "expired": rows}) + "\n"
        )
        return
    verb = "would delete" if dry_run else "deleted"
    table = Table(title=f"Retention ({verb}) · {settings.lake.url}", title_justify="left")
    for column in ("dataset", "hour", "files", "bytes"):
        table.add_column(column, justify="right" if column in ("files", "bytes") else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("dataset", "hour", "files", "bytes")))
    kept = ", ".join(f"{k} {v:g} d" for k, v in sorted(retention.items())) or "nothing expires"
    table.caption = f"{report.partitions} hour partitions, {report.bytes:,} bytes ({verb}); retention: {kept}"
    console.print(table)


def main() -> None:
    import os

    from serve.runtime import configure_logging

    configure_logging(os.environ.get("ARBFLOW_LOG_LEVEL") or _dotenv_log_level())
    try:
        app()
    except ArbflowError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None


def _dotenv_log_level() -> str:
    try:
        return load_settings().log_level
    except Exception:  # a bad setting is reported by the command that reads it
        return "WARNING"


def rows_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return table


if __name__ == "__main__":
    main()
