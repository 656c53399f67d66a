"""The seeded market simulator: schemas, determinism, coherence, realism, injected events, speed."""

from __future__ import annotations

import asyncio
import time
from functools import cache

import polars as pl
import pyarrow as pa
import pytest

from core.ports import MarketSource
from core.settings import DEFAULT_EXCHANGES, DEFAULT_SYMBOLS
from pipeline.schemas import FUNDING_RATES, ORDER_BOOKS, QUOTES, MarketBatch
from pipeline.sources.sim import (
    SIM_EPOCH_MS,
    EventRates,
    SimEvent,
    SimMarketSource,
    base_price,
    funding_interval_hours,
    market_type,
)

EXCHANGES = list(DEFAULT_EXCHANGES)
SYMBOLS = list(DEFAULT_SYMBOLS)
START = SIM_EPOCH_MS + 3_600_000  # 01:00Z, an arbitrary fixed start


def make(**kwargs: object) -> SimMarketSource:
    args: dict[str, object] = {"realtime": False, "start_ms": START}
    args.update(kwargs)
    return SimMarketSource(EXCHANGES, SYMBOLS, **args)  # type: ignore[arg-type]


def run(src: SimMarketSource, ticks: int) -> list[MarketBatch]:
    return [src.step() for _ in range(ticks)]


def frame(batches: list[MarketBatch], dataset: str) -> pl.DataFrame:
    df = pl.from_arrow(pa.concat_tables([b.get(dataset) for b in batches]))
    assert isinstance(df, pl.DataFrame)
    return df


@cache
def two_minutes() -> tuple[tuple[MarketBatch, ...], tuple[SimEvent, ...]]:
    """120 s of the default configuration (shared by the read-only tests below)."""
    src = make()
    batches = run(src, 1_200)
    return tuple(batches), tuple(src.events)


def tops(books: pl.DataFrame) -> pl.DataFrame:
    return books.with_columns(
        pl.col("bid_px").list.first().alias("bid"),
        pl.col("ask_px").list.first().alias("ask"),
        pl.col("ts").dt.epoch("ms").alias("ts_ms"),
    )


def num(value: object) -> float:
    """A polars scalar (``Series.max()``, ``.median()``…) as a float."""
    assert isinstance(value, int | float), value
    return float(value)


def ms(df: pl.DataFrame, column: str) -> pl.Series:
    return df[column].dt.epoch("ms")


# --- contract -----------------------------------------------------------------------


def test_implements_the_market_source_port() -> None:
    src = make()
    assert isinstance(src, MarketSource)
    assert src.name == "sim"
    assert make(exchange="okx").name == "sim:okx"


def test_tables_match_the_schemas_exactly() -> None:
    batches, _ = two_minutes()
    expected = {"quotes": QUOTES, "order_books": ORDER_BOOKS, "funding_rates": FUNDING_RATES}
    seen = dict.fromkeys(expected, 0)
    for batch in batches[:120]:
        assert set(batch.tables) == set(expected)
        for name, schema in expected.items():
            table = batch.tables[name]
            assert table.schema.equals(schema, check_metadata=True), name
            table.validate(full=True)
            seen[name] += table.num_rows
        assert batch.rows == sum(t.num_rows for t in batch.tables.values())
    assert all(n > 0 for n in seen.values()), seen


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SimMarketSource(EXCHANGES, SYMBOLS, exchange="kraken")
    with pytest.raises(ValueError):
        SimMarketSource([], SYMBOLS)
    with pytest.raises(ValueError):
        SimMarketSource(EXCHANGES, SYMBOLS, tick_s=0)


# --- determinism and coherence ------------------------------------------------------


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = run(make(), 50), run(make(), 50), run(make(seed=8), 50)
    for name in ("quotes", "order_books", "funding_rates"):
        assert frame(a, name).equals(frame(b, name)), name
    assert not frame(a, "quotes").equals(frame(c, "quotes"))
    assert [x.clock_ms for x in a] == [START + 100 * (i + 1) for i in range(50)]


def test_single_exchange_instances_agree_with_the_all_exchanges_instance() -> None:
    full_src = make()
    full = run(full_src, 100)
    for ex in ("binance", "okx"):
        one_src = make(exchange=ex)
        one = run(one_src, 100)
        for name in ("quotes", "order_books", "funding_rates"):
            mine = frame(one, name)
            assert mine["exchange"].unique().to_list() == [ex]
            assert mine.equals(frame(full, name).filter(pl.col("exchange") == ex)), (ex, name)
        assert one_src.events == full_src.events


def test_instances_started_at_different_times_agree_on_shared_ticks() -> None:
    # coordinators start a few hundred ms apart: the ticks they share are identical
    early = run(make(exchange="bybit"), 20)
    late = run(make(exchange="bybit", start_ms=START + 500), 15)
    for name in ("quotes", "order_books", "funding_rates"):
        assert frame(early[5:], name).equals(frame(late, name)), name


def test_prices_are_coherent_across_exchanges() -> None:
    src = make(event_rates=EventRates.none())
    quotes = frame(run(src, 100), "quotes").with_columns(((pl.col("bid") + pl.col("ask")) / 2).alias("mid"))
    per = quotes.group_by("symbol", "exchange").agg(pl.col("mid").median())
    spread = per.group_by("symbol").agg(((pl.col("mid").max() / pl.col("mid").min() - 1) * 1e4).alias("bps"))
    assert num(spread["bps"].max()) < 10  # a few bps of basis, not different prices
    mids = dict(per.filter(pl.col("exchange") == "binance").select("symbol", "mid").iter_rows())
    for symbol, mid in mids.items():
        assert 0.9 < mid / base_price(symbol.split(":")[0]) < 1.1
    # swaps quote near the spot
    assert abs(mids["BTC/USDT:USDT"] / mids["BTC/USDT"] - 1) < 10e-4


# --- volume and shape ---------------------------------------------------------------


@pytest.mark.parametrize(("rate", "tick_s"), [(2000.0, 0.1), (1234.5, 0.1), (500.0, 0.25)])
def test_rows_per_tick_follow_the_rate(rate: float, tick_s: float) -> None:
    ticks = 200
    src = make(rate=rate, tick_s=tick_s, event_rates=EventRates.none())
    batches = run(src, ticks)
    per_tick = sum(b.get("quotes").num_rows for b in batches) / ticks
    assert per_tick == pytest.approx(rate * tick_s * len(EXCHANGES), rel=0.02)
    # several updates of one symbol in a tick are distinct rows with jittered times
    quotes = frame(batches[:1], "quotes")
    assert num(quotes.group_by("exchange", "symbol").len()["len"].max()) > 1
    tick_ms = round(tick_s * 1000)
    t0 = (START // tick_ms) * tick_ms
    recv, ts = ms(quotes, "recv_ts"), ms(quotes, "ts")
    assert num(recv.min()) > t0 and num(recv.max()) <= t0 + tick_ms
    assert ((recv - ts) >= 1).all() and ((recv - ts) <= 500).all()
    assert ts.n_unique() > 10


def test_books_are_sorted_and_never_crossed() -> None:
    batches, _ = two_minutes()
    books = frame(list(batches), "order_books")
    assert (books["depth"] == 20).all()
    assert (books["bid_px"].list.len() == 20).all() and (books["ask_sz"].list.len() == 20).all()
    checks = books.select(
        bid_sorted=(pl.col("bid_px").list.diff().list.slice(1).list.max() < 0),
        ask_sorted=(pl.col("ask_px").list.diff().list.slice(1).list.min() > 0),
        uncrossed=(pl.col("bid_px").list.first() < pl.col("ask_px").list.first()),
        sizes=(pl.col("bid_sz").list.min() > 0) & (pl.col("ask_sz").list.min() > 0),
    )
    for column in checks.columns:
        assert checks[column].all(), column
    quotes = frame(list(batches), "quotes")
    assert (quotes["bid"] < quotes["ask"]).all()
    assert (quotes["bid_size"] > 0).all() and (quotes["ask_size"] > 0).all()


def test_books_look_like_the_calibration() -> None:
    books = tops(frame(run(make(event_rates=EventRates.none()), 50), "order_books"))
    btc = books.filter(pl.col("symbol") == "BTC/USDT")
    spread_bps = ((btc["ask"] - btc["bid"]) / btc["bid"] * 1e4).median()
    assert num(spread_bps) < 0.05  # 1-2 ticks, as in the fixtures
    span = btc.select((pl.col("ask_px").list.last() - pl.col("bid_px").list.last()) / pl.col("bid") * 1e4)
    assert 1.0 < num(span.to_series().median()) < 20.0  # 20 levels a side span a few bps
    # sizes grow with distance from the top
    sizes = btc.select(
        near=pl.col("bid_sz").list.head(5).list.mean(), far=pl.col("bid_sz").list.tail(5).list.mean()
    )
    assert num(sizes["far"].median()) > num(sizes["near"].median())


def test_cross_exchange_crosses_only_during_events() -> None:
    batches, events = two_minutes()
    books = tops(frame(list(batches), "order_books"))
    by_tick = books.group_by("nonce", "symbol").agg(
        pl.col("bid").max(), pl.col("ask").min(), pl.col("ts_ms").min(), pl.len()
    )
    crossed = by_tick.filter((pl.col("bid") / pl.col("ask") - 1) * 1e4 > 10)
    assert crossed.height > 0
    dislocations = [e for e in events if e.kind in ("arbitrage", "collision")]
    for symbol, ts_ms in crossed.select("symbol", "ts_ms").iter_rows():
        assert any(e.symbol == symbol and e.overlaps(ts_ms - 200, ts_ms + 200) for e in dislocations), (
            symbol,
            ts_ms,
        )


# --- injected events ----------------------------------------------------------------


def _clean(
    event: SimEvent,
    events: tuple[SimEvent, ...],
    kinds: tuple[str, ...] = ("arbitrage", "collision", "stale"),
) -> bool:
    """Inside the two minutes of data, and no other event of ``kinds`` on the same symbol at the same time."""
    if event.start_ms < START or event.end_ms > START + 119_000:
        return False
    return not any(
        o is not event and o.kind in kinds and o.symbol == event.symbol
        for o in events
        if o.overlaps(event.start_ms - 1_000, event.end_ms + 1_000)
    )


def test_defaults_inject_every_kind_of_event() -> None:
    src = make(start_ms=START + 123_456)
    run(src, 600)  # 60 s of demo
    kinds = [e.kind for e in src.events if e.overlaps(START + 123_456, START + 183_456)]
    assert kinds.count("arbitrage") >= 3
    assert kinds.count("stale") >= 1 and kinds.count("collision") >= 1
    assert src.events == src.events_between(START + 123_400, START + 183_400)


def test_arbitrage_windows_are_visible_at_their_times() -> None:
    batches, events = two_minutes()
    books = tops(frame(list(batches), "order_books"))
    arbs = [e for e in events if e.kind == "arbitrage" and _clean(e, events)]
    assert len(arbs) >= 4
    depths = set()
    for ev in arbs:
        buy, sell = ev.exchanges
        inside = books.filter(
            (pl.col("symbol") == ev.symbol) & pl.col("ts_ms").is_between(ev.start_ms + 50, ev.end_ms - 50)
        )
        pivot = inside.filter(pl.col("exchange") == sell).join(
            inside.filter(pl.col("exchange") == buy), on="nonce", suffix="_buy"
        )
        pivot = pivot.filter(
            pl.col("ts_ms").is_between(ev.start_ms, ev.end_ms - 1)
            & pl.col("ts_ms_buy").is_between(ev.start_ms, ev.end_ms - 1)
        )
        assert pivot.height > 0, ev
        gross = (pivot["bid"] / pivot["ask_buy"] - 1) * 1e4
        assert (gross > 0).all(), ev
        assert num(gross.median()) == pytest.approx(ev.size_bps, abs=6.0), ev
        # the crossed depth is the one announced
        assert ev.depth_usd is not None
        row = pivot.row(0, named=True)
        if ev.shifted == sell:
            levels = zip(row["bid_px"], row["bid_sz"], strict=True)
            crossed = sum(p * s for p, s in levels if p > row["ask_buy"] * (1 + 10e-4))
        else:
            levels = zip(row["ask_px_buy"], row["ask_sz_buy"], strict=True)
            crossed = sum(p * s for p, s in levels if p < row["bid"] * (1 - 10e-4))
        assert crossed == pytest.approx(ev.depth_usd, rel=0.01), ev
        depths.add(ev.depth_usd)
    assert len(depths) >= 2


def test_stale_feeds_stop_or_lag() -> None:
    batches, events = two_minutes()
    quotes = frame(list(batches), "quotes").with_columns(
        ms_ts=pl.col("ts").dt.epoch("ms"), ms_recv=pl.col("recv_ts").dt.epoch("ms")
    )
    books = tops(frame(list(batches), "order_books"))
    stale = [e for e in events if e.kind == "stale" and START + 5_000 <= e.start_ms <= START + 110_000]
    assert stale
    for ev in stale:
        (ex,) = ev.exchanges
        key = (pl.col("exchange") == ex) & (pl.col("symbol") == ev.symbol)
        window = pl.col("ms_recv").is_between(ev.start_ms + 1_000, ev.end_ms - 1_000)
        rows = quotes.filter(key & window)
        normal = quotes.filter(key & pl.col("ms_recv").is_between(ev.start_ms - 5_000, ev.start_ms - 1))
        expected = normal.height * (ev.end_ms - ev.start_ms - 2_000) / 5_000
        assert rows.height <= 0.5 * expected + 5  # most updates are missing
        assert (rows["ms_ts"] == ev.start_ms).all()  # frozen exchange time
        assert ((rows["ms_recv"] - rows["ms_ts"]) >= 1_000).all()
        assert rows["bid"].n_unique() <= 1 and rows["ask"].n_unique() <= 1  # the same quote repeated
        assert books.filter(key & pl.col("ts_ms").is_between(ev.start_ms, ev.end_ms - 1)).height == 0


def test_ticker_collisions_quote_an_absurd_price() -> None:
    batches, events = two_minutes()
    quotes = frame(list(batches), "quotes").with_columns(
        mid=(pl.col("bid") + pl.col("ask")) / 2, ms_ts=pl.col("ts").dt.epoch("ms")
    )
    # arbitrage shifts (<= 150 bps) do not hide a 3-50x price; other collisions and frozen quotes might
    collisions = [e for e in events if e.kind == "collision" and _clean(e, events, ("collision", "stale"))]
    assert collisions
    for ev in collisions:
        assert ev.factor is not None and (ev.factor >= 3 or ev.factor <= 1 / 3)
        (ex,) = ev.exchanges
        window = quotes.filter(
            (pl.col("symbol") == ev.symbol) & pl.col("ms_ts").is_between(ev.start_ms, ev.end_ms - 1)
        )
        odd = window.filter(pl.col("exchange") == ex)["mid"].median()
        fair = window.filter(pl.col("exchange") != ex)["mid"].median()
        assert num(odd) / num(fair) == pytest.approx(ev.factor, rel=0.03)


def test_funding_rates_intervals_and_dislocations() -> None:
    batches, events = two_minutes()
    funding = frame(list(batches), "funding_rates")
    assert set(funding["symbol"]) == {s for s in SYMBOLS if market_type(s) == "swap"}
    # rate_per_hour is funding_rate / interval_hours, and intervals differ between exchanges
    assert (funding["rate_per_hour"] == funding["funding_rate"] / funding["interval_hours"]).all()
    intervals = funding.group_by("exchange", "symbol").agg(pl.col("interval_hours").unique())
    for ex, symbol, values in intervals.iter_rows():
        assert values == [funding_interval_hours(ex, symbol)]
    sol = {ex: funding_interval_hours(ex, "SOL/USDT:USDT") for ex in EXCHANGES}
    assert sol == {"binance": 8.0, "bybit": 1.0, "okx": 4.0}
    assert funding_interval_hours("hyperliquid", "BTC/USDT:USDT") == 1.0
    # next funding is the next boundary of the interval, after ts
    ts, nxt = ms(funding, "ts"), ms(funding, "next_funding_ts")
    period = (funding["interval_hours"] * 3_600_000).cast(pl.Int64)
    assert ((nxt % period) == 0).all() and (nxt > ts).all() and ((nxt - ts) <= period).all()
    assert (ms(funding, "funding_ts") == nxt).all()
    assert ((funding["ts"].dt.epoch("ms") % 5_000) == 0).all()
    # normalised to 8 h, rates sit around 1 bp outside dislocations
    per_8h = funding.with_columns(r8=pl.col("rate_per_hour") * 8, ms_ts=pl.col("ts").dt.epoch("ms"))
    jump = pl.lit(0.0)
    for ev in (e for e in events if e.kind == "funding"):
        hit = (
            (pl.col("exchange") == ev.exchanges[0])
            & (pl.col("symbol") == ev.symbol)
            & pl.col("ms_ts").is_between(ev.start_ms, ev.end_ms - 1)
        )
        jump = jump + pl.when(hit).then(ev.size_bps * 1e-4).otherwise(0.0)
    per_8h = per_8h.with_columns(jump=jump)
    calm = per_8h.filter(pl.col("jump") == 0)
    assert num(calm["r8"].abs().max()) < 0.0006
    assert 0.00003 < num(calm["r8"].median()) < 0.0002
    assert num((calm["mark_price"] / calm["index_price"] - 1).abs().max()) < 0.002
    # a dislocation opens a funding spread of its size against the undisturbed exchanges
    moved = per_8h.with_columns(
        calm_r8=pl.col("r8").filter(pl.col("jump") == 0).mean().over("symbol", "ms_ts")
    ).filter((pl.col("jump") != 0) & pl.col("calm_r8").is_not_null())
    assert moved.height > 0
    error = (moved["r8"] - moved["calm_r8"] - moved["jump"]).abs()
    assert num(error.max()) < 4e-4


# --- odds and ends ------------------------------------------------------------------


def test_unknown_symbols_and_market_types() -> None:
    assert market_type("BTC/USDT") == "spot"
    assert market_type("BTC/USDT:USDT") == "swap"
    assert market_type("BTC/USDT:USDT-250328") == "future"
    price = base_price("ZZZ/USDT")
    assert price == base_price("ZZZ/USDT") and 0.01 <= price < 1000
    src = SimMarketSource(["binance", "kraken"], ["ZZZ/USDT", "ZZZ/USDT:USDT"], realtime=False)
    batch = run(src, 60)[-1]
    quotes = pl.from_arrow(batch.get("quotes"))
    assert isinstance(quotes, pl.DataFrame) and quotes.height > 0
    mid = num(((quotes["bid"] + quotes["ask"]) / 2).median())
    assert mid == pytest.approx(price, rel=0.2)


def test_step_is_vectorised_50k_quotes_per_second() -> None:
    src = make(rate=50_000 / len(EXCHANGES), tick_s=1.0)
    src.step()  # warm-up
    start = time.perf_counter()
    batch = src.step()
    elapsed = time.perf_counter() - start
    assert batch.get("quotes").num_rows >= 45_000
    assert elapsed < 0.5, f"{elapsed:.3f} s for one simulated second at 50k quotes/s"


async def test_batches_run_on_a_simulated_clock_until_closed() -> None:
    src = make()
    clocks = []
    async for batch in src.batches():
        clocks.append(batch.clock_ms)
        if len(clocks) == 5:
            await src.close()
    assert clocks == [START + 100 * i for i in range(1, 6)]


async def test_realtime_batches_follow_the_wall_clock() -> None:
    src = SimMarketSource(EXCHANGES, SYMBOLS, tick_s=0.02, rate=500.0)
    started = time.time() * 1000
    batches = []
    async for batch in src.batches():
        batches.append(batch)
        if len(batches) == 4:
            break
    await src.close()
    finished = time.time() * 1000
    assert finished - started >= 40  # paced, not as fast as possible
    for batch in batches:
        assert started - 100 <= batch.clock_ms <= finished + 5
        recv = ms(pl.DataFrame(pl.from_arrow(batch.get("quotes"))), "recv_ts")
        assert num(recv.max()) <= batch.clock_ms
    await asyncio.sleep(0)
