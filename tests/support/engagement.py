"""Engagement histories as real lake rows (``opportunities``, ``deliveries``, ``engagement``,
``audit``), for the personalization tests: what a user was pushed and what they did with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.settings import LakeSettings
from pipeline.deliveries import deliveries_table, engagement_table
from pipeline.lake import Lake
from pipeline.opportunities import OPPORTUNITIES
from pipeline.sink import ParquetSink
from state.audit import AuditRow, audit_table


@dataclass(frozen=True, slots=True)
class Push:
    """One opportunity pushed to ``user`` at ``at`` and what they did: ``opened`` (the push's
    details button), ``muted`` (its mute button)."""

    user: int
    oid: str
    kind: str
    symbol: str
    at: datetime
    net_bps: float = 20.0
    buy: str = "binance"
    sell: str = "okx"
    opened: bool = False
    muted: bool = False


def _opportunity(p: Push) -> dict[str, Any]:
    return {
        "ts": p.at,
        "opportunity_id": p.oid,
        "event": "opened",
        "kind": p.kind,
        "symbol": p.symbol,
        "buy_exchange": p.buy,
        "sell_exchange": p.sell,
        "net_bps": p.net_bps,
        "gross_bps": p.net_bps + 10,
        "confidence": 0.9,
        "priority": "high",
        "pushable": True,
        "flags": "",
        "detected_at": p.at,
        "opened_at": p.at,
        "reopened": False,
        "details": "{}",
    }


def history_tables(
    pushes: Sequence[Push], audit: Sequence[tuple[int, datetime, str, str]] = ()
) -> dict[str, pa.Table]:
    """The lake rows of ``pushes`` (one ``opened`` opportunity row per id, a ``queued`` and a
    ``sent`` delivery row, an engagement row per press) and ``audit`` rows ((user, at, action,
    detail): ``("/settings", "block BTC/USDT")``, ``("cb:od", "id=…")``, ``("forget", "erased")``)."""
    opps = {p.oid: _opportunity(p) for p in pushes}
    deliveries: list[dict[str, Any]] = []
    engagement: list[dict[str, Any]] = []
    for p in pushes:
        base = {
            "queued_at": p.at,
            "opportunity_id": p.oid,
            "chat_id": p.user,
            "user_id": p.user,
            "audience": "user",
            "tier": "pro",
            "kind": p.kind,
            "priority": "high",
            "net_bps": p.net_bps,
            "detected_at": p.at,
        }
        deliveries.append({**base, "status": "queued"})
        deliveries.append({**base, "status": "sent", "sent_at": p.at + timedelta(seconds=1), "message_id": 1})
        for pressed, detail in ((p.opened, "details"), (p.muted, "mute1h")):
            if pressed:
                engagement.append(
                    {
                        "ts": p.at + timedelta(minutes=1),
                        "user_id": p.user,
                        "chat_id": p.user,
                        "action": "push_button",
                        "opportunity_id": p.oid,
                        "kind": p.kind,
                        "detail": detail,
                    }
                )
    tables = {
        "opportunities": pa.Table.from_pylist(list(opps.values()), schema=OPPORTUNITIES),
        "deliveries": deliveries_table(deliveries),
        "engagement": engagement_table(engagement),
    }
    if audit:
        tables["audit"] = audit_table(
            AuditRow(at, user, user, act, True, what) for user, at, act, what in audit
        )
    return tables


def write_lake(lake_dir: Path | str, tables: dict[str, pa.Table]) -> Lake:
    """``tables`` written through the real sink (hour partitions, atomic files)."""
    settings = LakeSettings(url=str(lake_dir))
    lake = Lake.from_settings(settings)
    sink = ParquetSink(lake, settings)
    for name, table in tables.items():
        if table.num_rows:
            sink.add(name, table)
    sink.flush()
    return lake


def clear_history(user: int, now: datetime, n: int = 10, *, days_ago: float = 1.0) -> list[Push]:
    """``user`` always opens funding_rate pushes on SOL and never spot pushes on BTC (``n`` of each)."""
    at = now - timedelta(days=days_ago)
    out = []
    for i in range(n):
        t = at + timedelta(minutes=i)
        out.append(Push(user, f"f-{user}-{i}", "funding_rate", "SOL/USDT:USDT", t, 15.0, opened=True))
        out.append(Push(user, f"s-{user}-{i}", "spot_spread", "BTC/USDT", t, 40.0, buy="bybit"))
    return out
