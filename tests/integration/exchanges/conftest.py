"""The exchange emulators for these tests (no Redis or Ray needed by most of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from pipeline.ccxt_offline import prepare_offline_options
from pipeline.sources.live import rebase_urls
from serve.standins.exchanges import Exchanges, start_exchanges
from serve.standins.exchanges.server import exchanges_in_thread

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"]


@pytest.fixture
async def emulators(shared_fixtures: Path) -> AsyncIterator[Exchanges]:
    async with start_exchanges(shared_fixtures / "exchanges", seed=11, symbols=SYMBOLS) as ex:
        yield ex


def pro_client(ex: Exchanges, name: str, **config: Any) -> Any:
    """A real ccxt.pro client whose URLs point at the emulators (as the live source does)."""
    import ccxt.pro

    client = getattr(ccxt.pro, name)({"enableRateLimit": False, "timeout": 5_000, **config})
    urls = ex.endpoints[name]
    client.urls["api"] = rebase_urls(
        client.urls["api"], urls["rest"], urls["ws"], getattr(client, "hostname", None)
    )
    prepare_offline_options(client)
    return client


@pytest.fixture
def emulators_in_thread(shared_fixtures: Path) -> Iterator[Exchanges]:
    """The emulators on a loop of their own thread (for code that blocks: Ray, subprocesses)."""
    with exchanges_in_thread(shared_fixtures / "exchanges", seed=11, symbols=SYMBOLS) as ex:
        yield ex


def live_settings(ex: Exchanges, **market: Any) -> Settings:
    values: dict[str, Any] = {"source": "live", "symbols": SYMBOLS, "endpoints": ex.endpoints}
    values.update(market)
    return Settings(market=values)
