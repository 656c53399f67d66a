"""Binance's public protocol as ccxt / ccxt.pro use it (spot ``api/v3``, USDⓈ-M ``fapi/v1``).

Markets: the recorded ``exchangeInfo`` of spot and USDⓈ-M futures
(``raw/binance/cryptofeed_*_exchangeInfo_*.json``), cut to the carried symbols.
Books: ``/depth`` snapshots with ``lastUpdateId`` and the ``<id>@depth@100ms``
diff stream (``U``/``u``, plus ``pu`` on futures): a client applies the events
after its snapshot and must see ``U == previous u + 1`` (spot) or
``pu == previous u`` (futures), as ccxt.pro checks. Tickers: ``/ticker/24hr``
``<id>@ticker`` and ``<id>@miniTicker`` (ccxt.pro's default; mini and futures
tickers carry no best bid/ask, as on binance).
Funding: ``/fapi/v1/premiumIndex`` and ``/fapi/v1/fundingInfo`` (REST only;
ccxt.pro has no funding stream for binance). Currencies:
``/sapi/v1/capital/config/getall`` (signed; any key is accepted). Key permissions:
``/sapi/v1/account/apiRestrictions`` (signature checked, :mod:`.keys`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from serve.standins.exchanges.base import Connection, ExchangeEmulator, fmt
from serve.standins.exchanges.keys import SignatureRefused
from serve.standins.exchanges.market import VenueEvent
from serve.standins.exchanges.networks import currency_networks

TICKER_CHANNELS = ("ticker", "miniTicker")
FUTURE_HOSTS = {"fapi.binance.com", "fstream.binance.com"}


def _clone(template: dict[str, Any], base: str, quote: str) -> dict[str, Any]:
    text = json.dumps(template)
    t_base, t_quote = template["baseAsset"], template["quoteAsset"]
    text = text.replace(f'"{t_base}{t_quote}"', f'"{base}{quote}"').replace(f'"{t_base}"', f'"{base}"')
    return dict(json.loads(text))


class BinanceEmulator(ExchangeEmulator):
    name = "binance"

    def load_markets(self) -> None:
        self._spot_info = self.listing("binance/cryptofeed_spot_exchangeInfo_20211012.json")
        self._fut_info = self.listing("binance/cryptofeed_usdm_exchangeInfo_20210722.json")
        spot = {s["symbol"]: s for s in self._spot_info["symbols"]}
        fut = {s["symbol"]: s for s in self._fut_info["symbols"] if s.get("contractType") == "PERPETUAL"}
        self.ids: dict[str, str] = {}  # unified symbol -> binance id
        self.instruments: dict[str, dict[str, Any]] = {}
        for symbol in self.symbols:
            base, quote = symbol.split(":")[0].split("/")
            market_id = base + quote
            table, template = (fut, fut["BTCUSDT"]) if ":" in symbol else (spot, spot["BTCUSDT"])
            info = table.get(market_id) or _clone(template, base, quote)
            info = dict(info, status="TRADING")
            self.ids[symbol] = market_id
            self.instruments[symbol] = info
        self.by_id = {("swap" if ":" in s else "spot", i): s for s, i in self.ids.items()}

    # --- errors as binance writes them ---------------------------------------------

    def rate_limit_response(self) -> web.Response:
        retry = str(self.faults.retry_after_s)
        body = {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 requests per minute."}
        return web.json_response(body, status=429, headers={"Retry-After": retry})

    def ban_response(self) -> web.Response:
        body = {"code": -1003, "msg": f"Way too many requests; IP banned until {self.now_ms() + 60_000}."}
        return web.json_response(body, status=self.faults.ban_status, headers={"Retry-After": "60"})

    def maintenance_response(self) -> web.Response:
        return web.json_response({"code": -1008, "msg": "System is under maintenance."}, status=503)

    def bad_symbol(self) -> web.Response:
        return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)

    def refused(self, exc: SignatureRefused) -> web.Response:
        self.stats["rejected"] += 1
        return web.json_response({"code": int(exc.code), "msg": exc.message}, status=exc.status)

    # --- REST ------------------------------------------------------------------------

    def _kind(self, host: str) -> str:
        return "swap" if host in FUTURE_HOSTS else "spot"

    def _symbol(self, kind: str, market_id: str | None) -> str | None:
        symbol = self.by_id.get((kind, market_id or ""))
        return symbol if symbol is not None and self.listed(symbol) else None

    def _symbols_param(self, request: web.Request, kind: str) -> list[str] | None:
        """The ``symbol``/``symbols`` query as unified symbols (None: a bad symbol in it)."""
        q = request.query
        if "symbol" in q:
            one = self._symbol(kind, q["symbol"])
            return None if one is None else [one]
        if "symbols" in q:
            out = [self._symbol(kind, i) for i in json.loads(q["symbols"])]
            return None if any(s is None for s in out) else [s for s in out if s is not None]
        return [s for s in self.live_symbols() if ("swap" if ":" in s else "spot") == kind]

    async def rest(self, request: web.Request, host: str, path: str) -> web.StreamResponse:
        kind = self._kind(host)
        tail = path.rsplit("/", 1)[-1]
        if path.endswith("/exchangeInfo"):
            return self.json(self._exchange_info(host))
        if tail == "time":
            return self.json({"serverTime": self.now_ms()})
        if tail == "ping":
            return self.json({})
        if tail == "depth":
            symbols = self._symbols_param(request, kind)
            if not symbols:
                return self.bad_symbol()
            return self.json(self._depth(symbols[0], int(request.query.get("limit", "100")), kind))
        if path.endswith("/ticker/24hr"):
            symbols = self._symbols_param(request, kind)
            if symbols is None:
                return self.bad_symbol()
            rows = [self._ticker_rest(s, kind) for s in symbols if s in self.venue.tickers]
            return self.json(rows[0] if "symbol" in request.query and rows else rows)
        if tail == "premiumIndex" and kind == "swap":
            symbols = self._symbols_param(request, kind)
            if symbols is None:
                return self.bad_symbol()
            rows = [self._premium(s) for s in symbols if s in self.venue.funding]
            return self.json(rows[0] if "symbol" in request.query and rows else rows)
        if tail == "fundingInfo" and kind == "swap":
            return self.json([self._funding_info(s) for s in self.live_symbols() if ":" in s])
        if path.endswith("/allPairs"):  # margin pairs (ccxt asks for them once it has keys)
            return self.json([])
        if path.endswith("/capital/config/getall"):
            return self.json(self._currencies())
        if path == "/sapi/v1/account/apiRestrictions":
            try:
                api_key = self.keys.check_binance(request, self.now_ms())
            except SignatureRefused as exc:
                return self.refused(exc)
            return self.json(self._api_restrictions(api_key))
        return web.json_response({"code": -5000, "msg": f"Path {path} not found"}, status=404)

    def _exchange_info(self, host: str) -> dict[str, Any]:
        if host.startswith("dapi"):
            return {
                "timezone": "UTC",
                "serverTime": self.now_ms(),
                "rateLimits": [],
                "exchangeFilters": [],
                "symbols": [],
            }
        kind = self._kind(host)
        source = self._fut_info if kind == "swap" else self._spot_info
        symbols = [
            self.instruments[s] for s in self.live_symbols() if ("swap" if ":" in s else "spot") == kind
        ]
        return dict(source, serverTime=self.now_ms(), symbols=symbols)

    def _depth(self, symbol: str, limit: int, kind: str) -> dict[str, Any]:
        book = self.venue.books.get(symbol)
        out: dict[str, Any] = {"lastUpdateId": book.update_id if book else 0}
        if kind == "swap":
            out["E"] = self.now_ms()
            out["T"] = self.ts(book.ts) if book else self.now_ms()
        out["bids"] = [[fmt(p), fmt(q)] for p, q in (book.levels("bids", limit) if book else [])]
        out["asks"] = [[fmt(p), fmt(q)] for p, q in (book.levels("asks", limit) if book else [])]
        return out

    def _ticker_fields(self, symbol: str, kind: str) -> dict[str, Any]:
        t = self.venue.tickers[symbol]
        last, volume, quote_volume = t["last"] or t["bid"], t["base_volume"] or 0.0, t["quote_volume"] or 0.0
        ts = self.ts(t["ts"])
        out = {
            "symbol": self.ids[symbol],
            "priceChange": "0",
            "priceChangePercent": "0",
            "weightedAvgPrice": fmt(quote_volume / volume if volume else last),
            "lastPrice": fmt(last),
            "lastQty": "0.001",
            "openPrice": fmt(last),
            "highPrice": fmt(max(last, t["ask"])),
            "lowPrice": fmt(min(last, t["bid"])),
            "volume": fmt(volume),
            "quoteVolume": fmt(quote_volume),
            "openTime": ts - 86_400_000,
            "closeTime": ts,
            "firstId": 1,
            "lastId": 2,
            "count": 2,
        }
        if kind == "spot":
            out.update(
                prevClosePrice=fmt(last),
                bidPrice=fmt(t["bid"]),
                bidQty=fmt(t["bid_size"]),
                askPrice=fmt(t["ask"]),
                askQty=fmt(t["ask_size"]),
            )
        return out

    def _ticker_rest(self, symbol: str, kind: str) -> dict[str, Any]:
        return self._ticker_fields(symbol, kind)

    def _premium(self, symbol: str) -> dict[str, Any]:
        r = self.venue.funding[symbol]
        return {
            "symbol": self.ids[symbol],
            "markPrice": fmt(r["mark_price"]),
            "indexPrice": fmt(r["index_price"]),
            "estimatedSettlePrice": fmt(r["index_price"]),
            "lastFundingRate": fmt(r["funding_rate"]),
            "interestRate": "0.00010000",
            "nextFundingTime": self.ts(r["next_funding_ts"]),
            "time": self.ts(r["ts"]),
        }

    def _funding_info(self, symbol: str) -> dict[str, Any]:
        hours = int(self.venue.funding[symbol]["interval_hours"]) if symbol in self.venue.funding else 8
        return {
            "symbol": self.ids[symbol],
            "adjustedFundingRateCap": "0.02000000",
            "adjustedFundingRateFloor": "-0.02000000",
            "fundingIntervalHours": hours,
            "disclaimer": False,
        }

    def _api_restrictions(self, api_key: str) -> dict[str, Any]:
        """``GET /sapi/v1/account/apiRestrictions`` as binance answers it."""
        perms = self.keys.permissions(api_key)
        trade, withdraw, transfer = "trade" in perms, "withdraw" in perms, "transfer" in perms
        return {
            "ipRestrict": withdraw,  # binance allows withdrawals only on IP-restricted keys
            "createTime": 1698645219000,
            "enableReading": "read" in perms,
            "enableWithdrawals": withdraw,
            "enableInternalTransfer": transfer,
            "enableMargin": False,
            "enableFutures": trade,
            "permitsUniversalTransfer": transfer,
            "enableVanillaOptions": False,
            "enableFixApiTrade": False,
            "enableFixReadOnly": True,
            "enableSpotAndMarginTrading": trade,
            "enablePortfolioMarginTrading": False,
        }

    def _currencies(self) -> list[dict[str, Any]]:
        out = []
        for code, networks in currency_networks(self.symbols).items():
            closed_w = code in self.faults.withdrawals_closed
            closed_d = code in self.faults.deposits_closed
            out.append(
                {
                    "coin": code,
                    "name": code,
                    "depositAllEnable": not closed_d,
                    "withdrawAllEnable": not closed_w,
                    "free": "0",
                    "locked": "0",
                    "trading": True,
                    "networkList": [
                        {
                            "network": net.name,
                            "coin": code,
                            "name": net.name,
                            "isDefault": i == 0,
                            "depositEnable": not closed_d,
                            "withdrawEnable": not closed_w,
                            "withdrawFee": fmt(net.fee),
                            "withdrawMin": fmt(net.fee * 2),
                            "withdrawMax": "9999999",
                            "withdrawIntegerMultiple": "0.00000001",
                            "minConfirm": net.confirmations,
                            "busy": False,
                        }
                        for i, net in enumerate(networks)
                    ],
                }
            )
        return out

    # --- websockets ------------------------------------------------------------------

    async def on_ws_message(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            await conn.send({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        method, params, req_id = msg.get("method"), msg.get("params") or [], msg.get("id")
        kind = self._kind(conn.host)
        subs: dict[tuple[str, str], str] = conn.state.setdefault("subs", {})
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            for stream in params:
                market_id, _, channel = str(stream).partition("@")
                symbol = self.by_id.get((kind, market_id.upper()))
                what = (
                    "book" if channel.startswith("depth") else channel if channel in TICKER_CHANNELS else None
                )
                if symbol is None or what is None:
                    continue  # binance accepts unknown streams and sends nothing on them
                if method == "SUBSCRIBE":
                    subs[(what, symbol)] = stream
                else:
                    subs.pop((what, symbol), None)
            await conn.send({"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await conn.send({"result": sorted(subs.values()), "id": req_id})
        else:
            await conn.send(
                {"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"}, "id": req_id}
            )

    def render(self, conn: Connection, event: VenueEvent) -> list[Any]:
        subs = conn.state.get("subs")
        if not subs:
            return []
        if event.kind == "book":
            what = "book"
        elif event.kind == "ticker":
            what = next((c for c in TICKER_CHANNELS if (c, event.symbol) in subs), "ticker")
        else:
            return []
        if (what, event.symbol) not in subs:
            return []
        kind = self._kind(conn.host)
        if ("swap" if ":" in event.symbol else "spot") != kind:
            return []
        if what == "book":
            bids, asks = event.data
            msg: dict[str, Any] = {
                "e": "depthUpdate",
                "E": self.ts(event.ts),
                "s": self.ids[event.symbol],
                "U": event.first_id,
                "u": event.last_id,
                "b": [[fmt(p), fmt(q)] for p, q in bids],
                "a": [[fmt(p), fmt(q)] for p, q in asks],
            }
            if kind == "swap":
                msg["T"] = self.ts(event.ts)
                msg["pu"] = event.prev_id
            return [msg]
        f = self._ticker_fields(event.symbol, kind)
        if what == "miniTicker":  # ccxt.pro's default ticker stream: no best bid/ask in it
            mini = {"e": "24hrMiniTicker", "E": self.ts(event.ts), "s": f["symbol"], "c": f["lastPrice"]}
            mini.update(
                o=f["openPrice"], h=f["highPrice"], l=f["lowPrice"], v=f["volume"], q=f["quoteVolume"]
            )
            return [mini]
        msg = {
            "e": "24hrTicker",
            "E": self.ts(event.ts),
            "s": f["symbol"],
            "p": f["priceChange"],
            "P": f["priceChangePercent"],
            "w": f["weightedAvgPrice"],
            "c": f["lastPrice"],
            "Q": f["lastQty"],
            "o": f["openPrice"],
            "h": f["highPrice"],
            "l": f["lowPrice"],
            "v": f["volume"],
            "q": f["quoteVolume"],
            "O": f["openTime"],
            "C": f["closeTime"],
            "F": 1,
            "L": 2,
            "n": 2,
        }
        if kind == "spot":
            msg.update(x=f["prevClosePrice"], b=f["bidPrice"], B=f["bidQty"], a=f["askPrice"], A=f["askQty"])
        return [msg]
