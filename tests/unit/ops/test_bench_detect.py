"""bench/detect.py's honest baseline: the float/NumPy per-pair loop finds exactly the
vectorised detector's candidates, with the same edges."""

from __future__ import annotations

from bench.detect import _same_edges, build_float_books, evaluate_all_float, make_books
from core.fees import FeeSchedule
from pipeline.detect import DEFAULT_NOTIONALS, detect_spreads

NOW_MS = 1_767_225_600_000


def test_the_float_loop_is_the_vectorised_detector() -> None:
    table = make_books(40, 4, 20, NOW_MS)
    fees = FeeSchedule.build()
    result = detect_spreads(table, fees, now_ms=NOW_MS)
    symbols = set(table.column("symbol").to_pylist())
    found = evaluate_all_float(build_float_books(table, symbols, fees), DEFAULT_NOTIONALS, NOW_MS)
    assert result.height > 10 and len(found) == result.height
    assert _same_edges(result, found)


def test_a_wrong_edge_is_caught() -> None:
    table = make_books(10, 3, 20, NOW_MS)
    fees = FeeSchedule.build()
    result = detect_spreads(table, fees, now_ms=NOW_MS)
    found = evaluate_all_float(
        build_float_books(table, set(table.column("symbol").to_pylist()), fees), DEFAULT_NOTIONALS, NOW_MS
    )
    assert found
    symbol, buy, sell, notional, gross, net = found[0]
    assert not _same_edges(result, [(symbol, buy, sell, notional, gross + 0.01, net), *found[1:]])
