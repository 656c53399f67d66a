"""The error vocabulary of arbflow. Adapters translate library errors into these."""

from __future__ import annotations


class ArbflowError(Exception):
    """Base of every error arbflow raises on purpose."""


class ConfigError(ArbflowError):
    """A setting is missing or invalid; the message says which and how to fix it."""


class DependencyMissing(ArbflowError):
    """A program arbflow needs (redis-server, weed, …) is not installed."""


class ExchangeError(ArbflowError):
    """An exchange call failed. `retryable` says whether backing off and retrying can help."""

    retryable: bool = False

    def __init__(self, exchange: str, message: str) -> None:
        super().__init__(f"{exchange}: {message}")
        self.exchange = exchange


class ExchangeUnavailable(ExchangeError):
    """Network trouble, maintenance, a timeout: try again later."""

    retryable = True


class ExchangeRateLimited(ExchangeError):
    """The exchange said we are too fast (HTTP 429/418 or its own code)."""

    retryable = True


class BadExchangeResponse(ExchangeError):
    """The exchange answered with something we cannot parse."""


class SymbolNotListed(ExchangeError):
    """The exchange does not list the symbol asked for."""


class CircuitOpen(ExchangeError):
    """Calls to the exchange are suspended after repeated failures."""

    retryable = True


class MalformedRecord(ArbflowError):
    """A market-data record (replay line, ccxt structure) is not what the format says."""


class LakeError(ArbflowError):
    """Writing or reading the Parquet lake failed."""


class StoreUnavailable(ArbflowError):
    """The online store (Redis) cannot be reached."""


class StaleData(ArbflowError):
    """No value fresher than the requested bound is available."""
