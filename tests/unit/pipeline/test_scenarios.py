"""The reference replay scenario (tests/support/scenarios.py) against the pure detector.

Offline and fast: the NDJSON file is replayed with ``ReplayMarketSource``, the latest
book and funding rate per (exchange, symbol) are kept across batches, and every batch
runs ``detect_spreads`` / ``detect_funding`` / ``book_rejections`` at the replay clock.
The known opportunities must come out with their hand-computed bps, and nothing
pushable from the decoys. A last test runs the lifecycle on the same ticks, which is
what the end-to-end test (tests/integration/test_replay_opportunities.py) reads back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from core.candidates import candidates_from_frame
from core.fees import FeeSchedule
from core.lifecycle import EventType, OpportunityTracker
from pipeline.detect import book_rejections, detect_spreads
from pipeline.detect_funding import detect_funding
from pipeline.sources.replay import ReplayMarketSource
from tests.support.scenarios import Scenario, known_opportunities

BPS_TOL = 0.01
FEES = FeeSchedule.build()


@dataclass
class Tick:
    t: float
    now_ms: int
    spreads: pl.DataFrame
    funding: pl.DataFrame
    rejections: pl.DataFrame


def _upsert(held: pl.DataFrame, table: Any) -> pl.DataFrame:
    new = pl.from_arrow(table)
    assert isinstance(new, pl.DataFrame)
    if held.height == 0:
        return new
    return pl.concat([held, new], how="vertical_relaxed").unique(
        subset=["exchange", "symbol"], keep="last", maintain_order=True
    )


async def _replay(path: Path, sc: Scenario) -> tuple[list[Tick], dict[str, int]]:
    source = ReplayMarketSource(path)
    books = pl.DataFrame()
    funding = pl.DataFrame()
    ticks: list[Tick] = []
    async for batch in source.batches():
        if batch.tables.get("order_books") is not None:
            books = _upsert(books, batch.tables["order_books"])
        if batch.tables.get("funding_rates") is not None:
            funding = _upsert(funding, batch.tables["funding_rates"])
        now = batch.clock_ms
        ticks.append(
            Tick(
                t=(now - sc.t0_ms) / 1000,
                now_ms=now,
                spreads=detect_spreads(books, FEES, now_ms=now),
                funding=detect_funding(funding, FEES, now_ms=now) if funding.height else pl.DataFrame(),
                rejections=book_rejections(books, now),
            )
        )
    return ticks, source.stats


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return known_opportunities()


@pytest.fixture(scope="module")
def replay_file(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario.write(tmp_path_factory.mktemp("scenario") / "known.ndjson")


@pytest.fixture(scope="module")
def replayed(replay_file: Path, scenario: Scenario) -> tuple[list[Tick], dict[str, int]]:
    return asyncio.run(_replay(replay_file, scenario))


@pytest.fixture(scope="module")
def ticks(replayed: tuple[list[Tick], dict[str, int]]) -> list[Tick]:
    return replayed[0]


def _rows(frame: pl.DataFrame, key: tuple[str, str, str, str], **where: Any) -> list[dict[str, Any]]:
    if frame.height == 0:
        return []
    kind, symbol, buy, sell = key
    out = frame.filter(
        (pl.col("kind") == kind)
        & (pl.col("symbol") == symbol)
        & (pl.col("buy_exchange") == buy)
        & (pl.col("sell_exchange") == sell)
    )
    for name, value in where.items():
        out = out.filter(pl.col(name) == value)
    return out.to_dicts()


def _all(ticks: list[Tick]) -> pl.DataFrame:
    parts = [tk.spreads.with_columns(t=pl.lit(tk.t)) for tk in ticks if tk.spreads.height]
    parts += [tk.funding.with_columns(t=pl.lit(tk.t)) for tk in ticks if tk.funding.height]
    return pl.concat(parts, how="diagonal_relaxed")


def _live(frame: pl.DataFrame) -> pl.DataFrame:
    """What the lifecycle would track: net > 0 and not below threshold."""
    return frame.filter((pl.col("net_bps") > 0) & ~pl.col("flags").str.contains("below_threshold"))


def _key_set(frame: pl.DataFrame) -> set[tuple[str, str, str, str]]:
    return set(frame.select("kind", "symbol", "buy_exchange", "sell_exchange").unique().iter_rows())


# --------------------------------------------------------------------------- the file


def test_the_scenario_file_is_contract_ndjson(
    replay_file: Path, scenario: Scenario, replayed: tuple[list[Tick], dict[str, int]]
) -> None:
    lines = replay_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(scenario.records) > 1_000
    assert all(set(r) == {"ts", "exchange", "kind", "data"} for r in records)
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    assert {r["kind"] for r in records} == {"order_book", "ticker", "funding_rate"}
    assert {r["exchange"] for r in records} == {"binance", "bybit", "okx"}
    span_s = (records[-1]["ts"] - records[0]["ts"]) / 1000
    assert 19.0 <= span_s <= 21.0
    for r in records:
        data = r["data"]
        if r["kind"] == "order_book":
            assert set(data) == {"symbol", "bids", "asks", "timestamp", "datetime", "nonce"}
            assert data["timestamp"] == r["ts"]
        elif r["kind"] == "ticker":
            assert {"bid", "ask", "bidVolume", "askVolume", "last", "baseVolume", "quoteVolume"} <= set(data)
        else:
            assert data["interval"] in ("8h", "4h", "1h")
            assert {"fundingRate", "fundingTimestamp", "nextFundingTimestamp", "markPrice"} <= set(data)
    # books every 200 ms per (exchange, symbol)
    btc = [r["ts"] for r in records if r["kind"] == "order_book" and r["exchange"] == "binance"
           and r["data"]["symbol"] == "BTC/USDT"]  # fmt: skip
    assert len(btc) == 100 and {b - a for a, b in itertools.pairwise(btc)} == {200}
    stats = replayed[1]
    assert stats["malformed"] == 0 and stats["records"] == len(records)
    assert stats["batches"] == 100  # one batch per 200 ms snapshot


# --------------------------------------------------------------------------- known opportunities


@pytest.mark.parametrize("idx", range(4), ids=["btc-1k", "btc-10k", "eth-1k", "eth-10k"])
def test_known_spot_spreads_have_the_hand_computed_bps(
    ticks: list[Tick], scenario: Scenario, idx: int
) -> None:
    exp = [e for e in scenario.expected if e["kind"] == "spot_spread"][idx]
    key = (exp["kind"], exp["symbol"], exp["buy_exchange"], exp["sell_exchange"])
    start, stop = exp["window_s"]
    inside = [tk for tk in ticks if start <= tk.t < stop]
    assert len(inside) == round((stop - start) * 5)
    for tk in inside:
        rows = _rows(tk.spreads, key, notional_usd=exp["notional_usd"])
        assert len(rows) == 1, (tk.t, rows)
        row = rows[0]
        assert row["gross_bps"] == pytest.approx(exp["gross_bps"], abs=BPS_TOL)
        assert row["net_bps"] == pytest.approx(exp["net_bps"], abs=BPS_TOL)
        assert row["buy_vwap"] == pytest.approx(exp["buy_vwap"], rel=1e-9)
        assert row["sell_vwap"] == pytest.approx(exp["sell_vwap"], rel=1e-9)
        assert row["executable_base"] == pytest.approx(exp["executable_base"], rel=1e-9)
        assert row["executable_usd"] == pytest.approx(exp["executable_usd"], rel=1e-9)
        assert row["flags"] == exp["flags"]
        assert row["pushable"] is exp["pushable"]
    # outside its window the key is not an opportunity
    outside = [tk for tk in ticks if not start <= tk.t < stop]
    for tk in outside:
        assert _rows(_live(tk.spreads), key) == [], tk.t


def test_known_2_fills_at_1k_but_not_at_10k(ticks: list[Tick], scenario: Scenario) -> None:
    key = ("spot_spread", "ETH/USDT", "bybit", "binance")
    tk = next(tk for tk in ticks if tk.t == 8.0)
    small, big = (
        _rows(tk.spreads, key, notional_usd=1_000.0)[0],
        _rows(tk.spreads, key, notional_usd=10_000.0)[0],
    )
    assert small["pushable"] and small["flags"] == ""
    assert not big["pushable"] and big["flags"] == "insufficient_depth"
    assert big["executable_usd"] == pytest.approx(4_501.0)
    assert big["buy_depth_usd"] == pytest.approx(4_501.0)


def test_known_funding_carry_has_the_hand_computed_rates(ticks: list[Tick], scenario: Scenario) -> None:
    exp = next(e for e in scenario.expected if e["kind"] == "funding_rate")
    key = (exp["kind"], exp["symbol"], exp["buy_exchange"], exp["sell_exchange"])
    for tk in ticks:
        rows = _rows(tk.funding, key)
        assert len(rows) == 1, tk.t
        row = rows[0]
        assert row["long_interval_hours"] == 8.0 and row["short_interval_hours"] == 4.0
        assert row["long_rate_per_hour"] == pytest.approx(exp["long_rate_per_hour"], rel=1e-12)
        assert row["short_rate_per_hour"] == pytest.approx(exp["short_rate_per_hour"], rel=1e-12)
        assert row["spread_per_hour"] == pytest.approx(exp["spread_per_hour"], rel=1e-12)
        assert row["entry_basis"] == pytest.approx(exp["entry_basis"], rel=1e-9)
        assert row["roundtrip_cost"] == pytest.approx(exp["roundtrip_cost"], rel=1e-9)
        assert row["gross_bps"] == pytest.approx(exp["gross_bps"], abs=BPS_TOL)
        assert row["net_bps"] == pytest.approx(exp["net_bps"], abs=BPS_TOL)
        assert row["gross_apr"] == pytest.approx(exp["gross_apr"], rel=1e-9)
        assert row["net_apr"] == pytest.approx(exp["net_apr"], rel=1e-9)
        assert row["breakeven_hours"] == pytest.approx(exp["breakeven_hours"], rel=1e-9)
        assert row["flags"] == "" and row["pushable"] is True


def test_only_the_known_opportunities_are_pushable(ticks: list[Tick], scenario: Scenario) -> None:
    everything = _all(ticks)
    assert _key_set(everything.filter(pl.col("pushable"))) == scenario.known_keys
    # tracked (live) at all: the known ones, plus the collision decoy (never pushable)
    assert _key_set(_live(everything)) == scenario.known_keys | scenario.tracked_decoy_keys


# --------------------------------------------------------------------------- decoys


def test_decoys_never_give_a_pushable_row(ticks: list[Tick], scenario: Scenario) -> None:
    everything = _all(ticks)
    decoy_symbols = {d["symbol"] for d in scenario.decoys}
    from_decoys = everything.filter(pl.col("symbol").is_in(sorted(decoy_symbols)))
    assert from_decoys.height > 0
    assert not from_decoys.get_column("pushable").any()


def test_spread_below_fees_is_below_threshold(ticks: list[Tick], scenario: Scenario) -> None:
    decoy = next(d for d in scenario.decoys if d["name"] == "below_fees")
    assert decoy["gross_bps"] == pytest.approx(10.0) and decoy["net_bps"] == pytest.approx(-10.0)
    start, stop = decoy["window_s"]
    for tk in ticks:
        rows = _rows(tk.spreads, decoy["key"])
        if start <= tk.t < stop:
            assert len(rows) == 2  # both notionals fill: it is the fees that kill it
            for row in rows:
                assert row["gross_bps"] == pytest.approx(decoy["gross_bps"], abs=BPS_TOL)
                assert row["net_bps"] == pytest.approx(decoy["net_bps"], abs=BPS_TOL)
                assert row["flags"] == "below_threshold" and not row["pushable"]
        else:
            assert all(not r["pushable"] for r in rows)


def test_stale_leg_is_rejected_and_never_used(ticks: list[Tick], scenario: Scenario) -> None:
    decoy = next(d for d in scenario.decoys if d["name"] == "stale_leg")
    for tk in ticks:
        stale = tk.rejections.filter(
            (pl.col("exchange") == "okx") & (pl.col("symbol") == "SOL/USDT")
        ).to_dicts()
        if tk.t > decoy["stale_from_s"] + 1e-9:
            assert [r["reason"] for r in stale] == ["stale"], tk.t
            # no pair uses the frozen okx quote once it is older than 2 s
            sol = tk.spreads.filter(pl.col("symbol") == "SOL/USDT")
            assert "okx" not in set(sol.get_column("buy_exchange")) | set(sol.get_column("sell_exchange"))
        else:
            assert stale == [], tk.t
    # the others moved 1% above the frozen quote: had it been used, that was ~80 bps net
    everything = _all(ticks).filter(pl.col("symbol") == "SOL/USDT")
    assert _live(everything).height == 0


def test_ticker_collision_is_flagged_implausible(ticks: list[Tick], scenario: Scenario) -> None:
    xrp = _all(ticks).filter(pl.col("symbol") == "XRP/USDT")
    flagged = xrp.filter(pl.col("gross_bps") > 1_000.0)
    assert flagged.height > 0
    assert flagged.get_column("flags").str.contains("implausible_spread").all()
    assert not xrp.get_column("pushable").any()
    assert _key_set(flagged) == scenario.tracked_decoy_keys


@pytest.mark.parametrize(
    ("name", "exchange", "symbol", "reason"),
    [
        ("crossed_book", "okx", "ADA/USDT", "crossed_book"),
        ("one_sided_book", "bybit", "LINK/USDT", "one_sided_book"),
        ("empty_book", "okx", "LINK/USDT", "empty_book"),
    ],
)
def test_bad_books_are_rejected_with_their_reason(
    ticks: list[Tick], scenario: Scenario, name: str, exchange: str, symbol: str, reason: str
) -> None:
    decoy = next(d for d in scenario.decoys if d["name"] == name)
    start, stop = decoy["window_s"]
    for tk in ticks:
        got = tk.rejections.filter((pl.col("exchange") == exchange) & (pl.col("symbol") == symbol))
        if start <= tk.t < stop:
            assert got.get_column("reason").to_list() == [reason], tk.t
            used = tk.spreads.filter(
                (pl.col("symbol") == symbol)
                & ((pl.col("buy_exchange") == exchange) | (pl.col("sell_exchange") == exchange))
            )
            assert used.height == 0, tk.t
        else:
            assert got.height == 0, tk.t
    assert _live(_all(ticks).filter(pl.col("symbol") == symbol)).height == 0


def test_no_other_book_is_rejected(ticks: list[Tick]) -> None:
    keys = set()
    for tk in ticks:
        keys |= set(tk.rejections.select("exchange", "symbol", "reason").iter_rows())
    assert keys == {
        ("okx", "SOL/USDT", "stale"),
        ("okx", "ADA/USDT", "crossed_book"),
        ("bybit", "LINK/USDT", "one_sided_book"),
        ("okx", "LINK/USDT", "empty_book"),
    }


def test_funding_decoys(ticks: list[Tick]) -> None:
    for tk in ticks:
        eth = _rows(tk.funding, ("funding_rate", "ETH/USDT:USDT", "bybit", "okx"))
        assert len(eth) == 1 and eth[0]["flags"] == "below_threshold" and not eth[0]["pushable"]
        # 0.0004/8h vs 0.0002/4h: equal per hour, so no carry (assuming 8 h for both would invent one)
        assert tk.funding.filter(pl.col("symbol") == "SOL/USDT:USDT").height == 0


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_opens_exactly_the_known_ones_and_closes_known_1(
    ticks: list[Tick], scenario: Scenario
) -> None:
    """The same ticks through candidates_from_frame + OpportunityTracker (what the lake records)."""
    tracker = OpportunityTracker()
    events = []
    for tk in ticks:
        frames = [f for f in (tk.spreads, tk.funding) if f.height]
        now = datetime.fromtimestamp(tk.now_ms / 1000, UTC)
        detected = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        cands = candidates_from_frame(detected, detected_at=now) if detected.height else []
        events += tracker.observe(cands, now)
    opened = [e for e in events if e.event is EventType.OPENED]
    pushable_keys = {e.key for e in opened if e.candidate.pushable}
    assert pushable_keys == scenario.known_keys
    assert {e.key for e in opened} == scenario.known_keys | scenario.tracked_decoy_keys
    assert all(not e.candidate.pushable for e in opened if e.key in scenario.tracked_decoy_keys)
    best = scenario.engine_expected()
    for key, exp in best.items():
        (ev,) = [e for e in opened if e.key == key]
        assert ev.candidate.net_bps == pytest.approx(exp["net_bps"], abs=BPS_TOL)
        assert ev.candidate.gross_bps == pytest.approx(exp["gross_bps"], abs=BPS_TOL)
        if exp["notional_usd"] is not None:
            assert ev.candidate.notional_usd == exp["notional_usd"]
    assert best[("spot_spread", "BTC/USDT", "binance", "okx")]["notional_usd"] == 1_000.0
    assert best[("spot_spread", "ETH/USDT", "bybit", "binance")]["notional_usd"] == 1_000.0
    closed = {e.key: e for e in events if e.event is EventType.CLOSED}
    k1 = closed[("spot_spread", "BTC/USDT", "binance", "okx")]
    k2 = closed[("spot_spread", "ETH/USDT", "bybit", "binance")]
    assert k1.lifetime_s == pytest.approx(8.0)
    assert k2.lifetime_s == pytest.approx(10.0)
    assert ("funding_rate", "BTC/USDT:USDT", "bybit", "okx") not in closed
    # constant books: no material change, so no updated events for the known ones
    assert not [e for e in events if e.event is EventType.UPDATED and e.key in scenario.known_keys]
