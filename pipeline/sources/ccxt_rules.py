"""What the live source knows about ccxt and the exchanges, apart from running them.

The error vocabulary (ccxt exceptions -> ``core.errors``), the order-book depths
each exchange's API accepts (ccxt.pro refuses the others: bybit's websocket takes
1/50/200/1000 levels, okx's 50-level channel needs VIP keys), the rewriting of
ccxt's API URLs for ``ARBFLOW_MARKET__ENDPOINTS``, exchange-id validation and the
deposit/withdraw status of ccxt currencies.
"""

from __future__ import annotations

import difflib
import importlib
import re
import time
from collections.abc import Mapping
from typing import Any

import ccxt

from core.errors import (
    BadExchangeResponse,
    ConfigError,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
    SymbolNotListed,
)
from core.settings import MarketSettings
from pipeline.ccxt_offline import prepare_offline_options

WS_BOOK_DEPTHS: dict[str, tuple[int, ...]] = {
    "binance": (5, 10, 20, 50, 100, 500, 1000),  # the REST snapshot under the diff stream
    "bybit": (1, 50, 200, 1000),  # ccxt.pro raises BadRequest on any other limit
    "okx": (1, 5, 400),  # bbo-tbt, books5, books; 50 (books50-l2-tbt) needs VIP keys
}
"""Websocket order-book depths each exchange accepts without keys (ccxt.pro 4.5)."""

REST_BOOK_DEPTHS: dict[str, tuple[int, ...]] = {
    "binance": (5, 10, 20, 50, 100, 500, 1000),  # USDⓈ-M futures accept only these
}
"""REST ``fetch_order_book`` limits where an exchange accepts only some (others: any)."""


def book_depth(exchange_id: str, requested: int, *, websocket: bool) -> int:
    """The nearest depth the exchange accepts that is at least ``requested`` (else its largest).

    The book is truncated locally to the requested depth; exchanges not in the tables
    get the requested depth as is.
    """
    allowed = (WS_BOOK_DEPTHS if websocket else REST_BOOK_DEPTHS).get(exchange_id)
    if not allowed:
        return requested
    return min((d for d in allowed if d >= requested), default=max(allowed))


def validate_exchange_ids(exchange_ids: list[str]) -> None:
    """Raise ``ConfigError`` naming every id ccxt does not know (with the closest known ones)."""
    known = set(ccxt.exchanges)
    bad = [e for e in exchange_ids if e not in known]
    if not bad:
        return
    hints = []
    for e in bad:
        close = difflib.get_close_matches(e.lower(), sorted(known), n=3)
        hints.append(f"{e!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise ConfigError(
        f"ARBFLOW_MARKET__EXCHANGES: not ccxt exchange ids: {'; '.join(hints)}. "
        "Use the ids of ccxt.exchanges (binance, bybit, okx, …)."
    )


_URL = re.compile(r"^(https?|wss?)://([^/:?#]+)(?::\d+)?(.*)$")


def rebase_urls(api: Any, rest: str | None, ws: str | None, hostname: str | None = None) -> Any:
    """ccxt's ``urls['api']`` with every URL moved under ``rest`` (http) or ``ws`` (websocket).

    The original host becomes the first path segment, so that one base stands for all
    of an exchange's hosts: ``https://fapi.binance.com/fapi/v1`` ->
    ``<rest>/fapi.binance.com/fapi/v1``. ``{hostname}`` templates are filled in first.
    Values that are not URLs, and URLs whose kind has no base given, are kept.
    """
    if isinstance(api, Mapping):
        return {key: rebase_urls(value, rest, ws, hostname) for key, value in api.items()}
    if isinstance(api, list):
        return [rebase_urls(value, rest, ws, hostname) for value in api]
    if not isinstance(api, str):
        return api
    url = api.replace("{hostname}", hostname) if hostname else api
    match = _URL.match(url)
    if match is None:
        return api
    base = ws if match.group(1).startswith("ws") else rest
    if not base:
        return api
    return f"{base.rstrip('/')}/{match.group(2)}{match.group(3)}"


def ccxt_client(
    exchange_id: str,
    settings: MarketSettings,
    *,
    websockets: bool = False,
    credentials: Mapping[str, str] | None = None,
) -> Any:
    """The one way the live path builds a ccxt client of ``exchange_id``: async ccxt, or
    ccxt.pro with ``websockets`` when ccxt.pro has the exchange; ccxt's rate limiter on,
    the configured timeout, ``credentials`` (``apiKey``/``secret``/``password``) when given,
    every API URL moved to ``ARBFLOW_MARKET__ENDPOINTS`` when set for the exchange
    (:func:`rebase_urls`), and the options that keep market loading to the market data
    (no margin pair lists). Raises :class:`ConfigError` for an id ccxt does not know."""
    module: Any = importlib.import_module("ccxt.pro" if websockets else "ccxt.async_support")
    cls = getattr(module, exchange_id, None)
    if cls is None and websockets:
        cls = getattr(importlib.import_module("ccxt.async_support"), exchange_id, None)
    if cls is None:
        raise ConfigError(f"{exchange_id!r} is not a ccxt exchange id")
    client = cls({"enableRateLimit": True, "timeout": settings.request_timeout_ms, **(credentials or {})})
    endpoints = settings.endpoints.get(exchange_id)
    if endpoints:  # the exchange emulators or a proxy, through ccxt's own URL settings
        client.urls["api"] = rebase_urls(
            client.urls["api"], endpoints.get("rest"), endpoints.get("ws"), getattr(client, "hostname", None)
        )
    prepare_offline_options(client)
    return client


class StreamRefused(ExchangeError):
    """The exchange refuses this request as asked (bad parameters, keys needed, not supported).

    Not a transport failure: it does not count toward the breaker; the stream that
    asked is dropped or downgraded (for instance from websocket to REST).
    """


def map_ccxt_error(exchange_id: str, exc: BaseException) -> ExchangeError:
    """Translate a ccxt (or parsing) exception into the ``core.errors`` vocabulary."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ExchangeError):
        return exc
    if isinstance(exc, ccxt.RateLimitExceeded):
        return ExchangeRateLimited(exchange_id, text)
    if isinstance(exc, ccxt.NetworkError):  # timeouts, DDoS protection, maintenance, nonce
        return ExchangeUnavailable(exchange_id, text)
    if isinstance(exc, ccxt.BadSymbol):
        return SymbolNotListed(exchange_id, text)
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended):
        return StreamRefused(exchange_id, text)
    if isinstance(exc, ccxt.BadRequest | ccxt.NotSupported):
        return StreamRefused(exchange_id, text)
    if isinstance(exc, ccxt.BadResponse):
        return BadExchangeResponse(exchange_id, text)
    if isinstance(exc, ccxt.BaseError):
        return ExchangeError(exchange_id, text)
    if isinstance(exc, TimeoutError | ConnectionError):
        return ExchangeUnavailable(exchange_id, text)
    # KeyError/TypeError/ValueError… raised while ccxt parses an unexpected payload.
    return BadExchangeResponse(exchange_id, text)


def retry_after_s(exchange: Any) -> float:
    """The ``Retry-After`` of the exchange's last HTTP answer, in seconds (0 when none)."""
    headers = getattr(exchange, "last_response_headers", None) or {}
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
