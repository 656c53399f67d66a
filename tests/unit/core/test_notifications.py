"""Notifications from opportunity events (lake rows and lifecycle dicts), digests, send results."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from core.candidates import Candidate
from core.lifecycle import EventType, LifecycleEvent, OpenOpportunity
from core.models import OpportunityKind, Priority
from core.notifications import Digest, Notification, SendOutcome, SendResult
from pipeline.opportunities import events_to_table

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def candidate(kind: OpportunityKind = OpportunityKind.FUNDING_RATE, **changes: object) -> Candidate:
    fields: dict[str, object] = {
        "kind": kind,
        "symbol": "BTC/USDT:USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "gross_bps": 14.0,
        "net_bps": 9.5,
        "gross_apr": 0.153 if kind is OpportunityKind.FUNDING_RATE else None,
        "notional_usd": 25_000.0,
        "executable_usd": 25_000.0,
        "confidence": 0.82,
        "priority": Priority.HIGH,
        "pushable": True,
        "flags": (),
        "detected_at": AT,
    }
    fields.update(changes)
    return Candidate(**fields)  # type: ignore[arg-type]


def note(oid: str, priority: Priority, minutes: int) -> Notification:
    return Notification(
        oid, OpportunityKind.SPOT_SPREAD, "ETH/USDT", "bybit", "okx", 5.0, 9.0, None, 1000.0, 0.5,
        priority, AT + timedelta(minutes=minutes),
    )  # fmt: skip


def test_from_a_lake_row_as_the_pipeline_writes_it() -> None:
    event = LifecycleEvent(EventType.OPENED, "0195-abc", candidate(), AT, AT)
    row = events_to_table([event]).to_pylist()[0]
    n = Notification.from_event(row)
    assert n == Notification(
        "0195-abc", OpportunityKind.FUNDING_RATE, "BTC/USDT:USDT", "binance", "okx",
        9.5, 14.0, 0.153, 25_000.0, 0.82, Priority.HIGH, AT, executable_usd=25_000.0,
    )  # fmt: skip
    assert n.detected_at.tzinfo is not None


def test_from_a_lifecycle_dict_with_iso_times_and_missing_numbers() -> None:
    opp = OpenOpportunity(
        "id-2", candidate(OpportunityKind.TECHNICAL, sell_exchange=None, net_bps=math.nan), AT, AT
    )
    body = opp.to_dict()  # NaN → None, datetimes → ISO strings
    assert body["net_bps"] is None and isinstance(body["detected_at"], str)
    n = Notification.from_event(body)
    assert n.kind is OpportunityKind.TECHNICAL and n.sell_exchange is None and n.buy_exchange == "binance"
    assert math.isnan(n.net_bps) and n.gross_apr is None and n.detected_at == AT


def test_from_event_accepts_epoch_ms_and_empty_exchanges() -> None:
    n = Notification.from_event(
        {
            "opportunity_id": "x",
            "kind": "spot_spread",
            "symbol": "S",
            "buy_exchange": "a",
            "sell_exchange": "",
            "detected_at": int(AT.timestamp() * 1000),
            "priority": "medium",
        }
    )
    assert n.detected_at == AT and n.sell_exchange is None and n.priority is Priority.MEDIUM
    assert n.confidence == 0.0 and math.isnan(n.notional_usd)


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "spot_spread", "symbol": "S", "buy_exchange": "a", "detected_at": AT},  # no id
        {"opportunity_id": "x", "kind": "nope", "symbol": "S", "buy_exchange": "a", "detected_at": AT},
        {"opportunity_id": "x", "kind": "spot_spread", "symbol": "S", "detected_at": AT},  # no leg
        {
            "opportunity_id": "x",
            "kind": "spot_spread",
            "symbol": "S",
            "buy_exchange": "a",
            "detected_at": "2025-03-01T12:00:00",
        },  # naive
    ],
)
def test_from_event_refuses_incomplete_events(bad: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError)):
        Notification.from_event(bad)


def test_digest_orders_high_first_then_newest_and_keeps_one_state_per_opportunity() -> None:
    d = Digest.of(
        [
            note("a", Priority.LOW, 9),
            note("b", Priority.HIGH, 1),
            note("c", Priority.MEDIUM, 5),
            note("d", Priority.HIGH, 3),
            note("b", Priority.HIGH, 0),  # an older state of b
        ]
    )
    assert d.opportunity_ids == ("d", "b", "c", "a")
    assert len(d) == 4 and d.top.opportunity_id == "d" and d.priority is Priority.HIGH
    assert d.items[1].detected_at == AT + timedelta(minutes=1)
    with pytest.raises(ValueError):
        Digest.of([])


def test_send_results() -> None:
    sent = SendResult(SendOutcome.SENT, message_id=7, status_code=200)
    assert sent.ok and not sent.retryable
    assert SendResult(SendOutcome.RETRY_AFTER, retry_after_s=3.0, status_code=429).retryable
    assert SendResult(SendOutcome.TRANSIENT, error="timeout").retryable
    assert not SendResult(SendOutcome.BLOCKED, status_code=403).retryable
    assert [o.value for o in SendOutcome] == ["sent", "retry_after", "blocked", "transient", "permanent"]
