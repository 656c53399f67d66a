"""Bybit's v5 public protocol as ccxt / ccxt.pro use it.

Markets: the recorded ``/v5/market/instruments-info`` answers
(``raw/bybit/nautilus_v5_instruments_{spot,linear}.json``; symbols they lack are
cloned from their BTCUSDT entry). Books: ``/v5/market/orderbook`` (``u``/``seq``)
and the ``orderbook.{1,50,200,1000}.<id>`` topics: a snapshot on subscription,
then deltas (``u``: the book's update id, ``seq``: a cross sequence); another
depth is refused, as bybit does. Tickers and funding: ``/v5/market/tickers``
and ``tickers.<id>`` (linear tickers carry ``fundingRate``/``nextFundingTime``).
Currencies: ``/v5/asset/coin/query-info`` (signed; any key is accepted). Key permissions:
``/v5/user/query-api`` (signature checked, :mod:`.keys`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pipeline.sources.sim import funding_interval_hours
from serve.standins.exchanges.base import Connection, ExchangeEmulator, fmt
from serve.standins.exchanges.keys import SignatureRefused
from serve.standins.exchanges.market import VenueEvent
from serve.standins.exchanges.networks import currency_networks

BOOK_DEPTHS = {"spot": (1, 50, 200, 1000), "linear": (1, 50, 200, 1000)}


def _clone(template: dict[str, Any], base: str, quote: str) -> dict[str, Any]:
    text = json.dumps(template)
    t_base = template["baseCoin"]
    text = text.replace(f'"{t_base}{template["quoteCoin"]}"', f'"{base}{quote}"').replace(
        f'"{t_base}"', f'"{base}"'
    )
    return dict(json.loads(text))


class BybitEmulator(ExchangeEmulator):
    name = "bybit"

    def load_markets(self) -> None:
        spot = {
            i["symbol"]: i for i in self.listing("bybit/nautilus_v5_instruments_spot.json")["result"]["list"]
        }
        linear = {
            i["symbol"]: i
            for i in self.listing("bybit/nautilus_v5_instruments_linear.json")["result"]["list"]
        }
        self.ids: dict[str, str] = {}
        self.instruments: dict[str, dict[str, Any]] = {}
        for symbol in self.symbols:
            base, quote = symbol.split(":")[0].split("/")
            table = linear if ":" in symbol else spot
            info = table.get(base + quote) or _clone(table["BTCUSDT"], base, quote)
            self.ids[symbol] = base + quote
            self.instruments[symbol] = dict(info, status="Trading")
            if ":" in symbol:  # minutes, as bybit lists it (ccxt reads the interval from it)
                self.instruments[symbol]["fundingInterval"] = int(
                    funding_interval_hours("bybit", symbol) * 60
                )
        self.by_id = {("linear" if ":" in s else "spot", i): s for s, i in self.ids.items()}
        self.seq = 7_000_000_000

    @staticmethod
    def category(symbol: str) -> str:
        return "linear" if ":" in symbol else "spot"

    def envelope(self, result: Any, code: int = 0, msg: str = "OK") -> dict[str, Any]:
        return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": self.now_ms()}

    def error(
        self, status: int, code: int | str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(self.envelope({}, int(code), message), status=status, headers=headers)

    def rate_limit_response(self) -> web.Response:
        # bybit answers an over-limit IP with HTTP 403 and this text, an over-limit key with 10006
        body = self.envelope({}, 10006, "Too many visits!")
        return web.json_response(body, status=429, headers={"Retry-After": str(self.faults.retry_after_s)})

    def ban_response(self) -> web.Response:
        return web.Response(status=self.faults.ban_status, text="access too frequent, IP banned")

    def maintenance_response(self) -> web.Response:
        return web.json_response(self.envelope({}, 10016, "Server is under maintenance"), status=503)

    def bad_symbol(self) -> web.Response:
        return self.json(self.envelope({}, 10001, "params error: symbol invalid"))

    # --- REST ------------------------------------------------------------------------

    def _symbol(self, category: str, market_id: str | None) -> str | None:
        symbol = self.by_id.get((category, market_id or ""))
        return symbol if symbol is not None and self.listed(symbol) else None

    async def rest(self, request: web.Request, host: str, path: str) -> web.StreamResponse:
        q = request.query
        category = q.get("category", "spot")
        if path == "/v5/market/time":
            now = self.now_ms()
            return self.json(
                self.envelope({"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)})
            )
        if path == "/v5/market/instruments-info":
            rows = []
            if category in ("spot", "linear") and "status" not in q:
                rows = [self.instruments[s] for s in self.live_symbols() if self.category(s) == category]
            return self.json(self.envelope({"category": category, "list": rows, "nextPageCursor": ""}))
        if path == "/v5/market/orderbook":
            symbol = self._symbol(category, q.get("symbol"))
            if symbol is None:
                return self.bad_symbol()
            return self.json(self.envelope(self._book(symbol, int(q.get("limit", "25")))))
        if path == "/v5/market/tickers":
            if "symbol" in q:
                one = self._symbol(category, q["symbol"])
                if one is None:
                    return self.bad_symbol()
                symbols = [one]
            else:
                symbols = [s for s in self.live_symbols() if self.category(s) == category]
            rows = [self._ticker(s) for s in symbols if s in self.venue.tickers]
            return self.json(self.envelope({"category": category, "list": rows}))
        if path == "/v5/asset/coin/query-info":
            return self.json(self.envelope({"rows": self._currencies()}))
        if path == "/v5/user/query-api":
            try:
                api_key = self.keys.check_bybit(request, self.now_ms())
            except SignatureRefused as exc:
                return self.refused(exc)
            return self.json(self.envelope(self._api_key_info(api_key)))
        return self.json(self.envelope({}, 10404, f"{path} not found"), status=404)

    def _api_key_info(self, api_key: str) -> dict[str, Any]:
        """``GET /v5/user/query-api`` as bybit answers it: ``readOnly`` 1 for a read-only key
        (its permission lists are then what it may read), 0 with what it may do otherwise."""
        perms = self.keys.permissions(api_key)
        writes = bool(perms & {"trade", "withdraw", "transfer"})
        trade = not writes or "trade" in perms
        wallet = (["AccountTransfer"] if not writes or "transfer" in perms else []) + (
            ["Withdraw"] if "withdraw" in perms else []
        )
        return {
            "id": "13770661",
            "note": "emulated",
            "apiKey": api_key,
            "readOnly": 0 if writes else 1,
            "secret": "",
            "permissions": {
                "ContractTrade": ["Order", "Position"] if trade else [],
                "Spot": ["SpotTrade"] if trade else [],
                "Wallet": wallet,
                "Options": [],
                "Derivatives": [],
                "CopyTrading": [],
                "BlockTrade": [],
                "Exchange": [],
                "NFT": [],
                "Affiliate": [],
                "Earn": [],
            },
            "ips": ["*"],
            "type": 1,
            "deadlineDay": 83,
            "expiredAt": "2027-03-01T00:00:00Z",
            "createdAt": "2026-12-01T00:00:00Z",
            "unified": 0,
            "uta": 1,
            "userID": 24617703,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
            "rsaPublicKey": "",
            "isMaster": True,
            "parentUid": "0",
            "kycLevel": "LEVEL_DEFAULT",
            "kycRegion": "",
        }

    def _book(self, symbol: str, limit: int) -> dict[str, Any]:
        book = self.venue.books.get(symbol)
        scale = 1.0
        bids = book.levels("bids", limit) if book else []
        asks = book.levels("asks", limit) if book else []
        ts = self.ts(book.ts) if book else self.now_ms()
        return {
            "s": self.ids[symbol],
            "b": [[fmt(p), fmt(q * scale)] for p, q in bids],
            "a": [[fmt(p), fmt(q * scale)] for p, q in asks],
            "ts": ts,
            "u": book.update_id if book else 0,
            "seq": self.seq,
            "cts": ts,
        }

    def _ticker(self, symbol: str) -> dict[str, Any]:
        t = self.venue.tickers[symbol]
        last = t["last"] or t["bid"]
        out = {
            "symbol": self.ids[symbol],
            "bid1Price": fmt(t["bid"]),
            "bid1Size": fmt(t["bid_size"]),
            "ask1Price": fmt(t["ask"]),
            "ask1Size": fmt(t["ask_size"]),
            "lastPrice": fmt(last),
            "prevPrice24h": fmt(last),
            "price24hPcnt": "0",
            "highPrice24h": fmt(max(last, t["ask"])),
            "lowPrice24h": fmt(min(last, t["bid"])),
            "turnover24h": fmt(t["quote_volume"] or 0.0),
            "volume24h": fmt(t["base_volume"] or 0.0),
        }
        if self.category(symbol) == "linear":
            rate = self.venue.funding.get(symbol)
            out.update(
                markPrice=fmt(rate["mark_price"] if rate else last),
                indexPrice=fmt(rate["index_price"] if rate else last),
                fundingRate=fmt(rate["funding_rate"] if rate else 0.0001),
                nextFundingTime=str(self.ts(rate["next_funding_ts"]) if rate else 0),
                fundingIntervalHour=str(int(rate["interval_hours"]) if rate else 8),
                openInterest="1000",
                openInterestValue=fmt(1000 * last),
                prevPrice1h=fmt(last),
                predictedDeliveryPrice="",
                basisRate="",
                deliveryFeeRate="",
                deliveryTime="0",
                basis="",
            )
        return out

    def _currencies(self) -> list[dict[str, Any]]:
        rows = []
        for code, networks in currency_networks(self.symbols).items():
            closed_w = code in self.faults.withdrawals_closed
            closed_d = code in self.faults.deposits_closed
            rows.append(
                {
                    "name": code,
                    "coin": code,
                    "remainAmount": "1000000",
                    "chains": [
                        {
                            "chainType": net.name,
                            "chain": net.name,
                            "confirmation": str(net.confirmations),
                            "withdrawFee": fmt(net.fee),
                            "depositMin": "0",
                            "withdrawMin": fmt(net.fee * 2),
                            "minAccuracy": "8",
                            "chainDeposit": "0" if closed_d else "1",
                            "chainWithdraw": "0" if closed_w else "1",
                            "withdrawPercentageFee": "0",
                            "contractAddress": "",
                        }
                        for net in networks
                    ],
                }
            )
        return rows

    # --- websockets ------------------------------------------------------------------

    def _ws_category(self, conn: Connection) -> str:
        return "linear" if conn.path.endswith("/linear") else "spot"

    async def on_ws_message(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            await conn.send({"success": False, "ret_msg": "invalid json", "op": ""})
            return
        op, req_id = msg.get("op"), msg.get("req_id")
        reply: dict[str, Any] = {"success": True, "ret_msg": "", "conn_id": f"emu-{id(conn):x}", "op": op}
        if req_id is not None:
            reply["req_id"] = req_id
        if op == "ping":
            reply["ret_msg"] = "pong"
            await conn.send(reply)
            return
        if op not in ("subscribe", "unsubscribe"):
            await conn.send(dict(reply, success=False, ret_msg=f"unknown op {op}"))
            return
        category = self._ws_category(conn)
        subs: dict[tuple[str, str], int] = conn.state.setdefault("subs", {})
        bad: list[str] = []
        snapshots: list[tuple[str, int]] = []
        for topic in msg.get("args") or []:
            parts = str(topic).split(".")
            what, depth, market_id = parts[0], 0, parts[-1]
            if what == "orderbook" and len(parts) == 3 and parts[1].isdigit():
                depth = int(parts[1])
                if depth not in BOOK_DEPTHS[category]:
                    bad.append(str(topic))
                    continue
            elif what != "tickers" or len(parts) != 2:
                bad.append(str(topic))
                continue
            symbol = self._symbol(category, market_id)
            if symbol is None:
                bad.append(str(topic))
                continue
            key = ("book" if what == "orderbook" else "ticker", symbol)
            if op == "subscribe":
                subs[key] = depth
                if what == "orderbook":
                    snapshots.append((symbol, depth))
            else:
                subs.pop(key, None)
        if bad:
            reply.update(success=False, ret_msg=f"Invalid topic: {','.join(bad)}")
        await conn.send(reply)
        for symbol, depth in snapshots:
            book = self.venue.books.get(symbol)
            conn.state.setdefault("seq", {})[symbol] = book.update_id if book else 0
            await conn.send(self._book_message(symbol, depth, "snapshot", None))

    def _book_message(self, symbol: str, depth: int, kind: str, event: VenueEvent | None) -> dict[str, Any]:
        book = self.venue.books.get(symbol)
        u = book.update_id if book else 0
        if kind == "snapshot" or event is None:
            bids = book.levels("bids", depth) if book else []
            asks = book.levels("asks", depth) if book else []
            ts = book.ts if book else 0
        else:
            bids, asks = event.data
            ts, u = event.ts, event.last_id
        self.seq += 1
        return {
            "topic": f"orderbook.{depth}.{self.ids[symbol]}",
            "type": kind,
            "ts": self.ts(ts) if ts else self.now_ms(),
            "data": {
                "s": self.ids[symbol],
                "b": [[fmt(p), fmt(q)] for p, q in bids],
                "a": [[fmt(p), fmt(q)] for p, q in asks],
                "u": u,
                "seq": self.seq,
            },
            "cts": self.ts(ts) if ts else self.now_ms(),
        }

    def render(self, conn: Connection, event: VenueEvent) -> list[Any]:
        subs = conn.state.get("subs")
        if not subs or self.category(event.symbol) != self._ws_category(conn):
            return []
        if event.kind == "book":
            depth = subs.get(("book", event.symbol))
            if depth is None or event.last_id <= conn.state.get("seq", {}).get(event.symbol, 0):
                return []
            # a depth below what the emulator carries is re-sent whole, as a snapshot
            kind = "delta" if depth >= 50 else "snapshot"
            return [self._book_message(event.symbol, depth, kind, event)]
        if event.kind == "ticker" and ("ticker", event.symbol) in subs:
            return [
                {
                    "topic": f"tickers.{self.ids[event.symbol]}",
                    "type": "snapshot",
                    "data": self._ticker(event.symbol),
                    "cs": self.seq,
                    "ts": self.ts(event.ts),
                }
            ]
        return []
