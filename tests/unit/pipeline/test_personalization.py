"""The engagement model: fitted on synthetic frames and on a real lake written through the sink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from actors.directory.affinity import Affinities
from core.eligibility import OpportunityView
from core.personalization import AFFINITY_CLIP, UserModel, opportunity_features
from core.settings import PersonalizationSettings
from pipeline.deliveries import deliveries_table
from pipeline.personalization import BLOCKS_SCHEMA, PAIRS_SCHEMA, Params, compute, fit, read_events, records
from tests.support.engagement import Push, clear_history, history_tables, write_lake

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ALICE, BOB, NEWCOMER = 101, 202, 303


def _pairs(pushes: list[Push]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "user_id": p.user,
                "opportunity_id": p.oid,
                "ts": p.at,
                "opened": p.opened,
                "muted": p.muted,
                "kind": p.kind,
                "symbol": p.symbol,
                "buy_exchange": p.buy,
                "sell_exchange": p.sell,
                "net_bps": p.net_bps,
            }
            for p in pushes
        ],
        schema=PAIRS_SCHEMA,
    )


NO_BLOCKS = pl.DataFrame(schema=BLOCKS_SCHEMA)


def _aff(model_affinities: pl.DataFrame, user: int) -> dict[str, float]:
    rows = model_affinities.filter(pl.col("user_id") == user).select("feature", "affinity").rows()
    return {f: a for f, a in rows}


def _view(kind: str, symbol: str, net: float, buy: str = "binance", sell: str = "okx") -> OpportunityView:
    return OpportunityView.from_event(
        {
            "opportunity_id": f"{kind}-{symbol}",
            "kind": kind,
            "symbol": symbol,
            "buy_exchange": buy,
            "sell_exchange": sell,
            "net_bps": net,
            "priority": "high",
            "confidence": 0.9,
            "detected_at": NOW.isoformat(),
        }
    )


def test_a_clear_history_gives_affinities_that_say_so() -> None:
    model = fit(_pairs(clear_history(ALICE, NOW)), NO_BLOCKS, NOW)
    a = _aff(model.affinities, ALICE)
    assert a["kind:funding_rate"] > 0.3 and a["symbol:SOL/USDT:USDT"] > 0.3
    assert a["kind:spot_spread"] < -0.5 and a["symbol:BTC/USDT"] < -0.5
    assert a["exchange:bybit"] < 0  # only on the never-opened spot pushes
    assert all(abs(v) <= AFFINITY_CLIP for v in a.values())
    base = model.users.filter(pl.col("user_id") == ALICE).get_column("base")[0]
    assert 0.3 < base < 0.7  # opened half of what was pushed (smoothed)
    # the prediction follows: funding on SOL far above spot on BTC
    m = UserModel.from_record(json.loads(records(model).get_column("record")[0]))
    funding = m.predict(opportunity_features("funding_rate", "SOL/USDT:USDT", ["binance", "okx"], 15.0))
    spot = m.predict(opportunity_features("spot_spread", "BTC/USDT", ["bybit", "okx"], 40.0))
    assert funding > 10 * spot


def test_decay_makes_old_history_count_less() -> None:
    recent = fit(_pairs(clear_history(ALICE, NOW, days_ago=1)), NO_BLOCKS, NOW, Params(half_life_days=7))
    old = fit(_pairs(clear_history(ALICE, NOW, days_ago=60)), NO_BLOCKS, NOW, Params(half_life_days=7))
    r, o = _aff(recent.affinities, ALICE), _aff(old.affinities, ALICE)
    for feature in ("kind:funding_rate", "kind:spot_spread", "symbol:BTC/USDT"):
        assert abs(o.get(feature, 0.0)) < abs(r[feature]) / 3
    # a recent contrary history outweighs an old one
    flipped = [
        Push(
            p.user, "new-" + p.oid, p.kind, p.symbol, NOW - timedelta(hours=1), p.net_bps, opened=not p.opened
        )
        for p in clear_history(ALICE, NOW, n=5)
    ]
    mixed = fit(
        _pairs(clear_history(ALICE, NOW, days_ago=60) + flipped), NO_BLOCKS, NOW, Params(half_life_days=7)
    )
    assert (
        _aff(mixed.affinities, ALICE)["kind:spot_spread"]
        > 0
        > _aff(mixed.affinities, ALICE)["kind:funding_rate"]
    )


def test_a_new_user_or_a_short_history_is_neutral() -> None:
    pushes = [*clear_history(ALICE, NOW), Push(BOB, "b1", "spot_spread", "BTC/USDT", NOW, opened=True)]
    model = fit(_pairs(pushes), NO_BLOCKS, NOW, Params(min_events=5))
    assert model.users.get_column("user_id").to_list() == [ALICE]  # Bob: 1 event < 5
    aff = Affinities.from_records(records(model).rows(), version=1)
    scores = aff.scores(np.array([ALICE, BOB, NEWCOMER]), _view("spot_spread", "BTC/USDT", 40.0))
    assert np.isfinite(scores[0]) and np.isnan(scores[1]) and np.isnan(scores[2])
    # a feature seen once stays near neutral (the prior)
    one = fit(
        _pairs([*clear_history(ALICE, NOW), Push(ALICE, "x", "technical", "DOGE/USDT", NOW)]), NO_BLOCKS, NOW
    )
    assert abs(_aff(one.affinities, ALICE)["symbol:DOGE/USDT"]) < 0.3


def test_mutes_and_blocks_count_against() -> None:
    muted = [
        Push(ALICE, f"m{i}", "spot_spread", "ETH/USDT", NOW - timedelta(hours=i), muted=True)
        for i in range(3)
    ]
    opened = [
        Push(ALICE, f"o{i}", "spot_spread", "XRP/USDT", NOW - timedelta(hours=i), opened=True)
        for i in range(3)
    ]
    blocks = pl.DataFrame(
        [{"user_id": ALICE, "ts": NOW - timedelta(days=1), "feature": "exchange:bybit"}], schema=BLOCKS_SCHEMA
    )
    a = _aff(fit(_pairs(muted + opened), blocks, NOW).affinities, ALICE)
    assert a["symbol:ETH/USDT"] < -1 < 0.3 < a["symbol:XRP/USDT"]
    assert a["exchange:bybit"] < -0.3


def test_scores_rank_by_engagement_times_edge_vectorised() -> None:
    model = fit(_pairs(clear_history(ALICE, NOW) + clear_history(BOB, NOW)), NO_BLOCKS, NOW)
    aff = Affinities.from_records(records(model).rows(), version=3)
    assert len(aff) == 2 and aff.version == 3
    ids = np.array([BOB, NEWCOMER, ALICE])
    funding = aff.scores(ids, _view("funding_rate", "SOL/USDT:USDT", 15.0))
    spot = aff.scores(ids, _view("spot_spread", "BTC/USDT", 40.0, buy="bybit"))
    assert funding[0] > spot[0] and funding[2] > spot[2]  # despite the smaller edge
    assert np.isnan(funding[1]) and np.isnan(spot[1])
    # the edge counts: the same prediction with twice the edge scores twice as much
    double = aff.scores(ids, _view("funding_rate", "SOL/USDT:USDT", 30.0))
    assert double[0] == pytest.approx(2 * funding[0], rel=0.5)  # (the edge bucket moves too)


def test_bad_records_are_left_out_not_fatal() -> None:
    good = '{"b": 0.4, "n": 9, "a": [{"f": "kind:spot_spread", "v": -1.0}]}'
    aff = Affinities.from_records(
        [(1, good), (2, "{not json"), (3, '{"b": -1}'), (4, '{"b": 0.2, "n": 5}')], 2
    )
    assert aff.ids.tolist() == [1, 4] and aff.skipped == 2
    assert aff.features["kind:spot_spread"][0].tolist() == [1]
    assert len(Affinities.from_records([], 0)) == 0


def test_read_events_from_a_real_lake(tmp_path: Path) -> None:
    carol = 404
    pushes = [
        *clear_history(ALICE, NOW),
        Push(BOB, "b-mute", "spot_spread", "ETH/USDT", NOW - timedelta(hours=2), muted=True),
        Push(BOB, "b-old", "spot_spread", "ETH/USDT", NOW - timedelta(days=200), opened=True),  # too old
        Push(BOB, "b-list", "technical", "ADA/USDT", NOW - timedelta(hours=3)),  # opened from /opportunities
        Push(carol, "c-before", "spot_spread", "BTC/USDT", NOW - timedelta(days=2), opened=True),
        Push(carol, "c-after", "spot_spread", "XRP/USDT", NOW - timedelta(hours=1)),
    ]
    audit = [
        (BOB, NOW - timedelta(days=3), "/settings", "block bybit"),
        (BOB, NOW - timedelta(days=2), "/settings", "block DOGE/USDT"),
        (BOB, NOW - timedelta(days=1), "/settings", "unblock DOGE/USDT"),  # the latest word wins
        (BOB, NOW - timedelta(hours=2), "cb:od", "id=b-list"),
        (carol, NOW - timedelta(days=2), "/settings", "block okx"),
        (carol, NOW - timedelta(days=1), "forget", "erased"),  # /forget: nothing before it counts
    ]
    lake = write_lake(tmp_path / "lake", history_tables(pushes, audit))
    pairs, blocked = read_events(lake, NOW, lookback_days=90)
    alice = pairs.filter(pl.col("user_id") == ALICE)
    assert alice.height == 20 and alice.get_column("opened").sum() == 10
    assert set(alice.filter("opened").get_column("kind")) == {"funding_rate"}
    assert set(alice.get_column("symbol")) == {"SOL/USDT:USDT", "BTC/USDT"}
    bob = pairs.filter(pl.col("user_id") == BOB).sort("opportunity_id").to_dicts()
    assert [(r["opportunity_id"], r["muted"], r["opened"], r["symbol"]) for r in bob] == [
        ("b-list", False, True, "ADA/USDT"),
        ("b-mute", True, False, "ETH/USDT"),
    ]
    assert pairs.filter(pl.col("user_id") == carol).get_column("opportunity_id").to_list() == ["c-after"]
    assert blocked.select("user_id", "feature").rows() == [(BOB, "exchange:bybit")]
    # the whole run over the lake: Alice gets a model; Bob (two pushes and a block), Carol too few
    model = compute(lake, NOW, PersonalizationSettings(min_events=4))  # Bob: 3 events
    assert model.users.get_column("user_id").to_list() == [ALICE]
    assert _aff(model.affinities, ALICE)["kind:funding_rate"] > 0.3


def test_an_empty_lake_gives_an_empty_model(tmp_path: Path) -> None:
    model = compute(write_lake(tmp_path / "lake", {}), NOW, PersonalizationSettings())
    assert model.size == 0 and model.affinities.height == 0 and records(model).height == 0


def test_a_webhook_post_is_not_a_push_shown(tmp_path: Path) -> None:
    pushes = [Push(BOB, "b-seen", "spot_spread", "ETH/USDT", NOW - timedelta(hours=2))]
    tables = history_tables(pushes)
    # the same user's outbound webhook got another opportunity that never reached Telegram
    posted = Push(BOB, "b-posted", "spot_spread", "BTC/USDT", NOW - timedelta(hours=1))
    extra = history_tables([posted])
    rows = [r | {"channel": "webhook"} for r in extra["deliveries"].to_pylist()]
    tables["deliveries"] = pa.concat_tables([tables["deliveries"], deliveries_table(rows)])
    tables["opportunities"] = pa.concat_tables([tables["opportunities"], extra["opportunities"]])
    pairs, _ = read_events(write_lake(tmp_path / "lake", tables), NOW, lookback_days=90)
    assert pairs.get_column("opportunity_id").to_list() == ["b-seen"]
