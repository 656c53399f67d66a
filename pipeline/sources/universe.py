"""Universe discovery for the live source (``ARBFLOW_MARKET__SYMBOLS=top:N``).

``fetch_quote_volumes`` asks every configured exchange for its 24 h tickers
(``fetch_tickers`` of spot and of swap markets, public) through ccxt, at the URLs of
``ARBFLOW_MARKET__ENDPOINTS``; ``core.universe.rank_universe`` picks the markets.
``UniverseDiscovery`` is the live source's part: the ranking at start (an exchange
that does not answer is left out of that round; fewer than two answering is a start
failure, retried) and again every ``universe_refresh_s`` (one hour), adding the
streams of new symbols and letting those of dropped ones end. Each exchange's
coordinator ranks on its own from the same public tickers; near the boundary two
coordinators may briefly disagree about one symbol (it then has no second leg).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from core.errors import ExchangeUnavailable
from core.settings import MarketSettings
from core.universe import Ranked, UniverseRules, rank_universe, universe_symbols
from pipeline.normalise import market_type_of
from pipeline.sources.ccxt_rules import ccxt_client

log = logging.getLogger("pipeline.sources.live")

TICKER_TYPES = ("spot", "swap")


def rules_of(settings: MarketSettings) -> UniverseRules:
    quotes = tuple(q.strip().upper() for q in settings.universe_equivalent_quotes if q.strip())
    return UniverseRules(equivalent_quotes=quotes, multiplier_bases=settings.universe_multiplier_bases)


def rest_client(exchange_id: str, settings: MarketSettings) -> Any:
    """A ccxt async client of ``exchange_id`` at the configured endpoints (rate limiter on)."""
    return ccxt_client(exchange_id, settings)


def _volume(ticker: Mapping[str, Any]) -> float | None:
    quote = ticker.get("quoteVolume")
    if isinstance(quote, int | float):
        return float(quote)
    base, last = ticker.get("baseVolume"), ticker.get("last")
    if isinstance(base, int | float) and isinstance(last, int | float):
        return float(base) * float(last)
    return None


def volumes_from_tickers(
    tickers: Mapping[str, Any], markets: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, float | None]:
    """symbol -> 24 h quote volume of the active spot and linear-swap markets among ``tickers``."""
    out: dict[str, float | None] = {}
    for symbol, ticker in tickers.items():
        if not isinstance(ticker, Mapping):
            continue
        market = (markets or {}).get(symbol)
        if market is not None:
            if market.get("active") is False:
                continue
            if market.get("type") not in TICKER_TYPES or (market.get("swap") and not market.get("linear")):
                continue
        elif market_type_of(symbol) not in TICKER_TYPES:
            continue
        out[symbol] = _volume(ticker)
    return out


async def exchange_volumes(exchange: Any) -> dict[str, float | None]:
    """One exchange's quote volumes (its markets loaded first)."""
    markets = await exchange.load_markets()
    out: dict[str, float | None] = {}
    for kind in TICKER_TYPES:
        if not any(m.get("type") == kind for m in markets.values()):
            continue
        tickers = await exchange.fetch_tickers(None, {"type": kind})
        out.update(volumes_from_tickers(tickers or {}, markets))
    return out


async def fetch_quote_volumes(
    settings: MarketSettings, *, clients: Mapping[str, Any] | None = None
) -> dict[str, dict[str, float | None]]:
    """exchange -> symbol -> quote volume, for every configured exchange that answered.

    ``clients``: ccxt clients to use (not closed here); others are built and closed.
    """
    clients = dict(clients or {})

    async def one(exchange_id: str) -> tuple[str, dict[str, float | None] | None]:
        client = clients.get(exchange_id)
        owned = client is None
        if client is None:
            client = rest_client(exchange_id, settings)
        try:
            return exchange_id, await exchange_volumes(client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("universe: %s tickers unavailable (%s: %s)", exchange_id, type(exc).__name__, exc)
            return exchange_id, None
        finally:
            if owned:
                with contextlib.suppress(Exception):
                    await client.close()

    answers = await asyncio.gather(*(one(e) for e in settings.exchanges))
    return {e: v for e, v in answers if v is not None}


async def discover(settings: MarketSettings, *, clients: Mapping[str, Any] | None = None) -> list[Ranked]:
    """The ``top:N`` markets now; raises ``ExchangeUnavailable`` when fewer than two exchanges answer."""
    n = settings.universe
    if n is None:
        raise ValueError("discover needs ARBFLOW_MARKET__SYMBOLS=top:N")
    rules = rules_of(settings)
    volumes = await fetch_quote_volumes(settings, clients=clients)
    if len(volumes) < rules.min_exchanges:
        raise ExchangeUnavailable(
            ",".join(settings.exchanges),
            f"universe: {len(volumes)} of {len(settings.exchanges)} exchanges answered fetch_tickers "
            f"(at least {rules.min_exchanges} needed)",
        )
    return rank_universe(volumes, n, rules)


class UniverseDiscovery:
    """The live source's universe (a mixin of ``CcxtMarketSource``)."""

    exchange_id: str
    exchange: Any
    symbols: list[str]
    settings: MarketSettings
    stats: dict[str, int]
    use_websockets: bool
    _closed: bool
    _last_book: dict[str, tuple[dict[str, Any], float]]
    _sleep: Callable[[float], Awaitable[Any]]
    universe: list[Ranked]

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:  # pragma: no cover
        raise NotImplementedError

    def _market(self, symbol: str) -> Mapping[str, Any] | None:  # pragma: no cover - in live
        raise NotImplementedError

    def _start_symbol_producers(self, symbols: list[str]) -> None:  # pragma: no cover - in live
        raise NotImplementedError

    async def _discover_symbols(self) -> list[str]:
        """This exchange's symbols of the ``top:N`` markets (its own client answers for it)."""
        ranked = await discover(self.settings, clients={self.exchange_id: self.exchange})
        self.universe = ranked
        self.stats["universe_refreshes"] = self.stats.get("universe_refreshes", 0) + 1
        mine = universe_symbols(ranked, self.exchange_id)
        log.info(
            "%s: universe top %d: %s (ours: %s)",
            self.exchange_id, self.settings.universe, ", ".join(r.key for r in ranked), ", ".join(mine),
        )  # fmt: skip
        return mine

    async def _universe_loop(self) -> None:
        """Rank again every ``universe_refresh_s``; streams of new symbols start, dropped ones end."""
        while not self._closed:
            await self._sleep(self.settings.universe_refresh_s)
            if self._closed:
                return
            try:
                wanted = await self._discover_symbols()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the current universe until the next round
                log.warning(
                    "%s: universe refresh failed (%s); keeping %s", self.exchange_id, exc, self.symbols
                )
                continue
            markets = self.exchange.markets or {}
            wanted = [s for s in wanted if s in markets]
            added = [s for s in wanted if s not in self.symbols]
            removed = [s for s in self.symbols if s not in wanted]
            if not added and not removed:
                continue
            for symbol in removed:
                self.symbols.remove(symbol)
                self._last_book.pop(symbol, None)
            self.symbols.extend(added)
            self.stats["universe_changes"] = self.stats.get("universe_changes", 0) + 1
            log.warning(
                "%s: universe changed: +%s -%s", self.exchange_id, ", ".join(added) or "none",
                ", ".join(removed) or "none",
            )  # fmt: skip
            if added:
                self._start_symbol_producers(added)
