"""One aiohttp server for the emulated exchanges, and the API tests use.

``async with start_exchanges(fixtures_dir, seed=7) as ex:`` starts the market feed
(the seeded simulator, or a replay file) and one HTTP + websocket server on a free
port; ``ex.endpoints`` is the value of ``ARBFLOW_MARKET__ENDPOINTS`` that points
the live source at it; ``ex.fault("bybit", "gap")`` switches a fault on.

Routes: ``/<exchange>/<original host>/<original path>`` (see ``base``), plus a
small control API: ``GET /_control/status``, ``POST /_control/fault`` with
``{"exchange": "binance", "kind": "rate_limit", "arg": "2", "duration_s": 5}``
(``"clear": true`` switches one off) and ``POST /_control/keys`` with
``{"exchange": "okx", "api_key": "…", "secret": "…", "passphrase": "…", "permissions": ["read"]}``
(a key whose signatures are checked; see ``keys``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from serve.standins.exchanges.base import FAULT_KINDS, ExchangeEmulator
from serve.standins.exchanges.market import EMULATOR_DEPTH, BatchSource, MarketFeed

log = logging.getLogger(__name__)

EMULATED = ("binance", "bybit", "okx")
DEFAULT_SYMBOLS = (
    "BTC/USDT",
    "ETH/USDT",
    "SOL/USDT",
    "XRP/USDT",
    "DOGE/USDT",
    "BTC/USDT:USDT",
    "ETH/USDT:USDT",
    "SOL/USDT:USDT",
)


def _emulator_class(name: str) -> type[ExchangeEmulator]:
    if name == "binance":
        from serve.standins.exchanges.binance import BinanceEmulator

        return BinanceEmulator
    if name == "bybit":
        from serve.standins.exchanges.bybit import BybitEmulator

        return BybitEmulator
    if name == "okx":
        from serve.standins.exchanges.okx import OkxEmulator

        return OkxEmulator
    raise ValueError(f"no emulator for {name!r}: one of {', '.join(EMULATED)}")


@dataclass(frozen=True)
class FaultSpec:
    """A fault from the command line: ``[EXCHANGE:]KIND[=ARG][@AT][+FOR]`` (seconds)."""

    kind: str
    exchange: str | None = None
    arg: str | None = None
    at_s: float = 0.0
    duration_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        rest = text.strip()
        exchange = None
        head = rest.split("=", 1)[0].split("@", 1)[0]
        if ":" in head:
            exchange, rest = rest.split(":", 1)
        duration = None
        if "+" in rest.rsplit("@", 1)[-1] and "@" in rest:
            rest, dur = rest.rsplit("+", 1)
            duration = float(dur)
        at = 0.0
        if "@" in rest:
            rest, at_text = rest.rsplit("@", 1)
            at = float(at_text)
        kind, _, arg = rest.partition("=")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r} in {text!r}: one of {', '.join(FAULT_KINDS)}")
        if exchange is not None and exchange not in EMULATED:
            raise ValueError(f"unknown exchange {exchange!r} in {text!r}: one of {', '.join(EMULATED)}")
        return cls(kind, exchange, arg or None, at, duration)


class Exchanges:
    """The running emulators (what :func:`start_exchanges` yields)."""

    def __init__(self, feed: MarketFeed, emulators: dict[str, ExchangeEmulator]) -> None:
        self.feed = feed
        self.emulators = emulators
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._timers: set[asyncio.Task[None]] = set()

    @property
    def endpoints(self) -> dict[str, dict[str, str]]:
        """``ARBFLOW_MARKET__ENDPOINTS`` for the live source (as a dict; ``json.dumps`` it)."""
        ws = self.url.replace("http://", "ws://", 1)
        return {name: {"rest": f"{self.url}/{name}", "ws": f"{ws}/{name}"} for name in self.emulators}

    def fault(
        self, exchange: str | None, kind: str, arg: str | None = None, duration_s: float | None = None
    ) -> None:
        """Switch a fault on now, on one exchange (or all when ``exchange`` is None)."""
        for name, emulator in self.emulators.items():
            if exchange is None or exchange == name:
                emulator.fault(kind, arg, duration_s)

    def clear(self, exchange: str | None, kind: str, arg: str | None = None) -> None:
        for name, emulator in self.emulators.items():
            if exchange is None or exchange == name:
                emulator.clear(kind, arg)

    def add_key(
        self,
        exchange: str,
        api_key: str,
        secret: str,
        *,
        passphrase: str | None = None,
        permissions: set[str] | frozenset[str] | None = None,
    ) -> None:
        """Register an API key: its signatures are then checked with ``secret`` (and okx's
        ``passphrase``); ``permissions`` (``read``/``trade``/``withdraw``/``transfer``)
        default to the key's name (:mod:`serve.standins.exchanges.keys`)."""
        if exchange not in self.emulators:
            raise ValueError(f"no emulator for {exchange!r}: one of {', '.join(self.emulators)}")
        self.emulators[exchange].keys.add(api_key, secret, passphrase=passphrase, permissions=permissions)

    def schedule(self, spec: FaultSpec) -> None:
        """Apply a :class:`FaultSpec` at its time (and clear the lasting ones after ``+FOR``)."""

        async def later() -> None:
            await asyncio.sleep(spec.at_s)
            self.fault(spec.exchange, spec.kind, spec.arg, spec.duration_s)
            if spec.duration_s is not None and spec.kind in ("delist", "withdrawals", "skew"):
                await asyncio.sleep(spec.duration_s)
                self.clear(spec.exchange, spec.kind, spec.arg)

        task = asyncio.create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "batches": self.feed.batches,
            "exchanges": {
                name: {
                    **emulator.stats,
                    "updates": emulator.venue.updates,
                    "symbols": emulator.live_symbols(),
                    "connections": len(emulator.connections),
                }
                for name, emulator in self.emulators.items()
            },
        }

    async def _control_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            exchange = body.get("exchange")
            if body.get("clear"):
                self.clear(exchange, str(body["kind"]), body.get("arg"))
            else:
                duration = body.get("duration_s")
                self.fault(
                    exchange,
                    str(body["kind"]),
                    body.get("arg"),
                    None if duration is None else float(duration),
                )
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _control_keys(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            perms = body.get("permissions")
            self.add_key(
                str(body["exchange"]),
                str(body["api_key"]),
                str(body["secret"]),
                passphrase=body.get("passphrase"),
                permissions=None if perms is None else {str(p) for p in perms},
            )
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _control_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/_control/status", self._control_status)
        app.router.add_post("/_control/fault", self._control_fault)
        app.router.add_post("/_control/keys", self._control_keys)
        for name, emulator in self.emulators.items():
            app.router.add_route("*", f"/{name}/{{host}}/{{path:.*}}", emulator.handle)
            app.router.add_route("*", f"/{name}/{{host}}", emulator.handle)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = getattr(site, "_server", None)
        bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
        self.url = f"http://{host}:{bound}"
        await self.feed.start()

    async def stop(self) -> None:
        for task in list(self._timers):
            task.cancel()
        for emulator in self.emulators.values():
            emulator.venue.disconnect_all()
        await self.feed.stop()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()


def build_source(
    source: str,
    exchanges: list[str],
    symbols: list[str],
    *,
    seed: int,
    rate: float,
    replay_path: Path | None,
) -> BatchSource:
    if source == "sim":
        from pipeline.sources.sim import SimMarketSource

        return SimMarketSource(
            exchanges,
            symbols,
            seed=seed,
            rate=rate,
            depth=EMULATOR_DEPTH,
            realtime=True,
            funding_every_s=1.0,
            snapshot_first=True,
        )
    if source == "replay":
        from pipeline.sources.replay import ReplayMarketSource

        if replay_path is None:
            raise ValueError("--source replay needs a replay file")
        return ReplayMarketSource(replay_path, speed=1.0, exchanges=exchanges, depth=EMULATOR_DEPTH)
    raise ValueError(f"unknown emulator source {source!r}: sim or replay")


@contextlib.asynccontextmanager
async def start_exchanges(
    fixtures_dir: str | Path | None,
    *,
    seed: int = 7,
    exchanges: list[str] | None = None,
    symbols: list[str] | None = None,
    source: str = "sim",
    replay_path: Path | None = None,
    rate: float = 200.0,
    host: str = "127.0.0.1",
    port: int = 0,
    wait_ready: bool = True,
) -> AsyncIterator[Exchanges]:
    """Run the emulators for the duration of the ``async with`` block.

    ``fixtures_dir``: the recorded responses (``raw/<exchange>/…``) the listings come from;
    None lists from :mod:`serve.standins.exchanges.listings` instead."""
    if fixtures_dir is not None and not (Path(fixtures_dir) / "raw").is_dir():
        raise FileNotFoundError(
            f"recorded exchange responses not found under {fixtures_dir} (expected raw/<exchange>/…)"
        )
    names = list(exchanges or EMULATED)
    carried = list(symbols or DEFAULT_SYMBOLS)
    feed = MarketFeed(
        build_source(source, names, carried, seed=seed, rate=rate, replay_path=replay_path), names, carried
    )
    emulators = {
        name: _emulator_class(name)(
            feed.venues[name], None if fixtures_dir is None else Path(fixtures_dir), carried
        )
        for name in names
    }
    for emulator in emulators.values():
        emulator.venue.gap = emulator.take_gap
    exchanges_ = Exchanges(feed, emulators)
    await exchanges_.start(host, port)
    try:
        if wait_ready and source == "sim":
            await asyncio.wait_for(feed.ready.wait(), 10.0)
        yield exchanges_
    finally:
        await exchanges_.stop()


def default_fixtures_dir() -> Path | None:
    """``shared/fixtures/exchanges`` beside the repository (where the recorded responses
    live), or None when it is not there (the emulators then use the built-in listings)."""
    path = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "exchanges"
    return path if (path / "raw").is_dir() else None


async def serve_forever(
    fixtures_dir: Path | None,
    *,
    host: str,
    port: int,
    source: str,
    replay_path: Path | None,
    faults: list[FaultSpec],
    seed: int,
    duration_s: float | None = None,
    on_ready: Any = None,
) -> None:
    """What ``arbflow exchanges`` runs: the emulators until Ctrl-C (or ``duration_s``)."""
    async with start_exchanges(
        fixtures_dir, seed=seed, source=source, replay_path=replay_path, host=host, port=port
    ) as ex:
        for spec in faults:
            ex.schedule(spec)
        if on_ready is not None:
            on_ready(ex)
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_s)


@contextlib.contextmanager
def exchanges_in_thread(
    fixtures_dir: Path | None,
    *,
    exchanges: list[str] | None = None,
    symbols: list[str] | None = None,
    seed: int = 7,
    rate: float = 200.0,
    start_timeout_s: float = 30.0,
) -> Iterator[Exchanges]:
    """The emulators on their own event loop in a daemon thread, for a synchronous caller
    (``arbflow demo`` on the live source): yields the running :class:`Exchanges` and stops
    them when the block ends."""
    unknown = [e for e in exchanges or () if e not in EMULATED]
    if unknown:
        raise ValueError(
            f"no emulator for {', '.join(unknown)}: the emulators speak {', '.join(EMULATED)} "
            "(set ARBFLOW_MARKET__EXCHANGES to some of them, or use --source sim)"
        )
    started: concurrent.futures.Future[Exchanges] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with start_exchanges(
                fixtures_dir, seed=seed, exchanges=exchanges, symbols=symbols, rate=rate
            ) as ex:
                started.set_result(ex)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            else:
                log.exception("the exchange emulators stopped")

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="exchanges", daemon=True)
    thread.start()
    try:
        yield started.result(timeout=start_timeout_s)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
