"""Emulators of binance, bybit and okx: their public REST + websocket protocols, locally.

Stand-ins for the outside world (no production path imports this package). Prices
come from the seeded sim market (``pipeline.sources.sim``) or a replay file. See
``docs/exchanges.md``; tests use :func:`start_exchanges`, people ``arbflow exchanges``.
"""

from __future__ import annotations

from serve.standins.exchanges.base import FAULT_KINDS
from serve.standins.exchanges.server import EMULATED, Exchanges, FaultSpec, start_exchanges

__all__ = ["EMULATED", "FAULT_KINDS", "Exchanges", "FaultSpec", "start_exchanges"]
