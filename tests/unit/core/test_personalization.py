"""The model's pure parts: features, buckets, predictions, and how a score orders a chat's items."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest

from core.models import OpportunityKind, Priority
from core.notifications import Digest, Notification, payload_of
from core.personalization import (
    EDGE_EDGES_BPS,
    MIN_EDGE_BPS,
    MIN_P,
    UserModel,
    edge_bucket,
    edge_buckets,
    opportunity_features,
    predicted,
    scored,
)
from core.queueing import ChatQueue, QueueItem, by_score

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_edge_buckets_scalar_and_vector_agree() -> None:
    values = [math.nan, -3.0, 0.0, 4.99, 5.0, 19.0, 20.0, 99.0, 100.0, 5000.0]
    assert [edge_bucket(v) for v in values] == [0, 0, 0, 0, 1, 2, 3, 4, 5, 5]
    assert edge_buckets(__import__("numpy").array(values)).tolist() == [edge_bucket(v) for v in values]
    assert edge_bucket(None) == 0 and len(EDGE_EDGES_BPS) == 5


def test_features_of_an_opportunity() -> None:
    f = opportunity_features("funding_rate", "sol/usdt:usdt", ["Binance", "okx", "okx", None], 25.0)
    assert f == {
        "kind": ["kind:funding_rate"],
        "symbol": ["symbol:SOL/USDT:USDT"],
        "exchange": ["exchange:binance", "exchange:okx"],
        "edge": ["edge:funding_rate:3"],
    }


def test_prediction_and_score() -> None:
    m = UserModel.from_record(
        {"b": 0.2, "n": 12, "a": [{"f": "kind:spot_spread", "v": 1.0}, {"f": "exchange:okx", "v": -1.0}]}
    )
    f = opportunity_features("spot_spread", "BTC/USDT", ["binance", "okx"], 10.0)
    assert m.logit(f) == pytest.approx(1.0 - 0.5)  # the legs' mean
    assert m.predict(f) == pytest.approx(0.2 * math.exp(0.5))
    assert m.top(1) == [("kind:spot_spread", 1.0)]
    assert float(predicted(0.9, 5.0)) == 1.0 and float(predicted(0.01, -30)) == MIN_P
    assert float(scored(0.5, 40.0)) == 20.0 and float(scored(0.5, -2.0)) == 0.5 * MIN_EDGE_BPS
    assert float(scored(0.5, math.nan)) == 0.5 * MIN_EDGE_BPS


def item(oid: str, priority: str, detected: int, score: float | None = None) -> QueueItem:
    return QueueItem(
        oid, f"{oid}~1", 7, 7, "user", "pro", priority, "spot_spread", 10.0, detected, 0, 0, score=score
    )


def test_an_item_without_a_score_loads_as_before() -> None:
    old = {k: v for k, v in asdict(item("a", "high", 1)).items() if k != "score"}  # an older release's dict
    assert QueueItem(**old).score is None and "score" in item("a", "high", 1, 2.0).to_dict()


def test_ranking_orders_by_score_and_only_orders() -> None:
    def queue() -> ChatQueue:
        q = ChatQueue()
        q.add(item("spot-btc", "high", 20, score=0.4))  # high priority, newest, but rarely opened
        q.add(item("funding-sol", "medium", 10, score=14.0))
        q.add(item("later", "high", 30, score=99.0))
        q.items["later"].due_ms = 10_000  # not due: ranking never makes it due
        return q

    assert [i.opportunity_id for i in queue().take_due(0, limit=10)] == ["spot-btc", "funding-sol"]
    ranked = queue().take_due(0, limit=10, ranked=True)
    assert [i.opportunity_id for i in ranked] == ["funding-sol", "spot-btc"]
    assert [i.opportunity_id for i in queue().take_due(0, limit=1, ranked=True)] == ["funding-sol"]
    # an item without a score (no model when it was queued): today's order for all of them
    q = queue()
    q.items["spot-btc"].score = None
    assert [i.opportunity_id for i in q.take_due(0, limit=10, ranked=True)] == ["spot-btc", "funding-sol"]
    assert not by_score([item("x", "low", 1, score=math.nan)]) and not by_score([])


def note(oid: str, priority: Priority, minutes: int) -> Notification:
    return Notification(
        oid, OpportunityKind.SPOT_SPREAD, f"{oid}/USDT", "bybit", "okx", 5.0, 9.0, None, 1000.0, 0.5,
        priority, AT + timedelta(minutes=minutes),
    )  # fmt: skip


def test_a_ranked_digest_keeps_the_given_order() -> None:
    notes = [note("A", Priority.LOW, 1), note("B", Priority.HIGH, 2)]
    plain, ranked = payload_of(notes), payload_of(notes, ranked=True)
    assert isinstance(plain, Digest) and isinstance(ranked, Digest)
    assert [n.opportunity_id for n in plain.items] == ["B", "A"]
    assert [n.opportunity_id for n in ranked.items] == ["A", "B"]
    compact = payload_of(notes, layout="compact", ranked=True)
    assert isinstance(compact, Digest) and [n.opportunity_id for n in compact.items] == ["A", "B"]
