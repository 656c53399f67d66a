"""Latest quotes: Redis first, then the lake, then the live source — with a freshness bound.

Coordinators write the newest quote of every (exchange, symbol) they see to Redis
(``RedisQuoteStore``) with a TTL (default 60 s). Readers ask :class:`LatestQuotes`,
which falls back to the lake's ``quotes`` dataset and finally to a live fetch, and
refuses anything older than the bound they pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import StaleData, StoreUnavailable

QUOTE_FIELDS = ("ts", "recv_ts", "bid", "ask", "bid_size", "ask_size", "last")


def quote_key(exchange: str, symbol: str) -> str:
    return f"quote:{exchange}:{symbol}"


def latest_per_key(quotes: pa.Table) -> pl.DataFrame:
    """The newest row per (exchange, symbol) of a QUOTES table, ``ts`` as epoch ms."""
    if quotes.num_rows == 0:
        return pl.DataFrame()
    df = pl.from_arrow(quotes)
    assert isinstance(df, pl.DataFrame)
    return (
        df.sort("ts")
        .unique(subset=["exchange", "symbol"], keep="last", maintain_order=True)
        .with_columns(
            pl.col("ts").dt.epoch("ms").alias("ts"),
            pl.col("recv_ts").dt.epoch("ms").alias("recv_ts"),
        )
    )


@dataclass(frozen=True, slots=True)
class LatestQuote:
    exchange: str
    symbol: str
    ts_ms: int
    bid: float | None
    ask: float | None
    bid_size: float | None
    ask_size: float | None
    last: float | None
    origin: str  # redis | lake | live

    def age_s(self, now_ms: int) -> float:
        return (now_ms - self.ts_ms) / 1000.0


class RedisQuoteStore:
    """Latest quote per (exchange, symbol) in Redis, one JSON string a key, with a TTL."""

    def __init__(self, client: aioredis.Redis, ttl_s: int = 60) -> None:
        self.client = client
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, ttl_s: int = 60) -> RedisQuoteStore:
        return cls(aioredis.Redis.from_url(url), ttl_s)

    async def put_table(self, quotes: pa.Table) -> int:
        """Write the newest quote per key of a QUOTES table; returns the keys written."""
        latest = latest_per_key(quotes)
        if latest.is_empty():
            return 0
        return await self.put_many(latest.select("exchange", "symbol", *QUOTE_FIELDS).to_dicts())

    async def put_many(self, quotes: list[dict[str, Any]]) -> int:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for q in quotes:
                    body = {k: q.get(k) for k in QUOTE_FIELDS}
                    pipe.set(quote_key(q["exchange"], q["symbol"]), json.dumps(body), ex=self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: cannot write latest quotes: {exc}") from exc
        return len(quotes)

    async def get(self, exchange: str, symbol: str) -> dict[str, Any] | None:
        try:
            raw = await self.client.get(quote_key(exchange, symbol))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: cannot read latest quote: {exc}") from exc
        return None if raw is None else dict(json.loads(raw))

    async def close(self) -> None:
        await self.client.aclose()


LakeLookup = Callable[[str, str], Awaitable[dict[str, Any] | None]]
LiveLookup = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class LatestQuotes:
    """Redis, else the lake, else the live source; never older than ``max_age_s``."""

    def __init__(
        self,
        store: RedisQuoteStore | None,
        lake_lookup: LakeLookup | None = None,
        live_lookup: LiveLookup | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lake_lookup = lake_lookup
        self.live_lookup = live_lookup
        self.clock = clock

    async def get(self, exchange: str, symbol: str, max_age_s: float = 2.0) -> LatestQuote:
        now_ms = int(self.clock() * 1000)
        seen: list[str] = []
        for origin, lookup in (
            ("redis", self.store.get if self.store else None),
            ("lake", self.lake_lookup),
            ("live", self.live_lookup),
        ):
            if lookup is None:
                continue
            try:
                found = await lookup(exchange, symbol)
            except StoreUnavailable:
                seen.append(f"{origin}: unavailable")
                continue
            if found is None:
                seen.append(f"{origin}: none")
                continue
            quote = _to_quote(exchange, symbol, found, origin)
            if quote.age_s(now_ms) <= max_age_s:
                return quote
            seen.append(f"{origin}: {quote.age_s(now_ms):.1f} s old")
        tried = "; ".join(seen) or "no source"
        raise StaleData(f"no quote for {exchange} {symbol} fresher than {max_age_s:g} s ({tried})")


def _to_quote(exchange: str, symbol: str, data: dict[str, Any], origin: str) -> LatestQuote:
    ts = data.get("ts") or data.get("timestamp")
    if isinstance(ts, datetime):
        ts = int(ts.replace(tzinfo=ts.tzinfo or UTC).timestamp() * 1000)
    return LatestQuote(
        exchange=exchange,
        symbol=symbol,
        ts_ms=int(ts or 0),
        bid=data.get("bid"),
        ask=data.get("ask"),
        bid_size=data.get("bid_size", data.get("bidVolume")),
        ask_size=data.get("ask_size", data.get("askVolume")),
        last=data.get("last"),
        origin=origin,
    )


def lake_lookup(lake: Any, *, hours: int = 2, clock: Callable[[], float] = time.time) -> LakeLookup:
    """Newest quote of (exchange, symbol) in the lake's last ``hours`` hour partitions."""
    import asyncio
    from datetime import timedelta

    from pipeline.query import connect, hour_filter

    def _query(exchange: str, symbol: str) -> dict[str, Any] | None:
        end = datetime.fromtimestamp(clock(), UTC)
        where = hour_filter(end - timedelta(hours=hours), end)
        sql = (
            "SELECT epoch_ms(ts) AS ts, bid, ask, bid_size, ask_size, last FROM quotes "
            f"WHERE {where} AND exchange = ? AND symbol = ? ORDER BY ts DESC LIMIT 1"
        )
        con = connect(lake, datasets=["quotes"])
        try:
            row = con.execute(sql, [exchange, symbol]).fetchone()
        finally:
            con.close()
        if row is None:
            return None
        return dict(zip(("ts", "bid", "ask", "bid_size", "ask_size", "last"), row, strict=True))

    async def lookup(exchange: str, symbol: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(_query, exchange, symbol)

    return lookup


def ccxt_lookup(exchanges: dict[str, Any]) -> LiveLookup:
    """Fetch a ticker live through ccxt (async exchange instances keyed by id)."""
    from pipeline.sources.live import map_ccxt_error

    async def lookup(exchange: str, symbol: str) -> dict[str, Any] | None:
        client = exchanges.get(exchange)
        if client is None:
            return None
        try:
            ticker = await client.fetch_ticker(symbol)
        except Exception as exc:
            raise map_ccxt_error(exchange, exc) from exc
        ts = ticker.get("timestamp") or int(time.time() * 1000)
        return {
            "ts": ts,
            "bid": ticker.get("bid"),
            "ask": ticker.get("ask"),
            "bid_size": ticker.get("bidVolume"),
            "ask_size": ticker.get("askVolume"),
            "last": ticker.get("last"),
        }

    return lookup
