"""What every emulated exchange shares: routing, faults, websocket connections.

An emulator answers under ``/<exchange>/<original host>/<original path>``: the live
source rewrites each of ccxt's API URLs ``https://api.binance.com/api/v3`` to
``<rest base>/api.binance.com/api/v3`` (``wss://…`` to ``<ws base>/…``), so one
server stands for all of an exchange's hosts. A subclass (one per exchange
protocol) implements :meth:`ExchangeEmulator.rest` (answer one REST request),
:meth:`ExchangeEmulator.on_ws_message` (subscriptions, pings) and
:meth:`ExchangeEmulator.render` (a :class:`VenueEvent` as that exchange's
websocket messages), plus its error bodies.

Faults (:class:`Faults`) are switched on per exchange: a websocket disconnect, a
sequence gap, a stalled stream, 429 with ``Retry-After``, a 418/403 ban, 503
maintenance, a delisted symbol, a currency whose withdrawals close, clock skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from serve.standins.exchanges.keys import KeyBook, SignatureRefused
from serve.standins.exchanges.listings import builtin_listing
from serve.standins.exchanges.market import Venue, VenueEvent, wall_ms

log = logging.getLogger(__name__)

FAULT_KINDS = (
    "disconnect",
    "gap",
    "stall",
    "rate_limit",
    "ban",
    "maintenance",
    "delist",
    "withdrawals",
    "skew",
)


@dataclass
class Faults:
    """The faults one emulated exchange is under now (monotonic deadlines)."""

    rate_limited_until: float = 0.0
    retry_after_s: int = 1
    banned_until: float = 0.0
    ban_status: int = 418
    maintenance_until: float = 0.0
    stalled_until: dict[str, float] = field(default_factory=dict)  # symbol or "*" -> deadline
    gaps: dict[str, int] = field(default_factory=dict)  # symbol or "*" -> update ids to skip
    delisted: set[str] = field(default_factory=set)
    withdrawals_closed: set[str] = field(default_factory=set)
    deposits_closed: set[str] = field(default_factory=set)
    clock_skew_ms: int = 0

    def stalled(self, symbol: str, now: float) -> bool:
        return max(self.stalled_until.get(symbol, 0.0), self.stalled_until.get("*", 0.0)) > now


@dataclass(eq=False)
class Connection:
    """One websocket client of an emulated exchange."""

    ws: web.WebSocketResponse
    host: str
    path: str
    query: dict[str, str]
    state: dict[str, Any] = field(default_factory=dict)  # the protocol's own (subscriptions, sequences)

    async def send(self, message: Any) -> None:
        if self.ws.closed:
            return
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))


def fmt(value: float | int | None) -> str:
    """A number as an exchange writes it in JSON strings (no exponent, no trailing noise)."""
    if value is None:
        return ""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


class ExchangeEmulator:
    """Base of one emulated exchange (see the module docstring)."""

    name = ""

    def __init__(self, venue: Venue, fixtures_dir: Path | None, symbols: list[str]) -> None:
        self.venue = venue
        self.fixtures_dir = None if fixtures_dir is None else Path(fixtures_dir)
        self.symbols = [s for s in symbols]
        self.faults = Faults()
        self.keys = KeyBook()
        self.connections: set[Connection] = set()
        self.stats: dict[str, int] = {"rest": 0, "ws_connections": 0, "ws_messages": 0, "rejected": 0}
        self.venue.listed = set(self.symbols)
        self.load_markets()

    def listing(self, relative: str) -> Any:
        """A recorded listing (``<exchange>/<file>`` under ``raw/``), or the built-in one
        (:mod:`serve.standins.exchanges.listings`) when there are no recordings."""
        if self.fixtures_dir is None:
            return builtin_listing(relative)
        return load_json(self.fixtures_dir / "raw" / relative)

    # --- for subclasses ------------------------------------------------------------------

    def load_markets(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def rest(
        self, request: web.Request, host: str, path: str
    ) -> web.StreamResponse:  # pragma: no cover
        raise NotImplementedError

    async def on_ws_message(self, conn: Connection, text: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def render(self, conn: Connection, event: VenueEvent) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    async def on_ws_open(self, conn: Connection) -> None:
        """Called when a websocket connects (before any message)."""

    def error(
        self, status: int, code: int | str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response({"code": code, "msg": message}, status=status, headers=headers)

    def rate_limit_response(self) -> web.Response:
        retry = str(self.faults.retry_after_s)
        return self.error(429, 429, "Too many requests", {"Retry-After": retry})

    def refused(self, exc: SignatureRefused) -> web.Response:
        """A signed request refused (bad key, secret, passphrase or timestamp), as the
        exchange writes it (:mod:`serve.standins.exchanges.keys`)."""
        self.stats["rejected"] += 1
        return self.error(exc.status, exc.code, exc.message)

    def ban_response(self) -> web.Response:
        return self.error(self.faults.ban_status, self.faults.ban_status, "IP banned")

    def maintenance_response(self) -> web.Response:
        return self.error(503, 503, "Service unavailable: system maintenance")

    # --- time, listing -------------------------------------------------------------------

    def now_ms(self) -> int:
        """The exchange's clock (the wall clock plus any injected skew)."""
        return wall_ms() + self.faults.clock_skew_ms

    def ts(self, ms: int) -> int:
        return int(ms) + self.faults.clock_skew_ms

    def listed(self, symbol: str) -> bool:
        return symbol in self.venue.listed and symbol not in self.faults.delisted

    def live_symbols(self) -> list[str]:
        return [s for s in self.symbols if self.listed(s)]

    # --- faults -------------------------------------------------------------------------

    def fault(self, kind: str, arg: str | None = None, duration_s: float | None = None) -> None:
        """Switch a fault on now (``duration_s`` for the timed ones; see ``FAULT_KINDS``)."""
        now = time.monotonic()
        f = self.faults
        span = 5.0 if duration_s is None else float(duration_s)
        if kind == "disconnect":
            self.venue.disconnect_all()
        elif kind == "gap":
            key = arg or "*"
            f.gaps[key] = f.gaps.get(key, 0) + 5
        elif kind == "stall":  # silence (the connection stays up), then the server drops it
            f.stalled_until[arg or "*"] = now + span
            asyncio.get_running_loop().call_later(span, self.venue.disconnect_all)
        elif kind == "rate_limit":
            f.rate_limited_until = now + span
            f.retry_after_s = max(1, int(arg) if arg else 1)
        elif kind == "ban":
            f.banned_until = now + span
            f.ban_status = int(arg) if arg else 418
        elif kind == "maintenance":
            f.maintenance_until = now + span
            self.venue.disconnect_all()
        elif kind == "delist":
            if not arg:
                raise ValueError("delist needs a symbol: delist=SOL/USDT")
            f.delisted.add(arg)
        elif kind == "withdrawals":
            if not arg:
                raise ValueError("withdrawals needs a currency: withdrawals=BTC")
            f.withdrawals_closed.add(arg.upper())
        elif kind == "skew":
            f.clock_skew_ms = int(float(arg or "0"))
        else:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(FAULT_KINDS)}")
        log.info("%s emulator: fault %s %s for %s", self.name, kind, arg or "", duration_s)

    def clear(self, kind: str, arg: str | None = None) -> None:
        """Switch a fault off (``delist``: list the symbol again; ``withdrawals``: reopen)."""
        f = self.faults
        if kind == "delist":
            f.delisted.discard(arg or "")
        elif kind == "withdrawals":
            f.withdrawals_closed.discard((arg or "").upper())
        elif kind == "skew":
            f.clock_skew_ms = 0
        elif kind in ("rate_limit", "ban", "maintenance"):
            setattr(
                f,
                {"rate_limit": "rate_limited_until", "ban": "banned_until"}.get(kind, "maintenance_until"),
                0.0,
            )
        elif kind == "stall":
            f.stalled_until.clear()

    def take_gap(self, symbol: str) -> int:
        """Update ids the next change of ``symbol`` skips (a lost message), once."""
        return self.faults.gaps.pop(symbol, 0) + self.faults.gaps.pop("*", 0)

    # --- HTTP entry point ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = request.match_info["host"]
        path = "/" + request.match_info.get("path", "")
        now = time.monotonic()
        f = self.faults
        if f.banned_until > now:
            self.stats["rejected"] += 1
            return self.ban_response()
        if f.maintenance_until > now:
            self.stats["rejected"] += 1
            return self.maintenance_response()
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, host, path)
        if f.rate_limited_until > now:
            self.stats["rejected"] += 1
            return self.rate_limit_response()
        self.stats["rest"] += 1
        return await self.rest(request, host, path)

    async def _websocket(self, request: web.Request, host: str, path: str) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        conn = Connection(ws, host, path, dict(request.query))
        self.connections.add(conn)
        self.stats["ws_connections"] += 1
        queue = self.venue.listen()
        writer = asyncio.create_task(self._write(conn, queue))
        try:
            await self.on_ws_open(conn)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.on_ws_message(conn, msg.data)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.venue.unlisten(queue)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self.connections.discard(conn)
            if not ws.closed:
                await ws.close()
        return ws

    async def _write(self, conn: Connection, queue: asyncio.Queue[VenueEvent | None]) -> None:
        try:
            while not conn.ws.closed:
                event = await queue.get()
                if event is None:  # a disconnect fault, maintenance, or this reader fell behind
                    await conn.ws.close(code=1001, message=b"going away")
                    return
                if not self.listed(event.symbol) or self.faults.stalled(event.symbol, time.monotonic()):
                    continue
                for message in self.render(conn, event):
                    self.stats["ws_messages"] += 1
                    await conn.send(message)
        except (ConnectionResetError, RuntimeError):
            return

    # --- helpers for subclasses ------------------------------------------------------------

    @staticmethod
    def json(data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, separators=(",", ":")))
