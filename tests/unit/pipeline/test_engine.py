"""The opportunity engine as plain code: replay in, candidates per pair and audit rows out."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from core.candidates import Candidate
from core.fees import FeeSchedule
from core.models import NetworkStatus, TransferMap, TransferStatus
from core.settings import OpportunitySettings
from pipeline.engine import OpportunityEngine, Tick, pair_of
from pipeline.sources.replay import ReplayMarketSource
from tests.support.scenarios import known_opportunities


def _replay(path: Path, settings: OpportunitySettings, persistence: pl.DataFrame | None = None) -> list[Tick]:
    engine = OpportunityEngine(
        settings,
        FeeSchedule.build({}),
        persistence_loader=(lambda: persistence) if persistence is not None else None,
    )
    engine.refresh_persistence(0.0)
    ticks: list[Tick] = []

    async def run() -> None:
        async for batch in ReplayMarketSource(path).batches():
            engine.ingest(batch)
            if engine.due():
                ticks.append(engine.tick())

    asyncio.run(run())
    return ticks


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return known_opportunities().write(tmp_path_factory.mktemp("scenario") / "known.ndjson")


def _pushable(ticks: list[Tick]) -> dict[tuple[str, str, str, str], Candidate]:
    out: dict[tuple[str, str, str, str], Candidate] = {}
    for tick in ticks:
        for pair, cands in tick.candidates.items():
            for c in cands:
                assert pair == pair_of(c.buy_exchange, c.sell_exchange)
                if c.pushable:
                    out.setdefault(c.key, c)
    return out


def test_pair_of_sorts_and_handles_single_exchange_signals() -> None:
    assert pair_of("okx", "binance") == ("binance", "okx")
    assert pair_of("bybit", None) == ("bybit", "bybit")
    assert pair_of(None, "okx") == ("okx", "okx")


def test_known_opportunities_are_the_only_pushable_ones_and_every_outcome_is_audited(
    scenario_file: Path,
) -> None:
    sc = known_opportunities()
    ticks = _replay(scenario_file, OpportunitySettings(technical=False))
    pushable = _pushable(ticks)
    assert set(pushable) == sc.known_keys
    for key, expected in sc.engine_expected().items():
        assert pushable[key].net_bps == pytest.approx(expected["net_bps"], abs=0.01)
        assert pushable[key].confidence >= 0.7
    audit = pl.concat([pl.from_arrow(t.validations) for t in ticks if t.validations is not None])
    assert isinstance(audit, pl.DataFrame)
    reasons = set(audit.filter(pl.col("outcome") == "fail").get_column("reason").to_list())
    assert {"crossed_book", "one_sided_book", "empty_book", "stale"} <= {
        r for reason in reasons for r in reason.split(",")
    }
    assert audit.filter(pl.col("stage") == "score").height > 0


def test_detection_runs_at_most_once_per_interval_of_the_replay_clock(scenario_file: Path) -> None:
    ticks = _replay(scenario_file, OpportunitySettings(technical=False, detect_interval_ms=1_000))
    gaps = [b.now_ms - a.now_ms for a, b in itertools.pairwise(ticks)]
    assert ticks and min(gaps) >= 1_000
    assert 15 <= len(ticks) <= 21  # 20 s of replay time


def test_poor_history_lowers_confidence_below_the_push_threshold(scenario_file: Path) -> None:
    """Level 2: where spreads of this size on this pair never lived, the score drops."""
    never = pl.DataFrame(
        {
            "kind": ["spot_spread"] * 6,
            "buy_exchange": ["binance"] * 6,
            "sell_exchange": ["okx"] * 6,
            "bucket": list(range(6)),
            "bucket_lo": [None, 5.0, 10.0, 20.0, 50.0, 100.0],
            "bucket_hi": [5.0, 10.0, 20.0, 50.0, 100.0, None],
            "n": [1000] * 6,
            "n_persistent": [0] * 6,
            "persistence": [1 / 1002] * 6,
        }
    )
    ticks = _replay(scenario_file, OpportunitySettings(technical=False), persistence=never)
    pushable = _pushable(ticks)
    assert ("spot_spread", "BTC/USDT", "binance", "okx") not in pushable
    assert ("spot_spread", "ETH/USDT", "bybit", "binance") in pushable  # other pair unaffected


def test_technical_signals_are_routed_to_their_own_exchange() -> None:
    """A steady fall then a volume-confirmed jump on one series gives a technical candidate."""
    engine = OpportunityEngine(OpportunitySettings(technical_timeframes=["1m"]), FeeSchedule.build({}))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    closes = [100.0 - 0.4 * i for i in range(60)]
    rows = {
        "exchange": ["okx"] * 60,
        "symbol": ["BTC/USDT"] * 60,
        "bar_ts": [t0.replace(minute=i % 60, hour=i // 60) for i in range(60)],
        "open": closes,
        "high": [c + 0.05 for c in closes],
        "low": [c - 0.05 for c in closes],
        "close": closes,
        "updates": [10] * 59 + [200],
    }
    engine._bar_parts.append(pl.DataFrame(rows).with_columns(pl.col("bar_ts").dt.cast_time_unit("ms")))
    now_ms = int(t0.timestamp() * 1000) + 60 * 60_000
    engine.clock_ms = now_ms
    assert engine.technical_due()
    tick = engine.technical_tick()
    cands = [c for cs in tick.candidates.values() for c in cs]
    assert cands, "an RSI extreme on a volume spike must be detected"
    assert set(tick.candidates) == {("okx", "okx")}
    assert {c.kind for c in cands} == {"technical"}
    assert any(c.details.get("signal") == "rsi_oversold" for c in cands)
    assert not engine.technical_due()  # once per closed bar


def _known_btc(scenario_file: Path, transfer: TransferMap | None) -> list[Candidate]:
    """KNOWN 1 (BTC/USDT, buy binance, sell okx) with this transfer map: its candidates."""
    engine = OpportunityEngine(OpportunitySettings(technical=False), FeeSchedule.build({}))
    if transfer is not None:
        engine.transfer = {ex: dict(assets) for ex, assets in transfer.items()}
    found: list[Candidate] = []

    async def run() -> None:
        async for batch in ReplayMarketSource(scenario_file).batches():
            engine.ingest(batch)
            if engine.due():
                for cands in engine.tick().candidates.values():
                    found.extend(
                        c
                        for c in cands
                        if c.symbol == "BTC/USDT" and (c.buy_exchange, c.sell_exchange) == ("binance", "okx")
                    )

    asyncio.run(run())
    assert found
    return found


def _btc(withdraw: bool | None = True, deposit: bool | None = True, fee: float = 0.0002) -> TransferStatus:
    return TransferStatus(networks=(NetworkStatus("BTC", deposit, withdraw, fee),))


def test_closed_deposits_on_the_sell_venue_make_a_spread_not_transferable(scenario_file: Path) -> None:
    """okx takes no BTC deposits on the only network binance withdraws on: KNOWN 1 is no trade."""
    found = _known_btc(scenario_file, {"binance": {"BTC": _btc()}, "okx": {"BTC": _btc(deposit=False)}})
    assert all("not_transferable" in c.flags and not c.pushable and c.confidence == 0 for c in found)


def test_the_withdrawal_fee_of_the_cheapest_common_network_is_subtracted(scenario_file: Path) -> None:
    plain = _known_btc(scenario_file, None)
    binance = TransferStatus(
        networks=(NetworkStatus("BTC", True, True, 0.0002), NetworkStatus("BSC", True, True, 0.00001))
    )
    okx = TransferStatus(
        networks=(NetworkStatus("BTC", True, True, 0.0001), NetworkStatus("BSC", False, True, 0.0))
    )
    costed = _known_btc(scenario_file, {"binance": {"BTC": binance}, "okx": {"BTC": okx}})
    assert len(costed) == len(plain)
    matched = 0
    for after, before in zip(costed, plain, strict=True):
        assert after.details["transfer_network"] == "BTC"  # BSC is cheaper, but okx takes no deposits there
        fee_bps = 0.0002 / after.details["executable_base"] * 10_000
        assert after.details["transfer_bps"] == pytest.approx(fee_bps)
        if after.notional_usd == before.notional_usd:  # (the fee can make another notional the best)
            assert after.net_bps == pytest.approx(before.net_bps - fee_bps)
            matched += 1
        assert "transfer_unknown" not in after.flags
    assert matched and any(c.pushable for c in costed)  # a 60 bps edge survives a small fee


def test_a_withdrawal_fee_larger_than_the_edge_is_never_pushable(scenario_file: Path) -> None:
    found = _known_btc(scenario_file, {"binance": {"BTC": _btc(fee=5.0)}, "okx": {"BTC": _btc()}})
    assert all(not c.pushable and "below_threshold" in c.flags and c.net_bps < 0 for c in found)


def test_an_unknown_transfer_status_is_flagged_and_lowers_confidence(scenario_file: Path) -> None:
    plain = _known_btc(scenario_file, None)
    unknown = _known_btc(scenario_file, {"binance": {}, "okx": {"BTC": _btc()}})  # binance says nothing
    assert all("transfer_unknown" in c.flags for c in unknown)
    scored = [(u, p) for u, p in zip(unknown, plain, strict=True) if p.confidence > 0]
    assert scored and all(u.confidence < p.confidence for u, p in scored)


def test_persistence_refresh_runs_off_the_tick(scenario_file: Path) -> None:
    """With an executor the lake read runs on its own thread: the tick never waits for it,
    and the table it built is taken by a later refresh."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release, started = threading.Event(), threading.Event()
    table = pl.DataFrame({"kind": ["spot_spread"]})

    def slow_loader() -> pl.DataFrame:
        started.set()
        release.wait(30)
        return table

    with ThreadPoolExecutor(1) as pool:
        engine = OpportunityEngine(
            OpportunitySettings(),
            FeeSchedule.build({}),
            persistence_loader=slow_loader,
            persistence_executor=pool,
        )
        t0 = time.perf_counter()
        engine.refresh_persistence(1_000.0)
        assert started.wait(5)
        engine.tick(0)
        engine.refresh_persistence(1_001.0)
        assert time.perf_counter() - t0 < 2.0  # the loader is still blocked: nobody waited
        assert engine.persistence.height == 0
        release.set()
        deadline = time.monotonic() + 10
        while engine.persistence.height == 0 and time.monotonic() < deadline:
            engine.refresh_persistence(1_002.0)
            time.sleep(0.01)
        assert engine.persistence is table
