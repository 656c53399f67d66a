"""The sim: ``SimMarketSource``, a seeded simulator of several exchanges quoting the same symbols.

It emits ``pipeline.schemas.MarketBatch`` objects (``quotes``, ``order_books`` and
``funding_rates`` tables with exactly the schemas of :mod:`pipeline.schemas`), one
per tick, for the demo, tests and load tests (50,000 quotes/s and more): every tick is
generated with numpy array operations. There is no Python loop per quote. The loops
that remain run per exchange, per book level and per active event.

Coherence without coordination
------------------------------
Every price is a pure function of ``(seed, symbol, time)`` (plus the exchange for its
basis and noise):

* the "fundamental" mid of an underlying is ``base * exp(sum of value-noise octaves)``,
  where each octave interpolates Gaussian knots drawn from a counter-based hash
  (splitmix64) of ``(seed, underlying, octave, knot index)``. It is a random walk
  over time scales from 1 s to 1 h, and it can be computed for any timestamp
  without replaying the path;
* the per-row noise, the row count and the symbol of each row come from a
  ``numpy.random.Generator`` seeded with ``(seed, exchange, absolute tick index)``;
* the injected events are drawn per 60 s block of absolute time from
  ``(seed, block index)``.

So several instances, each with ``exchange=`` set to one exchange (one per
coordinator actor), produce exactly the rows the all-exchanges instance produces
for that exchange, when they share ``seed``, ``exchanges``, ``symbols``, ``rate``,
``tick_s`` and the tick grid. Ticks are aligned to multiples of ``tick_s`` in
absolute time.

Calibration (computed once from ``/work/shared/fixtures/exchanges``, BTC/USDT,
2021-2024 snapshots; the fixtures are not read at run time)
-------------------------------------------------------------------------------
====================================  =========================================  ==================
quantity                              fixture(s)                                 value
====================================  =========================================  ==================
top-of-book spread, binance           ccxt_static/binance.response fetchTicker   0.0014 bps (1 tick
                                      + fetchOrderBook spot; raw/binance/        of 0.01), also
                                      nautilus_spot_bookTicker_BTCUSDT,          0.0016 and 0.0023
                                      nautilus_spot_depth_BTCUSDT_limit10
top-of-book spread, okx / bybit       ccxt_static/okx fetchTicker + books;       0.0136-0.023 bps
                                      ccxt_static/bybit fetchTicker,             (1 tick of 0.1)
                                      fetchFundingRate(s) (bid1/ask1)
price tick BTC/USDT                   the same books                             binance 0.01,
                                                                                 okx/bybit 0.1
level spacing (gap between levels)    raw/binance/nautilus_spot_depth_BTCUSDT_   mean 0.18 bps,
                                      limit10 (18 gaps)                          median 0.10 bps,
                                                                                 many 1-tick gaps
level size (notional per level)       same book (20 levels)                      median $3.9k,
                                                                                 log-sd 1.97
size growth with distance             same book: mean size levels 6-10 / 1-5     x1.64 -> +13 %/lvl
top-of-book size (spot tickers)       binance/okx fetchTicker, binance           geo-mean $21k,
                                      bookTicker, binance/okx 2-level books      log-sd 1.66
top-of-book size (swap)               bybit fetchTicker/fetchFundingRate(s),     geo-mean ~$0.6M:
                                      okx BTC-USDT-SWAP book                     swaps x5 (capped)
24 h quote volume BTC/USDT            binance fetchTicker (5.17e9),              per-exchange
                                      okx fetchTicker (1.52e9),                  scale below
                                      bybit swap fetchTicker (2.35e9)
funding rate per 8 h, BTC perp        bybit fetchFundingRate(s) 0.0001 x2,       typical 0.0001,
                                      -0.00046; raw/okx funding history          spread ~1e-4
                                      0.000152, -0.0000236; okx ws 0.0001/0.0002
funding interval                      bybit fetchFundingRate ``interval: 8h``    8 h default
====================================  =========================================  ==================

Excluded as unrepresentative (testnet-like): ccxt_static binance swap book (53 bps
spread), bybit spot book (37 bps), bybit swap book (0.78 bps). Constants marked
"assumed" in :mod:`.market` (alt-coin spreads, volatility, latency, basis) are not from the
fixtures.

Rooms: :mod:`.source` (the ticks), :mod:`.prices` (the price field), :mod:`.events` (the
injected events), :mod:`.market` (calibration and listings), :mod:`.noise` (hashing).
"""

from pipeline.sources.sim.events import EventRates, SimEvent
from pipeline.sources.sim.market import SIM_EPOCH_MS, base_price, funding_interval_hours, market_type
from pipeline.sources.sim.source import SimMarketSource

__all__ = [
    "SIM_EPOCH_MS",
    "EventRates",
    "SimEvent",
    "SimMarketSource",
    "base_price",
    "funding_interval_hours",
    "market_type",
]
