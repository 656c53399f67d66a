"""Built-in listings: what the emulators list when the recorded responses are not at hand.

The emulators read each exchange's market listing (binance ``exchangeInfo``, bybit and
okx ``instruments``) from the recorded responses under ``shared/fixtures/exchanges``
beside the repository. A checkout without them (a fresh clone elsewhere) still runs the
emulators, and so ``arbflow demo`` on the live source: each listing below is the shape of
that exchange's public response, as its API documentation gives it, with one ``BTC``
instrument per kind that the emulator clones for every other symbol (as it does for
symbols the recordings do not list). Same relative paths as the recorded files, so
:meth:`~serve.standins.exchanges.base.ExchangeEmulator.listing` asks for one thing.
"""

from __future__ import annotations

import copy
from typing import Any

_BINANCE_SPOT_BTC: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "baseAsset": "BTC",
    "baseAssetPrecision": 8,
    "quoteAsset": "USDT",
    "quotePrecision": 8,
    "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
    "icebergAllowed": True,
    "ocoAllowed": True,
    "quoteOrderQtyMarketAllowed": True,
    "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": True,
    "filters": [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.01000000",
            "maxPrice": "1000000.00000000",
            "tickSize": "0.01000000",
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": "0.00001000",
            "maxQty": "9000.00000000",
            "stepSize": "0.00001000",
        },
        {
            "filterType": "MIN_NOTIONAL",
            "minNotional": "10.00000000",
            "applyToMarket": True,
            "avgPriceMins": 5,
        },
    ],
    "permissions": ["SPOT", "MARGIN"],
}

_BINANCE_PERP_BTC: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "pair": "BTCUSDT",
    "contractType": "PERPETUAL",
    "deliveryDate": 4133404800000,
    "onboardDate": 1569398400000,
    "status": "TRADING",
    "baseAsset": "BTC",
    "quoteAsset": "USDT",
    "marginAsset": "USDT",
    "pricePrecision": 2,
    "quantityPrecision": 3,
    "baseAssetPrecision": 8,
    "quotePrecision": 8,
    "underlyingType": "COIN",
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "1000000", "tickSize": "0.10"},
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
        {"filterType": "MIN_NOTIONAL", "notional": "100"},
    ],
    "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
}


def _binance(symbols: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": 0,
        "rateLimits": [],
        "exchangeFilters": [],
        **extra,
        "symbols": [symbols],
    }


def _bybit(instrument: dict[str, Any]) -> dict[str, Any]:
    return {
        "retCode": 0,
        "retMsg": "OK",
        "result": {"nextPageCursor": "", "list": [instrument]},
        "retExtInfo": {},
        "time": 0,
    }


OKX_CONTRACT_VALUES = {"BTC": "0.01", "ETH": "0.1", "SOL": "1", "XRP": "100", "DOGE": "1000"}
"""Base currency per USDT swap contract, as okx lists them: the emulator clones the BTC
instrument for other bases, and the contract size is what it must not clone."""


def _okx_swaps(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**template, "ctVal": value, "ctValCcy": base, "instId": f"{base}-USDT-SWAP", "uly": f"{base}-USDT"}
        for base, value in OKX_CONTRACT_VALUES.items()
    ]


def _okx(*instruments: dict[str, Any]) -> dict[str, Any]:
    base = {
        "alias": "",
        "baseCcy": "",
        "category": "1",
        "ctMult": "",
        "ctType": "",
        "ctVal": "",
        "ctValCcy": "",
        "expTime": "",
        "lever": "",
        "listTime": "1548133413000",
        "optType": "",
        "quoteCcy": "",
        "settleCcy": "",
        "state": "live",
        "stk": "",
        "uly": "",
    }
    return {"code": "0", "msg": "", "data": [{**base, **instrument} for instrument in instruments]}


LISTINGS: dict[str, dict[str, Any]] = {
    "binance/cryptofeed_spot_exchangeInfo_20211012.json": _binance(_BINANCE_SPOT_BTC),
    "binance/cryptofeed_usdm_exchangeInfo_20210722.json": _binance(
        _BINANCE_PERP_BTC, futuresType="U_MARGINED", assets=[]
    ),
    "bybit/nautilus_v5_instruments_spot.json": _bybit(
        {
            "symbol": "BTCUSDT",
            "baseCoin": "BTC",
            "quoteCoin": "USDT",
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "utaOnly",
            "lotSizeFilter": {
                "basePrecision": "0.000001",
                "quotePrecision": "0.00000001",
                "minOrderQty": "0.000048",
                "maxOrderQty": "71.73956243",
                "minOrderAmt": "1",
                "maxOrderAmt": "2000000",
            },
            "priceFilter": {"tickSize": "0.01"},
        }
    ),
    "bybit/nautilus_v5_instruments_linear.json": _bybit(
        {
            "symbol": "BTCUSDT",
            "contractType": "LinearPerpetual",
            "status": "Trading",
            "baseCoin": "BTC",
            "quoteCoin": "USDT",
            "settleCoin": "USDT",
            "launchTime": "1584230400000",
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": "2",
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": "0.10", "maxPrice": "199999.80", "tickSize": "0.10"},
            "lotSizeFilter": {
                "maxOrderQty": "500.000",
                "minOrderQty": "0.001",
                "qtyStep": "0.001",
                "postOnlyMaxOrderQty": "500.000",
                "maxMktOrderQty": "120.000",
                "minNotionalValue": "5",
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
        }
    ),
    "okx/cryptofeed_v5_instruments_SPOT_20220513.json": _okx(
        {
            "baseCcy": "BTC",
            "quoteCcy": "USDT",
            "instId": "BTC-USDT",
            "instType": "SPOT",
            "lever": "10",
            "lotSz": "0.00000001",
            "minSz": "0.00001",
            "tickSz": "0.1",
            "maxLmtSz": "9999999999",
            "maxMktSz": "1000000",
        }
    ),
    "okx/cryptofeed_v5_instruments_SWAP_20220513.json": _okx(
        *_okx_swaps(
            {
                "ctMult": "1",
                "ctType": "linear",
                "instType": "SWAP",
                "lever": "100",
                "lotSz": "0.01",
                "minSz": "0.01",
                "settleCcy": "USDT",
                "tickSz": "0.1",
                "maxLmtSz": "100000000",
                "maxMktSz": "5000",
            }
        )
    ),
}


def builtin_listing(relative: str) -> Any:
    """The built-in listing at ``relative`` (``<exchange>/<file name>``), a fresh copy."""
    try:
        return copy.deepcopy(LISTINGS[relative])
    except KeyError:
        raise FileNotFoundError(f"no built-in listing {relative!r}") from None
