"""Fixture helpers for pipeline tests: recorded ccxt responses and markets, offline ccxt."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.ccxt_offline import offline_exchange

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures"
CCXT_STATIC = FIXTURES / "exchanges" / "ccxt_static"
RAW = FIXTURES / "exchanges" / "raw"
EXCHANGES = ("binance", "bybit", "okx")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"recorded fixtures absent: {path} (shared/fixtures must sit beside the repo)")
    return path


class Recorded:
    """Helpers over the recorded exchange fixtures (reach them through the ``recorded`` fixture)."""

    fixtures = FIXTURES
    raw_dir = RAW

    @staticmethod
    def load_json(path: Path) -> Any:
        with _require(path).open(encoding="utf-8") as fh:
            return json.load(fh)

    @staticmethod
    def responses(exchange: str) -> dict[str, Any]:
        """``ccxt_static/<exchange>.response.subset.json``: methods → recorded cases."""
        data: dict[str, Any] = Recorded.load_json(CCXT_STATIC / f"{exchange}.response.subset.json")
        return data

    @staticmethod
    def cases(exchange: str, method: str) -> list[dict[str, Any]]:
        return [c for c in Recorded.responses(exchange)["methods"].get(method, []) if not c.get("disabled")]

    @staticmethod
    def markets_path(exchange: str) -> Path:
        return _require(CCXT_STATIC / f"{exchange}.markets.subset.json")

    @staticmethod
    def sync_exchange(exchange: str) -> Any:
        return offline_exchange(exchange, Recorded.markets_path(exchange))

    @staticmethod
    def async_exchange(exchange: str, router: Callable[[str, str], Any]) -> Any:
        """An offline ``ccxt.async_support`` exchange whose ``fetch`` answers ``router(url, method)``.

        ``router`` returns the recorded raw JSON (deep-copied here) or raises a ccxt error.
        """
        # no real requests go out, so ccxt's rate limiter would only slow the tests down
        ex = offline_exchange(
            exchange, Recorded.markets_path(exchange), flavour="async", config={"enableRateLimit": False}
        )
        ex.requested_urls = []

        async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            ex.requested_urls.append(url)
            return copy.deepcopy(router(url, method))

        ex.fetch = fetch
        return ex

    @staticmethod
    def replay_case(exchange: Any, case: dict[str, Any]) -> Any:
        """Run one recorded case through ccxt's own unified method (sync, offline)."""
        exchange.fetch = lambda url, method="GET", headers=None, body=None: copy.deepcopy(
            case["httpResponse"]
        )
        return getattr(exchange, exchange.un_camel_case(case["method"]))(*case["input"])


@pytest.fixture(scope="session")
def recorded() -> Recorded:
    _require(FIXTURES)
    return Recorded()
