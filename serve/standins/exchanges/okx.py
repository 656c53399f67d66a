"""OKX's v5 public protocol as ccxt / ccxt.pro use it.

Markets: the recorded ``/api/v5/public/instruments`` answers
(``raw/okx/cryptofeed_v5_instruments_{SPOT,SWAP}_20220513.json``). Swap sizes are
in contracts (``ctVal`` of the instrument), as on OKX. Books: ``/api/v5/market/books``
and the websocket ``books`` channel (400 levels: a snapshot, then updates whose
``prevSeqId`` is the previous message's ``seqId``, with OKX's CRC32 ``checksum``
of the top 25 levels), ``books5`` and ``bbo-tbt`` (whole snapshots); the
``books50-l2-tbt``/``books-l2-tbt`` channels need a login, as on OKX. Tickers:
``/api/v5/market/tickers`` and ``tickers``. Funding: ``/api/v5/public/funding-rate``
and the ``funding-rate`` channel. Currencies: ``/api/v5/asset/currencies`` (signed;
any key is accepted).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from aiohttp import web

from serve.standins.exchanges.base import Connection, ExchangeEmulator, fmt
from serve.standins.exchanges.keys import SignatureRefused
from serve.standins.exchanges.market import Book, VenueEvent
from serve.standins.exchanges.networks import currency_networks

CHANNEL_DEPTH = {"books": 400, "books5": 5, "bbo-tbt": 1}
LOGIN_CHANNELS = {"books-l2-tbt", "books50-l2-tbt"}


def _clone(template: dict[str, Any], base: str) -> dict[str, Any]:
    t_base = template["instId"].split("-")[0]
    text = json.dumps(template).replace(f'"{t_base}-', f'"{base}-').replace(f'"{t_base}"', f'"{base}"')
    return dict(json.loads(text))


def checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's book checksum: CRC32 of ``bid:size:ask:size:…`` over the top 25, signed."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= (1 << 31) else crc


class OkxEmulator(ExchangeEmulator):
    name = "okx"

    def load_markets(self) -> None:
        tables = {
            kind: {
                i["instId"]: i
                for i in self.listing(f"okx/cryptofeed_v5_instruments_{kind}_20220513.json")["data"]
            }
            for kind in ("SPOT", "SWAP")
        }
        self.ids: dict[str, str] = {}
        self.instruments: dict[str, dict[str, Any]] = {}
        self.contract: dict[str, float] = {}
        for symbol in self.symbols:
            base, quote = symbol.split(":")[0].split("/")
            kind = "SWAP" if ":" in symbol else "SPOT"
            market_id = f"{base}-{quote}-SWAP" if kind == "SWAP" else f"{base}-{quote}"
            template = tables[kind]["BTC-USDT-SWAP" if kind == "SWAP" else "BTC-USDT"]
            info = dict(tables[kind].get(market_id) or _clone(template, base), state="live")
            self.ids[symbol] = market_id
            self.instruments[symbol] = info
            self.contract[symbol] = float(info["ctVal"]) if kind == "SWAP" and info.get("ctVal") else 1.0
        self.by_id = {i: s for s, i in self.ids.items()}

    @staticmethod
    def inst_type(symbol: str) -> str:
        return "SWAP" if ":" in symbol else "SPOT"

    def envelope(self, data: list[Any], code: str = "0", msg: str = "") -> dict[str, Any]:
        return {"code": code, "msg": msg, "data": data}

    def error(
        self, status: int, code: int | str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(self.envelope([], str(code), message), status=status, headers=headers)

    def rate_limit_response(self) -> web.Response:
        body = self.envelope(
            [],
            "50011",
            "Rate limit reached. Please refer to API documentation and throttle requests accordingly.",
        )
        return web.json_response(body, status=429, headers={"Retry-After": str(self.faults.retry_after_s)})

    def ban_response(self) -> web.Response:
        return web.json_response(
            self.envelope([], "50013", "Your IP is banned"), status=self.faults.ban_status
        )

    def maintenance_response(self) -> web.Response:
        return web.json_response(
            self.envelope([], "50001", "Service temporarily unavailable. Please try again later"), status=503
        )

    def bad_symbol(self) -> web.Response:
        return self.json(self.envelope([], "51001", "Instrument ID does not exist"))

    def _symbol(self, market_id: str | None) -> str | None:
        symbol = self.by_id.get(market_id or "")
        return symbol if symbol is not None and self.listed(symbol) else None

    # --- REST ------------------------------------------------------------------------

    async def rest(self, request: web.Request, host: str, path: str) -> web.StreamResponse:
        q = request.query
        if path == "/api/v5/public/time":
            return self.json(self.envelope([{"ts": str(self.now_ms())}]))
        if path == "/api/v5/public/instruments":
            kind = q.get("instType", "SPOT")
            rows = [self.instruments[s] for s in self.live_symbols() if self.inst_type(s) == kind]
            return self.json(self.envelope(rows))
        if path == "/api/v5/market/books":
            symbol = self._symbol(q.get("instId"))
            if symbol is None:
                return self.bad_symbol()
            return self.json(self.envelope([self._book(symbol, int(q.get("sz", "400")))]))
        if path in ("/api/v5/market/tickers", "/api/v5/market/ticker"):
            if "instId" in q:
                one = self._symbol(q["instId"])
                if one is None:
                    return self.bad_symbol()
                symbols = [one]
            else:
                symbols = [s for s in self.live_symbols() if self.inst_type(s) == q.get("instType", "SPOT")]
            return self.json(self.envelope([self._ticker(s) for s in symbols if s in self.venue.tickers]))
        if path == "/api/v5/public/funding-rate":
            inst = q.get("instId", "ANY")
            if inst == "ANY":
                symbols = [s for s in self.live_symbols() if ":" in s]
            else:
                one = self._symbol(inst)
                if one is None:
                    return self.bad_symbol()
                symbols = [one]
            return self.json(self.envelope([self._funding(s) for s in symbols if s in self.venue.funding]))
        if path == "/api/v5/asset/currencies":
            return self.json(self.envelope(self._currencies()))
        if path == "/api/v5/account/config":
            try:
                api_key = self.keys.check_okx(request, path, await request.text(), self.now_ms())
            except SignatureRefused as exc:
                return self.refused(exc)
            return self.json(self.envelope([self._account_config(api_key)]))
        return self.json(self.envelope([], "50030", f"{path} not found"), status=404)

    def _account_config(self, api_key: str) -> dict[str, Any]:
        """``GET /api/v5/account/config`` as okx answers it; ``perm`` is the key's
        (``read_only``, ``trade``, ``withdraw``; okx has no separate transfer permission)."""
        perms = self.keys.permissions(api_key)
        perm = ",".join(
            p
            for p, on in (
                ("read_only", "read" in perms),
                ("trade", "trade" in perms),
                ("withdraw", "withdraw" in perms),
            )
            if on
        )
        return {
            "acctLv": "2",
            "acctStpMode": "cancel_maker",
            "autoLoan": False,
            "ctIsoMode": "automatic",
            "enableSpotBorrow": False,
            "greeksType": "PA",
            "ip": "",
            "type": "0",
            "kycLv": "2",
            "label": "emulated",
            "level": "Lv1",
            "levelTmp": "",
            "liquidationGear": "-1",
            "mainUid": "44705892343619584",
            "mgnIsoMode": "automatic",
            "opAuth": "0",
            "perm": perm,
            "posMode": "net_mode",
            "roleType": "0",
            "spotBorrowAutoRepay": False,
            "spotOffsetType": "",
            "spotRoleType": "0",
            "spotTraderInsts": [],
            "traderInsts": [],
            "uid": "44705892343619584",
            "settleCcy": "USDT",
            "settleCcyList": ["USD", "USDC", "USDG"],
        }

    def _levels(self, symbol: str, book: Book | None, side: str, limit: int) -> list[list[str]]:
        if book is None:
            return []
        ct = self.contract[symbol]
        return [[fmt(p), fmt(q / ct), "0", "1"] for p, q in book.levels(side, limit)]

    def _book(self, symbol: str, limit: int) -> dict[str, Any]:
        book = self.venue.books.get(symbol)
        return {
            "asks": self._levels(symbol, book, "asks", limit),
            "bids": self._levels(symbol, book, "bids", limit),
            "ts": str(self.ts(book.ts) if book else self.now_ms()),
        }

    def _ticker(self, symbol: str) -> dict[str, Any]:
        t = self.venue.tickers[symbol]
        ct = self.contract[symbol]
        last = t["last"] or t["bid"]
        base_vol = t["base_volume"] or 0.0
        return {
            "instType": self.inst_type(symbol),
            "instId": self.ids[symbol],
            "last": fmt(last),
            "lastSz": "1",
            "askPx": fmt(t["ask"]),
            "askSz": fmt(t["ask_size"] / ct),
            "bidPx": fmt(t["bid"]),
            "bidSz": fmt(t["bid_size"] / ct),
            "open24h": fmt(last),
            "high24h": fmt(max(last, t["ask"])),
            "low24h": fmt(min(last, t["bid"])),
            # OKX: volCcy24h is in base for swaps and in quote for spot; vol24h in contracts / base
            "volCcy24h": fmt(base_vol if ct != 1.0 or ":" in symbol else (t["quote_volume"] or 0.0)),
            "vol24h": fmt(base_vol / ct),
            "sodUtc0": fmt(last),
            "sodUtc8": fmt(last),
            "ts": str(self.ts(t["ts"])),
        }

    def _funding(self, symbol: str) -> dict[str, Any]:
        r = self.venue.funding[symbol]
        interval_ms = int(r["interval_hours"] * 3_600_000)
        next_ts = int(r["next_funding_ts"] or 0)
        return {
            "instType": "SWAP",
            "instId": self.ids[symbol],
            "fundingRate": fmt(r["funding_rate"]),
            "nextFundingRate": "",
            "fundingTime": str(self.ts(next_ts)),
            "nextFundingTime": str(self.ts(next_ts + interval_ms)),
            "minFundingRate": "-0.0075",
            "maxFundingRate": "0.0075",
            "method": "current_period",
            "premium": "0",
            "settFundingRate": fmt(r["funding_rate"]),
            "settState": "settled",
            "sign": "",
            "impactValue": "",
            "interestRate": "0",
            "ts": str(self.ts(r["ts"])),
        }

    def _currencies(self) -> list[dict[str, Any]]:
        rows = []
        for code, networks in currency_networks(self.symbols).items():
            for i, net in enumerate(networks):
                rows.append(
                    {
                        "ccy": code,
                        "chain": f"{code}-{net.name}",
                        "name": code,
                        "canDep": code not in self.faults.deposits_closed,
                        "canWd": code not in self.faults.withdrawals_closed,
                        "canInternal": True,
                        "mainNet": i == 0,
                        "minFee": fmt(net.fee),
                        "maxFee": fmt(net.fee * 2),
                        "fee": fmt(net.fee),
                        "minWd": fmt(net.fee * 2),
                        "maxWd": "9999999",
                        "wdTickSz": "8",
                        "minDep": "0",
                        "minDepArrivalConfirm": str(net.confirmations),
                        "minWdUnlockConfirm": str(net.confirmations),
                        "logoLink": "",
                        "needTag": False,
                    }
                )
        return rows

    # --- websockets ------------------------------------------------------------------

    async def on_ws_message(self, conn: Connection, text: str) -> None:
        if text == "ping":
            await conn.send("pong")
            return
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            await conn.send({"event": "error", "code": "60012", "msg": f"Invalid request: {text[:100]}"})
            return
        op = msg.get("op")
        if op not in ("subscribe", "unsubscribe"):
            await conn.send({"event": "error", "code": "60012", "msg": f"Invalid request: {text[:100]}"})
            return
        subs: dict[tuple[str, str], str] = conn.state.setdefault("subs", {})
        for arg in msg.get("args") or []:
            channel, market_id = arg.get("channel"), arg.get("instId")
            symbol = self._symbol(market_id)
            if channel in LOGIN_CHANNELS:
                await conn.send({"event": "error", "code": "60011", "msg": "Please log in", "connId": "emu"})
                continue
            known = (
                channel in CHANNEL_DEPTH
                or channel == "tickers"
                or (channel == "funding-rate" and ":" in (symbol or ""))
            )
            if symbol is None or not known:
                await conn.send(
                    {
                        "event": "error",
                        "code": "60018",
                        "msg": f"Wrong URL or channel:{channel},instId:{market_id} doesn't exist.",
                        "connId": "emu",
                    }
                )
                continue
            what = "book" if channel in CHANNEL_DEPTH else "ticker" if channel == "tickers" else "funding"
            if op == "unsubscribe":
                subs.pop((what, symbol), None)
                await conn.send({"event": "unsubscribe", "arg": arg, "connId": "emu"})
                continue
            subs[(what, symbol)] = channel
            await conn.send({"event": "subscribe", "arg": arg, "connId": "emu"})
            if what == "book":
                book = self.venue.books.get(symbol)
                conn.state.setdefault("seq", {})[symbol] = book.update_id if book else 0
                await conn.send(self._book_message(conn, symbol, channel, None))
            elif what == "funding" and symbol in self.venue.funding:
                await conn.send({"arg": arg, "data": [self._funding(symbol)]})

    def _book_message(
        self, conn: Connection, symbol: str, channel: str, event: VenueEvent | None
    ) -> dict[str, Any]:
        book = self.venue.books.get(symbol)
        arg = {"channel": channel, "instId": self.ids[symbol]}
        depth = CHANNEL_DEPTH[channel]
        if channel != "books" or event is None:
            bids = self._levels(symbol, book, "bids", depth)
            asks = self._levels(symbol, book, "asks", depth)
            data: dict[str, Any] = {
                "asks": asks,
                "bids": bids,
                "ts": str(self.ts(book.ts) if book else self.now_ms()),
            }
            seq = book.update_id if book else 0
            data["seqId"] = seq
            if channel == "books":
                top_b, top_a = self._levels(symbol, book, "bids", 25), self._levels(symbol, book, "asks", 25)
                data.update(prevSeqId=-1, checksum=checksum(top_b, top_a))
                return {"arg": arg, "action": "snapshot", "data": [data]}
            data["instId"] = self.ids[symbol]
            return {"arg": arg, "data": [data]}
        ct = self.contract[symbol]
        bids, asks = event.data
        top_b, top_a = self._levels(symbol, book, "bids", 25), self._levels(symbol, book, "asks", 25)
        data = {
            "asks": [[fmt(p), fmt(q / ct), "0", "0" if q == 0 else "1"] for p, q in asks],
            "bids": [[fmt(p), fmt(q / ct), "0", "0" if q == 0 else "1"] for p, q in bids],
            "ts": str(self.ts(event.ts)),
            "checksum": checksum(top_b, top_a),
            "prevSeqId": event.prev_id,
            "seqId": event.last_id,
        }
        return {"arg": arg, "action": "update", "data": [data]}

    def render(self, conn: Connection, event: VenueEvent) -> list[Any]:
        subs = conn.state.get("subs")
        if not subs:
            return []
        channel = subs.get((event.kind, event.symbol))
        if channel is None:
            return []
        if event.kind == "book":
            if event.last_id <= conn.state.get("seq", {}).get(event.symbol, 0):
                return []  # already in the snapshot this connection was sent
            return [self._book_message(conn, event.symbol, channel, event)]
        arg = {"channel": channel, "instId": self.ids[event.symbol]}
        if event.kind == "ticker":
            return [{"arg": arg, "data": [self._ticker(event.symbol)]}]
        return [{"arg": arg, "data": [self._funding(event.symbol)]}]
