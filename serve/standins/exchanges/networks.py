"""Transfer networks and withdrawal fees the emulated venues list per currency.

Fees are of the order the venues charged in 2024-2025 (public fee pages); the
emulator only needs them plausible and distinct per network, so that the
cheapest common network can be chosen and a fee can exceed a small edge.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    fee: float  # withdrawal fee, in units of the currency
    confirmations: int


_NETWORKS: dict[str, tuple[Network, ...]] = {
    "BTC": (Network("BTC", 0.0002, 1), Network("BSC", 0.0000072, 15)),
    "ETH": (Network("ETH", 0.0012, 12), Network("ARBITRUM", 0.0001, 12), Network("BSC", 0.000085, 15)),
    "SOL": (Network("SOL", 0.008, 1),),
    "XRP": (Network("XRP", 0.2, 1),),
    "DOGE": (Network("DOGE", 4.0, 6),),
    "USDT": (
        Network("TRX", 1.0, 1),
        Network("ETH", 4.0, 12),
        Network("BSC", 0.8, 15),
        Network("SOL", 1.0, 1),
    ),
    "USDC": (Network("ETH", 4.0, 12), Network("SOL", 1.0, 1), Network("BSC", 0.8, 15)),
}
_DEFAULT = (Network("ETH", 1.0, 12),)


def currency_networks(symbols: list[str]) -> dict[str, tuple[Network, ...]]:
    """Every currency of these unified symbols (base, quote, settle) with its networks."""
    codes: list[str] = []
    for symbol in symbols:
        pair, _, settle = symbol.partition(":")
        for code in (*pair.split("/"), settle):
            if code and code not in codes:
                codes.append(code)
    return {code: _NETWORKS.get(code, _DEFAULT) for code in codes}
