"""Ports: the Protocols adapters implement. Core code depends on these only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MarketSource(Protocol):
    """A stream of normalised market-data batches (``pipeline.schemas.MarketBatch``).

    Implemented by ``CcxtMarketSource`` (live), ``ReplayMarketSource`` and
    ``SimMarketSource``. ``batches()`` ends when the source is exhausted (replay) or
    runs until ``close()`` (live, sim).
    """

    name: str

    def batches(self) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


class LatestQuoteStore(Protocol):
    """Online store of the latest quote per (exchange, symbol)."""

    async def put_many(self, quotes: list[dict[str, Any]]) -> None: ...

    async def get(self, exchange: str, symbol: str) -> dict[str, Any] | None: ...
