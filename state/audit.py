"""The ``audit`` dataset of the lake: what the bot (and the scheduled sweeps) did for whom.

:data:`AUDIT` is its Arrow schema (``audit-logs/``); :func:`audit_table` builds rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

AUDIT_DATASET = "audit"
_TS = pa.timestamp("ms", tz="UTC")
AUDIT = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("actor_id", pa.int64(), nullable=False),
        pa.field("chat_id", pa.int64(), nullable=False),
        pa.field("action", pa.string(), nullable=False),  # "/start", "cb:sp", "onboard:kinds", …
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),  # "" when nothing to say; never a secret
    ]
)
"""Arrow schema of the ``audit`` dataset (``audit-logs/``)."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    ts: datetime
    actor_id: int
    chat_id: int
    action: str
    ok: bool
    detail: str = ""


def audit_table(rows: Iterable[AuditRow]) -> pa.Table:
    rows = list(rows)
    return pa.Table.from_pydict(
        {
            "ts": [r.ts.astimezone(UTC) for r in rows],
            "actor_id": [r.actor_id for r in rows],
            "chat_id": [r.chat_id for r in rows],
            "action": [r.action for r in rows],
            "ok": [r.ok for r in rows],
            "detail": [r.detail[:500] for r in rows],
        },
        schema=AUDIT,
    )


__all__ = ["AUDIT", "AUDIT_DATASET", "AuditRow", "audit_table"]
