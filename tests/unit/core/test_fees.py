"""One fee table: ``core.fees`` answers for the detector and for the live source alike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.errors import ConfigError
from core.fees import DEFAULT_FEES, UNKNOWN_FEES, FeeSchedule
from pipeline.ccxt_offline import taker_fee, taker_fees


def test_builtin_defaults_and_unknown_exchanges() -> None:
    fees = FeeSchedule()
    assert fees.fee("bybit", "swap").rate == Decimal("0.00055")
    assert not fees.fee("bybit", "swap").is_default
    assert fees.fee("bybit", "future").rate == Decimal("0.00055")  # futures cost what swaps cost
    unknown = fees.fee("somedex", "swap")
    assert unknown.is_default and unknown.rate == UNKNOWN_FEES["swap_taker"]


def test_a_plain_taker_override_applies_to_every_market_type_unless_one_is_explicit() -> None:
    fees = FeeSchedule.build({"binance": {"taker": 0.0002, "swap_taker": 0.0001}})
    assert fees.taker("binance", "spot") == Decimal("0.0002")
    assert fees.taker("binance", "future") == Decimal("0.0002")
    assert fees.taker("binance", "swap") == Decimal("0.0001")
    assert fees.override("okx", "spot") is None


def test_overrides_out_of_range_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"binance\.taker"):
        FeeSchedule.build({"binance": {"taker": 0.5}})


def test_the_live_source_reads_the_same_table() -> None:
    for exchange, entry in DEFAULT_FEES.items():
        assert taker_fee(exchange, "spot") == float(entry["spot_taker"])
        assert taker_fee(exchange, "swap") == float(entry["swap_taker"])
    assert taker_fees("somedex") == {
        "spot": float(UNKNOWN_FEES["spot_taker"]),
        "swap": float(UNKNOWN_FEES["swap_taker"]),
        "future": float(UNKNOWN_FEES["swap_taker"]),
    }
    assert taker_fee("binance", "spot", None, {"binance": {"taker": 0.0002}}) == 0.0002


def test_markets_beat_the_table_and_overrides_beat_markets() -> None:
    markets = {
        "BTC/USDT": {"spot": True, "type": "spot", "taker": 0.00075},
        "ETH/USDT": {"spot": True, "type": "spot", "taker": 0.00075},
        "DOGE/USDT": {"spot": True, "type": "spot", "taker": 0.002},
    }
    assert taker_fee("binance", "spot", markets) == 0.00075
    assert taker_fee("binance", "spot", markets, symbol="DOGE/USDT") == 0.002
    assert taker_fee("binance", "spot", markets, {"binance": {"spot_taker": 0.0001}}) == 0.0001
    assert taker_fee("binance", "swap", markets) == float(DEFAULT_FEES["binance"]["swap_taker"])
