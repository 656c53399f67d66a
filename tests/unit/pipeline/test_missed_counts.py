"""The lake counts what a tier delay hid and the digests sent, next to files of the previous shape.

``deliveries`` gained ``lifetime_s`` (version 2) for the ``expired``/``missed`` rows; a file
written before it (no such column) must read with it null, and every figure still counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.settings import LakeSettings
from pipeline import analytics as an
from pipeline.deliveries import DELIVERIES, deliveries_table
from pipeline.lake import Lake
from pipeline.query import run_query
from pipeline.sink import ParquetSink
from tests.support.lake_versions import write_file

T0 = datetime(2025, 6, 2, 9, tzinfo=UTC)
NOW = T0 + timedelta(hours=3)


def _row(status: str, tier: str, *, at: datetime, chat: int, **extra: Any) -> dict[str, Any]:
    return {
        "queued_at": at,
        "opportunity_id": extra.pop("opportunity_id", f"o-{chat}-{status}"),
        "chat_id": chat,
        "user_id": chat,
        "audience": "user",
        "status": status,
        "kind": "spot_spread",
        "tier": tier,
        **extra,
    }


def lake_with_both_shapes(tmp_path: Path) -> Lake:
    settings = LakeSettings(url=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    previous = pa.schema([f for f in DELIVERIES if f.name != "lifetime_s"])
    old_rows = [
        _row("sent", "premium", at=T0, chat=1, sent_at=T0, latency_ms=100.0),
        _row("expired", "free", at=T0, chat=2, reason="closed"),
    ]
    write_file(lake, "deliveries", pa.Table.from_pylist(old_rows, schema=previous), T0)
    later = T0 + timedelta(hours=1)
    new_rows = [
        _row("expired", "free", at=later, chat=3, reason="missed", lifetime_s=42.0, opportunity_id="a"),
        _row("expired", "free", at=later, chat=3, reason="missed", lifetime_s=7.0, opportunity_id="b"),
        _row("expired", "basic", at=later, chat=4, reason="missed", lifetime_s=90.0, opportunity_id="c"),
        _row(
            "sent",
            "free",
            at=later,
            chat=3,
            reason="digest",
            kind="missed_digest",
            digest_size=2,
            message_id=11,
            sent_at=later,
            opportunity_id="missed_digest:1",
        ),
    ]
    sink = ParquetSink(lake, settings)
    sink.add("deliveries", deliveries_table(new_rows))
    sink.flush()
    return lake


def test_missed_items_and_digests_are_counted_beside_files_of_the_previous_shape(tmp_path: Path) -> None:
    lake = lake_with_both_shapes(tmp_path)
    (summary,) = an.summary(lake, None, now=NOW).to_pylist()
    assert summary["expired"] == 4 and summary["missed"] == 3
    assert summary["sent"] == 2 and summary["digests_sent"] == 1
    by_tier = {r["tier"]: r for r in an.deliveries_by_tier(lake, None, now=NOW).to_pylist()}
    assert by_tier["free"]["missed"] == 2 and by_tier["free"]["digests_sent"] == 1
    assert by_tier["basic"]["missed"] == 1 and by_tier["premium"]["missed"] == 0
    figures = an.delivery_figures(lake, T0 - timedelta(hours=1), now=NOW)
    assert figures.missed == 3 and figures.digests == 1 and figures.sent == 2
    lifetimes = run_query(lake, "SELECT chat_id, lifetime_s FROM deliveries ORDER BY chat_id, lifetime_s")
    assert lifetimes.to_pylist() == [
        {"chat_id": 1, "lifetime_s": None},
        {"chat_id": 2, "lifetime_s": None},
        {"chat_id": 3, "lifetime_s": 7.0},
        {"chat_id": 3, "lifetime_s": 42.0},
        {"chat_id": 3, "lifetime_s": None},
        {"chat_id": 4, "lifetime_s": 90.0},
    ]
