"""``arbflow run`` in the foreground: what it prints at start, its status line, the wait,
the signals that stop it (SIGTERM, Ctrl-C twice), the stop report and the closing
summaries. The system itself: :mod:`serve.production`."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from rich.console import Console

from core.settings import MarketSourceName, Settings
from serve.production import (
    ProductionSystem,
    StartTimes,
    StepOutcome,
    bot_mode,
)

log = logging.getLogger(__name__)


def _announce(console: Console, system: ProductionSystem) -> None:
    from actors.ratelimit import configured_rate
    from serve.webhook import ADMIN_TOKEN_FILE, WEBHOOK_PATH

    s = system.settings
    base = system.base_url
    console.print(
        f"[bold green]arbflow run[/]: {system.source} market data on {', '.join(s.market.exchanges)} "
        f"x {len(s.market.symbols)} symbols → lake at {s.lake.url}  (Ctrl-C or SIGTERM stops)"
    )
    tg = s.telegram
    if system.mode == "webhook":
        console.print(
            f"  bot       webhook {tg.public_url.rstrip('/')}{WEBHOOK_PATH} → {base}{WEBHOOK_PATH} "
            f"(setWebhook via {tg.api_base})"
        )
    elif system.mode == "polling":
        console.print(f"  bot       polling getUpdates at {tg.api_base} (no ARBFLOW_TELEGRAM__PUBLIC_URL)")
    else:
        console.print("  bot       off: no ARBFLOW_TELEGRAM__TOKEN (no replies, no pushes)")
    if system.mode != "off" and len(tg.pool) > 1:  # docs/bot-pool.md
        ids = tg.bot_ids
        paths = f"; the others at {WEBHOOK_PATH}/<bot id>" if system.mode == "webhook" else ""
        console.print(
            f"  pool      {len(ids)} bots ({', '.join(map(str, ids))}; {ids[0]} the primary{paths}), "
            f"{configured_rate(s):g} msg/s each"
        )
    if system.serve_http:
        console.print(f"  health    {base}/healthz   {base}/readyz")
        console.print(
            f"  admin     {base}/dashboard  {base}/api/opportunities  "
            f"(Bearer token in {s.data_dir / ADMIN_TOKEN_FILE})"
        )


def _started(console: Console, system: ProductionSystem) -> None:
    if system.serve_error:
        console.print(f"[red]the Serve app failed: {system.serve_error}[/]")
    marks = ", ".join(f"{k} {v:.1f} s" for k, v in system.times.marks.items())
    console.print(f"  started   {marks}", soft_wrap=True)  # one line, whatever the width


def _status(system: ProductionSystem, stats: Any) -> str:
    rate = stats.quotes / stats.wall_s if stats.wall_s else 0.0
    files = stats.sink.get("total", {}).get("files", 0)
    bot = "" if system.mode == "off" else f"  bot {system.mode}"
    return f"{stats.quotes:>9,} quotes  {rate:>7,.0f}/s  lag {stats.max_lag_s:4.1f} s  {files} files{bot}"


def _wait(system: ProductionSystem, stop: threading.Event, duration: float | None, console: Console) -> None:
    """Until ``stop`` (a signal), ``duration`` or the end of a replay file."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("[bold]run"), BarColumn(), TextColumn("{task.fields[status]}")]
    columns.append(TimeRemainingColumn() if duration else TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("run", total=duration, status="starting")
        start = time.monotonic()
        while not stop.wait(0.5):
            stats = system.pipeline.stats()
            elapsed = time.monotonic() - start
            progress.update(task, completed=min(elapsed, duration or elapsed), status=_status(system, stats))
            if (duration and elapsed >= duration) or (system.source == "replay" and stats.done):
                break


def print_stop(console: Console, outcomes: list[StepOutcome], took_s: float) -> None:
    console.print(f"[bold]stopped[/] in {took_s:.1f} s:")
    for o in outcomes:
        mark = "[green]ok[/]  " if o.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {o.name:<34} {o.seconds:5.1f} s  {o.detail}")


class StartInterrupted(KeyboardInterrupt):
    """SIGTERM / Ctrl-C while starting: the start is cut short and the stop sequence runs."""


class StopSignals:
    """SIGINT and SIGTERM set :attr:`event` (the main loop then runs the stop sequence).

    While :attr:`starting`, a signal also interrupts the main thread (a start can block on an
    actor that is slow to come up); a second signal while stopping is ignored, so the
    sequence is not cut short.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.starting = True

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        first = not self.event.is_set()
        if first:
            log.warning("%s: stopping", signal.Signals(signum).name)
        self.event.set()
        if first and self.starting:
            self.starting = False
            raise StartInterrupted


def run_production(
    settings: Settings,
    *,
    duration: float | None,
    console: Console,
    shards: int | None = None,
    replicas: int = 1,
) -> Any:
    """``arbflow run``: start everything, wait, stop in order, print what happened."""
    from datetime import UTC, datetime, timedelta

    from pipeline.sources.factory import validate_source
    from serve.runtime import embedded

    times = StartTimes()
    source: MarketSourceName = settings.market.source or "live"
    validate_source(settings, source)
    signals = StopSignals()
    signals.install()
    stop = signals.event
    since = datetime.now(UTC) - timedelta(seconds=5)
    if source == "replay":  # the replay clock is the file's, not the wall clock
        since = datetime(1970, 1, 1, tzinfo=UTC)
    tg_since = datetime.now(UTC)
    system: ProductionSystem | None = None
    if bot_mode(settings) == "polling":
        from serve.first_answers import preload_bot

        preload_bot()  # the first answers come from this process (serve/first_answers.py)
    try:
        # A replay file without a bot is a batch job: process, flush, exit; nothing to serve.
        serve_http = not (source == "replay" and bot_mode(settings) == "off")
        with embedded(settings, command="run", serves_http=serve_http) as live:
            signals.install()  # ray.init installs its own SIGTERM handler
            times.mark("ray up")
            system = ProductionSystem(
                live, source, shards=shards, replicas=replicas, times=times, serve_http=serve_http
            )
            _announce(console, system)
            try:
                system.start(stop)
                signals.starting = False
                signals.install()
                _started(console, system)
                if not stop.is_set():
                    _wait(system, stop, duration, console)
            except StartInterrupted:
                console.print("interrupted while starting")
                _started(console, system)
            finally:
                signals.starting = False
                t0 = time.monotonic()
                console.print("stopping …")
                outcomes = system.stop()
                print_stop(console, outcomes, time.monotonic() - t0)
    except StartInterrupted:  # before the system existed: the runtime has stopped what it started
        console.print("interrupted while starting")
        raise SystemExit(130) from None
    if system is None:
        return None
    _summaries(settings, system, since, tg_since, console)
    stats = system.pipeline_stats
    if stats is not None:
        failed = [f"{k}: {c['failed']}" for k, c in stats.coordinators.items() if c.get("failed")]
        if failed:
            raise SystemExit("source failed: " + "; ".join(failed))
    return stats


def _summaries(
    settings: Settings, system: ProductionSystem, since: Any, tg_since: Any, console: Console
) -> None:
    from serve.demo import _lake_rows, opportunity_tables, summary_tables
    from serve.summaries import delivery_tables

    stats = system.pipeline_stats
    if stats is None:
        return
    for table in summary_tables(stats, _lake_rows(settings)):
        console.print(table)
    for table in opportunity_tables(settings, since, stats):
        console.print(table)
    if system.push_stats is not None:
        for table in delivery_tables(settings, system.push_stats, tg_since):
            console.print(table)


__all__ = ["StopSignals", "print_stop", "run_production"]
