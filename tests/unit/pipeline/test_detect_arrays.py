"""The arrays the spot detector gathers once per tick (pipeline.detect_arrays)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from bench.detect import make_books
from core.fees import FeeSchedule
from pipeline import detect_arrays as arr
from pipeline.detect import book_rejections, detect_spreads

NOW_MS = 1_767_225_600_000


def test_codes_follow_the_sort_order_of_the_names() -> None:
    codes, names = arr.codes(pl.Series(["okx", "binance", "okx", "bybit"]))
    assert names == ["binance", "bybit", "okx"]
    assert codes.tolist() == [2, 0, 2, 1]


def test_ragged_and_null_lists_become_padded_grids() -> None:
    column = pa.chunked_array([pa.array([[1.0, 2.0], None]), pa.array([[3.0], [4.0, 5.0, 6.0]])])
    grid, lens = arr.levels(column)
    assert lens.tolist() == [2, 0, 1, 3]
    assert grid.tolist() == [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [4.0, 5.0, 6.0]]
    assert arr.pad(grid, lens).tolist()[1] == [arr.PAD_PRICE] * 3


def test_timestamps_of_any_unit_in_ms() -> None:
    for unit, raw in (("s", 2), ("ms", 2_000), ("us", 2_000_123), ("ns", 2_000_123_456)):
        column = pa.array([raw], pa.timestamp(unit, "UTC"))
        assert arr.epoch_ms(column).tolist() == [2_000]


def test_pairs_within_groups_and_running_sum() -> None:
    left, right = arr.pairs_within(np.array([5, 1, 5, 5]))
    pairs = sorted(zip(left.tolist(), right.tolist(), strict=True))
    assert pairs == sorted([(1, 1)] + [(i, j) for i in (0, 2, 3) for j in (0, 2, 3)])
    grid = np.random.default_rng(1).random((7, 5))
    assert np.array_equal(arr.running_sum(grid), np.cumsum(grid, axis=0))


def test_every_input_form_gives_the_same_tick() -> None:
    table = make_books(120, 5, 20, NOW_MS)
    fees = FeeSchedule.build()
    expected = detect_spreads(table, fees, now_ms=NOW_MS)
    assert expected.height > arr.SMALL  # the string columns take the query path
    halves = pa.concat_tables([table.slice(0, 50), table.slice(50)])  # two chunks per column
    for books in (pl.from_arrow(table), halves, table.combine_chunks().to_batches()[0]):
        assert isinstance(books, pa.Table | pa.RecordBatch | pl.DataFrame)
        assert detect_spreads(books, fees, now_ms=NOW_MS).equals(expected)
    small = detect_spreads(table.slice(0, 10), fees, now_ms=NOW_MS)
    assert small.height and small.equals(expected.filter(pl.col("symbol").is_in(small["symbol"].unique())))


def test_book_rejections_empty_when_every_book_is_usable() -> None:
    table = make_books(5, 3, 5, NOW_MS)
    out = book_rejections(table, NOW_MS, freshness_s=60.0)
    assert out.height == 0 and out.columns == ["exchange", "symbol", "market_type", "reason"]
    stale = book_rejections(table, NOW_MS + 100_000)
    assert stale.height == 15 and set(stale["reason"]) == {"stale"}
