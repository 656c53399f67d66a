"""Taker fees per (exchange, market type).

The one fee table of the project. Precedence, highest first: the ``ARBFLOW_FEES``
overrides (``{"binance": {"spot_taker": 0.001, "swap_taker": 0.0005}}``; a plain
``"taker"`` applies to every market type not given explicitly), then fees learned from
ccxt's markets (passed in as the same shape by the pipeline), then the built-in
defaults below. An exchange none of these know gets :data:`UNKNOWN_FEES`, and
:meth:`FeeSchedule.fee` says it is a default so the opportunity can be flagged.
``future`` uses the ``swap`` fee unless ``future_taker`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from core.errors import ConfigError
from core.models import MarketType, to_decimal

FeeTable = Mapping[str, Mapping[str, float | str | Decimal]]
"""exchange → ``{"spot_taker": …, "swap_taker": …, "future_taker": …}`` (fractions)."""

DEFAULT_FEES: Mapping[str, Mapping[str, Decimal]] = MappingProxyType(
    {
        "binance": {"spot_taker": Decimal("0.001"), "swap_taker": Decimal("0.0005")},
        "bybit": {"spot_taker": Decimal("0.001"), "swap_taker": Decimal("0.00055")},
        "okx": {"spot_taker": Decimal("0.001"), "swap_taker": Decimal("0.0005")},
    }
)
UNKNOWN_FEES: Mapping[str, Decimal] = MappingProxyType(
    {"spot_taker": Decimal("0.001"), "swap_taker": Decimal("0.0006")}
)
_KEYS = ("spot_taker", "swap_taker", "future_taker")
_MAX_FEE = Decimal("0.05")


@dataclass(frozen=True, slots=True)
class Fee:
    rate: Decimal
    is_default: bool
    """True when the exchange is unknown and :data:`UNKNOWN_FEES` was used."""


def _key(market_type: MarketType | str) -> str:
    return f"{MarketType(market_type).value}_taker"


def _validated(table: FeeTable, source: str) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {}
    for exchange, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{source}: fees for {exchange!r} must be an object like {{'spot_taker': 0.001}}"
            )
        clean: dict[str, Decimal] = {}
        for key, value in sorted(entry.items(), key=lambda kv: kv[0] != "taker"):
            if key != "taker" and key not in _KEYS:
                # maker fees and anything else are not used by taker-only arbitrage
                continue
            rate = to_decimal(value)
            if not Decimal(0) <= rate < _MAX_FEE:
                raise ConfigError(f"{source}: {exchange}.{key}={value} is not a fee fraction in [0, 0.05)")
            # a plain "taker" (taken first) sets every market type; explicit keys then win
            clean.update(dict.fromkeys(_KEYS, rate) if key == "taker" else {key: rate})
        out[exchange.lower()] = clean
    return out


@dataclass(frozen=True)
class FeeSchedule:
    """Taker fees by exchange and market type, as ``Decimal`` fractions."""

    overrides: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    markets: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)

    @classmethod
    def build(cls, overrides: FeeTable | None = None, markets: FeeTable | None = None) -> FeeSchedule:
        """``overrides``: ``Settings.fees`` (``ARBFLOW_FEES``); ``markets``: learned from ccxt."""
        return cls(
            overrides=_validated(overrides or {}, "ARBFLOW_FEES"),
            markets=_validated(markets or {}, "ccxt markets"),
        )

    def fee(self, exchange: str, market_type: MarketType | str = MarketType.SPOT) -> Fee:
        key = _key(market_type)
        lookup = [key] if key != "future_taker" else ["future_taker", "swap_taker"]
        ex = exchange.lower()
        for source in (self.overrides, self.markets, DEFAULT_FEES):
            entry = source.get(ex)
            if entry is None:
                continue
            for k in lookup:
                if k in entry:
                    return Fee(entry[k], is_default=False)
        unknown_key = "spot_taker" if key == "spot_taker" else "swap_taker"
        return Fee(UNKNOWN_FEES[unknown_key], is_default=True)

    def override(self, exchange: str, market_type: MarketType | str = MarketType.SPOT) -> Decimal | None:
        """The ``ARBFLOW_FEES`` override for this exchange and market type, if any."""
        entry = self.overrides.get(exchange.lower(), {})
        key = _key(market_type)
        for k in [key] if key != "future_taker" else ["future_taker", "swap_taker"]:
            if k in entry:
                return entry[k]
        return None

    def taker(self, exchange: str, market_type: MarketType | str = MarketType.SPOT) -> Decimal:
        return self.fee(exchange, market_type).rate

    def rows(
        self, exchanges: Iterable[str], market_types: Iterable[MarketType | str] = tuple(MarketType)
    ) -> list[dict[str, object]]:
        """One row per (exchange, market_type) for the vectorised detector's fee table."""
        out: list[dict[str, object]] = []
        kinds = [MarketType(m) for m in market_types]
        for exchange in sorted(set(exchanges)):
            for market_type in kinds:
                fee = self.fee(exchange, market_type)
                out.append(
                    {
                        "exchange": exchange,
                        "market_type": market_type.value,
                        "taker_fee": float(fee.rate),
                        "fee_is_default": fee.is_default,
                    }
                )
        return out
