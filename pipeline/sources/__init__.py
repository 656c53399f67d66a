"""Market-data sources (``core.ports.MarketSource``): live ccxt, NDJSON replay, simulator.

Imported lazily so that using one source does not import the others' libraries
(``ccxt`` is only needed by the live source).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.sources.live import CcxtMarketSource
    from pipeline.sources.replay import ReplayMarketSource

__all__ = ["CcxtMarketSource", "ReplayMarketSource"]

_LAZY = {
    "CcxtMarketSource": "pipeline.sources.live",
    "ReplayMarketSource": "pipeline.sources.replay",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
